//! `herald lag`: how far every stage runner's consumer group is behind its input topics, per
//! partition and in total; `--watch SECONDS` redraws it until Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use herald_runtime::lag::{PartitionLag, group_lag, table};
use herald_runtime::topics::Topics;
use tokio_util::sync::CancellationToken;

use crate::components::runners;
use crate::config::Config;

/// Every runner's lag, as a table.
pub async fn once(config: &Config) -> anyhow::Result<String> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let mut rows: Vec<PartitionLag> = Vec::new();
    for (name, inputs) in runners(&topics) {
        let group = topics.group(&name);
        rows.extend(
            group_lag(&config.kafka, &group, &inputs)
                .await
                .with_context(|| format!("reading the lag of {group}"))?,
        );
    }
    Ok(table(&rows))
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
