//! Herald's one typed config: built-in defaults that run locally, then a TOML file
//! (`--config FILE`), then environment variables `HERALD__<SECTION>__<FIELD>`
//! (e.g. `HERALD__KAFKA__BOOTSTRAP_SERVERS=broker:9092`). Unknown keys are errors.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use herald_connectors::registry::ProvidersConfig;
use herald_runtime::KafkaConfig;
use herald_stages::deliver::retry::RetryPolicy;
use serde::Deserialize;

/// The whole config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Broker, topics, delivery mode.
    pub kafka: KafkaConfig,
    /// The ingress gRPC server.
    pub ingress: IngressConfig,
    /// The query gRPC server.
    pub query: QueryConfig,
    /// Where Herald keeps its state.
    pub store: StoreConfig,
    /// `[provider]`: the providers of each channel (a channel without one records its
    /// deliveries locally).
    pub provider: ProvidersConfig,
    /// `[auth]`: how API keys and user tokens are checked.
    pub auth: herald_auth::AuthConfig,
    /// Limits applied by the rate-limit stage.
    pub rate_limit: herald_stages::rate_limit::LimitsConfig,
    /// The deliver stage.
    pub deliver: DeliverConfig,
    /// `[telemetry]`: trace export (off by default) and each component's metrics endpoint.
    pub telemetry: herald_telemetry::TelemetryConfig,
    /// `[links]`: click tracking through signed links.
    pub links: LinksConfig,
    /// `[management]`: the management API's rules.
    pub management: ManagementConfig,
    /// `[enrich]`: the enrich stage's caches.
    pub enrich: EnrichConfig,
}

/// `[enrich]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Recipient profiles (and, separately, templates) each enrich instance keeps; 0: none.
    pub cache_entries: u64,
    /// The longest a cached entry is used: how stale it can be if a change on `<p>.changes`
    /// is missed (changes drop entries at once otherwise).
    pub cache_ttl_ms: u64,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        let d = herald_stages::enrich::CacheConfig::default();
        EnrichConfig {
            cache_entries: d.entries,
            cache_ttl_ms: u64::try_from(d.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl EnrichConfig {
    /// The caches' bounds.
    pub fn cache(&self) -> herald_stages::enrich::CacheConfig {
        herald_stages::enrich::CacheConfig {
            entries: self.cache_entries,
            ttl: std::time::Duration::from_millis(self.cache_ttl_ms.max(1)),
        }
    }
}

/// `[management]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Categories no recipient can opt out of (security alerts, one-time codes): the management
    /// API refuses such an opt-out, and the enrich stage applies neither opt-outs nor quiet hours
    /// to them.
    pub critical_categories: Vec<String>,
    /// How often the enrich stage looks for notifications whose recipient's quiet hours have
    /// ended, to release them (a held notification goes out at most this late).
    pub release_every_ms: u64,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            critical_categories: vec!["security".into()],
            release_every_ms: 1_000,
        }
    }
}

/// `[links]`: action URLs become signed links to a redirect endpoint that records the click.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinksConfig {
    /// Where the query process serves the redirect (`host:port`); `""`: not served.
    pub listen: String,
    /// The redirect's public URL, as users' devices reach it (behind your TLS proxy).
    pub base_url: String,
    /// The signing secret (at least 16 bytes; `herald run` makes one if missing). Without the
    /// file, action URLs are sent as they are and no click is recorded.
    pub secret_file: std::path::PathBuf,
    /// How long a link may be followed after its notification was sent.
    pub ttl_days: u32,
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            listen: "127.0.0.1:8088".into(),
            base_url: "http://127.0.0.1:8088".into(),
            secret_file: "var/herald/link-secret".into(),
            ttl_days: 30,
        }
    }
}

impl LinksConfig {
    /// The signer, if the secret file is there.
    pub fn load(&self) -> anyhow::Result<Option<herald_auth::links::Links>> {
        let secret = match std::fs::read(&self.secret_file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("[links] {}", self.secret_file.display()));
            }
        };
        let ttl_ms = i64::from(self.ttl_days) * 86_400_000;
        let links = herald_auth::links::Links::new(secret.trim_ascii(), &self.base_url, ttl_ms);
        links.map(Some).with_context(|| {
            format!(
                "[links] {}: the secret must be at least 16 bytes",
                self.secret_file.display()
            )
        })
    }
}

/// The deliver stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverConfig {
    /// The retry budget of every channel without one of its own.
    pub retry: RetryPolicy,
    /// Channels with their own budget: `[deliver.channel_retry.sms]` with the same fields.
    pub channel_retry: std::collections::BTreeMap<String, RetryPolicy>,
}

impl DeliverConfig {
    /// `channel`'s retry budget.
    pub fn retry(&self, channel: herald_schemas::Channel) -> RetryPolicy {
        self.channel_retry
            .get(channel.as_str())
            .unwrap_or(&self.retry)
            .clone()
    }

    fn validate(&self) -> anyhow::Result<()> {
        let policies = std::iter::once(("retry".to_owned(), &self.retry)).chain(
            self.channel_retry
                .iter()
                .map(|(name, p)| (format!("channel_retry.{name}"), p)),
        );
        for (name, policy) in policies {
            if policy.max_attempts < 1 {
                bail!("[deliver.{name}] max_attempts must be at least 1");
            }
            if policy.first_backoff_ms == 0 || policy.max_backoff_ms < policy.first_backoff_ms {
                bail!("[deliver.{name}] needs 0 < first_backoff_ms <= max_backoff_ms");
            }
        }
        if let Some(name) = self
            .channel_retry
            .keys()
            .find(|name| herald_schemas::Channel::parse(name).is_none())
        {
            bail!(
                "[deliver.channel_retry.{name}]: no such channel (channels: {})",
                herald_schemas::Channel::ALL.map(|c| c.as_str()).join(", ")
            );
        }
        Ok(())
    }
}

pub fn parse_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .parse()
        .with_context(|| format!("listen address {listen:?} is not host:port"))
}

/// The ingress gRPC server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// `host:port` to listen on (and for the CLI to connect to).
    pub listen: String,
    /// Requests written to Kafka at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// The producer's queue in KiB; when full, requests are refused with RESOURCE_EXHAUSTED.
    pub producer_queue_kbytes: u64,
    /// How long a request waits for Kafka before it is kept in the durable outbox instead.
    pub kafka_wait_ms: u64,
    /// At most this many requests wait in the outbox while Kafka is away; beyond,
    /// RESOURCE_EXHAUSTED (clients retry with their idempotency key).
    pub outbox_max_records: usize,
    /// URL schemes an action link may use: `https` and your apps' own schemes (e.g. `acme`
    /// for `acme://orders/1`); `javascript:`, `data:` and `file:` are always refused.
    pub link_schemes: Vec<String>,
    /// Every tenant's quota (requests per second, requests in flight) unless it has its own;
    /// over it, RESOURCE_EXHAUSTED naming the quota.
    pub tenant_quota: herald_ingress::quota::TenantQuota,
    /// Tenants with their own quota: `[ingress.tenant_quotas.acme]` with
    /// `requests_per_second` and `in_flight`.
    pub tenant_quotas: std::collections::BTreeMap<String, herald_ingress::quota::TenantQuota>,
    /// `[ingress.tls]`: serve over TLS (certificate and key files, reloaded when they change;
    /// `client_ca_file` for mutual TLS). Unset: plaintext (the `make run` default).
    pub tls: Option<herald_proto::tls::TlsConfig>,
    /// Listen with `SO_REUSEPORT`, so that several ingress processes on one host share
    /// `listen` and the kernel spreads new connections among them (each needs its own
    /// `kafka.instance_id`). Off by default: a second ingress on the address is then an error.
    pub reuse_port: bool,
}

impl Default for IngressConfig {
    fn default() -> Self {
        let limits = herald_ingress::IngressLimits::default();
        IngressConfig {
            listen: "127.0.0.1:50051".into(),
            max_in_flight: limits.max_in_flight,
            producer_queue_kbytes: limits.producer_queue_kbytes,
            kafka_wait_ms: limits.kafka_wait_ms,
            outbox_max_records: limits.outbox_max_records,
            link_schemes: herald_ingress::validate::Policy::default().link_schemes,
            tenant_quota: limits.tenant_quota,
            tenant_quotas: limits.tenant_quotas,
            tls: None,
            reuse_port: false,
        }
    }
}

impl IngressConfig {
    /// The parsed address.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        parse_listen(&self.listen)
    }

    /// What requests may contain beyond the fixed limits.
    pub fn policy(&self) -> herald_ingress::validate::Policy {
        herald_ingress::validate::Policy {
            link_schemes: self.link_schemes.clone(),
        }
    }

    /// The overload limits.
    pub fn limits(&self) -> herald_ingress::IngressLimits {
        herald_ingress::IngressLimits {
            max_in_flight: self.max_in_flight,
            producer_queue_kbytes: self.producer_queue_kbytes,
            kafka_wait_ms: self.kafka_wait_ms,
            outbox_max_records: self.outbox_max_records,
            tenant_quota: self.tenant_quota,
            tenant_quotas: self.tenant_quotas.clone(),
        }
    }
}

/// The query gRPC server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// `host:port` to listen on (and for the CLI to connect to).
    pub listen: String,
    /// `[query.tls]`: serve over TLS (certificate and key files, reloaded when they change;
    /// `client_ca_file` for mutual TLS). Unset: plaintext (the `make run` default).
    pub tls: Option<herald_proto::tls::TlsConfig>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            listen: "127.0.0.1:50052".into(),
            tls: None,
        }
    }
}

impl QueryConfig {
    /// The parsed address.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        parse_listen(&self.listen)
    }
}

/// The store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://<path>` (embedded; relative paths are relative to the working directory) or
    /// `scylla://host:port[,host:port…][?hot=herald&archive=herald_archive&dc=…]` (run
    /// `herald migrate` first).
    pub url: String,
    /// How often the store writer runs a retention pass (seconds, at least 1); the embedded
    /// store drops month files past the archive tier, ScyllaDB expires rows itself.
    pub retention_every_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://var/herald/store.db".into(),
            retention_every_s: 3_600,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then `HERALD__…` environment variables, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("HERALD__").split("__"))
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.ingress.addr().context("[ingress] listen")?;
        self.query.addr().context("[query] listen")?;
        if self.kafka.partitions < 1 {
            bail!("[kafka] partitions must be at least 1");
        }
        if self.kafka.topic_prefix.is_empty() {
            bail!("[kafka] topic_prefix must not be empty");
        }
        if !matches!(self.kafka.compression.as_str(), "none" | "lz4" | "gzip") {
            bail!(
                "[kafka] compression {:?}: use none, lz4 or gzip (tansu cannot serve snappy)",
                self.kafka.compression
            );
        }
        self.deliver.validate()?;
        self.telemetry.validate()?;
        if !["sqlite://", "scylla://"]
            .iter()
            .any(|scheme| self.store.url.starts_with(scheme))
        {
            bail!(
                "[store] url {:?}: expected sqlite://<path> or scylla://host:port[,host:port]",
                self.store.url
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_run_locally() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.ingress.listen, "127.0.0.1:50051");
        assert_eq!(c.query.listen, "127.0.0.1:50052");
    }

    #[test]
    fn file_overrides_defaults_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "[kafka]\ntopic_prefix = \"t1\"\npartitions = 6\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.kafka.topic_prefix, "t1");
        assert_eq!(c.kafka.partitions, 6);
        assert_eq!(
            c.kafka.commit_interval_ms, 100,
            "untouched fields keep defaults"
        );

        std::fs::write(&path, "[kafka]\ntopic_prefx = \"typo\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("topic_prefx"), "{err}");

        std::fs::write(&path, "[kafka]\ncompression = \"snappy\"\n").unwrap();
        assert!(Config::load(Some(&path)).is_err());
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
