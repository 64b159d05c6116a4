//! `herald keys …` (API keys: create, list, rotate, revoke), `herald token` (a user token for
//! trying the inbox RPCs as an app would), and the development key `herald run` makes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use herald_auth::{Scope, keys};
use herald_store::{Clock, Store, SystemClock};

use crate::config::Config;

/// `herald keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key for a tenant and print it (once: only its hash is stored).
    Create {
        /// The tenant it acts for.
        #[arg(long)]
        tenant: String,
        /// An operation it may call (send, read, manage); repeatable. Default: send and read.
        #[arg(long = "scope", value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
        /// It stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// List a tenant's keys (ids, never secrets).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Make a new key like KEY_ID; KEY_ID keeps working for the overlap, then expires.
    Rotate {
        /// The key's id (the 16 hex digits after `hk_`).
        key_id: String,
        /// How long both keys work.
        #[arg(long, default_value_t = 24)]
        overlap_hours: u64,
    },
    /// Revoke a key: it stops working within `auth.key_cache_ms`.
    Revoke {
        /// The key's id.
        key_id: String,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?}: send, read or manage"))
}

fn date(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let secs = ms.div_euclid(1_000).rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60
    )
}

/// Runs `herald keys …`.
pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<String> {
    let store = crate::store::open(config).await?;
    let now = SystemClock.now_ms();
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            name,
            expires_in_days,
        } => {
            if tenant.is_empty() || tenant.len() > 128 {
                bail!("--tenant: 1 to 128 characters");
            }
            let scopes = if scopes.is_empty() {
                vec![Scope::Send, Scope::Read]
            } else {
                scopes
            };
            let ttl = expires_in_days.map(|d| Duration::from_secs(d.saturating_mul(86_400)));
            let new = keys::make(&tenant, &scopes, &name, now, ttl);
            store.put_api_key(&new.record).await?;
            Ok(format!(
                "{}\n(key {} for tenant {tenant}, scopes {}; shown once — store it as a secret)",
                new.key,
                new.record.key_id,
                new.record.scopes.join(",")
            ))
        }
        KeysCommand::List { tenant } => {
            let mut out = format!(
                "{:<16}  {:<16}  {:<17}  {:<17}  {:<8}  NAME\n",
                "KEY ID", "SCOPES", "CREATED", "EXPIRES", "STATE"
            );
            for k in store.api_keys(&tenant).await? {
                let state = match (k.revoked_at_ms, k.expires_at_ms) {
                    (Some(at), _) if at <= now => "revoked",
                    (_, Some(at)) if at <= now => "expired",
                    _ => "active",
                };
                out.push_str(&format!(
                    "{:<16}  {:<16}  {:<17}  {:<17}  {state:<8}  {}\n",
                    k.key_id,
                    k.scopes.join(","),
                    date(k.created_at_ms),
                    k.expires_at_ms.map_or("never".to_owned(), date),
                    k.name
                ));
            }
            Ok(out)
        }
        KeysCommand::Rotate {
            key_id,
            overlap_hours,
        } => {
            let old = existing(&*store, &key_id).await?;
            let overlap = Duration::from_secs(overlap_hours.saturating_mul(3_600));
            let (new, expiring) = keys::rotate(&old, now, overlap);
            store.put_api_key(&new.record).await?;
            store.put_api_key(&expiring).await?;
            Ok(format!(
                "{}\n(key {} replaces {key_id}, which works until {})",
                new.key,
                new.record.key_id,
                expiring.expires_at_ms.map_or("never".to_owned(), date)
            ))
        }
        KeysCommand::Revoke { key_id } => {
            let old = existing(&*store, &key_id).await?;
            store.put_api_key(&keys::revoke(&old, now)).await?;
            Ok(format!(
                "revoked {key_id} (tenant {}); it stops working within {} ms",
                old.tenant, config.auth.key_cache_ms
            ))
        }
    }
}

async fn existing(store: &dyn Store, key_id: &str) -> anyhow::Result<herald_store::ApiKeyRecord> {
    store
        .api_key(key_id)
        .await?
        .with_context(|| format!("no key {key_id:?}"))
}

/// `herald token`: a user token for `user` of `tenant`, signed with the tenant's HS256 secret
/// from `[auth.user_tokens.<tenant>]` — what the tenant's backend would do.
pub fn user_token(config: &Config, tenant: &str, user: &str, ttl_s: u64) -> anyhow::Result<String> {
    let c = config.auth.user_tokens.get(tenant).with_context(|| {
        format!("no [auth.user_tokens.{tenant}]: the tenant accepts no user tokens")
    })?;
    if c.algorithm != "HS256" {
        bail!(
            "tenant {tenant} checks {} tokens: its backend signs them with its private key",
            c.algorithm
        );
    }
    let secret = herald_auth::users::shared_secret(tenant, c).map_err(anyhow::Error::msg)?;
    let now_s = SystemClock.now_ms().div_euclid(1_000);
    let ttl = i64::try_from(ttl_s).unwrap_or(i64::MAX);
    herald_auth::users::mint_hs256(&secret, tenant, user, &c.audience, now_s, ttl)
        .map_err(anyhow::Error::msg)
}

/// The development key of `herald run`: read from `path` if it still works, else made for
/// tenant `acme` with every scope and written there (readable by its owner only).
pub async fn development_key(store: &dyn Store, path: &Path) -> anyhow::Result<String> {
    let now = SystemClock.now_ms();
    if let Ok(key) = std::fs::read_to_string(path) {
        let key = key.trim();
        if let Ok((id, secret)) = keys::parse(key)
            && let Ok(Some(record)) = store.api_key(id).await
            && keys::check(&record, secret, now).is_ok()
        {
            return Ok(key.to_owned());
        }
    }
    let new = keys::make(
        "acme",
        &Scope::ALL,
        "development key of herald run",
        now,
        None,
    );
    store.put_api_key(&new.record).await?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, &new.key).with_context(|| format!("writing {}", path.display()))?;
    Ok(new.key)
}

/// The click links' signing secret of `herald run`: made (32 random bytes, hex) if missing.
pub fn development_link_secret(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret: [u8; 32] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &hex).with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")
}

/// The API key the client commands send: `--api-key`/`HERALD_API_KEY`, else the development
/// key file of `herald run` if there is one.
pub fn client_key(given: Option<String>, config: &Config) -> Option<String> {
    given.or_else(|| {
        std::fs::read_to_string(&config.auth.development_key_file)
            .ok()
            .map(|k| k.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(date(0), "1970-01-01 00:00Z");
        assert_eq!(date(1_767_225_600_000), "2026-01-01 00:00Z");
        assert_eq!(date(1_772_323_200_000 + 90_000), "2026-03-01 00:01Z");
    }
}
