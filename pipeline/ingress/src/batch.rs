//! `SendBatch`: a batch checked whole ([`crate::validate::batch`]), then each recipient's event
//! written as `SendNotification` writes one — idempotency key checked, produced or kept in the
//! outbox — many at once. A failure answers the batch's error; a retry with the same batch key
//! rewrites the same ids, which downstream stages treat as the same notifications.

use herald_proto::v1::{BatchItem, SendBatchRequest, SendBatchResponse};
use tonic::{Request, Response, Status};

use crate::{Ingress, now_ms, trace, validate};

/// Events of one batch written at once.
const CONCURRENT_WRITES: usize = 64;

impl Ingress {
    pub(crate) async fn batch(
        &self,
        request: Request<SendBatchRequest>,
        span: &tracing::Span,
    ) -> Result<Response<SendBatchResponse>, Status> {
        // One batch takes one of the requests-in-flight places: its writes are bounded below.
        let traced = trace::traceparent(span);
        let (metadata, _, mut body) = request.into_parts();
        let (_permit, tenant) = self.admit_caller(&metadata, &body.tenant).await?;
        body.tenant = tenant;
        let events = validate::batch::to_events(body, now_ms(), &self.policy)
            .map_err(validate::FieldViolation::into_status)?;
        let _tenant = self
            .quotas
            .admit(&events[0].tenant)
            .map_err(|over| Status::resource_exhausted(over.to_string()))?;
        let mut written = Vec::with_capacity(events.len());
        for chunk in events.chunks(CONCURRENT_WRITES) {
            let lane = crate::lane_of(herald_schemas::Priority::Normal, true);
            let writes = chunk
                .iter()
                .map(|event| self.write(event, traced.clone(), lane));
            written.extend(futures::future::join_all(writes).await);
        }
        for (result, event) in written.into_iter().zip(&events) {
            result.map_err(|e| {
                Status::new(
                    e.code(),
                    format!(
                        "recipient {:?}: {} (retry the batch with the same batch_key)",
                        event.recipient_user_id,
                        e.message()
                    ),
                )
            })?;
        }
        Ok(Response::new(SendBatchResponse {
            items: events
                .into_iter()
                .map(|e| BatchItem {
                    recipient_user_id: e.recipient_user_id,
                    notification_id: e.notification_id,
                })
                .collect(),
        }))
    }
}
