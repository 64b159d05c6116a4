//! Running one component in this process: the ingress, the query service, or a stage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use herald_connectors::Connector;
use herald_connectors::recording::RecordingProvider;
use herald_connectors::registry;
use herald_runtime::follow::follow;
use herald_runtime::release::Releaser;
use herald_runtime::runner::{self, Processor, RunnerSpec};
use herald_runtime::topics::{Lane, Topics, ensure_topics};
use herald_schemas::{Change, Channel};
use herald_stages::broadcast::{self, BroadcastProcessor};
use herald_stages::deliver::DeliverProcessor;
use herald_stages::enrich::{EnrichProcessor, Lookups};
use herald_stages::fan_out::FanOutProcessor;
use herald_stages::rate_limit::{DeferredRelay, KafkaStateLog, RateLimitProcessor};
use herald_stages::store_writer::StoreWriterProcessor;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{Config, parse_listen};

/// The stages `herald stage` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// requested (+ released from quiet hours) → enriched, per lane; and broadcasts expanded
    /// into the bulk lane's requested
    Enrich,
    /// enriched → admitted
    RateLimit,
    /// admitted → dispatch.<channel>
    FanOut,
    /// dispatch.<channel> → provider → delivery-result (one consumer group per channel)
    Deliver,
    /// requested + delivery-result → the store
    StoreWriter,
}

impl Stage {
    /// The stage's name in logs, groups and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Enrich => "enrich",
            Stage::RateLimit => "rate-limit",
            Stage::FanOut => "fan-out",
            Stage::Deliver => "deliver",
            Stage::StoreWriter => "store-writer",
        }
    }
}

/// Every runner of every stage: its name (its consumer group is `<prefix>.stage.<name>`) and
/// the topics it reads. Each lane has runners of its own (the bulk lane's names end in `.bulk`);
/// the store writer reads both lanes, the broadcast expander feeds the bulk lane. `herald stage`
/// starts these; `herald lag` reads their groups.
pub fn runners(topics: &Topics) -> Vec<(String, Vec<String>)> {
    let main = topics.in_lane(Lane::Main);
    let bulk = topics.in_lane(Lane::Bulk);
    let mut all = vec![
        ("broadcast".to_owned(), vec![topics.broadcasts()]),
        (
            "store-writer".to_owned(),
            vec![main.requested(), bulk.requested(), topics.delivery_result()],
        ),
    ];
    for lane in Lane::ALL {
        let t = topics.in_lane(lane);
        let mut enrich_inputs = vec![t.requested()];
        if lane == Lane::Main {
            enrich_inputs.push(topics.released());
        }
        all.extend([
            (laned("enrich", lane), enrich_inputs),
            (laned("rate-limit", lane), vec![t.enriched()]),
            (laned("rate-limit.deferred", lane), vec![t.deferred()]),
            (laned("fan-out", lane), vec![t.admitted()]),
        ]);
        for channel in Channel::ALL {
            all.push((
                laned(&deliver_runner(channel), lane),
                std::iter::once(t.dispatch(channel))
                    .chain(t.retries(channel))
                    .collect(),
            ));
        }
    }
    all
}

/// A runner's name in `lane`.
fn laned(name: &str, lane: Lane) -> String {
    format!("{name}{}", lane.suffix())
}

fn deliver_runner(channel: Channel) -> String {
    format!("deliver.{}", channel.as_str())
}

/// The topics runner `name` reads (see [`runners`]).
fn inputs(topics: &Topics, name: &str) -> anyhow::Result<Vec<String>> {
    runners(topics)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, inputs)| inputs)
        .with_context(|| format!("no runner named {name}"))
}

/// The credential checker of the gRPC servers, as `[auth]` says.
fn authenticator(
    config: &Config,
    store: &Arc<dyn herald_store::Store>,
) -> anyhow::Result<Arc<herald_auth::Authenticator>> {
    let auth = herald_auth::Authenticator::new(
        &config.auth,
        Arc::clone(store),
        Arc::new(herald_store::SystemClock),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Arc::new(auth))
}

/// Runs the ingress until `shutdown`.
pub async fn ingress(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.ingress.addr()?;
    let tls = server_tls(config.ingress.tls.as_ref()).context("[ingress.tls]")?;
    let listener = bind(addr, config.ingress.reuse_port)
        .with_context(|| format!("ingress cannot listen on {addr}"))?;
    let store = crate::store::open(config).await?;
    herald_ingress::serve(
        listener,
        tls,
        &config.kafka,
        authenticator(config, &store)?,
        config.ingress.limits(),
        config.ingress.policy(),
        store,
        shutdown,
    )
    .await?;
    Ok(())
}

/// A listener on `addr`; with `reuse_port`, one that other processes may open beside it
/// (`SO_REUSEPORT`: the kernel spreads new connections among them).
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Runs the query service until `shutdown`.
pub async fn query(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.query.addr()?;
    let tls = server_tls(config.query.tls.as_ref()).context("[query.tls]")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("query service cannot listen on {addr}"))?;
    let store = crate::store::open(config).await?;
    let engagement =
        herald_query::engagement::EngagementSink::new(&config.kafka, Arc::clone(&store))
            .context("creating the engagement producer")?;
    if let (Some(links), false) = (config.links.load()?, config.links.listen.is_empty()) {
        let addr = parse_listen(&config.links.listen)?;
        let clicks = TcpListener::bind(addr)
            .await
            .with_context(|| format!("the click redirect cannot listen on {addr}"))?;
        let sink = Some(engagement.clone());
        tokio::spawn(herald_query::clicks::serve(
            clicks,
            links,
            sink,
            shutdown.clone(),
        ));
    }
    let options = herald_query::QueryOptions {
        engagement: Some(engagement),
        critical_categories: config.management.critical_categories.clone(),
        ..herald_query::QueryOptions::default()
    };
    let auth = authenticator(config, &store)?;
    herald_query::serve(listener, tls, store, auth, options, shutdown).await?;
    Ok(())
}

/// A server's TLS side as its `tls` section says, or `None` (plaintext) without one.
fn server_tls(
    config: Option<&herald_proto::tls::TlsConfig>,
) -> Result<Option<Arc<herald_proto::tls::ServerTls>>, herald_proto::tls::TlsError> {
    config
        .map(|tls| herald_proto::tls::ServerTls::load(tls).map(Arc::new))
        .transpose()
}

/// Creates every topic that is missing.
pub async fn topics(config: &Config) -> anyhow::Result<()> {
    ensure_topics(&config.kafka)
        .await
        .with_context(|| format!("creating topics on {}", config.kafka.bootstrap_servers))
}

async fn run_one<P: Processor>(
    config: &Config,
    name: String,
    input_topics: Vec<String>,
    processor: P,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let spec = RunnerSpec {
        group: topics.group(&name),
        name,
        input_topics,
    };
    runner::run(&config.kafka, &spec, processor, shutdown).await?;
    Ok(())
}

/// Runs `stage` until `shutdown`. `channels` limits the deliver stage (empty: every channel).
pub async fn stage(
    config: &Config,
    stage: Stage,
    channels: &[Channel],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let name = stage.name().to_owned();
    match stage {
        Stage::Enrich => {
            let store = crate::store::open(config).await?;
            // Requests held for quiet hours go back to `released` when due.
            let releaser = Releaser::new(
                &config.kafka,
                Arc::clone(&store),
                topics.released(),
                Arc::new(herald_store::SystemClock),
            )?;
            let every = Duration::from_millis(config.management.release_every_ms.max(10));
            tokio::spawn(releaser.run(every, shutdown.clone()));
            let lookups = Arc::new(Lookups::new(Arc::clone(&store), config.enrich.cache()));
            tokio::spawn(forget_changes(
                config.kafka.clone(),
                topics.changes(),
                Arc::clone(&lookups),
                shutdown.clone(),
            ));
            let mut runners = tokio::task::JoinSet::new();
            for lane in Lane::ALL {
                let critical = config.management.critical_categories.clone();
                let t = topics.in_lane(lane);
                let p = EnrichProcessor::new(Arc::clone(&lookups), t, critical);
                let name = laned(&name, lane);
                spawn_named(&mut runners, config, &topics, &name, p, &shutdown)?;
            }
            // Broadcasts are expanded here too, into the bulk lane: their own consumer group.
            let p = BroadcastProcessor::new(store, topics.clone(), broadcast::CHUNK);
            spawn_named(&mut runners, config, &topics, "broadcast", p, &shutdown)?;
            wait_all(runners, shutdown).await
        }
        Stage::RateLimit => {
            // Per lane, the limiter and the relay of deferred notifications, each its own group.
            let mut runners = tokio::task::JoinSet::new();
            for lane in Lane::ALL {
                let t = topics.in_lane(lane);
                let partitions = limiter_partitions(config, &t).await?;
                let p = RateLimitProcessor::new(
                    t.clone(),
                    &config.rate_limit,
                    partitions,
                    Box::new(KafkaStateLog::new(config.kafka.clone(), &t)),
                    Arc::new(herald_store::SystemClock),
                );
                let limiter = laned(&name, lane);
                spawn_named(&mut runners, config, &topics, &limiter, p, &shutdown)?;
                let relay = DeferredRelay::new(t, Arc::new(herald_store::SystemClock));
                let relay_name = laned(&format!("{name}.deferred"), lane);
                spawn_named(&mut runners, config, &topics, &relay_name, relay, &shutdown)?;
            }
            wait_all(runners, shutdown).await
        }
        Stage::FanOut => {
            let mut runners = tokio::task::JoinSet::new();
            let links = config.links.load()?;
            for lane in Lane::ALL {
                let p = FanOutProcessor::new(topics.in_lane(lane), links.clone());
                let name = laned(&name, lane);
                spawn_named(&mut runners, config, &topics, &name, p, &shutdown)?;
            }
            wait_all(runners, shutdown).await
        }
        Stage::StoreWriter => {
            let store = crate::store::open(config).await?;
            tokio::spawn(crate::store::retention_loop(
                Arc::clone(&store),
                Duration::from_secs(config.store.retention_every_s),
                shutdown.clone(),
            ));
            let p = StoreWriterProcessor::new(store, &topics);
            let inputs = inputs(&topics, &name)?;
            run_one(config, name, inputs, p, shutdown).await
        }
        Stage::Deliver => deliver(config, channels, shutdown).await,
    }
}

/// Drops from the enrich caches what `<p>.changes` says changed, until `shutdown`.
async fn forget_changes(
    kafka: herald_runtime::KafkaConfig,
    topic: String,
    lookups: Arc<Lookups>,
    shutdown: CancellationToken,
) {
    let followed = follow(
        &kafka,
        &topic,
        shutdown,
        |value| match herald_schemas::codec::decode::<Change>(value) {
            Ok(change) => lookups.forget(&change),
            Err(e) => warn!(error = %e, "an unreadable record on the changes topic; skipped"),
        },
    )
    .await;
    if let Err(e) = followed {
        warn!(error = %e, "cannot follow the changes topic: cached entries live their full ttl");
    }
}

/// The partitions of the limiter's input: its tenant quota is shared out between them, and its
/// changelog needs at least as many (each partition's state goes to the same-numbered one).
async fn limiter_partitions(config: &Config, topics: &Topics) -> anyhow::Result<u32> {
    use herald_runtime::topics::partition_count;
    let inputs = partition_count(&config.kafka, &topics.enriched()).await?;
    let states = partition_count(&config.kafka, &topics.rate_limit_state()).await?;
    anyhow::ensure!(
        inputs > 0 && states >= inputs,
        "{} has {states} partitions and {} has {inputs}: the rate limiter's changelog needs at \
         least as many partitions as its input (delete {} and run `herald topics`, or add \
         partitions to it)",
        topics.rate_limit_state(),
        topics.enriched(),
        topics.rate_limit_state()
    );
    Ok(u32::try_from(inputs)?)
}

/// One runner (and consumer group) per channel, so a failing provider never blocks the others.
async fn deliver(
    config: &Config,
    channels: &[Channel],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let store = crate::store::open(config).await?;
    let recording: Arc<dyn Connector> =
        Arc::new(RecordingProvider::open(&config.provider.recording_path)?);
    let channels = if channels.is_empty() {
        &Channel::ALL[..]
    } else {
        channels
    };
    let parts = registry::Parts {
        store: Arc::clone(&store),
        recording,
        clock: Arc::new(herald_store::SystemClock),
    };
    let mut runners = tokio::task::JoinSet::new();
    for &channel in channels {
        // One connector per channel: both lanes share its provider connections and limits.
        let connector = registry::connector(&config.provider, channel, &parts)
            .with_context(|| format!("the {} channel's provider", channel.as_str()))?;
        for lane in Lane::ALL {
            let p = DeliverProcessor::new(
                Arc::clone(&store),
                Arc::clone(&connector),
                topics.in_lane(lane),
                config.deliver.retry(channel),
                Arc::new(herald_store::SystemClock),
            );
            let name = laned(&deliver_runner(channel), lane);
            spawn_named(&mut runners, config, &topics, &name, p, &shutdown)?;
        }
    }
    wait_all(runners, shutdown).await
}

/// Starts runner `name` (its own consumer group, reading what [`runners`] lists for it) as a
/// task of `runners`.
fn spawn_named<P: Processor + 'static>(
    runners: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    config: &Config,
    topics: &Topics,
    name: &str,
    processor: P,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let inputs = inputs(topics, name)?;
    let (config, name, shutdown) = (config.clone(), name.to_owned(), shutdown.clone());
    runners.spawn(async move { run_one(&config, name, inputs, processor, shutdown).await });
    Ok(())
}

/// How long the other runners of a process get to stop after one failed.
const STOP_OTHERS: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for every runner; the first to fail stops the others, so the process exits and is
/// restarted whole. The others are asked to stop (they finish the record in hand) and waited
/// for, up to [`STOP_OTHERS`]: a runner dropped in the middle of a record could leave a delivery
/// between its provider call and its ledger entry, and the restart would send it again.
async fn wait_all(
    mut runners: tokio::task::JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut failed: Option<(anyhow::Error, tokio::time::Instant)> = None;
    loop {
        let next = match &failed {
            None => runners.join_next().await,
            Some((_, deadline)) => {
                match tokio::time::timeout_at(*deadline, runners.join_next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        warn!(
                            "runners still busy {STOP_OTHERS:?} after another failed; stopping them"
                        );
                        break;
                    }
                }
            }
        };
        let Some(result) = next else { break };
        if let Err(e) = result.context("runner panicked").and_then(|r| r)
            && failed.is_none()
        {
            shutdown.cancel();
            failed = Some((e, tokio::time::Instant::now() + STOP_OTHERS));
        }
    }
    failed.map_or(Ok(()), |(e, _)| Err(e))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn every_runner_reads_something_and_is_found_by_name() {
        let topics = Topics::new("t");
        let all = runners(&topics);
        // The broadcast expander and the store writer, then per lane enrich, rate-limit, its
        // relay, fan-out and a deliver runner per channel.
        assert_eq!(all.len(), 2 + 2 * (4 + Channel::ALL.len()));
        let mut names: Vec<&String> = all.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "one group per runner");
        for (name, reads) in &all {
            assert!(!reads.is_empty(), "{name}");
            assert_eq!(&inputs(&topics, name).expect("found by its name"), reads);
            // A bulk runner reads only the bulk lane's topics, a main one none of them.
            if name.ends_with(".bulk") {
                assert!(
                    reads.iter().all(|t| t.ends_with(".bulk")),
                    "{name}: {reads:?}"
                );
            } else if name != "store-writer" {
                assert!(
                    !reads.iter().any(|t| t.ends_with(".bulk")),
                    "{name}: {reads:?}"
                );
            }
        }
        assert!(inputs(&topics, "nothing").is_err());
    }

    #[tokio::test]
    async fn a_failing_runner_lets_the_others_finish_their_record() {
        let shutdown = CancellationToken::new();
        let finished = Arc::new(AtomicBool::new(false));
        let mut runners = tokio::task::JoinSet::new();
        runners.spawn(async { Err(anyhow::anyhow!("broker lost")) });
        let done = Arc::clone(&finished);
        let token = shutdown.clone();
        runners.spawn(async move {
            // In the middle of a record (a provider call): not interruptible.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            done.store(true, Ordering::SeqCst);
            token.cancelled().await;
            Ok(())
        });
        let result = wait_all(runners, shutdown.clone()).await;
        assert!(result.is_err_and(|e| e.to_string().contains("broker lost")));
        assert!(shutdown.is_cancelled());
        assert!(
            finished.load(Ordering::SeqCst),
            "the other runner finished its record"
        );
    }
}
