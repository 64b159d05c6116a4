//! `herald templates export|import`: a tenant's templates as an .xlsx workbook, a row per
//! variant (the columns and checks are in [`workbook`]). An import with a refused row applies nothing unless
//! `--apply-valid` is given; the refused rows are printed, and written as CSV with `--errors`.

mod workbook;

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;

/// The `herald templates` commands.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Write every template of TENANT (every locale, channel and version) to an .xlsx workbook.
    Export {
        #[arg(long)]
        tenant: String,
        /// The workbook to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create or replace TENANT's templates from an .xlsx workbook (sheet `templates`, columns
    /// template_id, locale, channel, version, title, body, action_url; a row without a version
    /// is the template's next version, a row without a channel serves every channel).
    Import {
        #[arg(long)]
        tenant: String,
        /// The workbook to read.
        file: PathBuf,
        /// Apply the good rows even if some are refused.
        #[arg(long)]
        apply_valid: bool,
        /// Write the refused rows here as CSV (row, column, error).
        #[arg(long)]
        errors: Option<PathBuf>,
        /// Do not tell running enrich stages (on `<p>.changes`) to drop their cached templates
        /// of TENANT: for a store no Herald runs on yet. Without it, an unreachable broker is
        /// reported, and the caches pick the new templates up within `[enrich] cache_ttl_ms`.
        #[arg(long)]
        no_announce: bool,
    },
}

/// Templates stored in one transaction during an import.
const IMPORT_CHUNK: usize = 1_000;

/// Runs a `herald templates` command; what to print.
pub async fn run(config: &Config, command: TemplatesCommand) -> anyhow::Result<String> {
    let store = crate::store::open(config).await?;
    match command {
        TemplatesCommand::Export { tenant, out } => {
            let templates = store.templates_of(&tenant).await?;
            let bytes = workbook::write(&templates)?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            Ok(format!(
                "exported {} templates of {tenant} to {}",
                templates.len(),
                out.display()
            ))
        }
        TemplatesCommand::Import {
            tenant,
            file,
            apply_valid,
            errors,
            no_announce,
        } => {
            let meta = std::fs::metadata(&file).with_context(|| format!("{}", file.display()))?;
            if meta.len() > workbook::MAX_FILE_BYTES as u64 {
                anyhow::bail!(workbook::WorkbookError::TooLarge(
                    usize::try_from(meta.len()).unwrap_or(usize::MAX)
                ));
            }
            let bytes = std::fs::read(&file).with_context(|| format!("{}", file.display()))?;
            let (mut good, refused) = workbook::read(&bytes, &tenant)
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            if let Some(path) = &errors {
                std::fs::write(path, workbook::errors_csv(&refused))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            for e in refused.iter().take(20) {
                eprintln!("row {}{}: {}", e.row, column(&e.column), e.error);
            }
            if !refused.is_empty() && !apply_valid {
                anyhow::bail!(
                    "{} of {} rows refused; nothing imported (fix them, or give --apply-valid to \
                     import the {} good rows)",
                    refused.len(),
                    refused.len() + good.len(),
                    good.len()
                );
            }
            workbook::assign_versions(&mut good, &store.templates_of(&tenant).await?);
            // In chunks: one store transaction each, the bar moving between them (drawn on a
            // terminal only).
            let bar = indicatif::ProgressBar::new(u64::try_from(good.len()).unwrap_or(u64::MAX));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} templates · {per_sec} · {eta} left",
            ) {
                bar.set_style(style);
            }
            for chunk in good.chunks(IMPORT_CHUNK) {
                store.put_templates(chunk).await?;
                bar.inc(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            }
            bar.finish_and_clear();
            let announced = if no_announce || good.is_empty() {
                String::new()
            } else {
                match announce(config, &tenant).await {
                    Ok(()) => "; running enrich stages told".to_owned(),
                    Err(e) => format!(
                        "; telling running enrich stages failed ({e}): they use the new templates \
                         within [enrich] cache_ttl_ms ({} ms)",
                        config.enrich.cache_ttl_ms
                    ),
                }
            };
            Ok(format!(
                "imported {} templates into {tenant}; {} rows refused{announced}",
                good.len(),
                refused.len()
            ))
        }
    }
}

/// Publishes one change naming every template of `tenant` (id `*`), waiting at most 10 s.
async fn announce(config: &Config, tenant: &str) -> anyhow::Result<()> {
    use herald_schemas::{Change, ChangeKind};
    use herald_store::Clock;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let change = Change {
        kind: ChangeKind::Template,
        tenant: tenant.to_owned(),
        id: herald_schemas::ALL_TEMPLATES.to_owned(),
        at_ms: herald_store::SystemClock.now_ms(),
    };
    let mut producer = config.kafka.producer();
    producer.set("message.timeout.ms", "10000");
    let producer: FutureProducer = producer.create()?;
    let topic = herald_runtime::topics::Topics::new(&config.kafka.topic_prefix).changes();
    let (key, payload) = (change.key(), herald_schemas::codec::encode(&change)?);
    let record = FutureRecord::to(&topic).key(&key).payload(&payload);
    producer
        .send(record, std::time::Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

fn column(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(", {name}")
    }
}
