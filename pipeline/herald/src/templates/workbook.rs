//! Templates as a spreadsheet, pure: one sheet `templates` with the columns [`COLUMNS`], one row
//! per template, locale, channel (empty: every channel) and version, written with
//! rust_xlsxwriter and read back with calamine. Reading refuses a file that is not a workbook,
//! too large, a zip bomb (entries whose declared size or compression ratio is out of bounds,
//! checked before anything is unpacked), without the sheet or with other columns (the columns
//! before versions, [`LEGACY_COLUMNS`], are read too); then checks every row (text cells only
//! but a whole-number version, no formulas, each template's names, sizes and syntax, no
//! variant twice) and answers the good rows and the errors by row. A row without a version is
//! version 0 here: the importer makes it the template's next version. Export → import → export
//! gives the same rows.

use std::io::{Cursor, Read, Seek};

use calamine::{Data, Reader, Xlsx};
use herald_store::TemplateRecord;
use herald_templates::{Parts, check};

/// The sheet.
pub const SHEET: &str = "templates";
/// Its columns, in this order, on the first row.
pub const COLUMNS: [&str; 7] = [
    "template_id",
    "locale",
    "channel",
    "version",
    "title",
    "body",
    "action_url",
];
/// The columns of workbooks made before versions and channels: every row is then a new version
/// for every channel.
pub const LEGACY_COLUMNS: [&str; 5] = ["template_id", "locale", "title", "body", "action_url"];
/// The largest file read.
pub const MAX_FILE_BYTES: usize = 20 << 20;
/// The largest an entry of the file may unpack to, and all of them together.
const MAX_ENTRY_BYTES: u64 = 100 << 20;
const MAX_UNPACKED_BYTES: u64 = 200 << 20;
/// An entry packed tighter than this is a bomb, not a spreadsheet.
const MAX_RATIO: u64 = 200;
/// The most template rows.
pub const MAX_ROWS: usize = 100_000;

/// Why a whole file is refused (nothing applied).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkbookError {
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("the file is {0} bytes, more than the {MAX_FILE_BYTES} accepted")]
    TooLarge(usize),
    /// Not an .xlsx workbook.
    #[error("not an .xlsx workbook: {0}")]
    NotAWorkbook(String),
    /// Unpacks to more than is plausible.
    #[error("refused: {0} (a zip bomb?)")]
    Bomb(String),
    /// No sheet named `templates`.
    #[error("no sheet named {SHEET:?} (sheets: {0})")]
    NoSheet(String),
    /// The first row is not [`COLUMNS`].
    #[error("the first row must be the columns {COLUMNS:?}; {0}")]
    Columns(String),
    /// More than [`MAX_ROWS`].
    #[error("{0} rows, more than the {MAX_ROWS} accepted")]
    TooManyRows(usize),
    /// Writing failed.
    #[error("writing the workbook: {0}")]
    Write(String),
}

/// One refused row: its number as the spreadsheet shows it (the header is row 1), the column
/// (empty for the row as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Spreadsheet row number.
    pub row: usize,
    /// Column name, or empty.
    pub column: String,
    /// Why.
    pub error: String,
}

/// `templates` as a workbook.
pub fn write(templates: &[TemplateRecord]) -> Result<Vec<u8>, WorkbookError> {
    let err = |e: rust_xlsxwriter::XlsxError| WorkbookError::Write(e.to_string());
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name(SHEET).map_err(err)?;
    for (col, name) in (0u16..).zip(COLUMNS) {
        sheet.write_string(0, col, name).map_err(err)?;
    }
    for (row, t) in (1u32..).zip(templates) {
        let version = t.version.to_string();
        let cells = [
            t.template_id.as_str(),
            t.locale.as_str(),
            t.channel.map_or("", herald_schemas::Channel::as_str),
            version.as_str(),
            t.title.as_str(),
            t.body.as_str(),
            t.action_url.as_deref().unwrap_or_default(),
        ];
        for (col, text) in (0u16..).zip(cells) {
            if !text.is_empty() {
                sheet.write_string(row, col, text).map_err(err)?;
            }
        }
    }
    book.save_to_buffer().map_err(err)
}

/// Refuses a zip whose entries would unpack to implausible sizes, from the central directory
/// (nothing is unpacked).
fn not_a_bomb(bytes: &[u8]) -> Result<(), WorkbookError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| WorkbookError::NotAWorkbook(e.to_string()))?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| WorkbookError::NotAWorkbook(e.to_string()))?;
        let (size, packed) = (entry.size(), entry.compressed_size().max(1));
        if size > MAX_ENTRY_BYTES || size / packed > MAX_RATIO {
            return Err(WorkbookError::Bomb(format!(
                "{} unpacks to {size} bytes from {packed}",
                entry.name().unwrap_or_default()
            )));
        }
        total += size;
    }
    if total > MAX_UNPACKED_BYTES {
        return Err(WorkbookError::Bomb(format!(
            "the entries unpack to {total} bytes"
        )));
    }
    Ok(())
}

fn text(cell: &Data) -> Result<String, String> {
    match cell {
        Data::String(s) => Ok(s.clone()),
        Data::Empty => Ok(String::new()),
        Data::Int(_) | Data::Float(_) => Err("must be text, not a number".into()),
        other => Err(format!("must be text, not {other:?}")),
    }
}

/// A version cell: text, or a whole number (a spreadsheet turns `3` into one), as text.
fn version_text(cell: &Data) -> Result<String, String> {
    match cell {
        Data::Float(f) if f.fract() == 0.0 && *f >= 1.0 && *f <= f64::from(u32::MAX) => {
            Ok(format!("{f:.0}"))
        }
        Data::Int(i) => Ok(i.to_string()),
        other => text(other),
    }
}

/// The templates of `bytes` for `tenant`, and the rows refused. A whole-file problem is an
/// error; row problems are listed (the caller decides whether to apply the good rows).
pub fn read(
    bytes: &[u8],
    tenant: &str,
) -> Result<(Vec<TemplateRecord>, Vec<RowError>), WorkbookError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(WorkbookError::TooLarge(bytes.len()));
    }
    not_a_bomb(bytes)?;
    let mut book: Xlsx<_> =
        Xlsx::new(Cursor::new(bytes)).map_err(|e| WorkbookError::NotAWorkbook(e.to_string()))?;
    read_book(&mut book, tenant)
}

fn read_book<R: Read + Seek>(
    book: &mut Xlsx<R>,
    tenant: &str,
) -> Result<(Vec<TemplateRecord>, Vec<RowError>), WorkbookError> {
    let names = book.sheet_names();
    if !names.iter().any(|n| n == SHEET) {
        return Err(WorkbookError::NoSheet(names.join(", ")));
    }
    let range = book
        .worksheet_range(SHEET)
        .map_err(|e| WorkbookError::NotAWorkbook(e.to_string()))?;
    let formulas = book
        .worksheet_formula(SHEET)
        .map_err(|e| WorkbookError::NotAWorkbook(e.to_string()))?;
    let mut rows = range.rows();
    let header: Vec<String> = rows
        .next()
        .unwrap_or_default()
        .iter()
        .map(|c| text(c).unwrap_or_default())
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let trimmed: Vec<&str> = header
        .iter()
        .copied()
        .take_while(|h| !h.is_empty())
        .collect();
    let columns: &[&str] = if trimmed == LEGACY_COLUMNS {
        &LEGACY_COLUMNS
    } else {
        &COLUMNS
    };
    if trimmed != columns {
        let missing: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|c| !trimmed.contains(c))
            .collect();
        return Err(WorkbookError::Columns(if missing.is_empty() {
            format!("found {trimmed:?}")
        } else {
            format!("missing {missing:?}, found {trimmed:?}")
        }));
    }
    if range.height() > MAX_ROWS + 1 {
        return Err(WorkbookError::TooManyRows(range.height() - 1));
    }
    let start = range.start().map_or(0, |(r, _)| r as usize);
    let formula_rows: std::collections::BTreeSet<usize> = formulas
        .used_cells()
        .filter(|(_, _, f)| !f.is_empty())
        .map(|(r, _, _)| formulas.start().map_or(0, |(s, _)| s as usize) + r + 1)
        .collect();
    let (mut good, mut errors) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for (i, cells) in rows.enumerate() {
        let row = start + i + 2;
        if cells.iter().all(|c| matches!(c, Data::Empty)) {
            continue;
        }
        let mut refuse = |column: &str, error: String| {
            errors.push(RowError {
                row,
                column: column.to_owned(),
                error,
            });
        };
        if formula_rows.contains(&row) {
            refuse("", "formulas are not accepted: give the text itself".into());
            continue;
        }
        // By name, so a legacy row reads as a row without channel and version.
        let mut values: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
        let mut bad = false;
        for (column, cell) in columns
            .iter()
            .zip(cells.iter().chain(std::iter::repeat(&Data::Empty)))
        {
            let value = if *column == "version" {
                version_text(cell)
            } else {
                text(cell)
            };
            match value {
                Ok(v) => {
                    values.insert(column, v);
                }
                Err(e) => {
                    refuse(column, e);
                    bad = true;
                    break;
                }
            }
        }
        if bad {
            continue;
        }
        let mut take = |column: &str| values.remove(column).unwrap_or_default();
        let (id, locale, channel, version) = (
            take("template_id"),
            take("locale"),
            take("channel"),
            take("version"),
        );
        let (title, body, action_url) = (take("title"), take("body"), take("action_url"));
        let parts = Parts {
            template_id: &id,
            locale: &locale,
            title: &title,
            body: &body,
            action_url: &action_url,
        };
        if let Err(r) = check(parts) {
            refuse(r.field, r.why);
            continue;
        }
        let channel = match channel.as_str() {
            "" => None,
            name => match herald_schemas::Channel::parse(name) {
                Some(c) => Some(c),
                None => {
                    refuse(
                        "channel",
                        format!(
                            "{name:?} is not a channel (empty for every channel, or one of \
                             in_app, push_apns, push_fcm, sms, email, webhook)"
                        ),
                    );
                    continue;
                }
            },
        };
        let version: u32 = match version.as_str() {
            "" => 0,
            v => match v.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    refuse(
                        "version",
                        format!("{v:?} is not a version (1, 2, …, or empty)"),
                    );
                    continue;
                }
            },
        };
        let variant = format!(
            "{id} in {locale} for {} at {}",
            channel.map_or("every channel", herald_schemas::Channel::as_str),
            if version == 0 {
                "the next version".to_owned()
            } else {
                format!("version {version}")
            }
        );
        if !seen.insert(variant.clone()) {
            refuse("", format!("{variant} is given twice"));
            continue;
        }
        good.push(TemplateRecord {
            tenant: tenant.to_owned(),
            template_id: id,
            locale,
            channel,
            version,
            title,
            body,
            action_url: (!action_url.is_empty()).then_some(action_url),
        });
    }
    Ok((good, errors))
}

/// Gives the rows read without a version (0) their template's next version: one more than
/// any version of that template stored (`existing`) or named in the file, the same for every
/// such row of the template (they are one new upload of it).
pub fn assign_versions(rows: &mut [TemplateRecord], existing: &[TemplateRecord]) {
    let mut latest: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for t in existing.iter().chain(rows.iter()) {
        let v = latest.entry(t.template_id.as_str()).or_default();
        *v = (*v).max(t.version);
    }
    let next: std::collections::HashMap<String, u32> = latest
        .into_iter()
        .map(|(id, v)| (id.to_owned(), v.saturating_add(1)))
        .collect();
    for t in rows.iter_mut().filter(|t| t.version == 0) {
        t.version = next.get(&t.template_id).copied().unwrap_or(1);
    }
}

/// The refused rows as CSV (`row,column,error`), for the caller to fix them in the workbook.
pub fn errors_csv(errors: &[RowError]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from("row,column,error\n");
    for e in errors {
        out.push_str(&format!(
            "{},{},{}\n",
            e.row,
            quote(&e.column),
            quote(&e.error)
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
