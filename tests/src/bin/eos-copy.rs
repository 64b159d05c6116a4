//! A process for the exactly-once crash test (`tests/tests/exactly_once.rs`): runs Herald's
//! runner in exactly-once mode, copying `input` to `output`, prints `call <payload>` for every
//! record it processes, and at the `hold_at`-th record prints `holding` and stops making
//! progress (its open transaction stays open) until the test SIGKILLs it.
//!
//! Usage: `eos-copy BOOTSTRAP PREFIX GROUP INPUT OUTPUT HOLD_AT BATCH_RECORDS`
#![allow(clippy::print_stdout)]

use std::io::Write;

use async_trait::async_trait;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunnerSpec};
use herald_runtime::{DeliveryMode, KafkaConfig};
use tokio_util::sync::CancellationToken;

struct Copy {
    output: String,
    calls: u64,
    hold_at: u64,
}

#[async_trait]
impl Processor for Copy {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.calls += 1;
        if self.calls == self.hold_at {
            say("holding");
            std::future::pending::<()>().await;
        }
        say(&format!("call {}", String::from_utf8_lossy(input.payload)));
        Ok(vec![Output {
            topic: self.output.clone(),
            key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
            payload: input.payload.to_vec(),
            partition: None,
        }])
    }
}

/// One line to the test, at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, prefix, group, input, output, hold_at, batch] = &args[..] else {
        anyhow::bail!("usage: eos-copy BOOTSTRAP PREFIX GROUP INPUT OUTPUT HOLD_AT BATCH_RECORDS");
    };
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        topic_prefix: prefix.clone(),
        delivery_mode: DeliveryMode::ExactlyOnce,
        instance_id: "fixed".into(),
        transaction_timeout_ms: 60_000,
        // Batches close by count only, so the test knows what the open transaction holds.
        commit_interval_ms: 600_000,
        max_batch_records: batch.parse()?,
        ..KafkaConfig::default()
    };
    let spec = RunnerSpec {
        name: "copy".into(),
        group: group.clone(),
        input_topics: vec![input.clone()],
    };
    let copy = Copy {
        output: output.clone(),
        calls: 0,
        hold_at: hold_at.parse()?,
    };
    runner::run(&kafka, &spec, copy, CancellationToken::new()).await?;
    Ok(())
}
