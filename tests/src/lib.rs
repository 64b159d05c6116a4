//! The test harness: real infrastructure, started by the project's own scripts and binary.
//!
//! - [`broker`]: a local broker (tansu or noida-db, through `scripts/`) on a free port with its
//!   own data dir, or the real cluster at `HERALD_TEST_KAFKA`.
//! - [`platform`]: `herald run` (every component as a process) against that broker, with a
//!   random topic prefix, free ports and a store in a temporary directory.
//! - [`clients`]: gRPC clients calling with a tenant's API key.
//! - [`proc`]: the processes tests start; [`topic`]: reading what a topic holds.
//!
//! Everything started is killed on drop; processes started here also exit when the test process
//! dies (their stdin closes). Every wait has a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod audit;
pub mod bench;
pub mod broker;
pub mod chaos;
pub mod clients;
pub mod https;
pub mod otlp;
pub mod platform;
pub mod proc;
pub mod receiver;
pub mod sms;
pub mod topic;

pub use broker::{Broker, BrokerKind};
pub use platform::Platform;
pub use proc::Proc;
pub use topic::read_topic;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use tokio::time::{Instant, sleep};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The herald binary: `$HERALD_BIN`, or `herald` next to the test's target directory
/// (`make test` builds it first). A binary older than any of Herald's sources is refused, so a
/// test never runs yesterday's build.
pub fn herald_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("HERALD_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let bin = dir.join("herald");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "{} is missing: run `cargo build --bin herald` first (make test does)",
                bin.display()
            )
        })?;
    if let Some(newer) = newest_source_after(&bin, built) {
        bail!(
            "{} is older than {}: run `cargo build --bin herald` first (make test does)",
            bin.display(),
            newer.display()
        );
    }
    Ok(bin)
}

/// A source file of the herald binary changed after `time`, if any: the files cargo's dep-info
/// (`herald.d`) lists for `bin`, and the `.proto` files its build script reads; without the
/// dep-info, every source of the crates it is built from.
fn newest_source_after(bin: &Path, time: std::time::SystemTime) -> Option<PathBuf> {
    fn changed(path: &Path, time: std::time::SystemTime) -> bool {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > time)
    }
    fn walk(dir: &Path, time: std::time::SystemTime, exts: &[&str]) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target"
                    && !name.to_string_lossy().starts_with('.')
                    && let Some(found) = walk(&path, time, exts)
                {
                    return Some(found);
                }
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
                && changed(&path, time)
            {
                return Some(path);
            }
        }
        None
    }
    let root = repo_root();
    if let Ok(deps) = std::fs::read_to_string(bin.with_extension("d")) {
        let first = deps.lines().next().unwrap_or_default();
        let listed = first.split_once(": ").map(|(_, l)| l).unwrap_or_default();
        // Paths are separated by spaces; a space inside a path is written `\ `.
        let listed = listed.replace("\\ ", "\u{0}");
        return listed
            .split(' ')
            .map(|p| PathBuf::from(p.replace('\u{0}', " ")))
            .find(|p| changed(p, time))
            .or_else(|| walk(&root.join("proto"), time, &["proto"]));
    }
    ["pipeline", "connectors", "query-grpc", "schemas", "proto"]
        .iter()
        .find_map(|d| walk(&root.join(d), time, &["rs", "proto", "avsc", "sql", "cql"]))
}

/// A temporary directory for a test's broker or platform, removed when dropped unless
/// `HERALD_TEST_KEEP` is set (then its path is printed, for reading logs after a failure).
pub fn test_dir() -> anyhow::Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new().prefix("herald-test.").tempdir()?;
    if std::env::var_os("HERALD_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A short random name, for topic prefixes and groups.
pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:012x}")
}

/// Waits until `addr` accepts TCP connections, or `limit` passes. A connection to itself does not
/// count: the test ports come from the ephemeral range, and a connect to a port nobody listens on
/// yet can be given that same port as its source and "succeed" (a TCP simultaneous open).
pub async fn wait_for_port(addr: SocketAddr, limit: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await
            && stream.local_addr().ok() != Some(addr)
        {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not listen on {addr} within {limit:?}")
}

/// Polls `probe` every 200 ms until it returns `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// How long a waited-for result must stay the same before a test counts it (see [`settled`]).
pub const QUIET: Duration = Duration::from_secs(3);

/// Like [`eventually`], but once `probe` returns `Some`, keeps probing until its answer has not
/// changed for [`QUIET`], and returns that: a test waiting for "at least n" then counts after a
/// late extra one could have arrived, never at once.
pub async fn settled<T, F, Fut>(limit: Duration, what: &str, probe: F) -> anyhow::Result<T>
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    settled_for(limit, QUIET, what, probe).await
}

/// [`settled`], with the answer unchanged for `quiet` instead of [`QUIET`].
pub async fn settled_for<T, F, Fut>(
    limit: Duration,
    quiet: Duration,
    what: &str,
    mut probe: F,
) -> anyhow::Result<T>
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let mut first = eventually(limit, what, &mut probe).await?;
    let deadline = Instant::now() + limit;
    let mut since = Instant::now();
    loop {
        sleep(Duration::from_millis(500)).await;
        match probe().await? {
            Some(now) if now == first => {
                if since.elapsed() >= quiet {
                    return Ok(first);
                }
            }
            Some(now) => {
                first = now;
                since = Instant::now();
            }
            None => bail!("{what}: the condition held, then stopped holding"),
        }
        if Instant::now() >= deadline {
            bail!("{what} did not settle within {limit:?}");
        }
    }
}

/// Gives `user-0` … `user-{n-1}` of `tenant` an e-mail address (`user-i@example.com`), so their
/// notifications also go to the recording provider.
pub async fn seed_email_contacts(
    store_url: &str,
    tenant: &str,
    users: usize,
) -> anyhow::Result<()> {
    let store = herald_stores::open(store_url).await?;
    for u in 0..users {
        let email = herald_store::Contact {
            channel: herald_schemas::Channel::Email,
            address: format!("user-{u}@example.com"),
        };
        store
            .put_contact(tenant, &format!("user-{u}"), &email)
            .await?;
    }
    Ok(())
}

/// A `SendNotification` request with inline content (title, and body "body of <title>") and the
/// default channels.
pub fn inline_request(
    tenant: &str,
    user: &str,
    category: &str,
    title: &str,
) -> herald_proto::v1::SendNotificationRequest {
    use herald_proto::v1::InlineContent;
    use herald_proto::v1::send_notification_request::Content;
    herald_proto::v1::SendNotificationRequest {
        tenant: tenant.into(),
        recipient_user_id: user.into(),
        category: category.into(),
        content: Some(Content::Inline(InlineContent {
            title: title.into(),
            body: format!("body of {title}"),
            action_url: String::new(),
        })),
        ..Default::default()
    }
}
