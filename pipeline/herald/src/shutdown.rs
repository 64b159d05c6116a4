//! The shutdown token every component runs under: cancelled by SIGINT or SIGTERM, and, for
//! processes started by a supervisor or a test, when standard input closes (the parent died).

use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Set by the supervisor and the test harness on the processes they start.
pub const EXIT_WITH_STDIN: &str = "HERALD_EXIT_WITH_STDIN";

/// How long a graceful stop may take (flushing outputs, committing offsets) before the process
/// exits anyway; against a dead broker librdkafka would otherwise wait for its own timeouts.
/// Exiting early is safe: uncommitted input is replayed and the stages are idempotent.
const GRACEFUL_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// A token cancelled on SIGINT/SIGTERM (and stdin EOF when [`EXIT_WITH_STDIN`] is set).
pub fn token() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT: shutting down"),
            _ = term.recv() => info!("SIGTERM: shutting down"),
        }
        t.cancel();
    });
    if std::env::var_os(EXIT_WITH_STDIN).is_some() {
        let t = token.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            info!("parent went away (stdin closed): shutting down");
            t.cancel();
        });
    }
    let t = token.clone();
    tokio::spawn(async move {
        t.cancelled().await;
        tokio::time::sleep(GRACEFUL_STOP_LIMIT).await;
        tracing::warn!("graceful stop took longer than {GRACEFUL_STOP_LIMIT:?}; exiting now");
        std::process::exit(1);
    });
    Ok(token)
}
