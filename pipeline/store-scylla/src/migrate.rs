//! `herald migrate`: applies the versioned CQL files in `migrations/` in order, once each.
//!
//! Each file is `NNNN_name.cql`: statements separated by `;`, `--` comments (placeholders in
//! them are not filled in), and the placeholders `{hot}`, `{archive}`, `{replication}` and `{hot_keyspace_options}` filled in
//! from [`ScyllaConfig`]. Applied versions are recorded with the SHA-256 of the file as written
//! (before substitution) in `{hot}.schema_migrations`; a file whose checksum no longer matches
//! its record stops the run ([`Error::ChecksumMismatch`]). Every statement is idempotent
//! (`IF NOT EXISTS`), so a run interrupted half-way through a file simply re-runs the file.

use scylla::client::session::Session;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::{HotTablets, ScyllaConfig};
use crate::{Error, Result};

/// One migration file, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The number in the file name; migrations run in this order.
    pub version: u32,
    /// The file name.
    pub name: &'static str,
    /// The file's text, placeholders unsubstituted.
    pub cql: &'static str,
}

macro_rules! migration {
    ($version:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            cql: include_str!(concat!("../migrations/", $file)),
        }
    };
}

/// Every migration, oldest first. A unit test checks this list against the directory.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_keyspaces.cql"),
    migration!(2, "0002_hot_time_series.cql"),
    migration!(3, "0003_archive_time_series.cql"),
    migration!(4, "0004_reference_and_delivery.cql"),
    migration!(5, "0005_outbox_leases.cql"),
    migration!(6, "0006_api_keys.cql"),
    migration!(7, "0007_template_index.cql"),
    migration!(8, "0008_quiet_hours.cql"),
    migration!(9, "0009_subscriptions.cql"),
    migration!(10, "0010_template_versions.cql"),
];

/// Runs before any migration: the hot keyspace (which 0001 also creates) and the record of
/// applied migrations inside it.
const BOOTSTRAP: &str = "
CREATE KEYSPACE IF NOT EXISTS {hot}
    WITH replication = {replication} AND durable_writes = true{hot_keyspace_options};
CREATE TABLE IF NOT EXISTS {hot}.schema_migrations (
    scope         text,
    version       int,
    name          text,
    checksum      text,
    applied_at_ms bigint,
    PRIMARY KEY ((scope), version)
);";

/// The partition of `schema_migrations` Herald's migrations are recorded in.
const SCOPE: &str = "herald";

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Files applied by this run, in order.
    pub applied: Vec<String>,
    /// Files found already applied (checksums matching).
    pub already_applied: Vec<String>,
    /// Versions recorded in the database that this build does not know (a newer Herald ran
    /// `migrate`); left alone.
    pub unknown_versions: Vec<u32>,
}

impl std::fmt::Display for MigrationReport {
    /// One line for `herald migrate`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applied {} migration(s) {:?}, {} already applied",
            self.applied.len(),
            self.applied,
            self.already_applied.len()
        )?;
        if !self.unknown_versions.is_empty() {
            write!(
                f,
                "; the database also lists newer versions {:?}",
                self.unknown_versions
            )?;
        }
        Ok(())
    }
}

impl Migration {
    /// `sha256:` and the hex digest of the file as written.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.cql.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// Applies every migration not yet applied. Idempotent; refuses edited applied migrations.
pub async fn migrate(session: &Session, config: &ScyllaConfig) -> Result<MigrationReport> {
    config.validate()?;
    let vars = placeholders(config)?;
    for statement in statements(BOOTSTRAP) {
        session
            .query_unpaged(render(&statement, &vars)?, &[])
            .await?;
    }
    let hot = &config.hot_keyspace;
    let recorded = session
        .query_unpaged(
            format!("SELECT version, name, checksum FROM {hot}.schema_migrations WHERE scope = ?"),
            (SCOPE,),
        )
        .await?
        .into_rows_result()?
        .rows::<(i32, String, String)>()?
        .collect::<Result<Vec<_>, _>>()?;

    let mut report = MigrationReport::default();
    for (version, _, _) in &recorded {
        if !MIGRATIONS
            .iter()
            .any(|m| i64::from(m.version) == i64::from(*version))
        {
            warn!(
                version,
                "schema_migrations lists a migration this Herald does not know"
            );
            report
                .unknown_versions
                .push(u32::try_from(*version).unwrap_or_default());
        }
    }
    for m in MIGRATIONS {
        let current = m.checksum();
        let applied = recorded
            .iter()
            .find(|(v, _, _)| i64::from(*v) == i64::from(m.version));
        if let Some((_, _, applied)) = applied {
            if *applied != current {
                return Err(Error::ChecksumMismatch {
                    version: m.version,
                    name: m.name.into(),
                    applied: applied.clone(),
                    current,
                });
            }
            report.already_applied.push(m.name.into());
            continue;
        }
        for statement in statements(m.cql) {
            session
                .query_unpaged(render(&statement, &vars)?, &[])
                .await?;
        }
        let version = i32::try_from(m.version)
            .map_err(|_| Error::Config(format!("migration number {} too large", m.version)))?;
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {hot}.schema_migrations (scope, version, name, checksum, \
                     applied_at_ms) VALUES (?, ?, ?, ?, ?)"
                ),
                (SCOPE, version, m.name, current.as_str(), now_ms()),
            )
            .await?;
        info!(migration = m.name, "applied");
        report.applied.push(m.name.into());
    }
    Ok(report)
}

fn now_ms() -> i64 {
    use herald_store::Clock;
    herald_store::SystemClock.now_ms()
}

/// The values substituted into migration files.
fn placeholders(config: &ScyllaConfig) -> Result<Vec<(&'static str, String)>> {
    let hot_options = match config.hot_tablets {
        HotTablets::Disable => "\n    AND tablets = {'enabled': false}".to_owned(),
        HotTablets::ServerDefault => String::new(),
    };
    Ok(vec![
        ("{hot}", config.hot_keyspace.clone()),
        ("{archive}", config.archive_keyspace.clone()),
        ("{replication}", config.replication.to_cql()?),
        ("{hot_keyspace_options}", hot_options),
    ])
}

/// Fills in the placeholders; refuses a file naming one this runner does not know.
fn render(cql: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(cql.len());
    let mut rest = cql;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let name_len = tail[1..]
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len() - 1);
        let candidate = tail.get(..name_len + 2).unwrap_or(tail);
        if name_len > 0 && candidate.ends_with('}') {
            let value = vars
                .iter()
                .find(|(k, _)| *k == candidate)
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    Error::Config(format!("unknown placeholder {candidate} in a migration"))
                })?;
            out.push_str(value);
            rest = &tail[candidate.len()..];
        } else {
            // A CQL map literal such as {'class': ...}.
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a file into statements: `;` ends one, `--` starts a comment to the end of the line
/// (neither counts inside a '...' string).
fn statements(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    let mut chars = cql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_string = !in_string;
                current.push(c);
            }
            '-' if !in_string && chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            ';' if !in_string => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_list_matches_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn every_file_renders_to_idempotent_statements() {
        let vars = placeholders(&ScyllaConfig::default()).unwrap();
        for m in MIGRATIONS.iter().map(|m| m.cql).chain([BOOTSTRAP]) {
            for s in statements(m) {
                let s = render(&s, &vars).unwrap();
                assert!(!s.contains("{hot") && !s.contains("{archive"), "{s}");
                assert!(
                    s.starts_with("CREATE ") && s.contains(" IF NOT EXISTS "),
                    "{s}"
                );
                assert!(!s.contains("--"), "{s}");
            }
        }
    }

    #[test]
    fn rendering_and_splitting() {
        let vars = vec![
            ("{hot}", "h".to_owned()),
            ("{replication}", "{'a': 1}".to_owned()),
        ];
        let text = "-- a comment; with a semicolon\nCREATE KEYSPACE {hot} WITH r = {replication};\n\
                    CREATE TABLE {hot}.t (a text) WITH c = {'x': 'y;--z'}; -- trailing\n";
        let out: Vec<String> = statements(text)
            .iter()
            .map(|s| render(s, &vars).unwrap())
            .collect();
        assert_eq!(
            out,
            [
                "CREATE KEYSPACE h WITH r = {'a': 1}",
                "CREATE TABLE h.t (a text) WITH c = {'x': 'y;--z'}"
            ]
        );
        assert!(render("{nope}", &vars).is_err());
    }

    #[test]
    fn checksums_are_stable_sha256() {
        let m = Migration {
            version: 1,
            name: "x",
            cql: "",
        };
        assert_eq!(
            m.checksum(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
