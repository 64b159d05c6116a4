//! How many `WatchInbox` streams run — in all, per tenant and per user. A watch takes a slot in
//! each and gives them back when it ends, so one user's reconnect loop or one tenant's fleet of
//! apps cannot take every stream a query process can serve.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Streams one query process serves at once.
    pub total: usize,
    /// Streams of one tenant.
    pub per_tenant: usize,
    /// Streams of one user (devices, tabs).
    pub per_user: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            total: 10_000,
            per_tenant: 5_000,
            per_user: 16,
        }
    }
}

/// Why a watch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The process serves its most.
    #[error("this query process already serves {0} watches; retry another")]
    Total(usize),
    /// The tenant has its most.
    #[error("the tenant already has {0} watches open")]
    Tenant(usize),
    /// The user has their most.
    #[error("this user already has {0} watches open; close one first")]
    User(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    tenants: HashMap<String, usize>,
    users: HashMap<(String, String), usize>,
}

/// The running watches' counts.
#[derive(Debug, Clone)]
pub struct Watchers {
    limits: WatchLimits,
    counts: Arc<Mutex<Counts>>,
}

/// A running watch's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    tenant: String,
    user: String,
}

impl Watchers {
    /// No watch running yet.
    pub fn new(limits: WatchLimits) -> Watchers {
        Watchers {
            limits,
            counts: Arc::default(),
        }
    }

    /// A place for a watch of `tenant`'s `user`, or why not.
    pub fn take(&self, tenant: &str, user: &str) -> Result<Slot, Refused> {
        let mut counts = lock(&self.counts);
        let key = (tenant.to_owned(), user.to_owned());
        if counts.total >= self.limits.total {
            return Err(Refused::Total(self.limits.total));
        }
        if counts.tenants.get(tenant).copied().unwrap_or(0) >= self.limits.per_tenant {
            return Err(Refused::Tenant(self.limits.per_tenant));
        }
        if counts.users.get(&key).copied().unwrap_or(0) >= self.limits.per_user {
            return Err(Refused::User(self.limits.per_user));
        }
        counts.total += 1;
        *counts.tenants.entry(key.0.clone()).or_default() += 1;
        *counts.users.entry(key).or_default() += 1;
        Ok(Slot {
            counts: Arc::clone(&self.counts),
            tenant: tenant.to_owned(),
            user: user.to_owned(),
        })
    }

    /// Watches running: in all, of `tenant`, of `tenant`'s `user`.
    pub fn running(&self, tenant: &str, user: &str) -> (usize, usize, usize) {
        let counts = lock(&self.counts);
        (
            counts.total,
            counts.tenants.get(tenant).copied().unwrap_or(0),
            counts
                .users
                .get(&(tenant.to_owned(), user.to_owned()))
                .copied()
                .unwrap_or(0),
        )
    }

    /// Tenants and users with a watch running (what the maps hold).
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let counts = lock(&self.counts);
        (counts.tenants.len(), counts.users.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        release(&mut counts.tenants, self.tenant.clone());
        release(&mut counts.users, (self.tenant.clone(), self.user.clone()));
    }
}

/// One fewer for `key`; a key at zero is removed, so the maps hold only running watches.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// The counts survive a panic elsewhere: they are plain numbers, always consistent.
fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchers(total: usize, per_tenant: usize, per_user: usize) -> Watchers {
        Watchers::new(WatchLimits {
            total,
            per_tenant,
            per_user,
        })
    }

    #[test]
    fn a_user_at_their_cap_is_refused_and_another_user_is_not() {
        let w = watchers(10, 10, 2);
        let _a = w.take("t", "u").expect("first");
        let _b = w.take("t", "u").expect("second");
        assert_eq!(
            w.take("t", "u").expect_err("over the cap"),
            Refused::User(2)
        );
        assert!(w.take("t", "v").is_ok());
    }

    #[test]
    fn a_tenant_at_its_cap_is_refused_and_another_tenant_is_not() {
        let w = watchers(10, 2, 5);
        let _a = w.take("t", "u").expect("first");
        let _b = w.take("t", "v").expect("second");
        assert_eq!(
            w.take("t", "x").expect_err("over the cap"),
            Refused::Tenant(2)
        );
        assert!(w.take("other", "x").is_ok());
    }

    #[test]
    fn the_process_at_its_cap_refuses_everyone() {
        let w = watchers(2, 5, 5);
        let _a = w.take("t", "u").expect("first");
        let _b = w.take("s", "v").expect("second");
        assert_eq!(
            w.take("r", "x").expect_err("over the cap"),
            Refused::Total(2)
        );
    }

    #[test]
    fn an_ended_watch_gives_its_places_back() {
        let w = watchers(1, 1, 1);
        let a = w.take("t", "u").expect("first");
        assert_eq!(w.running("t", "u"), (1, 1, 1));
        assert!(w.take("t", "u").is_err());
        drop(a);
        assert_eq!(w.running("t", "u"), (0, 0, 0));
        assert!(w.take("t", "u").is_ok());
    }

    #[test]
    fn the_counts_keep_only_running_watches() {
        let w = watchers(100, 100, 100);
        let slots: Vec<Slot> = (0..10)
            .map(|i| w.take(&format!("t{i}"), "u").expect("place"))
            .collect();
        assert_eq!(w.kept(), (10, 10));
        drop(slots);
        assert_eq!(w.kept(), (0, 0));
    }
}
