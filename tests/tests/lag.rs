//! Consumer lag against the real broker: a group's lag per partition is what was produced
//! there minus what the group committed, and everything for a partition it never committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_runtime::KafkaConfig;
use herald_runtime::lag::{PartitionLag, group_lag};
use herald_tests::{Broker, random_name};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TEST_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_produced_minus_committed_per_partition() {
    tokio::time::timeout(TEST_LIMIT, produced_minus_committed())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn produced_minus_committed() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        ..KafkaConfig::default()
    };
    let (topic, group) = (random_name("lag"), random_name("lag-group"));
    let admin: AdminClient<DefaultClientContext> = kafka.admin().create()?;
    for result in admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?
    {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    // Six records to partition 0, four to partition 1.
    let producer: FutureProducer = kafka.producer().create()?;
    for (partition, n) in [(0, 6), (1, 4)] {
        for i in 0..n {
            let value = format!("{partition}-{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    assert_eq!(
        lags(&group_lag(&kafka, &group, std::slice::from_ref(&topic)).await?),
        [(0, None, 6, 6), (1, None, 4, 4)],
        "nothing committed: everything is lag"
    );

    // The group has consumed four records of partition 0 and all of partition 1.
    let committer: BaseConsumer = kafka.reader().set("group.id", &group).create()?;
    let mut done = TopicPartitionList::new();
    done.add_partition_offset(&topic, 0, Offset::Offset(4))?;
    done.add_partition_offset(&topic, 1, Offset::Offset(4))?;
    tokio::task::spawn_blocking(move || committer.commit(&done, CommitMode::Sync)).await??;
    assert_eq!(
        lags(&group_lag(&kafka, &group, std::slice::from_ref(&topic)).await?),
        [(0, Some(4), 6, 2), (1, Some(4), 4, 0)]
    );
    // Another group's offsets are its own.
    let other = group_lag(&kafka, &random_name("other"), std::slice::from_ref(&topic)).await?;
    assert_eq!(lags(&other), [(0, None, 6, 6), (1, None, 4, 4)]);
    // A topic that does not exist has no rows.
    assert!(
        group_lag(&kafka, &group, &[random_name("missing")])
            .await?
            .is_empty()
    );
    Ok(())
}

fn lags(rows: &[PartitionLag]) -> Vec<(i32, Option<i64>, i64, i64)> {
    rows.iter()
        .map(|r| (r.partition, r.committed, r.end, r.lag))
        .collect()
}
