//! Opening the configured store, its schema migrations, and the retention pass.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

/// Opens the store named by `[store] url`: `sqlite://…` (embedded) or `scylla://…`.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = &config.store.url;
    let hint = if url.starts_with("scylla://") {
        " (has `herald migrate` run?)"
    } else {
        ""
    };
    herald_stores::open(url)
        .await
        .with_context(|| format!("opening {url}{hint}"))
}

/// Applies the store's schema and says what was done. The embedded store applies its own
/// schema whenever it opens; ScyllaDB gets the versioned CQL files of `herald-store-scylla`.
pub async fn migrate(config: &Config) -> anyhow::Result<String> {
    let url = &config.store.url;
    if url.starts_with("scylla://") {
        let cfg = herald_store_scylla::ScyllaConfig::from_url(url)?;
        let session = herald_store_scylla::connect_session(&cfg)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let report = herald_store_scylla::migrate(&session, &cfg)
            .await
            .context("applying migrations")?;
        return Ok(format!("{url}: {report}"));
    }
    open(config).await?;
    Ok(format!(
        "{url}: the embedded store applies its schema when it opens; nothing else to do"
    ))
}

/// Runs a retention pass now and then every `every` until `shutdown` (a no-op on stores that
/// expire rows themselves).
pub async fn retention_loop(store: Arc<dyn Store>, every: Duration, shutdown: CancellationToken) {
    let every = every.max(Duration::from_secs(1));
    loop {
        match store.enforce_retention().await {
            Ok(report) if !report.dropped.is_empty() => {
                info!(dropped = ?report.dropped, "retention pass");
            }
            Ok(_) => {}
            Err(err) => warn!(%err, every_s = every.as_secs(), "retention pass failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
