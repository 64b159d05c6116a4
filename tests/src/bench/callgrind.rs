//! Instructions per request, counted by valgrind's callgrind: stable on a shared machine where
//! times are not, so a change's cost shows without noise. The ingress runs under callgrind
//! twice, taking [`FEW`] and then [`MANY`] requests from a `herald-load` process; the difference
//! of the two instruction totals divided by the difference of the requests leaves out start-up
//! and shutdown. Skipped (and said so) when valgrind is not installed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::load::count;
use crate::{Platform, herald_bin, wait_for_port};

/// Requests in the short run.
const FEW: u64 = 100;
/// Requests in the long run.
const MANY: u64 = 1_100;
/// Requests in flight from the generator.
const IN_FLIGHT: usize = 16;

/// Instructions per `SendNotification` in the ingress, or `None` without valgrind.
pub async fn ingress_per_request(platform: &Platform) -> anyhow::Result<Option<f64>> {
    if !super::load::which("valgrind") {
        return Ok(None);
    }
    let few = ingress_total(platform, FEW).await?;
    let many = ingress_total(platform, MANY).await?;
    Ok(Some((many - few) as f64 / (MANY - FEW) as f64))
}

/// The ingress's instruction total over its whole life, having served `requests`.
async fn ingress_total(platform: &Platform, requests: u64) -> anyhow::Result<u64> {
    let out = platform
        .config_path()
        .with_file_name(format!("callgrind.ingress.{requests}"));
    let mut ingress = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(herald_bin()?)
        .arg("--config")
        .arg(platform.config_path())
        .arg("ingress")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the ingress under valgrind")?;
    wait_for_port(
        platform.ingress,
        Duration::from_secs(180),
        "ingress under callgrind",
    )
    .await?;
    let key = platform.api_key("bench").await?;
    let served = count(&Platform::url(platform.ingress), &key, IN_FLIGHT, requests).await?;
    if served != requests {
        bail!("the ingress under callgrind answered {served} of {requests} requests");
    }
    let pid = ingress.id().context("the ingress exited early")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    tokio::time::timeout(Duration::from_secs(180), ingress.wait())
        .await
        .context("the ingress under callgrind did not stop")??;
    instructions(&out)
}

/// The `summary:` (or `totals:`) line of a callgrind output file: instructions executed.
fn instructions(file: &Path) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", file.display()))
}
