//! The ingress: Herald's write API. `SendNotification` validates the request ([`validate`]),
//! turns it into a `NotificationRequested` event with a stable notification id, writes it to the
//! `requested` topic through an idempotent producer (acks=all) keyed by tenant/recipient, and
//! answers `ACCEPTED` once the broker has acknowledged the write — or, when Kafka does not answer
//! within `kafka_wait_ms`, once the request is kept in the store's durable outbox, from which it
//! is replayed ([`herald_runtime::outbox`]). An idempotency key reused for a different request is
//! refused with ALREADY_EXISTS. `SendBatch` writes one event per recipient and `Broadcast` one
//! event for a topic's subscribers, both on the bulk lane ([`lane_of`]).

mod batch;
mod broadcast;
pub mod quota;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_auth::{Authenticator, Scope};
use herald_proto::store_status;
use herald_proto::v1::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use herald_proto::v1::{
    BroadcastRequest, BroadcastResponse, DeliveryState, SendBatchRequest, SendBatchResponse,
    SendNotificationRequest, SendNotificationResponse,
};
use herald_runtime::KafkaConfig;
use herald_runtime::outbox::{Outbox, OutboxError, Sent};
use herald_runtime::runner::{NOTIFICATION_ID, TRACEPARENT};
use herald_runtime::topics::{Lane, Topics};
use herald_schemas::{NotificationRequested, Priority};
use herald_store::{IdempotencyClaim, IdempotencyRecord, OutboxRecord, Store, StoreError};
use herald_telemetry::metrics::{INGRESS_REQUESTS, INGRESS_SECONDS, RequestMeters};
use herald_telemetry::trace;
use rdkafka::error::KafkaError;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info, warn};

/// What can stop the ingress.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The Kafka producer could not be created.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("grpc reflection: {0}")]
    Reflection(#[from] herald_proto::ReflectionError),
    /// The Kafka producer failed fatally (every request it had taken is kept in the outbox):
    /// the process must restart to get a new one.
    #[error("stopping: {0}")]
    ProducerFailed(String),
}

/// Limits that keep the ingress's memory bounded under overload: past them a request is
/// refused at once with RESOURCE_EXHAUSTED (retry with backoff) instead of queueing.
#[derive(Debug, Clone)]
pub struct IngressLimits {
    /// Requests being written to Kafka at once.
    pub max_in_flight: usize,
    /// librdkafka's producer queue (`queue.buffering.max.kbytes`; its default is 1 GiB).
    pub producer_queue_kbytes: u64,
    /// How long a request waits for Kafka's acknowledgement before it is kept in the outbox.
    pub kafka_wait_ms: u64,
    /// At most this many requests wait in the outbox; beyond, RESOURCE_EXHAUSTED.
    pub outbox_max_records: usize,
    /// Every tenant's quota unless it has its own.
    pub tenant_quota: quota::TenantQuota,
    /// Tenants with their own quota.
    pub tenant_quotas: std::collections::BTreeMap<String, quota::TenantQuota>,
}

impl Default for IngressLimits {
    fn default() -> Self {
        IngressLimits {
            max_in_flight: 4_096,
            producer_queue_kbytes: 32 * 1024,
            kafka_wait_ms: 2_000,
            outbox_max_records: 1_000_000,
            tenant_quota: quota::TenantQuota::default(),
            tenant_quotas: std::collections::BTreeMap::new(),
        }
    }
}

/// The `NotificationService` implementation.
pub struct Ingress {
    outbox: Outbox,
    auth: Arc<Authenticator>,
    policy: validate::Policy,
    store: Arc<dyn Store>,
    topics: Topics,
    in_flight: Arc<Semaphore>,
    quotas: Arc<quota::Quotas>,
    /// Requests and their latency by outcome.
    meters: RequestMeters,
    /// The same for `SendBatch`.
    batch_meters: RequestMeters,
    /// The same for `Broadcast`.
    broadcast_meters: RequestMeters,
}

/// The lane a notification travels: batches and low-priority notifications go in bulk, so
/// they never queue ahead of the rest (broadcasts always do, expanded by the pipeline).
pub fn lane_of(priority: Priority, batch: bool) -> Lane {
    if batch || priority == Priority::Low {
        Lane::Bulk
    } else {
        Lane::Main
    }
}

impl Ingress {
    /// An ingress writing to the `requested` topic under `kafka.topic_prefix`, keeping what
    /// Kafka cannot take in `store`'s outbox, its callers checked by `auth`.
    pub fn new(
        kafka: &KafkaConfig,
        auth: Arc<Authenticator>,
        limits: IngressLimits,
        policy: validate::Policy,
        store: Arc<dyn Store>,
    ) -> Result<Ingress, IngressError> {
        let mut producer = kafka.producer();
        producer.set(
            "queue.buffering.max.kbytes",
            limits.producer_queue_kbytes.to_string(),
        );
        let outbox = Outbox::new(
            &producer,
            Arc::clone(&store),
            format!("ingress.{}", kafka.instance_id),
            kafka.outbox_times(
                Duration::from_millis(limits.kafka_wait_ms),
                limits.outbox_max_records,
            ),
        )?;
        Ok(Ingress {
            outbox,
            auth,
            policy,
            store,
            topics: Topics::new(&kafka.topic_prefix),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            meters: RequestMeters::new(INGRESS_REQUESTS, INGRESS_SECONDS, "SendNotification"),
            batch_meters: RequestMeters::new(INGRESS_REQUESTS, INGRESS_SECONDS, "SendBatch"),
            broadcast_meters: RequestMeters::new(INGRESS_REQUESTS, INGRESS_SECONDS, "Broadcast"),
            quotas: Arc::new(quota::Quotas::new(
                limits.tenant_quota,
                &limits.tenant_quotas,
            )),
        })
    }

    /// Refuses an idempotency key already used for a different request; a retry of the same
    /// request passes (and is written again: downstream is idempotent by notification id).
    async fn check_idempotency_key(&self, event: &NotificationRequested) -> Result<(), Status> {
        let Some(key) = event.idempotency_key.as_deref() else {
            return Ok(());
        };
        // What the client asked for, canonically (maps sorted): the same request retried gives
        // the same digest.
        let digest = herald_schemas::ids::request_digest(event);
        let claim = IdempotencyRecord {
            tenant: event.tenant.clone(),
            key: key.to_owned(),
            request_hash: digest,
            notification_id: event.notification_id.clone(),
            at_ms: event.requested_at_ms,
        };
        match self.store.claim_idempotency_key(&claim).await {
            Ok(IdempotencyClaim::Claimed) => Ok(()),
            Ok(IdempotencyClaim::Existing(first)) if first.request_hash == claim.request_hash => {
                Ok(())
            }
            Ok(IdempotencyClaim::Existing(first)) => Err(Status::already_exists(format!(
                "idempotency_key {key:?} was already used for a different request (notification \
                 {}); use a new key for a new notification",
                first.notification_id
            ))),
            Err(e) => Err(store_failure("cannot check the idempotency key", &e)),
        }
    }
}

/// The status for a store failure ([`store_status`], the mapping shared with the query
/// service), its message prefixed with what the ingress was doing.
fn store_failure(doing: &str, e: &StoreError) -> Status {
    let status = store_status(e);
    Status::new(status.code(), format!("{doing}: {}", status.message()))
}

/// `result` of a request that began at `began`, counted in `meters` by its code.
fn observed<T>(
    meters: &RequestMeters,
    began: Instant,
    result: Result<T, Status>,
) -> Result<T, Status> {
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    meters.observe(code as i32, began.elapsed());
    result
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[tonic::async_trait]
impl NotificationService for Ingress {
    async fn send_notification(
        &self,
        request: Request<SendNotificationRequest>,
    ) -> Result<Response<SendNotificationResponse>, Status> {
        let began = Instant::now();
        let parent = request
            .metadata()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let span = trace::request_span("SendNotification", parent);
        observed(
            &self.meters,
            began,
            self.send(request, &span).instrument(span.clone()).await,
        )
    }

    async fn send_batch(
        &self,
        request: Request<SendBatchRequest>,
    ) -> Result<Response<SendBatchResponse>, Status> {
        let began = Instant::now();
        let parent = request
            .metadata()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let span = trace::request_span("SendBatch", parent);
        observed(
            &self.batch_meters,
            began,
            self.batch(request, &span).instrument(span.clone()).await,
        )
    }

    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        let began = Instant::now();
        observed(
            &self.broadcast_meters,
            began,
            self.accept_broadcast(request).await,
        )
    }
}

impl Ingress {
    /// A place among the requests in flight (RESOURCE_EXHAUSTED when there is none), then the
    /// caller's credential checked for the `send` scope; the tenant the request acts for is the
    /// credential's (a body naming another is refused).
    async fn admit_caller(
        &self,
        metadata: &MetadataMap,
        tenant: &str,
    ) -> Result<(OwnedSemaphorePermit, String), Status> {
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "ingress is at its limit of requests in flight; retry with backoff",
            ));
        };
        let caller = self.auth.authenticate(metadata).await?;
        caller.service(Scope::Send)?;
        Ok((permit, caller.tenant_for(tenant)?))
    }

    async fn send(
        &self,
        request: Request<SendNotificationRequest>,
        span: &tracing::Span,
    ) -> Result<Response<SendNotificationResponse>, Status> {
        // The request's own span when traces are exported, else the caller's context as sent.
        let trace = trace::traceparent(span).or_else(|| {
            request
                .metadata()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let (metadata, _, mut body) = request.into_parts();
        let (_permit, tenant) = self.admit_caller(&metadata, &body.tenant).await?;
        body.tenant = tenant;
        let event = validate::to_event_with(body, now_ms(), &self.policy)
            .map_err(validate::FieldViolation::into_status)?;
        span.record("herald.tenant", event.tenant.as_str());
        span.record("herald.notification_id", event.notification_id.as_str());
        let _tenant = self
            .quotas
            .admit(&event.tenant)
            .map_err(|over| Status::resource_exhausted(over.to_string()))?;
        self.write(&event, trace, lane_of(event.priority, false))
            .await?;
        Ok(Response::new(SendNotificationResponse {
            notification_id: event.notification_id,
            status: DeliveryState::Accepted as i32,
        }))
    }

    /// Writes one accepted event to `lane`: its idempotency key checked, then produced (or kept
    /// in the outbox), carrying `trace`.
    async fn write(
        &self,
        event: &NotificationRequested,
        trace: Option<String>,
        lane: Lane,
    ) -> Result<(), Status> {
        self.check_idempotency_key(event).await?;
        let payload = herald_schemas::codec::encode(event)
            .map_err(|e| Status::internal(format!("encoding the event failed: {e}")))?;
        let record = OutboxRecord {
            owner: String::new(),
            id: event.notification_id.clone(),
            topic: self.topics.in_lane(lane).requested(),
            key: format!("{}/{}", event.tenant, event.recipient_user_id).into_bytes(),
            payload,
            headers: trace
                .map(|t| (TRACEPARENT.to_owned(), t.into_bytes()))
                .into_iter()
                .chain([(
                    NOTIFICATION_ID.to_owned(),
                    event.notification_id.clone().into_bytes(),
                )])
                .collect(),
            created_at_ms: event.requested_at_ms,
        };
        self.produce(record, &event.tenant).await
    }

    /// Produces `record` or keeps it in the outbox; a refusal as the caller's status.
    async fn produce(&self, record: OutboxRecord, tenant: &str) -> Result<(), Status> {
        let id = record.id.clone();
        match self.outbox.send_or_keep(record).await {
            Ok(sent) => {
                if sent == Sent::Kept {
                    debug!(%id, "accepted into the outbox (Kafka is slow or down)");
                }
                Ok(())
            }
            Err(OutboxError::QueueFull) => Err(Status::resource_exhausted(
                "ingress is overloaded (producer queue full); retry later",
            )),
            Err(OutboxError::Full(kept)) => Err(Status::resource_exhausted(format!(
                "Kafka is not taking requests and {kept} already wait in the outbox; retry later \
                 with the same idempotency_key"
            ))),
            Err(OutboxError::Store(e)) => {
                warn!(error = %e, %tenant, "neither Kafka nor the outbox took a request");
                Err(store_failure(
                    "neither Kafka nor the outbox accepted the request (when retrying, use the \
                     same idempotency_key)",
                    &e,
                ))
            }
        }
    }
}

/// Forgets, every second, the rate state of tenants that sent nothing lately.
async fn forget_idle_tenants(quotas: Arc<quota::Quotas>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => quotas.forget_idle(),
        }
    }
}

/// Serves the ingress (plus health and reflection) on `listener` until `shutdown`: over TLS
/// with `tls`, in plaintext without.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<herald_proto::tls::ServerTls>>,
    kafka: &KafkaConfig,
    auth: Arc<Authenticator>,
    limits: IngressLimits,
    policy: validate::Policy,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let ingress = Ingress::new(kafka, auth, limits, policy, store)?;
    let outbox = ingress.outbox.clone();
    tokio::spawn(forget_idle_tenants(
        Arc::clone(&ingress.quotas),
        shutdown.clone(),
    ));
    let stop = outbox.stop_on_failure(&shutdown);
    tokio::spawn(outbox.clone().replay(stop.clone()));
    let (health, reflection, reflection_v1alpha) =
        herald_proto::standard_services(&["herald.v1.NotificationService"]).await?;
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    info!(?addr, "ingress listening");
    let router = herald_proto::server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(NotificationServiceServer::new(ingress));
    herald_proto::tls::serve(router, listener, tls, stop.cancelled_owned()).await?;
    match outbox.failure() {
        Some(reason) => Err(IngressError::ProducerFailed(reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn store_failures_keep_the_shared_code_and_say_what_failed() {
        let locked = StoreError::Unavailable("/var/lib/herald/store.db: database is locked".into());
        let status = store_failure("cannot check the idempotency key", &locked);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .starts_with("cannot check the idempotency key: "),
            "{status:?}"
        );
        assert!(!status.message().contains("/var/lib"), "{status:?}");
        let corrupt = store_failure("x", &StoreError::Corrupt("unknown layout".into()));
        assert_eq!(corrupt.code(), Code::Internal);
    }
}
