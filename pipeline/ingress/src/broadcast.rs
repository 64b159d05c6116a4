//! `Broadcast`: the request checked ([`crate::validate::broadcast`]) and written as one event
//! to `<p>.broadcasts` (keyed tenant/topic), produced or kept in the outbox. The answer does not
//! wait for the subscribers: the broadcast stage expands it, a chunk per transaction.

use herald_proto::v1::{BroadcastRequest, BroadcastResponse};
use herald_store::OutboxRecord;
use tonic::{Request, Response, Status};

use crate::{Ingress, now_ms, validate};

impl Ingress {
    pub(crate) async fn accept_broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        let (metadata, _, mut body) = request.into_parts();
        let (_permit, tenant) = self.admit_caller(&metadata, &body.tenant).await?;
        body.tenant = tenant;
        let event = validate::broadcast::to_broadcast(body, now_ms(), &self.policy)
            .map_err(validate::FieldViolation::into_status)?;
        let _tenant = self
            .quotas
            .admit(&event.tenant)
            .map_err(|over| Status::resource_exhausted(over.to_string()))?;
        let payload = herald_schemas::codec::encode(&event)
            .map_err(|e| Status::internal(format!("encoding the event failed: {e}")))?;
        let record = OutboxRecord {
            owner: String::new(),
            id: event.broadcast_id.clone(),
            topic: self.topics.broadcasts(),
            key: format!("{}/{}", event.tenant, event.topic).into_bytes(),
            payload,
            headers: Vec::new(),
            created_at_ms: event.requested_at_ms,
        };
        self.produce(record, &event.tenant).await?;
        Ok(Response::new(BroadcastResponse {
            broadcast_id: event.broadcast_id,
        }))
    }
}
