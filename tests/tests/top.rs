//! `herald top` driven in a real pseudo-terminal (tmux, 80×24) against a running platform: it
//! draws every stage with its lag, each channel with deliveries, says every component answers,
//! fits 80 columns, and quits on `q`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use herald_telemetry::metrics as m;
use herald_telemetry::scrape::sum;
use herald_tests::{Broker, Platform, eventually, herald_bin, inline_request, random_name};

const TEST_LIMIT: Duration = Duration::from_secs(240);

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
            .unwrap_or_default()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_draws_every_stage_in_80_columns_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: tmux is not installed (make test installs it with apt where it can)");
        return;
    }
    tokio::time::timeout(TEST_LIMIT, top())
        .await
        .expect("test timed out")
        .unwrap();
}

/// The lag column of `stage`'s row on `screen`.
fn lag(screen: &str, stage: &str) -> Option<f64> {
    let row = screen
        .lines()
        .map(|l| l.replace('│', " "))
        .find(|l| l.split_whitespace().next() == Some(stage))?;
    row.split_whitespace().nth(1)?.parse().ok()
}

async fn top() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    for i in 0..10 {
        let request = inline_request("acme", &format!("u{i}"), "general", "hi");
        ingress.send_notification(request).await?;
    }
    eventually(Duration::from_secs(90), "ten deliveries", || async {
        let deliver = platform.scrape("deliver").await?;
        let done = sum(&deliver, &format!("{}_count", m::DELIVERY_SECONDS), &[]);
        Ok((done >= 10.0).then_some(()))
    })
    .await?;

    let tmux = Tmux {
        socket: random_name("herald-top"),
    };
    let command = format!(
        "{} --config {} top --every 0.5",
        herald_bin()?.display(),
        platform.config_path().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ])?;
    // Everything was consumed: once the lag exporter has caught up, every stage's lag column
    // reads at most 3 — the commit marker ending the last transaction on each of the 3
    // partitions, as Kafka's own tools count it; a stage that consumed nothing shows ≥ 10.
    let stages = [
        "enrich",
        "rate-limit",
        "fan-out",
        "store-writer",
        "deliver.in_app",
    ];
    let screen = eventually(Duration::from_secs(60), "the view", || async {
        let screen = tmux.screen();
        let ready = screen.contains("every component answers")
            && screen.contains("in_app")
            && stages
                .iter()
                .all(|s| lag(&screen, s).is_some_and(|l| l <= 3.0));
        Ok(ready.then_some(screen))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nscreen:\n{}", tmux.screen()))?;
    assert!(screen.contains("q quits"), "the header fits:\n{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80));

    tmux.run(&["send-keys", "-t", "top", "q"])?;
    eventually(Duration::from_secs(10), "top to quit", || async {
        let gone = tmux.run(&["has-session", "-t", "top"]).is_err();
        Ok(gone.then_some(()))
    })
    .await?;
    Ok(())
}
