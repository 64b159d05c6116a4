//! `herald lag`: how far every stage runner's consumer group is behind its input topics, per
//! partition and in total; `--watch SECONDS` redraws it until Ctrl-C. `herald lag-exporter`
//! publishes the same numbers as a Prometheus gauge.

use std::time::Duration;

use anyhow::Context;
use herald_runtime::lag::{LagReader, PartitionLag, table};
use herald_runtime::topics::Topics;
use herald_telemetry::metrics::{CONSUMER_LAG, LAG_COLLECTED_AT, LAG_ERRORS};
use tokio_util::sync::CancellationToken;

use crate::components::runners;
use crate::config::Config;

/// Every runner's lag through `reader`'s consumers (kept from one collection to the next).
async fn read_all(
    config: &Config,
    reader: &std::sync::Arc<std::sync::Mutex<LagReader>>,
) -> anyhow::Result<Vec<(String, Vec<PartitionLag>)>> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let groups: Vec<(String, String, Vec<String>)> = runners(&topics)
        .into_iter()
        .map(|(name, inputs)| (topics.group(&name), name, inputs))
        .collect();
    let reader = std::sync::Arc::clone(reader);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader
            .lock()
            .map_err(|_| anyhow::anyhow!("the lag reader's lock is poisoned"))?;
        groups
            .into_iter()
            .map(|(group, name, inputs)| {
                let rows = reader
                    .group_lag(&group, &inputs)
                    .with_context(|| format!("reading the lag of {group}"))?;
                Ok((name, rows))
            })
            .collect()
    })
    .await?
}

/// Every runner's lag, as a table.
pub async fn once(config: &Config) -> anyhow::Result<String> {
    let reader = std::sync::Arc::new(std::sync::Mutex::new(LagReader::new(&config.kafka)));
    let rows: Vec<PartitionLag> = read_all(config, &reader)
        .await?
        .into_iter()
        .flat_map(|(_, r)| r)
        .collect();
    Ok(table(&rows))
}

/// The lag exporter: publishes every runner's lag per partition as `herald_consumer_lag`
/// (labels `stage`, `group`, `topic`, `partition`) every `[telemetry] lag_interval_ms`, until
/// `shutdown`. A failed collection is counted and logged; the last values stay.
pub async fn export(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let every = Duration::from_millis(config.telemetry.lag_interval_ms.max(100));
    tracing::info!(?every, "collecting consumer lag");
    // Exported from the start, so an alert on failures has a series to look at.
    metrics::counter!(LAG_ERRORS).absolute(0);
    let reader = std::sync::Arc::new(std::sync::Mutex::new(LagReader::new(&config.kafka)));
    loop {
        match read_all(config, &reader).await {
            Ok(all) => {
                for (stage, rows) in all {
                    for r in rows {
                        metrics::gauge!(
                            CONSUMER_LAG,
                            "stage" => stage.clone(),
                            "group" => r.group,
                            "topic" => r.topic,
                            "partition" => r.partition.to_string(),
                        )
                        .set(r.lag as f64);
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                metrics::gauge!(LAG_COLLECTED_AT).set(now.as_secs_f64());
            }
            Err(e) => {
                metrics::counter!(LAG_ERRORS).increment(1);
                tracing::warn!(error = %format!("{e:#}"), "collecting consumer lag failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Redraws the table every `every` until `shutdown`.
pub async fn watch(
    config: &Config,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let text = once(config).await?;
        #[allow(clippy::print_stdout)]
        {
            // Clear the screen and go home, then the table.
            print!("\x1b[2J\x1b[H{text}");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}
