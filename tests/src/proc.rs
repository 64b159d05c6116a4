//! Processes started by tests: output to a log file, killed on drop (with their children when
//! they lead their own process group), and told to exit when the test dies (their stdin closes).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// A process started by a test, killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Whether the process leads its own process group (killed whole on drop).
    group: bool,
}

/// How a [`Proc`] is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Stay in the test's process group: a test runner that kills the group kills it too.
    Inherit,
    /// Lead a new group, so dropping the `Proc` kills its children as well.
    Own,
}

impl Proc {
    /// Starts `cmd` with its output in `log` (truncated first).
    pub fn spawn(name: &str, cmd: Command, log: PathBuf, group: Group) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(&log)?;
        Proc::spawn_with(name, cmd, log, file, group)
    }

    /// Starts `cmd` with its output appended to `log`.
    pub fn spawn_appending(
        name: &str,
        cmd: Command,
        log: PathBuf,
        group: Group,
    ) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        Proc::spawn_with(name, cmd, log, file, group)
    }

    fn spawn_with(
        name: &str,
        mut cmd: Command,
        log: PathBuf,
        file: std::fs::File,
        group: Group,
    ) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file)
            .env("HERALD_EXIT_WITH_STDIN", "1")
            .kill_on_drop(true);
        if group == Group::Own {
            cmd.process_group(0);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.into(),
            child,
            log,
            group: group == Group::Own,
        })
    }

    /// The last lines of the process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    /// Waits until the process's log contains `needle` (at most `limit`); on time-out the error
    /// carries the log's tail.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while !std::fs::read_to_string(&self.log).is_ok_and(|text| text.contains(needle)) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in {} within {limit:?}\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Its log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|_| self.group)
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
