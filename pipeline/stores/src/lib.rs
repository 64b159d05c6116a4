//! The store registry: [`open`] turns a store URL into a [`Store`], so that what runs Herald
//! (the binary, the tests, the bench) names no backend.
//!
//! | URL | Backend |
//! |---|---|
//! | `sqlite://<path>` | `herald-store-sqlite`: embedded files, created if missing |
//! | `scylla://host:port[,host:port...][?...]` | `herald-store-scylla`: the schema must exist (`herald migrate`) |

use std::path::Path;
use std::sync::Arc;

use herald_store::{Store, StoreError};
use herald_store_scylla::ScyllaStore;
use herald_store_sqlite::SqliteStore;

/// Opens the store named by `url`; an unknown scheme or a malformed URL is
/// [`StoreError::BadUrl`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let bad = |reason| StoreError::BadUrl {
        url: url.into(),
        reason,
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(bad("sqlite:// needs a file path"));
        }
        return Ok(Arc::new(SqliteStore::open(Path::new(path)).await?));
    }
    if url.starts_with("scylla://") {
        return Ok(Arc::new(ScyllaStore::open_url(url).await?));
    }
    Err(bad(
        "unknown scheme; expected sqlite://<path> or scylla://host:port[,host:port...]",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn refuses_unknown_and_incomplete_urls() {
        for url in [
            "mysql://x",
            "sqlite://",
            "scylla://",
            "scylla://host-without-port",
            "",
        ] {
            assert!(
                matches!(open(url).await, Err(StoreError::BadUrl { .. })),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn opens_an_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        let store = open(&url).await.unwrap();
        assert_eq!(store.outbox_owners().await.unwrap(), Vec::<String>::new());
    }
}
