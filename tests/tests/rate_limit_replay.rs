//! The rate-limit stage decides a replay as it decided the first time. A fixed sequence of
//! notifications (fixed timestamps, each recipient on a fixed partition) goes to `enriched` in
//! waves; the stage process, running exactly-once on a broker with transactions, is SIGKILLed
//! after every wave and once in the middle of one, and restarted. Its limiters are restored from
//! the changelog each time, so the committed decisions — which notifications were admitted and
//! which were rate-limited — are exactly those of one limiter per partition that never stopped,
//! computed here by the pure limiter. A new owner starting with full buckets (the old
//! behaviour) admits more and fails this test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herald_runtime::topics::Topics;
use herald_schemas::{
    Channel, ChannelContent, DeliveryResult, DeliveryState, NotificationAdmitted,
    NotificationEnriched, Priority, codec,
};
use herald_stages::rate_limit::{Decision, Limiter, LimitsConfig, QuotaConfig};
use herald_store::{Clock, SystemClock};
use herald_tests::{Broker, Platform, eventually, read_topic};
use rdkafka::producer::{FutureProducer, FutureRecord};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const USERS: usize = 12;
const PARTITIONS: usize = 3;
const WAVES: usize = 4;
const PER_WAVE: usize = 150;
/// Event time between two notifications.
const STEP_MS: i64 = 100;

fn limits() -> LimitsConfig {
    LimitsConfig {
        per_recipient: QuotaConfig {
            limit: 3,
            window_seconds: 10,
        },
        per_tenant: QuotaConfig {
            limit: 90,
            window_seconds: 10,
        },
        bypass_categories: Vec::new(),
        ..LimitsConfig::default()
    }
}

const LIMITS_TOML: &str = "[rate_limit]\n\
    per_recipient = { limit = 3, window_seconds = 10 }\n\
    per_tenant = { limit = 90, window_seconds = 10 }\n\
    bypass_categories = []\n";

/// Notification `i`: its id, recipient, partition and timestamp.
fn notification(i: usize, base_ms: i64) -> (NotificationEnriched, i32, i64) {
    let user = format!("u{}", i % USERS);
    let at = base_ms + i64::try_from(i).unwrap() * STEP_MS;
    let n = NotificationEnriched {
        notification_id: format!("n{i:04}"),
        tenant: "acme".into(),
        recipient_user_id: user.clone(),
        category: "news".into(),
        priority: Priority::Normal,
        requested_at_ms: at,
        deliveries: vec![ChannelContent {
            channel: Channel::InApp,
            address: user,
            title: format!("t{i}"),
            body: "b".into(),
            action_url: None,
        }],
        deferrals: 0,
        defer_until_ms: None,
    };
    let partition = i32::try_from((i % USERS) % PARTITIONS).unwrap();
    (n, partition, at)
}

/// What one limiter per partition that never stopped decides: admitted or not, by id.
fn expected(base_ms: i64) -> BTreeMap<String, bool> {
    let share = limits().per_partition(u32::try_from(PARTITIONS).unwrap());
    let mut limiters: Vec<Limiter> = (0..PARTITIONS)
        .map(|_| Limiter::new(share.clone()))
        .collect();
    (0..WAVES * PER_WAVE)
        .map(|i| {
            let (n, p, at) = notification(i, base_ms);
            let d = limiters[usize::try_from(p).unwrap()].decide(
                &n.tenant,
                &n.recipient_user_id,
                &n.category,
                n.priority,
                at,
            );
            (n.notification_id, d == Decision::Admit)
        })
        .collect()
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    ids: std::ops::Range<usize>,
    base_ms: i64,
) {
    for i in ids {
        let (n, partition, at) = notification(i, base_ms);
        let key = format!("{}/{}", n.tenant, n.recipient_user_id);
        let value = codec::encode(&n).unwrap();
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .partition(partition)
                    .timestamp(at),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// The committed decisions: admitted ids and rate-limited ids, each with how often it appears.
fn decisions(bootstrap: &str, topics: &Topics) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let admitted = read_topic(bootstrap, &topics.admitted())?
        .iter()
        .map(|v| codec::decode::<NotificationAdmitted>(v).map(|a| a.notification_id))
        .collect::<Result<Vec<_>, _>>()?;
    let limited = read_topic(bootstrap, &topics.delivery_result())?
        .iter()
        .map(|v| codec::decode::<DeliveryResult>(v))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|r| r.state == DeliveryState::RateLimited)
        .map(|r| r.notification_id)
        .collect();
    Ok((admitted, limited))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_with_fewer_partitions_than_the_input_is_refused_at_start() {
    tokio::time::timeout(TEST_LIMIT, fewer_partitions())
        .await
        .expect("test timed out")
        .unwrap();
}

/// Each partition's limiter state goes to the same-numbered changelog partition: a changelog
/// created by hand with fewer partitions would fail every transaction, so the stage refuses to
/// start and says what to do.
async fn fewer_partitions() -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?;
    let topics = Topics::new(&platform.prefix);
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()?;
    for result in admin
        .create_topics(
            &[NewTopic::new(
                &topics.rate_limit_state(),
                1,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?
    {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    platform.run_command(&["topics"]).await?;
    let refused = platform
        .run_command(&["stage", "rate-limit"])
        .await
        .expect_err("the stage started with a changelog of 1 partition for an input of 3");
    let text = format!("{refused:#}");
    assert!(
        text.contains("has 1 partitions") && text.contains("at least as many partitions"),
        "{text}"
    );
    Ok(())
}

/// Waits until at least `total` decisions are committed.
async fn wait_decided(bootstrap: &str, topics: &Topics, total: usize) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(120),
        &format!("{total} decided"),
        || {
            let decided = decisions(bootstrap, topics).map(|(a, l)| a.len() + l.len() >= total);
            async move { Ok(decided?.then_some(())) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_rate_limit_stage_decides_as_one_that_never_stopped() {
    tokio::time::timeout(TEST_LIMIT, replay())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn replay() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.with_extra_config(LIMITS_TOML)?;
    platform.run_command(&["topics"]).await?;
    let topics = Topics::new(&platform.prefix);
    let base_ms = SystemClock.now_ms() - 300_000;
    let want = expected(base_ms);
    let admitted_expected = want.values().filter(|a| **a).count();
    assert!(
        admitted_expected > 100 && admitted_expected < want.len() - 100,
        "the limits must both admit and limit: {admitted_expected} of {}",
        want.len()
    );

    let mut stage = platform
        .spawn_component(&["stage", "rate-limit"], None)
        .await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()?;
    let mut kills = Vec::new();
    for wave in 0..WAVES {
        let first = wave * PER_WAVE;
        if wave == 2 {
            // In the middle of a wave: ten records first, so the stage is up and deciding; the
            // rest paced over ~1.4 s in the background; the kill comes as soon as part of the
            // wave is committed, so whatever the open transaction held is redone.
            produce(&producer, &topics.enriched(), first..first + 10, base_ms).await;
            wait_decided(&broker.bootstrap, &topics, first + 10).await?;
            let rest = {
                let (producer, topic) = (producer.clone(), topics.enriched());
                tokio::spawn(async move {
                    for i in first + 10..first + PER_WAVE {
                        produce(&producer, &topic, i..i + 1, base_ms).await;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            };
            let decided = eventually(Duration::from_secs(120), "part of wave 2", || {
                let decided = decisions(&broker.bootstrap, &topics).map(|(a, l)| a.len() + l.len());
                async move { Ok(Some(decided?).filter(|d| *d > first + 10)) }
            })
            .await?;
            stage.kill().await;
            assert!(
                decided < first + PER_WAVE,
                "the kill was meant to land inside wave 2, but all of it was decided"
            );
            kills.push(format!(
                "during wave {wave} ({} of its {PER_WAVE} committed)",
                decided - first
            ));
            stage = platform
                .spawn_component(&["stage", "rate-limit"], None)
                .await?;
            rest.await?;
        } else {
            produce(
                &producer,
                &topics.enriched(),
                first..first + PER_WAVE,
                base_ms,
            )
            .await;
        }
        wait_decided(&broker.bootstrap, &topics, (wave + 1) * PER_WAVE).await?;
        stage.kill().await;
        kills.push(format!("after wave {wave}"));
        stage = platform
            .spawn_component(&["stage", "rate-limit"], None)
            .await?;
    }
    println!("stage SIGKILLed: {}", kills.join("; "));

    // Give the last incarnation time to (wrongly) decide anything again, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (admitted, limited) = decisions(&broker.bootstrap, &topics)?;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for id in admitted.iter().chain(&limited) {
        *seen.entry(id).or_insert(0) += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "decided more than once: {repeated:?}");
    assert_eq!(seen.len(), want.len(), "every notification decided");
    let admitted: BTreeSet<&String> = admitted.iter().collect();
    let differ: Vec<(&String, bool)> = want
        .iter()
        .filter(|(id, a)| admitted.contains(id) != **a)
        .map(|(id, a)| (id, *a))
        .collect();
    println!(
        "{} admitted, {} rate-limited; an uninterrupted limiter per partition admits {}",
        admitted.len(),
        limited.len(),
        admitted_expected
    );
    assert!(
        differ.is_empty(),
        "{} decisions differ from an uninterrupted run (id, expected admit): {:?}",
        differ.len(),
        &differ[..differ.len().min(20)]
    );
    Ok(())
}
