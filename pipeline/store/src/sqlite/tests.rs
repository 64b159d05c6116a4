#![allow(clippy::unwrap_used)]

use super::*;
use crate::conformance;

#[tokio::test]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("herald.db"))
        .await
        .unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/herald.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        conformance::notifications_and_timeline(&store).await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let (_, timeline) = store.get_notification("t1", "n1").await.unwrap().unwrap();
    assert_eq!(timeline.len(), 2);
}

#[tokio::test]
async fn open_rejects_unknown_urls() {
    assert!(matches!(
        crate::open("mysql://x").await,
        Err(StoreError::BadUrl { .. })
    ));
    assert!(matches!(
        crate::open("sqlite://").await,
        Err(StoreError::BadUrl { .. })
    ));
}
