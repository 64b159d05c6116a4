//! `herald run`: the local supervisor. Starts every component as its own child process (so the
//! query service never shares a process with a send surge, and a crashing stage restarts alone),
//! restarts a child that exits, and on Ctrl-C/SIGTERM stops them all (SIGTERM, then SIGKILL
//! after a grace period). Children exit on their own if the supervisor dies (stdin closes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::components;
use crate::config::Config;
use crate::shutdown::EXIT_WITH_STDIN;

/// Longer than a component's own graceful-stop limit (15 s), so a clean stop is never cut short.
const GRACE: Duration = Duration::from_secs(20);
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// The component processes `herald run` starts, as `herald` argument lists.
pub const COMPONENTS: &[&[&str]] = &[
    &["query"],
    &["stage", "store-writer"],
    &["stage", "enrich"],
    &["stage", "rate-limit"],
    &["stage", "fan-out"],
    &["stage", "deliver"],
    &["ingress"],
    &["lag-exporter"],
];

struct Supervised {
    args: &'static [&'static str],
    child: Child,
}

fn spawn(
    exe: &Path,
    config_file: Option<&Path>,
    args: &'static [&'static str],
) -> anyhow::Result<Supervised> {
    let mut cmd = Command::new(exe);
    if let Some(file) = config_file {
        cmd.arg("--config").arg(file);
    }
    cmd.args(args)
        .env(EXIT_WITH_STDIN, "1")
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting herald {}", args.join(" ")))?;
    info!(component = %args.join(" "), pid = child.id(), "started");
    Ok(Supervised { args, child })
}

async fn wait_for_port(addr: std::net::SocketAddr, shutdown: &CancellationToken) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        // (A connection to itself, possible for a free port in the ephemeral range, is not one.)
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await
            && stream.local_addr().ok() != Some(addr)
        {
            return true;
        }
        sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Creates the topics, retrying while the broker starts.
async fn topics_with_retry(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match components::topics(config).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline && !shutdown.is_cancelled() => {
                warn!(
                    "waiting for Kafka at {}: {e:#}",
                    config.kafka.bootstrap_servers
                );
                sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Two components per line, `name address`.
fn metrics_lines(config: &Config) -> String {
    let served: Vec<String> = config
        .telemetry
        .metrics
        .all()
        .iter()
        .filter(|(_, addr)| !addr.is_empty())
        .map(|(name, addr)| format!("{name:<13}{addr:<22}"))
        .collect();
    served
        .chunks(2)
        .map(|pair| format!("    {}", pair.concat().trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_banner(config: &Config, exe: &Path, dev_key: &str) {
    let exe = exe.display();
    let banner = format!(
        "\nHerald is running. Ctrl-C stops everything.\n\
         \n  ingress  (herald.v1.NotificationService)  {ingress}\
         \n  query    (herald.v1.QueryService)         {query}\
         \n  kafka    {kafka} (topics {prefix}.*)\
         \n  store    {store}\
         \n  provider {provider} (every non-in-app delivery is recorded here)\n\
         \nWatching it:\
         \n  {exe} top      live lag, rates and end-to-end delay of every stage\
         \n  {exe} lag      consumer lag per partition (`--watch 2` to follow it)\
         \n  metrics        Prometheus text at http://<address>/metrics of each component:\
         \n{metrics}\
         \n  traces         {traces}\
         \n  click links    {links}\n\
         \nA development API key (tenant acme, every scope; `herald keys --help` makes others):\
         \n  {dev_key}\
         \n  (in {key_file}; `herald send`/`inbox`/`get` use it when given no --api-key)\n\
         \nTry it from another terminal:\n\
         \n  {exe} send --tenant acme --user alice --title 'Hello' --body 'Your first notification'\
         \n  {exe} inbox --tenant acme --user alice\
         \n  {exe} get --tenant acme --id <notification id printed by send>\n\
         \nor with grpcurl (reflection is on):\n\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_file})\" -d '{{\"tenant\":\"acme\",\"recipient_user_id\":\"alice\",\"category\":\"general\",\"inline\":{{\"title\":\"Hi\",\"body\":\"there\"}}}}' {ingress} herald.v1.NotificationService/SendNotification\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_file})\" -d '{{\"tenant\":\"acme\",\"recipient_user_id\":\"alice\"}}' {query} herald.v1.QueryService/ListInbox\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_file})\" -d '{{\"tenant\":\"acme\",\"recipient_user_id\":\"alice\"}}' {query} herald.v1.QueryService/WatchInbox\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_file})\" -d '{{\"tenant\":\"acme\",\"recipient_user_id\":\"alice\"}}' {query} herald.v1.QueryService/UnreadCount\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_file})\" -d '{{\"tenant\":\"acme\",\"recipient_user_id\":\"alice\"}}' {query} herald.v1.QueryService/MarkAllRead\
         \n  grpcurl -plaintext -H \"authorization: Bearer $(cat {key_file})\" -d '{{\"tenant\":\"acme\"}}' {query} herald.v1.QueryService/ListFailures\n",
        ingress = config.ingress.listen,
        query = config.query.listen,
        kafka = config.kafka.bootstrap_servers,
        prefix = config.kafka.topic_prefix,
        store = config.store.url,
        provider = config.provider.recording_path.display(),
        key_file = config.auth.development_key_file.display(),
        metrics = metrics_lines(config),
        traces = match &config.telemetry.otlp_endpoint {
            Some(endpoint) => format!("exported over OTLP to {endpoint}"),
            None =>
                "not exported; set [telemetry] otlp_endpoint = \"http://collector:4317\"".into(),
        },
        links = if config.links.listen.is_empty() {
            "action URLs are sent as they are ([links] listen is empty)".to_owned()
        } else {
            format!(
                "action URLs become signed links to {}/c/… (redirect on {})",
                config.links.base_url, config.links.listen
            )
        },
    );
    // The banner is the point of `herald run`: it goes to stdout, not the log.
    #[allow(clippy::print_stdout)]
    {
        println!("{banner}");
    }
}

/// Runs every component until `shutdown`.
pub async fn run(
    config: &Config,
    config_file: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the herald executable")?;
    topics_with_retry(config, &shutdown).await?;
    // Opened once here first: a store that cannot be opened (a wrong path, a layout this
    // Herald does not read) stops `herald run` at once with its reason, instead of every
    // component failing and being restarted. (Several components creating a fresh store at
    // once is safe: the store's own open handles it.) It also keeps the development key.
    let dev_key = {
        let store = crate::store::open(config).await?;
        crate::keys::development_key(&*store, &config.auth.development_key_file).await?
    };
    crate::keys::development_link_secret(&config.links.secret_file)?;
    let mut children = Vec::new();
    for args in COMPONENTS {
        children.push(spawn(&exe, config_file.as_deref(), args)?);
    }
    // The banner waits for the servers; meanwhile the loop below already restarts what exits.
    let (ingress, query) = (config.ingress.addr()?, config.query.addr()?);
    let banner = {
        let (config, exe, shutdown) = (config.clone(), exe.clone(), shutdown.clone());
        tokio::spawn(async move {
            let ready =
                wait_for_port(ingress, &shutdown).await && wait_for_port(query, &shutdown).await;
            if ready {
                print_banner(&config, &exe, &dev_key);
            } else if !shutdown.is_cancelled() {
                error!(
                    "ingress or query service did not start listening within 60 s; see the log above"
                );
            }
        })
    };

    while !shutdown.is_cancelled() {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = sleep(Duration::from_millis(200)) => {
                for s in &mut children {
                    if let Ok(Some(status)) = s.child.try_wait() {
                        warn!(component = %s.args.join(" "), %status, "exited; restarting");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = sleep(RESTART_BACKOFF) => {}
                        }
                        match spawn(&exe, config_file.as_deref(), s.args) {
                            Ok(replacement) => *s = replacement,
                            // Keep the others running; the exited one is tried again next round.
                            Err(e) => error!(component = %s.args.join(" "), "restart failed: {e:#}"),
                        }
                    }
                }
            }
        }
    }
    banner.abort();
    stop_all(children).await;
    Ok(())
}

async fn stop_all(children: Vec<Supervised>) {
    for s in &children {
        if let Some(pid) = s.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for mut s in children {
        match timeout(GRACE, s.child.wait()).await {
            Ok(_) => info!(component = %s.args.join(" "), "stopped"),
            Err(_) => {
                warn!(component = %s.args.join(" "), "did not stop within {GRACE:?}; killing");
                let _ = s.child.kill().await;
            }
        }
    }
}
