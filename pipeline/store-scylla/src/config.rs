//! Where the cluster is and how the keyspaces are laid out: [`ScyllaConfig`], from serde or from
//! the one-string form Herald's config uses (`store.url`, see [`ScyllaConfig::from_url`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How to reach ScyllaDB and which keyspaces hold Herald's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the driver discovers the rest of the cluster from them.
    pub nodes: Vec<String>,
    /// The hot keyspace: everything the pipeline reads and writes; time series for 90 days.
    pub hot_keyspace: String,
    /// The archive keyspace: a second copy of the time series, kept for 365 days.
    pub archive_keyspace: String,
    /// Replication of both keyspaces, used when `herald migrate` creates them (an existing
    /// keyspace is left as it is: change it with `ALTER KEYSPACE`).
    pub replication: Replication,
    /// The datacenter this process runs in: requests go to its replicas first. Unset: any.
    pub local_datacenter: Option<String>,
    /// Whether `herald migrate` creates the hot keyspace with tablets off (see [`HotTablets`]).
    pub hot_tablets: HotTablets,
    /// How long one request may take before the driver gives up, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            hot_keyspace: "herald".into(),
            archive_keyspace: "herald_archive".into(),
            replication: Replication::default(),
            local_datacenter: None,
            hot_tablets: HotTablets::Disable,
            request_timeout_ms: 10_000,
        }
    }
}

/// Keyspace replication, rendered as the CQL `replication` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Replication {
    /// The replication strategy.
    pub class: ReplicationClass,
    /// Copies of each row (per datacenter for `NetworkTopologyStrategy` without `datacenters`).
    pub replication_factor: u32,
    /// `NetworkTopologyStrategy` only: copies per named datacenter (overrides the factor).
    pub datacenters: BTreeMap<String, u32>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            class: ReplicationClass::NetworkTopologyStrategy,
            replication_factor: 1,
            datacenters: BTreeMap::new(),
        }
    }
}

/// A replication strategy class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ReplicationClass {
    SimpleStrategy,
    NetworkTopologyStrategy,
}

impl Replication {
    /// The CQL map literal, e.g. `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`.
    pub fn to_cql(&self) -> Result<String> {
        let factor = |n: u32| {
            if n == 0 {
                Err(Error::Config(
                    "a replication factor must be at least 1".into(),
                ))
            } else {
                Ok(n)
            }
        };
        match (self.class, self.datacenters.is_empty()) {
            (ReplicationClass::SimpleStrategy, true) => Ok(format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                factor(self.replication_factor)?
            )),
            (ReplicationClass::SimpleStrategy, false) => Err(Error::Config(
                "replication.datacenters needs class NetworkTopologyStrategy".into(),
            )),
            (ReplicationClass::NetworkTopologyStrategy, true) => Ok(format!(
                "{{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
                factor(self.replication_factor)?
            )),
            (ReplicationClass::NetworkTopologyStrategy, false) => {
                let mut map = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, n) in &self.datacenters {
                    if dc.is_empty()
                        || !dc
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                    {
                        return Err(Error::Config(format!("invalid datacenter name {dc:?}")));
                    }
                    map.push_str(&format!(", '{dc}': {}", factor(*n)?));
                }
                map.push('}');
                Ok(map)
            }
        }
    }
}

/// Tablets and lightweight transactions: ScyllaDB before 2025.4 refuses LWT in keyspaces with
/// tablets, and newer versions create keyspaces with tablets by default. The hot keyspace holds
/// the LWT tables (idempotency keys, the delivery ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HotTablets {
    /// Create the hot keyspace with `tablets = {'enabled': false}` (ScyllaDB 6.0 and later).
    Disable,
    /// Leave it to the server (ScyllaDB before 6.0 has no tablets and rejects the option).
    ServerDefault,
}

impl ScyllaConfig {
    /// Parses `scylla://host:port[,host:port...][/][?hot=..&archive=..&dc=..&rf=..&tablets=..&timeout_ms=..]`.
    ///
    /// `rf` sets a `NetworkTopologyStrategy` replication factor; `tablets` is `disable` or
    /// `server_default`. Unknown parameters are refused rather than ignored.
    pub fn from_url(url: &str) -> std::result::Result<ScyllaConfig, herald_store::StoreError> {
        let bad = |reason: &'static str| herald_store::StoreError::BadUrl {
            url: url.into(),
            reason,
        };
        let rest = url
            .strip_prefix("scylla://")
            .ok_or_else(|| bad("expected scylla://host:port[,host:port]"))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.contains('/') {
            return Err(bad(
                "the URL path must be empty; name keyspaces with ?hot= and ?archive=",
            ));
        }
        let mut config = ScyllaConfig {
            nodes: Vec::new(),
            ..ScyllaConfig::default()
        };
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad("every node needs host:port"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("every node needs host:port"));
            }
            config.nodes.push(host.to_owned());
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("query parameters are key=value"))?;
            if value.is_empty() || value.contains('%') || value.contains('+') {
                return Err(bad("query values must be plain, non-empty names"));
            }
            match key {
                "hot" => config.hot_keyspace = value.into(),
                "archive" => config.archive_keyspace = value.into(),
                "dc" => config.local_datacenter = Some(value.into()),
                "rf" => {
                    config.replication.replication_factor = value
                        .parse()
                        .map_err(|_| bad("rf must be a positive number"))?;
                }
                "tablets" => {
                    config.hot_tablets = match value {
                        "disable" => HotTablets::Disable,
                        "server_default" => HotTablets::ServerDefault,
                        _ => return Err(bad("tablets must be disable or server_default")),
                    };
                }
                "timeout_ms" => {
                    config.request_timeout_ms = value
                        .parse()
                        .map_err(|_| bad("timeout_ms must be a number"))?;
                }
                _ => {
                    return Err(bad(
                        "unknown parameter; known: hot, archive, dc, rf, tablets, timeout_ms",
                    ));
                }
            }
        }
        config
            .validate()
            .map_err(|_| bad("invalid keyspace name or replication factor"))?;
        Ok(config)
    }

    /// Checks names and numbers before anything is sent to the cluster.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            return Err(Error::Config("at least one node is needed".into()));
        }
        for ks in [&self.hot_keyspace, &self.archive_keyspace] {
            check_keyspace_name(ks)?;
        }
        if self.hot_keyspace == self.archive_keyspace {
            return Err(Error::Config(
                "the hot and archive keyspaces must differ".into(),
            ));
        }
        self.replication.to_cql()?;
        Ok(())
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Keyspace names are spliced into CQL text, so only plain lowercase identifiers are allowed
/// (ScyllaDB's limit is 48 characters).
fn check_keyspace_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 48;
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "keyspace name {name:?} must be a lowercase identifier of at most 48 characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn url_with_everything() {
        let c = ScyllaConfig::from_url(
            "scylla://10.0.0.1:9042,10.0.0.2:9043/?hot=h1&archive=a1&dc=eu-west-1&rf=3&tablets=server_default&timeout_ms=2500",
        )
        .unwrap();
        assert_eq!(c.nodes, ["10.0.0.1:9042", "10.0.0.2:9043"]);
        assert_eq!(
            (c.hot_keyspace.as_str(), c.archive_keyspace.as_str()),
            ("h1", "a1")
        );
        assert_eq!(c.local_datacenter.as_deref(), Some("eu-west-1"));
        assert_eq!(c.hot_tablets, HotTablets::ServerDefault);
        assert_eq!(c.request_timeout(), Duration::from_millis(2500));
        assert_eq!(
            c.replication.to_cql().unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
    }

    #[test]
    fn url_defaults() {
        let c = ScyllaConfig::from_url("scylla://localhost:9042").unwrap();
        assert_eq!(
            c,
            ScyllaConfig {
                nodes: vec!["localhost:9042".into()],
                ..ScyllaConfig::default()
            }
        );
    }

    #[test]
    fn url_refusals() {
        for bad in [
            "sqlite://x",
            "scylla://",
            "scylla://host",
            "scylla://host:port",
            "scylla://h:1/herald",
            "scylla://h:1/?hot=Herald",
            "scylla://h:1/?hot=x;drop",
            "scylla://h:1/?hot=same&archive=same",
            "scylla://h:1/?rf=0",
            "scylla://h:1/?colour=blue",
            "scylla://h:1/?dc=",
        ] {
            assert!(ScyllaConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replication_maps() {
        let r = Replication {
            class: ReplicationClass::NetworkTopologyStrategy,
            replication_factor: 1,
            datacenters: [("dc1".to_owned(), 3), ("dc2".to_owned(), 2)].into(),
        };
        assert_eq!(
            r.to_cql().unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        let r = Replication {
            datacenters: [("d'c".to_owned(), 3)].into(),
            ..r
        };
        assert!(r.to_cql().is_err());
        let simple = Replication {
            class: ReplicationClass::SimpleStrategy,
            replication_factor: 1,
            datacenters: BTreeMap::new(),
        };
        assert_eq!(
            simple.to_cql().unwrap(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
    }
}
