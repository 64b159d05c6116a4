//! Counts every provider call by outcome (`herald_provider_calls_total{provider, outcome}`),
//! wrapped around each provider's connector by the registry.

use std::sync::Arc;

use async_trait::async_trait;
use herald_schemas::Dispatch;
use herald_telemetry::metrics::PROVIDER_CALLS;
use metrics::Counter;

use crate::{Connector, Outcome};

/// A connector whose calls are counted under its provider's name.
pub struct Metered {
    inner: Arc<dyn Connector>,
    /// Delivered, retry, failed, invalid.
    counters: [Counter; 4],
}

impl Metered {
    /// Counts `inner`'s calls as `provider`'s.
    pub fn wrap(provider: &str, inner: Arc<dyn Connector>) -> Arc<dyn Connector> {
        let counter = |outcome: &'static str| metrics::counter!(PROVIDER_CALLS, "provider" => provider.to_owned(), "outcome" => outcome);
        Arc::new(Metered {
            inner,
            counters: [
                counter("delivered"),
                counter("retry"),
                counter("failed"),
                counter("invalid_token"),
            ],
        })
    }

    fn count(&self, outcome: &Outcome) {
        let at = match outcome {
            Outcome::Delivered { .. } => 0,
            Outcome::Retry { .. } => 1,
            Outcome::Failed(_) => 2,
            Outcome::InvalidToken(_) => 3,
        };
        self.counters[at].increment(1);
    }
}

#[async_trait]
impl Connector for Metered {
    async fn send(&self, dispatch: &Dispatch) -> Outcome {
        let outcome = self.inner.send(dispatch).await;
        self.count(&outcome);
        outcome
    }

    async fn send_many(&self, dispatches: &[Dispatch]) -> Vec<Outcome> {
        let outcomes = self.inner.send_many(dispatches).await;
        for outcome in &outcomes {
            self.count(outcome);
        }
        outcomes
    }

    fn idempotent(&self) -> bool {
        self.inner.idempotent()
    }
}
