//! Section 6: importing 10,000 templates from a spreadsheet. Herald: `herald templates import`
//! (checks every row, then stores each template) into the embedded store. Baseline, sharing no
//! Herald code: what a user would write without Herald — calamine reads the same workbook and
//! rusqlite inserts the rows into a table of the same shape, in one transaction.

use std::path::Path;
use std::time::Instant;

use calamine::{Data, Reader, Xlsx};
use serde_json::{Value, json};

/// Templates imported.
pub const ROWS: usize = 10_000;

/// Rows per second, both ways.
pub struct Results {
    /// `herald templates import`.
    pub herald_per_s: f64,
    /// calamine + rusqlite.
    pub baseline_per_s: f64,
}

impl Results {
    /// For results.json.
    pub fn json(&self) -> Value {
        json!({ "rows": ROWS, "herald_per_s": self.herald_per_s, "baseline_per_s": self.baseline_per_s })
    }
}

/// A workbook of `rows` templates (ids t00000…, two locales each), written with rust_xlsxwriter.
fn workbook(path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("templates")?;
    for (col, name) in (0u16..).zip(["template_id", "locale", "title", "body", "action_url"]) {
        sheet.write_string(0, col, name)?;
    }
    for i in 0..rows {
        let row = u32::try_from(i + 1)?;
        let locale = if i % 2 == 0 { "en" } else { "pt-BR" };
        sheet.write_string(row, 0, format!("t{:05}", i / 2))?;
        sheet.write_string(row, 1, locale)?;
        sheet.write_string(row, 2, "Your order {{ order }}")?;
        sheet.write_string(row, 3, "Hi {{ name }}, order {{ order }} has shipped.")?;
        sheet.write_string(row, 4, "https://shop.example/orders/{{ order }}")?;
    }
    book.save(path)?;
    Ok(())
}

/// The baseline: read the rows, insert them in one transaction.
fn baseline(book: &Path, db: &Path) -> anyhow::Result<usize> {
    let mut xlsx: Xlsx<_> = calamine::open_workbook(book)?;
    let range = xlsx.worksheet_range("templates")?;
    let mut conn = rusqlite::Connection::open(db)?;
    conn.execute_batch(
        "CREATE TABLE templates (tenant TEXT, template_id TEXT, locale TEXT, title TEXT,
         body TEXT, action_url TEXT, PRIMARY KEY (tenant, template_id, locale))",
    )?;
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut insert =
            tx.prepare("INSERT OR REPLACE INTO templates VALUES ('bench', ?1, ?2, ?3, ?4, ?5)")?;
        for row in range.rows().skip(1) {
            let cell = |i: usize| match row.get(i) {
                Some(Data::String(s)) => s.clone(),
                _ => String::new(),
            };
            insert.execute(rusqlite::params![
                cell(0),
                cell(1),
                cell(2),
                cell(3),
                cell(4)
            ])?;
            n += 1;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Times both.
pub async fn run() -> anyhow::Result<Results> {
    let dir = crate::test_dir()?;
    let book = dir.path().join("templates.xlsx");
    workbook(&book, ROWS)?;
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            dir.path().join("store.db").display()
        ),
    )?;
    let started = Instant::now();
    let out = tokio::process::Command::new(crate::herald_bin()?)
        .arg("--config")
        .arg(&config)
        // No Herald runs on this store: no enrich caches to tell.
        .args(["templates", "import", "--no-announce", "--tenant", "bench"])
        .arg(&book)
        .kill_on_drop(true)
        .output()
        .await?;
    let herald_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "herald templates import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let n = baseline(&book, &dir.path().join("baseline.db"))?;
    let baseline_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(n == ROWS, "the baseline read {n} rows");
    Ok(Results {
        herald_per_s: ROWS as f64 / herald_s,
        baseline_per_s: ROWS as f64 / baseline_s,
    })
}
