//! The test harness: real infrastructure, started by the project's own scripts and binary.
//!
//! - [`Broker`]: a tansu broker (`scripts/tansu.sh run`) on a free port with its own data dir.
//! - [`Platform`]: `herald run` (every component as a process) against that broker, with a
//!   random topic prefix, free ports and a store in a temporary directory.
//!
//! Everything started is killed on drop; processes started here also exit when the test process
//! dies (their stdin closes). Every wait has a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The herald binary: `$HERALD_BIN`, or `herald` next to the test's target directory
/// (`make test` builds it first).
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
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --bin herald` first (make test does)",
            bin.display()
        );
    }
    Ok(bin)
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

/// Waits until `addr` accepts TCP connections, or `limit` passes.
pub async fn wait_for_port(addr: SocketAddr, limit: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
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
enum Group {
    /// Stay in the test's process group: a test runner that kills the group kills it too.
    Inherit,
    /// Lead a new group, so dropping the `Proc` kills its children as well.
    Own,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf, group: Group) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(&log)?;
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

/// A tansu broker on a free port, with its data in a temporary directory.
pub struct Broker {
    /// `127.0.0.1:port`.
    pub bootstrap: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self._proc.pid()
    }

    /// Starts tansu through `scripts/tansu.sh run` and waits until it listens.
    pub async fn start() -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut cmd = Command::new(repo_root().join("scripts/tansu.sh"));
        cmd.arg("run")
            .arg(dir.path().join("data"))
            .arg(port.to_string());
        let proc = Proc::spawn("tansu", cmd, dir.path().join("tansu.log"), Group::Inherit)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if let Err(e) = wait_for_port(addr, Duration::from_secs(60), "tansu").await {
            bail!("{e}\n{}", proc.log_tail());
        }
        Ok(Broker {
            bootstrap: addr.to_string(),
            _proc: proc,
            _dir: dir,
        })
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

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .context("the broker has exited")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)?;
        Ok(())
    }
}

/// Herald, all components under `herald run`, on its own topics, ports and store.
pub struct Platform {
    /// Ingress address.
    pub ingress: SocketAddr,
    /// Query service address.
    pub query: SocketAddr,
    /// `sqlite://…` store URL.
    pub store_url: String,
    /// The recording provider's file.
    pub recording: PathBuf,
    /// Topic prefix.
    pub prefix: String,
    supervisor: Option<Proc>,
    dir: tempfile::TempDir,
}

impl Platform {
    /// Writes a config for `broker` (plus `extra` TOML) without starting anything.
    pub fn configure(broker: &Broker, extra: &str) -> anyhow::Result<Platform> {
        let dir = tempfile::tempdir()?;
        let (ingress, query) = (free_port(), free_port());
        let prefix = random_name("t");
        let store = dir.path().join("store.db");
        let recording = dir.path().join("deliveries.db");
        let config = format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\n\
             delivery_mode = \"at-least-once\"\nrejoin_if_unassigned_ms = 30000\n{extra}\n\
             [ingress]\nlisten = \"127.0.0.1:{ingress}\"\n[query]\nlisten = \"127.0.0.1:{query}\"\n\
             [store]\nurl = \"sqlite://{}\"\n[provider]\nrecording_path = \"{}\"\n",
            broker.bootstrap,
            store.display(),
            recording.display()
        );
        std::fs::write(dir.path().join("herald.toml"), config)?;
        Ok(Platform {
            ingress: ([127, 0, 0, 1], ingress).into(),
            query: ([127, 0, 0, 1], query).into(),
            store_url: format!("sqlite://{}", store.display()),
            recording,
            prefix,
            supervisor: None,
            dir,
        })
    }

    /// Appends TOML sections to the config (before `start`).
    pub fn with_extra_config(self, toml: &str) -> anyhow::Result<Platform> {
        let path = self.config_path();
        let mut config = std::fs::read_to_string(&path)?;
        config.push_str(toml);
        std::fs::write(&path, config)?;
        Ok(self)
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("herald.toml")
    }

    /// Starts `herald run` and waits for the ingress and query service to listen.
    pub async fn start(mut self) -> anyhow::Result<Platform> {
        let mut cmd = Command::new(herald_bin()?);
        cmd.arg("--config").arg(self.config_path()).arg("run");
        self.supervisor = Some(Proc::spawn(
            "herald run",
            cmd,
            self.dir.path().join("herald.log"),
            Group::Own,
        )?);
        for (addr, what) in [(self.ingress, "ingress"), (self.query, "query service")] {
            if let Err(e) = wait_for_port(addr, Duration::from_secs(90), what).await {
                bail!("{e}\n{}", self.log_tail());
            }
        }
        Ok(self)
    }

    /// Starts one component (`herald <args>`) with this platform's config, instead of the
    /// whole `herald run`; waits for `wait_for` to listen if given. Killed on drop.
    pub async fn spawn_component(
        &self,
        args: &[&str],
        wait_for: Option<SocketAddr>,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(herald_bin()?);
        cmd.arg("--config").arg(self.config_path()).args(args);
        let log = self.dir.path().join(format!("{}.log", args.join("-")));
        let proc = Proc::spawn(&args.join(" "), cmd, log, Group::Own)?;
        if let Some(addr) = wait_for
            && let Err(e) = wait_for_port(addr, Duration::from_secs(90), &args.join(" ")).await
        {
            bail!("{e}\n{}", proc.log_tail());
        }
        Ok(proc)
    }

    /// The supervisor's log tail (it includes every component's output).
    pub fn log_tail(&self) -> String {
        self.supervisor
            .as_ref()
            .map(Proc::log_tail)
            .unwrap_or_default()
    }

    /// The lines of the components' log containing any of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> String {
        let Some(p) = self.supervisor.as_ref() else {
            return String::new();
        };
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        text.lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The component processes `herald run` has started right now, as (pid, arguments after
    /// `--config FILE`), read from /proc.
    pub fn components(&self) -> Vec<(i32, String)> {
        let Some(parent) = self.supervisor.as_ref().and_then(|p| p.child.id()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the last ')': state, ppid, ...
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1));
            if ppid != Some(&parent.to_string()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let start = args
                .iter()
                .position(|a| a == "--config")
                .map_or(1, |i| i + 2);
            found.push((pid, args.get(start..).unwrap_or_default().join(" ")));
        }
        found
    }

    /// SIGKILLs the running component whose arguments are `args` (e.g. `stage enrich`); returns
    /// whether one was found. The supervisor restarts it.
    pub fn kill_component(&self, args: &str) -> bool {
        match self.components().into_iter().find(|(_, a)| a == args) {
            Some((pid, _)) => nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok(),
            None => false,
        }
    }

    /// gRPC endpoint URL of an address.
    pub fn url(addr: SocketAddr) -> String {
        format!("http://{addr}")
    }
}

/// Gives `user-0` … `user-{n-1}` of `tenant` an e-mail address (`user-i@example.com`), so their
/// notifications also go to the recording provider.
pub async fn seed_email_contacts(
    store_url: &str,
    tenant: &str,
    users: usize,
) -> anyhow::Result<()> {
    let store = herald_store::open(store_url).await?;
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

/// Every record value in `topic`, read from the beginning to the current end of each partition.
pub fn read_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", random_name("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = std::collections::HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        if high > low {
            ends.insert(*p, high);
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        values.push(message.payload().unwrap_or_default().to_vec());
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
    }
    Ok(values)
}
