//! `herald`: every Herald component as a subcommand, the local supervisor (`herald run`), a
//! small client (`send`, `inbox`, `get`), `keys` and `token` for callers, and `lag`, `top`,
//! `tail`, `replay` and `trace` for operators. See README.md for the two
//! commands that matter.

mod client;
mod components;
mod config;
mod keys;
mod lag;
mod replay;
mod shutdown;
mod store;
mod supervisor;
mod tail;
mod templates;
mod top;
mod trace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use herald_schemas::Channel;

use crate::components::Stage;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a Kafka-centric notification platform"
)]
struct Cli {
    /// TOML config file; `HERALD__SECTION__FIELD` environment variables override it.
    #[arg(long, global = true, env = "HERALD_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// The API key (or user token) `send`, `inbox` and `get` call with; default: the
    /// development key `herald run` made.
    #[arg(long, global = true, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The CA (PEM) that signed the servers' certificates, for `send`, `inbox` and `get`
    /// against servers with `[ingress.tls]` / `[query.tls]`.
    #[arg(long, global = true, env = "HERALD_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every component (ingress, stages, query service) as supervised child processes.
    Run,
    /// The SendNotification gRPC server.
    Ingress,
    /// The query gRPC server (inbox, status, failures, read state, WatchInbox).
    Query,
    /// Apply the store's schema migrations (idempotent).
    Migrate,
    /// One stream stage.
    Stage {
        /// Which stage.
        #[arg(value_enum)]
        stage: Stage,
        /// For `deliver`: only these channels (repeatable; default all).
        #[arg(long = "channel", value_parser = client::parse_channel)]
        channels: Vec<Channel>,
    },
    /// Create every topic that does not exist yet.
    Topics,
    /// Serve every stage's consumer lag per partition as the `herald_consumer_lag` metric
    /// (`[telemetry.metrics] lag_exporter`), collected every few seconds.
    LagExporter,
    /// Show every stage's consumer lag (records not yet consumed), per partition and in total.
    Lag {
        /// Redraw every this many seconds until Ctrl-C.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// A live view of every stage's lag, rate and end-to-end delay, from the components'
    /// metrics endpoints; `q` quits.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
    },
    /// Send a notification through the ingress.
    Send(client::SendArgs),
    /// List a user's inbox through the query service.
    Inbox {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Show a notification's status and delivery timeline.
    Get {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// A topic's records as JSON lines (`delivery-result`, `dispatch.sms`, `dead-letter`, …):
    /// new ones until Ctrl-C, or from the beginning, an offset or a time.
    Tail(tail::TailArgs),
    /// Where a notification went and how long each step took (from the store's timeline).
    Trace {
        /// The notification id.
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Re-drive dead letters to the topics they came from, once their cause is fixed (safe to
    /// run twice: records carry stable ids).
    Replay(replay::ReplayArgs),
    /// A tenant's templates as an .xlsx workbook: export, import.
    #[command(subcommand)]
    Templates(templates::TemplatesCommand),
    /// API keys of calling backends: create, list, rotate, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Print a user token for USER of TENANT, signed with the tenant's HS256 secret of
    /// `[auth.user_tokens.<tenant>]` (what the tenant's backend does for its app).
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3_600)]
        ttl_s: u64,
    },
}

impl Command {
    /// The component this command runs, as named in `[telemetry.metrics]`; `None` for the
    /// supervisor and the one-shot commands.
    fn component(&self) -> Option<&'static str> {
        match self {
            Command::Ingress => Some("ingress"),
            Command::Query => Some("query"),
            Command::Stage { stage, .. } => Some(stage.name()),
            Command::LagExporter => Some("lag-exporter"),
            _ => None,
        }
    }
}

fn main() {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run()) {
        Ok(()) => 0,
        Err(e) => {
            // The one place errors reach the user: one line with its causes, no backtrace.
            eprintln!("herald: {e:#}");
            1
        }
    };
    // Exit without dropping the runtime: dropping it waits for every blocking task, and the
    // stdin watcher's read (or a blocked librdkafka call) may never return, which would leave a
    // failed stage alive, holding its partitions, instead of letting the supervisor restart it.
    std::process::exit(code);
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref());
    // A long-running component exports its traces and serves its metrics; a command only logs.
    let _telemetry = match (cli.command.component(), &config) {
        (Some(component), Ok(config)) => {
            let telemetry = herald_telemetry::init(component, &config.telemetry)?;
            herald_telemetry::metrics::serve(component, &config.telemetry.metrics);
            Some(telemetry)
        }
        _ => {
            herald_telemetry::init_logs();
            None
        }
    };
    let config = config?;
    let caller = client::Caller {
        key: keys::client_key(cli.api_key.clone(), &config),
        ca_file: cli.ca_file.clone(),
    };
    let output = match cli.command {
        Command::Run => {
            supervisor::run(&config, cli.config.clone(), shutdown::token()?).await?;
            None
        }
        Command::Ingress => {
            components::ingress(&config, shutdown::token()?).await?;
            None
        }
        Command::Query => {
            components::query(&config, shutdown::token()?).await?;
            None
        }
        Command::Stage { stage, channels } => {
            components::stage(&config, stage, &channels, shutdown::token()?).await?;
            None
        }
        Command::Migrate => Some(store::migrate(&config).await?),
        Command::Topics => {
            components::topics(&config).await?;
            Some("topics ready".to_owned())
        }
        Command::Top { every } => {
            let every = std::time::Duration::from_secs_f64(every.clamp(0.2, 60.0));
            top::run(&config, every, shutdown::token()?).await?;
            None
        }
        Command::LagExporter => {
            lag::export(&config, shutdown::token()?).await?;
            None
        }
        Command::Lag { watch: None } => Some(lag::once(&config).await?),
        Command::Lag { watch: Some(s) } => {
            lag::watch(
                &config,
                std::time::Duration::from_secs(s.max(1)),
                shutdown::token()?,
            )
            .await?;
            None
        }
        Command::Send(args) => Some(client::send(&config.ingress.listen, &caller, args).await?),
        Command::Inbox {
            tenant,
            user,
            page_size,
            page_token,
        } => Some(
            client::inbox(
                &config.query.listen,
                &caller,
                tenant,
                user,
                page_size,
                page_token,
            )
            .await?,
        ),
        Command::Get { tenant, id } => {
            Some(client::get(&config.query.listen, &caller, tenant, id).await?)
        }
        Command::Keys(command) => Some(keys::run(&config, command).await?),
        Command::Templates(command) => Some(templates::run(&config, command).await?),
        Command::Replay(args) => Some(replay::run(&config, args).await?),
        Command::Trace { id, tenant } => Some(trace::run(&config, &tenant, &id).await?),
        Command::Tail(args) => {
            tail::run(&config, args, shutdown::token()?).await?;
            None
        }
        Command::Token {
            tenant,
            user,
            ttl_s,
        } => Some(keys::user_token(&config, &tenant, &user, ttl_s)?),
    };
    if let Some(text) = output {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", text.trim_end());
        }
    }
    Ok(())
}
