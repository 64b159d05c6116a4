//! The Kafka-protocol brokers the tests run against: the two local ones that this machine can run
//! (started by the project's scripts; see docs/BROKERS.md), or a real cluster named by
//! `HERALD_TEST_KAFKA`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::proc::{Group, Proc};
use crate::{free_port, repo_root, wait_for_port};

/// A local broker the project's scripts can install and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// tansu 0.6.0 on SQLite (`scripts/tansu.sh`): durable, no transactions.
    Tansu,
    /// noida-db 0.2.3 (`scripts/noida.sh`): Kafka transactions; keeps records in memory and
    /// saves them about once a second, so a SIGKILL loses the last second.
    NoidaDb,
}

impl BrokerKind {
    /// The local broker tests use unless they need a particular one: `HERALD_TEST_BROKER`
    /// (`tansu` or `noida-db`), else `HERALD_BROKER` (as for `make run`), else noida-db.
    pub fn default_local() -> anyhow::Result<BrokerKind> {
        let chosen =
            std::env::var("HERALD_TEST_BROKER").or_else(|_| std::env::var("HERALD_BROKER"));
        match chosen.as_deref() {
            Err(_) | Ok("") => Ok(BrokerKind::NoidaDb),
            Ok("tansu") => Ok(BrokerKind::Tansu),
            Ok("noida-db") => Ok(BrokerKind::NoidaDb),
            Ok(other) => bail!("HERALD_TEST_BROKER={other:?}: expected tansu or noida-db"),
        }
    }

    /// Whether it runs Kafka transactions (and so Herald's exactly-once mode).
    pub fn transactions(self) -> bool {
        matches!(self, BrokerKind::NoidaDb)
    }

    /// Its name in logs and test output.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "tansu",
            BrokerKind::NoidaDb => "noida-db",
        }
    }

    fn script(self) -> PathBuf {
        repo_root().join(match self {
            BrokerKind::Tansu => "scripts/tansu.sh",
            BrokerKind::NoidaDb => "scripts/noida.sh",
        })
    }
}

/// A broker for one test: a local one on a free port with its data in a temporary directory
/// (killed on drop), or the external cluster at `HERALD_TEST_KAFKA`.
pub struct Broker {
    /// `host:port` of the bootstrap server(s).
    pub bootstrap: String,
    /// `None` for the external cluster.
    kind: Option<BrokerKind>,
    proc: Option<Proc>,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// The default local broker ([`BrokerKind::default_local`]).
    pub async fn start() -> anyhow::Result<Broker> {
        Broker::start_kind(BrokerKind::default_local()?).await
    }

    /// A broker with Kafka transactions: the cluster at `HERALD_TEST_KAFKA` when it is set,
    /// otherwise a local noida-db.
    pub async fn transactional() -> anyhow::Result<Broker> {
        match std::env::var("HERALD_TEST_KAFKA") {
            Ok(bootstrap) if !bootstrap.is_empty() => Ok(Broker {
                bootstrap,
                kind: None,
                proc: None,
                port: 0,
                dir: None,
            }),
            _ => Broker::start_kind(BrokerKind::NoidaDb).await,
        }
    }

    /// A local broker of `kind`, started through its script.
    pub async fn start_kind(kind: BrokerKind) -> anyhow::Result<Broker> {
        let dir = crate::test_dir()?;
        let port = free_port();
        let mut broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            kind: Some(kind),
            proc: None,
            port,
            dir: Some(dir),
        };
        broker.launch().await?;
        Ok(broker)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let (Some(kind), Some(dir)) = (self.kind, self.dir.as_ref()) else {
            bail!("an external cluster is not started by the tests");
        };
        let mut cmd = Command::new(kind.script());
        cmd.arg("run")
            .arg(dir.path().join("data"))
            .arg(self.port.to_string());
        let log = dir.path().join(format!("{}.log", kind.name()));
        // Appending: a restarted broker's log follows the first one's.
        let proc = Proc::spawn_appending(kind.name(), cmd, log, Group::Inherit)?;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        if let Err(e) = wait_for_port(addr, Duration::from_secs(60), kind.name()).await {
            bail!("{e}\n{}", proc.log_tail());
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Which local broker this is; `None` for the external cluster.
    pub fn kind(&self) -> Option<BrokerKind> {
        self.kind
    }

    /// Whether it runs Kafka transactions (an external cluster is assumed to).
    pub fn transactions(&self) -> bool {
        self.kind.is_none_or(BrokerKind::transactions)
    }

    /// A name for test output.
    pub fn name(&self) -> String {
        match self.kind {
            Some(kind) => kind.name().to_owned(),
            None => format!("kafka at {}", self.bootstrap),
        }
    }

    /// The broker's process id, while a local one runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// The broker's log (local brokers).
    pub fn log_tail(&self) -> String {
        self.proc.as_ref().map(Proc::log_tail).unwrap_or_default()
    }

    /// Freezes the broker (SIGSTOP): an outage in which it holds its port and answers nothing.
    /// (Killing it instead would free the port for any concurrently starting test to take.)
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    /// SIGKILLs the broker (a crash: nothing is flushed or saved).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut proc = self.proc.take().context("the broker is not running")?;
        proc.kill().await;
        Ok(())
    }

    /// Starts the broker again on the same data directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.proc.is_none(), "the broker is still running");
        self.launch().await
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .context("the broker is not a local process that runs")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)?;
        Ok(())
    }
}
