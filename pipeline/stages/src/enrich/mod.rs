//! The enrich stage: `requested` → `enriched` (+ suppressed results on `delivery-result`).

mod logic;

use std::sync::Arc;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationRequested;
use herald_store::Store;

pub use herald_templates::render;
pub use logic::{Enrichment, TemplateLookup, applicable, enrich};

use crate::wire::{decode, output};

/// Loads the recipient and template from the store, then runs [`enrich`].
pub struct EnrichProcessor {
    store: Arc<dyn Store>,
    topics: Topics,
    /// Categories no opt-out applies to.
    critical: Vec<String>,
}

impl EnrichProcessor {
    /// A processor reading from `store` and writing to `topics`; opt-outs do not apply to the
    /// `critical` categories.
    pub fn new(store: Arc<dyn Store>, topics: Topics, critical: Vec<String>) -> EnrichProcessor {
        EnrichProcessor {
            store,
            topics,
            critical,
        }
    }
}

#[async_trait]
impl Processor for EnrichProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let request: NotificationRequested = decode(input.payload)?;
        // Store errors convert by meaning: retry, dead-letter, or stop.
        let profile = self
            .store
            .recipient_profile(&request.tenant, &request.recipient_user_id)
            .await?;
        let profile = applicable(profile, &request.category, &self.critical);
        let template = match &request.template {
            Some(t) => {
                self.store
                    .template(&request.tenant, &t.template_id, t.locale.as_deref())
                    .await?
            }
            None => None,
        };
        let lookup = match (&request.template, &template) {
            (None, _) => TemplateLookup::NotNeeded,
            (Some(_), Some(found)) => TemplateLookup::Found(found),
            (Some(_), None) => TemplateLookup::Missing,
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
