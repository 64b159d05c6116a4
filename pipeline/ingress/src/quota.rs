//! Per-tenant quotas: requests per second and requests in flight, from config per tenant with a
//! default for the rest. A request over either is answered RESOURCE_EXHAUSTED naming the quota,
//! so one tenant's burst cannot take the ingress from the others. The tenant is the caller's
//! API key's (checked before the quota).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Deserialize;

/// One tenant's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantQuota {
    /// Requests a second, on average; a burst of up to this many at once is allowed.
    pub requests_per_second: u32,
    /// Requests being handled at once.
    pub in_flight: usize,
}

/// By default a tenant may use half of the ingress's requests in flight (`max_in_flight`,
/// 4,096), so a second tenant always finds room, and has no practical rate limit (one
/// tenant's deployment must not be capped below what the ingress can do); set
/// `requests_per_second` per tenant where a contract says so.
impl Default for TenantQuota {
    fn default() -> Self {
        TenantQuota {
            requests_per_second: 1_000_000,
            in_flight: 2_048,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverQuota {
    /// Too many requests a second.
    #[error(
        "tenant {tenant:?} is over its quota of {limit} requests per second; retry with backoff"
    )]
    Rate {
        /// The tenant.
        tenant: String,
        /// Its requests per second.
        limit: u32,
    },
    /// Too many at once.
    #[error("tenant {tenant:?} already has {limit} requests in flight; retry with backoff")]
    InFlight {
        /// The tenant.
        tenant: String,
        /// Its requests in flight.
        limit: usize,
    },
}

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Every tenant's quota and what it has used.
pub struct Quotas {
    default: TenantQuota,
    /// Tenants with their own quota (from config: a bounded set).
    own: HashMap<String, (TenantQuota, Direct)>,
    /// Every other tenant, each with the default rate.
    others: Keyed,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// A request's place among its tenant's in flight; dropping it gives it back.
pub struct InFlight {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    tenant: String,
}

fn quota(q: TenantQuota) -> Quota {
    Quota::per_second(NonZeroU32::new(q.requests_per_second).unwrap_or(NonZeroU32::MIN))
}

impl Quotas {
    /// `default` for every tenant not in `tenants`.
    pub fn new(default: TenantQuota, tenants: &BTreeMap<String, TenantQuota>) -> Quotas {
        Quotas {
            default,
            own: tenants
                .iter()
                .map(|(t, q)| (t.clone(), (*q, RateLimiter::direct(quota(*q)))))
                .collect(),
            others: RateLimiter::keyed(quota(default)),
            in_flight: Arc::default(),
        }
    }

    /// Admits one request of `tenant`, or says which quota it is over.
    pub fn admit(&self, tenant: &str) -> Result<InFlight, OverQuota> {
        let (limits, rate_ok) = match self.own.get(tenant) {
            Some((q, limiter)) => (*q, limiter.check().is_ok()),
            None => (
                self.default,
                self.others.check_key(&tenant.to_owned()).is_ok(),
            ),
        };
        if !rate_ok {
            return Err(OverQuota::Rate {
                tenant: tenant.to_owned(),
                limit: limits.requests_per_second,
            });
        }
        let mut counts = lock(&self.in_flight);
        let n = counts.entry(tenant.to_owned()).or_default();
        if *n >= limits.in_flight {
            if *n == 0 {
                counts.remove(tenant);
            }
            return Err(OverQuota::InFlight {
                tenant: tenant.to_owned(),
                limit: limits.in_flight,
            });
        }
        *n += 1;
        Ok(InFlight {
            counts: Arc::clone(&self.in_flight),
            tenant: tenant.to_owned(),
        })
    }

    /// Forgets the rate state of tenants whose state is back to fresh (the keyed limiter's
    /// memory; the ingress calls it every second).
    pub fn forget_idle(&self) {
        self.others.retain_recent();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

fn lock(counts: &Mutex<HashMap<String, usize>>) -> MutexGuard<'_, HashMap<String, usize>> {
    counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(own: &[(&str, u32, usize)]) -> Quotas {
        let tenants = own
            .iter()
            .map(|(t, rps, n)| {
                (
                    (*t).to_owned(),
                    TenantQuota {
                        requests_per_second: *rps,
                        in_flight: *n,
                    },
                )
            })
            .collect();
        Quotas::new(
            TenantQuota {
                requests_per_second: 3,
                in_flight: 100,
            },
            &tenants,
        )
    }

    #[test]
    fn a_tenant_over_its_rate_is_refused_and_others_are_not() {
        let q = quotas(&[]);
        let held: Vec<InFlight> = (0..3).map(|_| q.admit("a").expect("within")).collect();
        let refused = q.admit("a").err().expect("the fourth at once");
        assert!(
            matches!(refused, OverQuota::Rate { limit: 3, .. }),
            "{refused:?}"
        );
        assert!(q.admit("b").is_ok(), "another tenant has its own budget");
        drop(held);
    }

    #[test]
    fn a_configured_tenant_has_its_own_rate() {
        let q = quotas(&[("big", 10, 100)]);
        for _ in 0..10 {
            drop(q.admit("big").expect("within its own quota"));
        }
        assert!(q.admit("big").is_err());
    }

    #[test]
    fn in_flight_is_capped_per_tenant_and_given_back() {
        let q = quotas(&[("t", 100, 2)]);
        let a = q.admit("t").expect("first");
        let _b = q.admit("t").expect("second");
        let refused = q.admit("t").err().expect("third at once");
        assert!(
            matches!(refused, OverQuota::InFlight { limit: 2, .. }),
            "{refused:?}"
        );
        drop(a);
        assert!(q.admit("t").is_ok());
    }

    #[test]
    fn the_in_flight_counts_keep_only_tenants_with_requests() {
        let q = quotas(&[("t", 100, 0)]);
        assert!(q.admit("t").is_err());
        let held: Vec<InFlight> = (0..3)
            .map(|i| q.admit(&format!("x{i}")).expect("within"))
            .collect();
        assert_eq!(lock(&q.in_flight).len(), 3);
        drop(held);
        assert!(lock(&q.in_flight).is_empty());
    }

    #[test]
    fn made_up_tenant_names_are_forgotten_once_idle() {
        // The worst a caller can send until keys authenticate: a new tenant name per request.
        let q = Quotas::new(TenantQuota::default(), &BTreeMap::new());
        for i in 0..10_000 {
            drop(
                q.admit(&format!("made-up-{i}"))
                    .expect("within the default"),
            );
        }
        assert_eq!(q.others.len(), 10_000);
        assert!(lock(&q.in_flight).is_empty(), "none in flight any more");
        // At the default rate a tenant's state is back to fresh a microsecond after its request.
        std::thread::sleep(std::time::Duration::from_millis(5));
        q.forget_idle();
        assert_eq!(q.others.len(), 0, "rate state kept for idle tenants");
    }

    #[test]
    fn the_reason_names_the_tenant_and_the_quota() {
        let e = OverQuota::Rate {
            tenant: "acme".into(),
            limit: 5,
        };
        assert_eq!(
            e.to_string(),
            "tenant \"acme\" is over its quota of 5 requests per second; retry with backoff"
        );
    }
}
