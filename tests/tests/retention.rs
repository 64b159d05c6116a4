//! The embedded store's retention pass while the platform serves: the store writer runs a pass
//! every second while notifications are sent, delivered, listed and watched. An expired month
//! file (a copy of the current one, named two years back) is dropped; nothing current is lost,
//! repeated or refused on the way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_proto::v1::{UnreadCountRequest, WatchInboxRequest};
use herald_tests::clients::QueryClient as Query;
use herald_tests::{Broker, Platform, eventually, inline_request, settled};

const TEST_LIMIT: Duration = Duration::from_secs(240);
/// Users the notifications go to (few per user, far below the per-recipient rate limit).
const USERS: usize = 40;
/// Notifications sent while the passes run.
const SENT: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_passes_every_second_drop_only_what_expired_while_serving() {
    tokio::time::timeout(TEST_LIMIT, retention_while_serving())
        .await
        .expect("test timed out")
        .unwrap();
}

/// The month files of the store at `url` (`sqlite://path` keeps them in `path.months/`).
fn months_dir(url: &str) -> PathBuf {
    PathBuf::from(format!("{}.months", url.trim_start_matches("sqlite://")))
}

/// The month files present, by name (`YYYY-MM.db`).
fn month_files(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect())
}

/// Every entry id in `user`'s inbox, with how often it is listed.
async fn inbox_ids(query: &mut Query, user: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut ids = BTreeMap::new();
    for id in herald_tests::audit::inbox_ids(query, "acme", user).await? {
        *ids.entry(id).or_insert(0) += 1;
    }
    Ok(ids)
}

async fn retention_while_serving() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?;
    platform.set_config("retention_every_s", "1")?;
    let platform = platform.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut query = platform.query_client("acme").await?;

    // The first delivery creates the current month's file; a copy named two years back is a
    // month past the 365-day archive tier.
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    let first = ingress
        .send_notification(inline_request("acme", "user-0", "news", "first"))
        .await?
        .into_inner()
        .notification_id;
    sent.insert(first.clone(), "user-0".into());
    let dir = months_dir(&platform.store_url);
    eventually(Duration::from_secs(60), "the first inbox entry", || {
        let (mut q, first) = (query.clone(), first.clone());
        async move { Ok(inbox_ids(&mut q, "user-0").await?.get(&first).map(|_| ())) }
    })
    .await?;
    let current = month_files(&dir)?
        .into_iter()
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("no month file in {}", dir.display()))?;
    let (year, month) = current
        .trim_end_matches(".db")
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("month file {current}"))?;
    let expired = dir.join(format!("{}-{month}.db", year.parse::<i32>()? - 2));
    std::fs::copy(dir.join(&current), &expired)?;

    // Traffic while the passes run: sends, pages, counts and a watch.
    let mut watch = query
        .watch_inbox(WatchInboxRequest {
            tenant: "acme".into(),
            recipient_user_id: "user-1".into(),
            resume_token: String::new(),
        })
        .await?
        .into_inner();
    for i in 0..SENT {
        let user = format!("user-{}", i % USERS);
        let id = ingress
            .send_notification(inline_request("acme", &user, "news", &format!("n{i}")))
            .await?
            .into_inner()
            .notification_id;
        sent.insert(id, user.clone());
        if i % 10 == 0 {
            inbox_ids(&mut query, &user).await?;
            query
                .unread_count(UnreadCountRequest {
                    tenant: "acme".into(),
                    recipient_user_id: user,
                })
                .await?;
        }
    }
    eventually(Duration::from_secs(30), "the expired month dropped", || {
        let gone = !expired.exists();
        async move { Ok(gone.then_some(())) }
    })
    .await?;

    // Every notification sent is listed exactly once in its user's inbox, the current month
    // file is still there, and the watch pushed user-1's.
    let users: BTreeSet<String> = sent.values().cloned().collect();
    let listed = settled(Duration::from_secs(90), "every inbox complete", || {
        let (mut q, users, sent) = (query.clone(), users.clone(), sent.clone());
        async move {
            let mut all = BTreeMap::new();
            for user in &users {
                all.extend(inbox_ids(&mut q, user).await?);
            }
            Ok(sent.keys().all(|id| all.contains_key(id)).then_some(all))
        }
    })
    .await?;
    for (id, user) in &sent {
        assert_eq!(listed.get(id), Some(&1), "{id} of {user} listed once");
    }
    assert_eq!(listed.len(), sent.len(), "nothing listed that was not sent");
    assert!(
        month_files(&dir)?.contains(&current),
        "the current month was dropped"
    );
    let to_watched: BTreeSet<&String> = sent
        .iter()
        .filter(|(_, u)| *u == "user-1")
        .map(|(id, _)| id)
        .collect();
    let mut pushed = BTreeSet::new();
    while pushed.len() < to_watched.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .map_err(|_| anyhow::anyhow!("watch stalled at {} entries", pushed.len()))??
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        if let Some(e) = m.entry {
            pushed.insert(e.notification_id);
        }
    }
    assert_eq!(pushed.iter().collect::<BTreeSet<_>>(), to_watched);

    let dropped = platform.log_lines_with(&["dropped an expired month"]);
    assert!(
        dropped.contains(&format!("{}-{month}", year.parse::<i32>()? - 2)),
        "{dropped}"
    );
    let failed = platform.log_lines_with(&["retention pass failed"]);
    assert!(failed.is_empty(), "{failed}");
    Ok(())
}
