//! Section 4: ListInbox through the query service against the same store read made directly,
//! same rows, same concurrency; both idle and while a writer adds inbox entries (creation load:
//! reads must stay fast while sends surge).

use std::sync::Arc;
use std::time::Duration;

use herald_proto::v1::ListInboxRequest;
use herald_store::{InboxEntryRecord, InboxQuery, Store};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::stats::{Run, closed_loop};
use super::{LEVEL_SECONDS, peak_rss_mib};
use crate::clients::{QueryClient, query_on};
use crate::{Broker, Platform};

const USERS: u64 = 200;
const ENTRIES: u64 = 100;
const PAGE: u32 = 20;
const CLIENTS: usize = 16;
/// Inbox entries written per second during the "under load" runs.
const WRITES_PER_SECOND: u64 = 1_000;

/// Both read paths, idle and under writes, and the query service's peak RSS.
pub struct QueryResults {
    /// Through gRPC.
    pub grpc: Run,
    /// Straight from the store.
    pub raw: Run,
    /// Through gRPC while entries are written.
    pub grpc_loaded: Run,
    /// Straight from the store while entries are written.
    pub raw_loaded: Run,
    /// Entries actually written per second during the loaded runs.
    pub writes_per_second: f64,
    /// Peak RSS of the query process.
    pub rss_mib: Option<f64>,
}

impl QueryResults {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "rows": USERS * ENTRIES, "page_size": PAGE, "clients": CLIENTS,
            "list_inbox": self.grpc.json(), "raw_store": self.raw.json(),
            "qps_ratio": self.grpc.achieved / self.raw.achieved,
            "p99_ratio": self.grpc.quantile_ms(0.99) / self.raw.quantile_ms(0.99),
            "under_writes": {
                "writes_per_second": self.writes_per_second,
                "list_inbox": self.grpc_loaded.json(), "raw_store": self.raw_loaded.json(),
                "qps_ratio": self.grpc_loaded.achieved / self.raw_loaded.achieved,
                "qps_vs_idle": self.grpc_loaded.achieved / self.grpc.achieved,
            },
        })
    }
}

fn query(i: u64) -> InboxQuery {
    InboxQuery::first_page("bench", &format!("user-{}", i % USERS), PAGE as usize)
}

fn entry(user: u64, n: u64, at_ms: i64) -> InboxEntryRecord {
    InboxEntryRecord {
        tenant: "bench".into(),
        recipient_user_id: format!("user-{user}"),
        notification_id: format!("n-{user}-{n}"),
        category: "orders".into(),
        title: format!("Order {n} shipped"),
        body: "Your order is on its way and should arrive within two working days.".into(),
        action_url: None,
        created_at_ms: at_ms,
        delivered_at_ms: at_ms,
        read_at_ms: None,
    }
}

/// Writes new inbox entries at [`WRITES_PER_SECOND`] (through its own store handle, as the
/// deliver stage would) until `stop`; returns how many it wrote.
async fn write_load(store: Arc<dyn Store>, stop: tokio_util::sync::CancellationToken) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut written = 0_u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        for _ in 0..WRITES_PER_SECOND / 100 {
            let now = herald_store::Clock::now_ms(&herald_store::SystemClock);
            let e = entry(written % USERS, ENTRIES + written, now);
            if store.upsert_inbox_entry(&e).await.is_ok() {
                written += 1;
            }
        }
    }
    written
}

/// ListInbox through gRPC (`client` calls as tenant `bench`), then the same reads straight
/// from the store.
async fn measure(client: &QueryClient, store: &Arc<dyn Store>, label: &str) -> (Run, Run) {
    let seconds = Duration::from_secs(LEVEL_SECONDS);
    eprintln!("bench: ListInbox, {CLIENTS} clients{label}…");
    let client = client.clone();
    let grpc = closed_loop(CLIENTS, seconds, move |i| {
        let mut client = client.clone();
        async move {
            let q = query(i);
            let r = client
                .list_inbox(ListInboxRequest {
                    tenant: q.tenant,
                    recipient_user_id: q.recipient_user_id,
                    page_size: PAGE,
                    ..Default::default()
                })
                .await;
            matches!(r, Ok(r) if r.get_ref().entries.len() == PAGE as usize)
        }
    })
    .await;
    eprintln!("bench: raw store reads, {CLIENTS} clients{label}…");
    let store = Arc::clone(store);
    let raw = closed_loop(CLIENTS, seconds, move |i| {
        let store = Arc::clone(&store);
        async move {
            matches!(store.list_inbox(&query(i)).await, Ok(p) if p.entries.len() == PAGE as usize)
        }
    })
    .await;
    (grpc, raw)
}

/// Fills a store, starts the query service on it, and measures both read paths, idle and while
/// entries are written.
pub async fn run(broker: &Broker) -> anyhow::Result<QueryResults> {
    let platform = Platform::configure(broker, "")?;
    let store: Arc<dyn Store> = herald_stores::open(&platform.store_url).await?;
    eprintln!("bench: filling {} inbox rows…", USERS * ENTRIES);
    // Within the last hour: the current month's file, as for a live inbox.
    let base = herald_store::Clock::now_ms(&herald_store::SystemClock) - 3_600_000;
    for u in 0..USERS {
        for e in 0..ENTRIES {
            store
                .upsert_inbox_entry(&entry(u, e, base + e as i64))
                .await?;
        }
    }
    let proc = platform
        .spawn_component(&["query"], Some(platform.query))
        .await?;
    let channel = Channel::from_shared(Platform::url(platform.query))?
        .connect()
        .await?;
    let client = query_on(channel, &platform.api_key("bench").await?)?;
    let (grpc, raw) = measure(&client, &store, "").await;

    let writer_store = herald_stores::open(&platform.store_url).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    let writer = tokio::spawn(write_load(writer_store, stop.clone()));
    let label = format!(" while writing {WRITES_PER_SECOND} entries/s");
    let (grpc_loaded, raw_loaded) = measure(&client, &store, &label).await;
    stop.cancel();
    let written = writer.await?;
    let writes_per_second = written as f64 / started.elapsed().as_secs_f64();

    let rss_mib = proc.pid().and_then(|p| peak_rss_mib(p as i32));
    drop(proc);
    Ok(QueryResults {
        grpc,
        raw,
        grpc_loaded,
        raw_loaded,
        writes_per_second,
        rss_mib,
    })
}
