//! Section 4: ListInbox through the query service against the same store read made directly,
//! same rows, same concurrency.

use std::sync::Arc;
use std::time::Duration;

use herald_proto::v1::ListInboxRequest;
use herald_proto::v1::query_service_client::QueryServiceClient;
use herald_store::{InboxEntryRecord, InboxQuery, Store};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::stats::{Run, closed_loop};
use super::{LEVEL_SECONDS, peak_rss_mib};
use crate::{Broker, Platform};

const USERS: u64 = 200;
const ENTRIES: u64 = 100;
const PAGE: u32 = 20;
const CLIENTS: usize = 16;

/// Both runs and the query service's peak RSS.
pub struct QueryResults {
    /// Through gRPC.
    pub grpc: Run,
    /// Straight from the store.
    pub raw: Run,
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
        })
    }
}

fn query(i: u64) -> InboxQuery {
    InboxQuery::first_page("bench", &format!("user-{}", i % USERS), PAGE as usize)
}

/// Fills a store, starts the query service on it, and measures both read paths.
pub async fn run(broker: &Broker) -> anyhow::Result<QueryResults> {
    let platform = Platform::configure(broker, "")?;
    let store: Arc<dyn Store> = herald_store::open(&platform.store_url).await?;
    eprintln!("bench: filling {} inbox rows…", USERS * ENTRIES);
    // Within the last hour: the current month's file, as for a live inbox.
    let base = herald_store::Clock::now_ms(&herald_store::SystemClock) - 3_600_000;
    for u in 0..USERS {
        for e in 0..ENTRIES {
            store
                .upsert_inbox_entry(&InboxEntryRecord {
                    tenant: "bench".into(),
                    recipient_user_id: format!("user-{u}"),
                    notification_id: format!("n-{u}-{e}"),
                    category: "orders".into(),
                    title: format!("Order {e} shipped"),
                    body: "Your order is on its way and should arrive within two working days."
                        .into(),
                    action_url: None,
                    created_at_ms: base + e as i64,
                    delivered_at_ms: base + e as i64,
                    read_at_ms: None,
                })
                .await?;
        }
    }
    let proc = platform
        .spawn_component(&["query"], Some(platform.query))
        .await?;
    let channel = Channel::from_shared(Platform::url(platform.query))?
        .connect()
        .await?;
    let seconds = Duration::from_secs(LEVEL_SECONDS);
    eprintln!("bench: ListInbox, {CLIENTS} clients…");
    let grpc = closed_loop(CLIENTS, seconds, move |i| {
        let mut client = QueryServiceClient::new(channel.clone());
        async move {
            let q = query(i);
            let r = client
                .list_inbox(ListInboxRequest {
                    tenant: q.tenant,
                    recipient_user_id: q.recipient_user_id,
                    page_size: PAGE,
                    page_token: String::new(),
                    ..Default::default()
                })
                .await;
            matches!(r, Ok(r) if r.get_ref().entries.len() == PAGE as usize)
        }
    })
    .await;
    let rss_mib = proc.pid().and_then(|p| peak_rss_mib(p as i32));
    drop(proc);
    eprintln!("bench: raw store reads, {CLIENTS} clients…");
    let raw = closed_loop(CLIENTS, seconds, move |i| {
        let store = Arc::clone(&store);
        async move {
            matches!(store.list_inbox(&query(i)).await, Ok(p) if p.entries.len() == PAGE as usize)
        }
    })
    .await;
    Ok(QueryResults { grpc, raw, rss_mib })
}
