//! `herald tail TOPIC`: a topic's records as JSON lines, decoded with the event type the topic
//! carries — from the end (new records, until Ctrl-C), the beginning, an offset or a time.
//! Committed records only; no consumer group is joined or committed.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use herald_schemas::codec::decode;
use herald_schemas::{
    DeadLetter, DeliveryResult, Dispatch, Engagement, NotificationAdmitted, NotificationEnriched,
    NotificationRequested,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Arguments of `herald tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic: its name under the prefix (`delivery-result`, `dispatch.sms`, …) or whole.
    pub topic: String,
    /// Start at the beginning instead of the end.
    #[arg(long, conflicts_with_all = ["offset", "since_ms"])]
    pub from_beginning: bool,
    /// Start at this offset in every partition.
    #[arg(long, conflicts_with = "since_ms")]
    pub offset: Option<i64>,
    /// Start at the first record written at or after this time (unix milliseconds).
    #[arg(long)]
    pub since_ms: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Stop after this many seconds without a record (default: never).
    #[arg(long)]
    pub idle_s: Option<u64>,
}

/// Decodes a record value to JSON.
type Decoder = fn(&[u8]) -> anyhow::Result<Value>;

/// The event type of `topic` (its name under the prefix), as a decoder to JSON.
fn decoder(name: &str) -> Option<Decoder> {
    fn as_json<E: herald_schemas::Event>(bytes: &[u8]) -> anyhow::Result<Value> {
        Ok(serde_json::to_value(decode::<E>(bytes)?)?)
    }
    Some(match name {
        "requested" => as_json::<NotificationRequested>,
        "enriched" | "deferred" => as_json::<NotificationEnriched>,
        "admitted" => as_json::<NotificationAdmitted>,
        "delivery-result" => as_json::<DeliveryResult>,
        "engagement" => as_json::<Engagement>,
        "dead-letter" => as_json::<DeadLetter>,
        n if n.starts_with("dispatch.") || n.starts_with("retry.") => as_json::<Dispatch>,
        _ => return None,
    })
}

/// One record as a JSON line: where it is, its key, and its event (or why it cannot be read).
pub fn line(decode: fn(&[u8]) -> anyhow::Result<Value>, message: &impl Message) -> String {
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let mut out = json!({
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp_ms": message.timestamp().to_millis(),
        "key": key,
    });
    match message.payload().map(decode) {
        Some(Ok(event)) => out["event"] = event,
        Some(Err(e)) => out["error"] = json!(e.to_string()),
        None => out["error"] = json!("no value"),
    }
    out.to_string()
}

/// Prints `args.topic`'s records until `shutdown`, `--max` or `--idle-s`.
pub async fn run(
    config: &Config,
    args: TailArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prefix = format!("{}.", config.kafka.topic_prefix);
    let name = args
        .topic
        .strip_prefix(&prefix)
        .unwrap_or(&args.topic)
        .to_owned();
    let Some(decode) = decoder(&name) else {
        bail!(
            "{}: not a topic of events (requested, enriched, deferred, admitted, dispatch.<channel>, \
             retry.<channel>.<tier>, delivery-result, engagement, dead-letter)",
            args.topic
        );
    };
    let topic = format!("{prefix}{name}");
    let mut client = config.kafka.reader();
    client.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = client.create().context("creating the consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .with_context(|| format!("reading {topic}'s partitions"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("{topic} does not exist");
    }
    let start = match (args.from_beginning, args.offset, args.since_ms) {
        (true, _, _) => Offset::Beginning,
        (_, Some(o), _) => Offset::Offset(o),
        (_, _, Some(ms)) => Offset::Offset(ms),
        _ => Offset::End,
    };
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(&topic, *p, start)?;
    }
    if args.since_ms.is_some() {
        assignment = consumer
            .offsets_for_times(assignment, Duration::from_secs(10))
            .context("finding the offsets of --since-ms")?;
    }
    consumer.assign(&assignment)?;
    let (max, idle) = (args.max, args.idle_s.map(Duration::from_secs));
    tokio::task::spawn_blocking(move || {
        let mut printed = 0u64;
        let mut quiet = Duration::ZERO;
        let step = Duration::from_millis(200);
        while !shutdown.is_cancelled() && max.is_none_or(|m| printed < m) {
            match consumer.poll(step) {
                Some(Ok(message)) => {
                    quiet = Duration::ZERO;
                    printed += 1;
                    #[allow(clippy::print_stdout)]
                    {
                        println!("{}", line(decode, &message));
                    }
                }
                Some(Err(e)) => return Err(anyhow::anyhow!("reading {topic}: {e}")),
                None => {
                    quiet += step;
                    if idle.is_some_and(|idle| quiet >= idle) {
                        break;
                    }
                }
            }
        }
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_topic_has_its_decoder_and_others_none() {
        for name in [
            "requested",
            "enriched",
            "deferred",
            "admitted",
            "dispatch.sms",
            "retry.email.5m",
            "delivery-result",
            "engagement",
            "dead-letter",
        ] {
            assert!(decoder(name).is_some(), "{name}");
        }
        for name in ["txn-probe", "txn-ids", "rate-limit-state", "nope"] {
            assert!(decoder(name).is_none(), "{name}");
        }
    }
}
