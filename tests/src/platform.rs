//! A whole Herald platform for one test: `herald run` (every component as its own process)
//! against a [`Broker`], with a random topic prefix, free ports and a store in a temporary
//! directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use tokio::process::Command;

use crate::broker::{Broker, BrokerKind};
use crate::proc::{Group, Proc};
use crate::{free_port, herald_bin, random_name, wait_for_port};

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
    /// The click redirect's address (served by the query process).
    pub links: SocketAddr,
    /// Each component's metrics endpoint, by the component's name (`ingress`, `enrich`, …).
    pub metrics: std::collections::BTreeMap<&'static str, SocketAddr>,
    supervisor: Option<Proc>,
    dir: tempfile::TempDir,
    /// API keys made for tenants so far ([`Platform::api_key`]).
    pub(crate) keys: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Platform {
    /// Writes a config for `broker` (plus `extra` TOML in the `[kafka]` section) without starting
    /// anything. The stages run exactly-once on a broker with transactions, at-least-once
    /// otherwise; on tansu the rejoin watchdog is on (its group coordinator can wedge).
    pub fn configure(broker: &Broker, extra: &str) -> anyhow::Result<Platform> {
        Platform::configure_mode(broker, broker.transactions(), extra)
    }

    /// As [`Platform::configure`], with the delivery mode chosen: exactly-once when
    /// `exactly_once` (the broker must have transactions), else at-least-once.
    pub fn configure_mode(
        broker: &Broker,
        exactly_once: bool,
        extra: &str,
    ) -> anyhow::Result<Platform> {
        anyhow::ensure!(
            !exactly_once || broker.transactions(),
            "{} has no transactions",
            broker.name()
        );
        let dir = crate::test_dir()?;
        let (ingress, query) = (free_port(), free_port());
        let prefix = random_name("t");
        let store = dir.path().join("store.db");
        let recording = dir.path().join("deliveries.db");
        let mode = if exactly_once {
            "delivery_mode = \"exactly-once\"\n"
        } else {
            "delivery_mode = \"at-least-once\"\n"
        };
        let watchdog = match broker.kind() {
            // Its coordinator can wedge a group; it cannot take a producer epoch librdkafka
            // raised by itself while it was down (docs/BROKERS.md).
            Some(BrokerKind::Tansu) => "rejoin_if_unassigned_ms = 30000\nidempotence = false\n",
            // It saves about once a second: hold acknowledged records a little longer. It
            // answers empty fetches at once: idle stages pause instead of spinning.
            Some(BrokerKind::NoidaDb) => "unsaved_ack_window_ms = 3000\nidle_pause_ms = 100\n",
            None => "",
        }
        .lines()
        // A setting the caller makes itself replaces the broker's.
        .filter(|line| !extra.lines().any(|l| toml_key(l) == toml_key(line)))
        .map(|line| format!("{line}\n"))
        .collect::<String>();
        let links = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics: std::collections::BTreeMap<&'static str, SocketAddr> =
            herald_telemetry::metrics::MetricsListen::default()
                .all()
                .iter()
                .map(|(name, _)| (*name, SocketAddr::from(([127, 0, 0, 1], free_port()))))
                .collect();
        let metrics_toml: String = metrics
            .iter()
            .map(|(name, addr)| format!("{} = \"{addr}\"\n", name.replace('-', "_")))
            .collect();
        let config = format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\n\
             {mode}{watchdog}{extra}\n\
             [ingress]\nlisten = \"127.0.0.1:{ingress}\"\n[query]\nlisten = \"127.0.0.1:{query}\"\n\
             [store]\nurl = \"sqlite://{}\"\nretention_every_s = 3600\n[provider]\nrecording_path = \"{}\"\n\
             [auth]\ndevelopment_key_file = \"{}\"\n\
             [links]\nlisten = \"{links}\"\nbase_url = \"http://{links}\"\nsecret_file = \"{}\"\n\
             [telemetry]\nlag_interval_ms = 2000\n[telemetry.metrics]\n{metrics_toml}",
            broker.bootstrap,
            store.display(),
            recording.display(),
            dir.path().join("dev-api-key").display(),
            dir.path().join("link-secret").display(),
        );
        std::fs::write(dir.path().join("herald.toml"), config)?;
        Ok(Platform {
            ingress: ([127, 0, 0, 1], ingress).into(),
            query: ([127, 0, 0, 1], query).into(),
            store_url: format!("sqlite://{}", store.display()),
            recording,
            prefix,
            metrics,
            links,
            supervisor: None,
            dir,
            keys: std::sync::Mutex::default(),
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

    /// Adds `key = value` lines to the `[telemetry]` section (before `start`).
    pub fn with_telemetry(self, lines: &str) -> anyhow::Result<Platform> {
        let path = self.config_path();
        let config = std::fs::read_to_string(&path)?;
        let config = config.replacen("[telemetry]\n", &format!("[telemetry]\n{lines}\n"), 1);
        std::fs::write(&path, config)?;
        Ok(self)
    }

    /// The samples `component`'s metrics endpoint serves now.
    pub async fn scrape(
        &self,
        component: &str,
    ) -> anyhow::Result<Vec<herald_telemetry::scrape::Sample>> {
        let addr = self
            .metrics
            .get(component)
            .ok_or_else(|| anyhow::anyhow!("no component {component}"))?;
        scrape_at(*addr).await
    }

    /// Writes `contents` to the file `name` in the platform's directory (a secret, a CA for the
    /// config to name) and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
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

    /// Stops `herald run` and every component (SIGKILL to the whole process group): as if the
    /// machine or pod went away. [`Platform::start`] starts it again.
    pub fn stop(&mut self) {
        self.supervisor = None;
    }

    /// Rewrites `key = …` lines of the config (before a [`Platform::start`]).
    pub fn set_config(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = self.config_path();
        let config = std::fs::read_to_string(&path)?;
        let prefix = format!("{key} = ");
        let mut found = false;
        let lines: Vec<String> = config
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    found = true;
                    format!("{prefix}{value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        anyhow::ensure!(found, "no {key} in the config");
        std::fs::write(&path, lines.join("\n") + "\n")?;
        Ok(())
    }

    /// Starts one component (`herald <args>`) with this platform's config, instead of the
    /// whole `herald run`; waits for `wait_for` to listen if given. Killed on drop.
    pub async fn spawn_component(
        &self,
        args: &[&str],
        wait_for: Option<SocketAddr>,
    ) -> anyhow::Result<Proc> {
        let cmd = self.herald(args)?;
        let log = self.dir.path().join(format!("{}.log", args.join("-")));
        let proc = Proc::spawn(&args.join(" "), cmd, log, Group::Own)?;
        if let Some(addr) = wait_for
            && let Err(e) = wait_for_port(addr, Duration::from_secs(90), &args.join(" ")).await
        {
            bail!("{e}\n{}", proc.log_tail());
        }
        Ok(proc)
    }

    /// Starts one more instance of component `name` (`herald <args>`, e.g. `stage deliver`)
    /// beside the one `herald run` runs: this platform's config with its own
    /// `kafka.instance_id` (its transactional ids and static group membership), its own
    /// metrics port (returned) and `env`'s further `HERALD__…` overrides; waits for its log to
    /// show `ready` if given (its listen port cannot say so when it shares the address). Killed
    /// on drop.
    pub async fn spawn_instance(
        &self,
        name: &str,
        args: &[&str],
        instance: &str,
        env: &[(&str, &str)],
        ready: Option<&str>,
    ) -> anyhow::Result<(Proc, SocketAddr)> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = self.herald(args)?;
        cmd.env("HERALD__KAFKA__INSTANCE_ID", instance)
            .env(
                format!(
                    "HERALD__TELEMETRY__METRICS__{}",
                    name.replace('-', "_").to_uppercase()
                ),
                metrics.to_string(),
            )
            .envs(env.iter().copied());
        let log = self
            .dir
            .path()
            .join(format!("{}-{instance}.log", args.join("-")));
        let proc = Proc::spawn(
            &format!("{} ({instance})", args.join(" ")),
            cmd,
            log,
            Group::Own,
        )?;
        if let Some(line) = ready {
            proc.wait_for_log(line, Duration::from_secs(90)).await?;
        }
        Ok((proc, metrics))
    }

    /// `herald --config <this platform's config> <args>`.
    fn herald(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(herald_bin()?);
        cmd.arg("--config").arg(self.config_path()).args(args);
        Ok(cmd)
    }

    /// Runs `herald <args>` with this platform's config to completion (at most a minute) and
    /// returns what it printed; for one-shot commands such as `topics` and `migrate`.
    pub async fn run_command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = self.herald(args)?;
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| anyhow::anyhow!("herald {} did not finish in 60 s", args.join(" ")))??;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "herald {} failed ({}): {text}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text)
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
        let text = std::fs::read_to_string(p.log_path()).unwrap_or_default();
        text.lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The component processes `herald run` has started right now, as (pid, arguments after
    /// `--config FILE`), read from /proc.
    pub fn components(&self) -> Vec<(i32, String)> {
        let Some(parent) = self.supervisor.as_ref().and_then(Proc::pid) else {
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

/// The samples the metrics endpoint at `addr` serves now.
pub async fn scrape_at(addr: SocketAddr) -> anyhow::Result<Vec<herald_telemetry::scrape::Sample>> {
    Ok(herald_telemetry::scrape::scrape(&addr.to_string(), Duration::from_secs(5)).await?)
}

/// The counter `name` summed over all its labels, as the metrics endpoint at `addr` serves it
/// now (0 if it has no such series yet).
pub async fn counter_at(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let samples = scrape_at(addr).await?;
    Ok(herald_telemetry::scrape::sum(&samples, name, &[]))
}

/// The key of a `key = value` TOML line.
fn toml_key(line: &str) -> &str {
    line.split('=').next().unwrap_or_default().trim()
}
