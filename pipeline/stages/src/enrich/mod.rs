//! The enrich stage: `requested` (and `released`) → `enriched` (+ suppressed results on
//! `delivery-result`). A request arriving in its recipient's quiet hours is held in the store
//! instead, with a `DEFERRED` result; `herald_runtime::release` puts it on `released` when the
//! hours end.

mod cache;
mod logic;

use std::sync::Arc;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationRequested;
use herald_store::{HeldRecord, RecipientProfile};
use tracing::warn;

pub use cache::{CacheConfig, Lookups};
pub use herald_templates::render;
pub use logic::{
    Enrichment, QuietHold, TemplateLookup, applicable, enrich, held_result, quiet_hold,
};

use crate::wire::{decode, output};

/// Loads the recipient and template (through the caches), then runs [`enrich`].
pub struct EnrichProcessor {
    lookups: Arc<Lookups>,
    topics: Topics,
    /// The topic of requests released from quiet hours.
    released: String,
    /// Categories no opt-out applies to.
    critical: Vec<String>,
}

impl EnrichProcessor {
    /// A processor reading through `lookups` and writing to `topics`; neither opt-outs nor quiet
    /// hours apply to the `critical` categories.
    pub fn new(lookups: Arc<Lookups>, topics: Topics, critical: Vec<String>) -> EnrichProcessor {
        EnrichProcessor {
            lookups,
            released: topics.released(),
            topics,
            critical,
        }
    }

    /// Keeps the request in the store until `until` (the releaser puts it on `released` then)
    /// and says so with a `DEFERRED` result. Holding again on a replay writes the same row.
    async fn hold(
        &self,
        request: &NotificationRequested,
        profile: &RecipientProfile,
        until: i64,
        input: &Input<'_>,
    ) -> Result<Vec<Output>, ProcessError> {
        let Some(quiet) = &profile.quiet_hours else {
            return Err(ProcessError::Fatal("held without quiet hours".into()));
        };
        let held = HeldRecord {
            tenant: request.tenant.clone(),
            notification_id: request.notification_id.clone(),
            recipient_user_id: request.recipient_user_id.clone(),
            release_at_ms: until,
            payload: input.payload.to_vec(),
        };
        self.lookups.store().hold(&held).await?;
        let result = held_result(request, quiet, until, input.timestamp_ms);
        let (tenant, user) = (&request.tenant, &request.recipient_user_id);
        Ok(vec![output(
            self.topics.delivery_result(),
            tenant,
            user,
            &result,
        )?])
    }
}

#[async_trait]
impl Processor for EnrichProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let request: NotificationRequested = decode(input.payload)?;
        // Store errors convert by meaning: retry, dead-letter, or stop.
        let profile = self
            .lookups
            .profile(&request.tenant, &request.recipient_user_id)
            .await?;
        let profile = applicable(profile, &request.category, &self.critical);
        let released = input.topic == self.released;
        match quiet_hold(&profile, released, input.timestamp_ms) {
            QuietHold::Deliver => {}
            QuietHold::Until(until) => return self.hold(&request, &profile, until, input).await,
            QuietHold::Unusable(e) => warn!(
                tenant = %request.tenant, error = %e,
                "the recipient's quiet hours cannot be used; delivering now"
            ),
        }
        let variants = match &request.template {
            Some(t) => {
                self.lookups
                    .template(&request.tenant, &t.template_id)
                    .await?
            }
            None => Arc::default(),
        };
        let lookup = match &request.template {
            None => TemplateLookup::NotNeeded,
            Some(_) if variants.is_empty() => TemplateLookup::Missing,
            Some(_) => TemplateLookup::Found(&variants),
        };
        let result = enrich(&request, &profile, lookup, input.timestamp_ms);
        let (tenant, user) = (&request.tenant, &request.recipient_user_id);
        let mut outputs = Vec::with_capacity(result.results.len() + 1);
        if let Some(enriched) = &result.enriched {
            outputs.push(output(self.topics.enriched(), tenant, user, enriched)?);
        }
        for r in &result.results {
            outputs.push(output(self.topics.delivery_result(), tenant, user, r)?);
        }
        Ok(outputs)
    }
}
