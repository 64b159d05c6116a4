//! Providers guarded and failed over: each provider of a channel gets a rate limit at its
//! quota (`governor`) and a circuit [`breaker`]; a channel with several providers sends
//! through the first whose circuit admits the call, so while the primary's circuit is open
//! its messages go through the secondary, and a probe decides when the primary is back.
//!
//! What happened is in the outcome, and so in the notification's timeline: a delivery
//! through a channel of several providers carries `<provider>:<id>` as its provider id;
//! a failure's reason names each provider turned away (`twilio: circuit open`) and any change
//! of a circuit (`twilio's circuit opened: 6 of 10 calls failed`). When every circuit is
//! open the delivery is retried when the first may probe again. The rate limit waits for a
//! permit before the call (the provider's quota is the bound; waiting is the backpressure).

pub mod breaker;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use herald_schemas::Dispatch;
use herald_store::Clock;
use serde::Deserialize;
use tracing::warn;

use crate::setup::SetupError;
use crate::{Connector, Outcome};
use breaker::{Admit, Breaker, BreakerConfig, Change};

/// `[provider.limits.<provider>]`: a provider's quota and breaker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Calls per second allowed (the provider's quota); none: unlimited.
    pub rate_per_s: Option<u32>,
    /// Calls allowed at once above the rate (the quota's burst); default: the rate.
    pub burst: Option<u32>,
    /// When the provider's circuit opens.
    pub breaker: BreakerConfig,
}

/// One provider with its limit and breaker.
pub struct Guarded {
    name: String,
    connector: Arc<dyn Connector>,
    breaker: Mutex<Breaker>,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// `connector`, called `name`, guarded as `config` says.
    pub fn new(
        name: &str,
        connector: Arc<dyn Connector>,
        config: &GuardConfig,
    ) -> Result<Guarded, SetupError> {
        config
            .breaker
            .check()
            .map_err(|e| SetupError::Config(format!("[provider.limits.{name}] {e}")))?;
        let limiter = match config.rate_per_s {
            None => None,
            Some(rate) => {
                let rate = NonZeroU32::new(rate).ok_or_else(|| {
                    SetupError::Config(format!("[provider.limits.{name}] rate_per_s is 0"))
                })?;
                let burst = NonZeroU32::new(config.burst.unwrap_or(rate.get())).unwrap_or(rate);
                Some(RateLimiter::direct(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            }
        };
        Ok(Guarded {
            name: name.to_owned(),
            connector,
            breaker: Mutex::new(Breaker::new(config.breaker)),
            limiter,
        })
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker holds counts only: one poisoned by a panic elsewhere is still sound.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A channel's providers, in order of preference, as one connector.
pub struct Failover {
    providers: Vec<Guarded>,
    clock: Arc<dyn Clock>,
}

impl Failover {
    /// Sends through `providers`, the first preferred, telling time by `clock`.
    pub fn new(providers: Vec<Guarded>, clock: Arc<dyn Clock>) -> Result<Failover, SetupError> {
        if providers.is_empty() {
            return Err(SetupError::Config("a channel needs a provider".into()));
        }
        Ok(Failover { providers, clock })
    }
}

/// What a change of circuit reads as in a timeline.
fn describe(name: &str, change: Change) -> String {
    match change {
        Change::Opened { failed, calls } => {
            format!("{name}'s circuit opened: {failed} of {calls} calls failed")
        }
        Change::Reopened => format!("{name}'s circuit opened again: the probe failed"),
        Change::Closed => format!("{name}'s circuit closed: the probe succeeded"),
    }
}

/// `outcome` from `name`, with `notes` on what else happened.
fn annotate(outcome: Outcome, name: &str, several: bool, notes: &[String]) -> Outcome {
    let with_notes = |reason: String| {
        if notes.is_empty() {
            reason
        } else {
            format!("{reason} ({})", notes.join("; "))
        }
    };
    match outcome {
        Outcome::Delivered {
            provider_message_id,
        } if several => Outcome::Delivered {
            provider_message_id: Some(match provider_message_id {
                Some(id) => format!("{name}:{id}"),
                None => name.to_owned(),
            }),
        },
        Outcome::Delivered { .. } => outcome,
        Outcome::Retry { reason, after } => Outcome::Retry {
            reason: with_notes(reason),
            after,
        },
        Outcome::Failed(reason) => Outcome::Failed(with_notes(reason)),
        Outcome::InvalidToken(reason) => Outcome::InvalidToken(with_notes(reason)),
    }
}

#[async_trait]
impl Connector for Failover {
    async fn send(&self, d: &Dispatch) -> Outcome {
        let several = self.providers.len() > 1;
        let mut notes = Vec::new();
        let mut next_probe_ms = i64::MAX;
        for provider in &self.providers {
            let admitted = provider.breaker().admit(self.clock.now_ms());
            if let Admit::Reject { until_ms } = admitted {
                notes.push(format!("{}: circuit open", provider.name));
                next_probe_ms = next_probe_ms.min(until_ms);
                continue;
            }
            if let Some(limiter) = &provider.limiter {
                limiter.until_ready().await;
            }
            let outcome = provider.connector.send(d).await;
            let failed = matches!(outcome, Outcome::Retry { .. });
            let change = provider
                .breaker()
                .record(admitted, failed, self.clock.now_ms());
            if let Some(change) = change {
                let note = describe(&provider.name, change);
                warn!(provider = %provider.name, "{note}");
                notes.push(note);
            }
            return annotate(outcome, &provider.name, several, &notes);
        }
        let wait_ms = next_probe_ms.saturating_sub(self.clock.now_ms()).max(0);
        Outcome::Retry {
            reason: format!("every provider's circuit is open ({})", notes.join("; ")),
            after: Some(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))),
        }
    }
}

#[cfg(test)]
mod tests;
