//! The fan-out stage: `admitted` → `dispatch.<channel>` (+ dispatched results).

mod logic;

use async_trait::async_trait;
use herald_auth::links::Links;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationAdmitted;

pub use logic::{FanOut, fan_out};

use crate::wire::{decode, output};

/// The fan-out stage's processor.
pub struct FanOutProcessor {
    topics: Topics,
    links: Option<Links>,
}

impl FanOutProcessor {
    /// A processor writing to `topics`, turning action URLs into signed click links when
    /// `links` is given.
    pub fn new(topics: Topics, links: Option<Links>) -> FanOutProcessor {
        FanOutProcessor { topics, links }
    }
}

#[async_trait]
impl Processor for FanOutProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let n: NotificationAdmitted = decode(input.payload)?;
        let out = fan_out(&n, input.timestamp_ms, self.links.as_ref());
        let (tenant, user) = (&n.tenant, &n.recipient_user_id);
        let mut outputs = Vec::with_capacity(out.dispatches.len() * 2);
        for d in &out.dispatches {
            outputs.push(output(self.topics.dispatch(d.channel), tenant, user, d)?);
        }
        for r in &out.results {
            outputs.push(output(self.topics.delivery_result(), tenant, user, r)?);
        }
        Ok(outputs)
    }
}
