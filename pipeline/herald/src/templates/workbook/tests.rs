use std::io::Write;

use super::*;

fn template(id: &str, locale: &str, body: &str) -> TemplateRecord {
    TemplateRecord {
        tenant: "acme".into(),
        template_id: id.into(),
        locale: locale.into(),
        title: format!("{id} title"),
        body: body.into(),
        action_url: (id == "b").then(|| "https://acme.example/{{ order }}".to_owned()),
        channel: None,
        version: 1,
    }
}

/// A workbook with `rows` of cells under the given header, built by hand.
fn book(header: &[&str], rows: &[Vec<Cell>]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name(SHEET).unwrap();
    for (col, name) in (0u16..).zip(header) {
        sheet.write_string(0, col, *name).unwrap();
    }
    for (row, cells) in (1u32..).zip(rows) {
        for (col, cell) in (0u16..).zip(cells) {
            match cell {
                Cell::Text(t) => sheet.write_string(row, col, t.as_str()).map(|_| ()),
                Cell::Number(n) => sheet.write_number(row, col, *n).map(|_| ()),
                Cell::Formula(f) => sheet.write_formula(row, col, f.as_str()).map(|_| ()),
            }
            .unwrap();
        }
    }
    book.save_to_buffer().unwrap()
}

enum Cell {
    Text(String),
    Number(f64),
    Formula(String),
}

fn texts(cells: &[&str]) -> Vec<Cell> {
    cells.iter().map(|c| Cell::Text((*c).to_owned())).collect()
}

#[test]
fn export_import_export_gives_the_same_rows() {
    let templates = vec![
        template("a", "en", "Hi {{ name }}"),
        TemplateRecord {
            channel: Some(herald_schemas::Channel::Sms),
            version: 2,
            ..template("a", "en", "Hi {{ name }} (SMS)")
        },
        template("a", "pt-BR", "Olá {{ name }} ✓"),
        template("b", "en", "{% if vip %}Dear{% endif %} {{ name }}"),
    ];
    let first = write(&templates).unwrap();
    let (read_back, errors) = read(&first, "acme").unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(read_back, templates);
    let second = write(&read_back).unwrap();
    assert_eq!(read(&second, "acme").unwrap().0, templates);
}

#[test]
fn channels_and_versions_are_read_and_checked() {
    let rows = vec![
        texts(&["code", "en", "", "1", "Code", "{{ code }}", ""]),
        texts(&["code", "en", "sms", "2", "", "{{ code }} is your code", ""]),
        vec![
            Cell::Text("code".into()),
            Cell::Text("de".into()),
            Cell::Text(String::new()),
            Cell::Number(3.0),
            Cell::Text("Code".into()),
            Cell::Text("{{ code }}".into()),
        ],
        texts(&["code", "fr", "", "", "Code", "{{ code }}", ""]),
        texts(&["code", "en", "pager", "1", "t", "b", ""]),
        texts(&["code", "en", "", "0", "t", "b", ""]),
        texts(&["code", "en", "", "v2", "t", "b", ""]),
        texts(&["code", "en", "sms", "2", "t", "b", ""]),
    ];
    let (good, errors) = read(&book(&COLUMNS, &rows), "acme").unwrap();
    let variants: Vec<(&str, Option<herald_schemas::Channel>, u32)> = good
        .iter()
        .map(|t| (t.locale.as_str(), t.channel, t.version))
        .collect();
    assert_eq!(
        variants,
        [
            ("en", None, 1),
            ("en", Some(herald_schemas::Channel::Sms), 2),
            ("de", None, 3),
            ("fr", None, 0),
        ]
    );
    let by_row: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.column.as_str())).collect();
    assert_eq!(
        by_row,
        [(6, "channel"), (7, "version"), (8, "version"), (9, "")],
        "{errors:?}"
    );
    assert!(errors[3].error.contains("twice"), "{errors:?}");
}

#[test]
fn rows_without_a_version_become_the_next_one_of_their_template() {
    let stored = vec![
        TemplateRecord {
            version: 4,
            ..template("a", "en", "x")
        },
        template("b", "en", "x"),
    ];
    let mut rows = vec![
        TemplateRecord {
            version: 0,
            ..template("a", "en", "y")
        },
        TemplateRecord {
            version: 0,
            ..template("a", "de", "y")
        },
        TemplateRecord {
            version: 0,
            ..template("c", "en", "y")
        },
        TemplateRecord {
            version: 7,
            ..template("b", "en", "y")
        },
        TemplateRecord {
            version: 0,
            ..template("b", "de", "y")
        },
    ];
    assign_versions(&mut rows, &stored);
    let versions: Vec<u32> = rows.iter().map(|t| t.version).collect();
    assert_eq!(versions, [5, 5, 1, 7, 8]);
}

#[test]
fn bad_rows_are_named_and_good_ones_kept() {
    let long = "x".repeat(herald_templates::limits::BODY + 1);
    let rows = vec![
        texts(&["ok", "en", "t", "Hi {{ name }}", ""]),
        texts(&["bad id!", "en", "t", "b", ""]),
        texts(&["syntax", "en", "t", "{% if %}", ""]),
        vec![
            Cell::Text("number".into()),
            Cell::Text("en".into()),
            Cell::Number(42.0),
            Cell::Text("b".into()),
        ],
        vec![
            Cell::Text("formula".into()),
            Cell::Text("en".into()),
            Cell::Formula("=1+1".into()),
            Cell::Text("b".into()),
        ],
        texts(&["ok", "en", "again", "b", ""]),
        texts(&["huge", "en", "t", &long, ""]),
    ];
    // A workbook of before versions: every row a new version for every channel.
    let bytes = book(&LEGACY_COLUMNS, &rows);
    let (good, errors) = read(&bytes, "acme").unwrap();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].template_id, "ok");
    assert_eq!((good[0].channel, good[0].version), (None, 0));
    let by_row: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.column.as_str())).collect();
    assert_eq!(
        by_row,
        [
            (3, "template_id"),
            (4, "body"),
            (5, "title"),
            (6, ""),
            (7, ""),
            (8, "body")
        ],
        "{errors:?}"
    );
    assert!(errors[3].error.contains("formula"), "{errors:?}");
    assert!(errors[4].error.contains("twice"), "{errors:?}");
    let csv = errors_csv(&errors);
    assert!(
        csv.starts_with("row,column,error\n3,\"template_id\","),
        "{csv}"
    );
}

#[test]
fn malformed_files_are_refused_whole() {
    assert!(matches!(
        read(b"not a workbook at all", "acme"),
        Err(WorkbookError::NotAWorkbook(_))
    ));
    let wrong_columns = book(&["template_id", "locale", "title", "body"], &[]);
    assert!(matches!(
        read(&wrong_columns, "acme"),
        Err(WorkbookError::Columns(m)) if m.contains("action_url")
    ));
    let reordered = book(
        &["locale", "template_id", "title", "body", "action_url"],
        &[],
    );
    assert!(matches!(
        read(&reordered, "acme"),
        Err(WorkbookError::Columns(_))
    ));
    let mut other = rust_xlsxwriter::Workbook::new();
    other.add_worksheet().set_name("Sheet1").unwrap();
    let other = other.save_to_buffer().unwrap();
    assert!(matches!(read(&other, "acme"), Err(WorkbookError::NoSheet(s)) if s == "Sheet1"));
    let huge = vec![0u8; MAX_FILE_BYTES + 1];
    assert_eq!(
        read(&huge, "acme"),
        Err(WorkbookError::TooLarge(MAX_FILE_BYTES + 1))
    );
}

#[test]
fn a_zip_bomb_is_refused_before_anything_is_unpacked() {
    let mut bomb = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bomb));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("xl/worksheets/sheet1.xml", options).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..16 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
    }
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    assert!(matches!(read(&bomb, "acme"), Err(WorkbookError::Bomb(_))));
}
