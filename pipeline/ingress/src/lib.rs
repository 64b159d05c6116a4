//! The ingress: Herald's write API. `SendNotification` validates the request ([`validate`]),
//! turns it into a `NotificationRequested` event with a stable notification id, writes it to the
//! `requested` topic through an idempotent producer (acks=all) keyed by tenant/recipient, and
//! answers `ACCEPTED` only once the broker has acknowledged the write.

pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_proto::v1::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use herald_proto::v1::{DeliveryState, SendNotificationRequest, SendNotificationResponse};
use herald_runtime::KafkaConfig;
use herald_runtime::runner::TRACEPARENT;
use herald_runtime::topics::Topics;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

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
}

/// Limits that keep the ingress's memory bounded under overload: past them a request is
/// refused at once with RESOURCE_EXHAUSTED (retry with backoff) instead of queueing.
#[derive(Debug, Clone, Copy)]
pub struct IngressLimits {
    /// Requests being written to Kafka at once.
    pub max_in_flight: usize,
    /// librdkafka's producer queue (`queue.buffering.max.kbytes`; its default is 1 GiB).
    pub producer_queue_kbytes: u64,
}

impl Default for IngressLimits {
    fn default() -> Self {
        IngressLimits {
            max_in_flight: 4_096,
            producer_queue_kbytes: 32 * 1024,
        }
    }
}

/// The `NotificationService` implementation.
pub struct Ingress {
    producer: FutureProducer,
    topic: String,
    ack_timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl Ingress {
    /// An ingress writing to the `requested` topic under `kafka.topic_prefix`.
    pub fn new(kafka: &KafkaConfig, limits: IngressLimits) -> Result<Ingress, IngressError> {
        let mut producer = kafka.producer();
        producer.set(
            "queue.buffering.max.kbytes",
            limits.producer_queue_kbytes.to_string(),
        );
        Ok(Ingress {
            producer: producer.create()?,
            topic: Topics::new(&kafka.topic_prefix).requested(),
            ack_timeout: Duration::from_millis(kafka.message_timeout_ms + 1_000),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn kafka_status(e: &KafkaError) -> Status {
    match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
            Status::resource_exhausted("ingress is overloaded (producer queue full); retry later")
        }
        other => Status::unavailable(format!(
            "Kafka did not acknowledge the request ({other}); it may or may not have been \
             accepted: retry with the same idempotency_key"
        )),
    }
}

#[tonic::async_trait]
impl NotificationService for Ingress {
    async fn send_notification(
        &self,
        request: Request<SendNotificationRequest>,
    ) -> Result<Response<SendNotificationResponse>, Status> {
        let Ok(_permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "ingress is at its limit of requests in flight; retry with backoff",
            ));
        };
        let trace = request
            .metadata()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let event = validate::to_event(request.into_inner(), now_ms())
            .map_err(validate::FieldViolation::into_status)?;
        let payload = herald_schemas::codec::encode(&event)
            .map_err(|e| Status::internal(format!("encoding the event failed: {e}")))?;
        let key = format!("{}/{}", event.tenant, event.recipient_user_id);
        let mut record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        if let Some(trace) = trace.as_deref() {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: TRACEPARENT,
                value: Some(trace),
            }));
        }
        match self.producer.send(record, self.ack_timeout).await {
            Ok(_) => Ok(Response::new(SendNotificationResponse {
                notification_id: event.notification_id,
                status: DeliveryState::Accepted as i32,
            })),
            Err((e, _)) => {
                warn!(error = %e, tenant = %event.tenant, "produce failed");
                Err(kafka_status(&e))
            }
        }
    }
}

/// HTTP/2 streams one client connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;

/// Serves the ingress (plus health and reflection) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    kafka: &KafkaConfig,
    limits: IngressLimits,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let ingress = Ingress::new(kafka, limits)?;
    let (health, reflection) =
        herald_proto::standard_services("herald.v1.NotificationService").await?;
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    info!(?addr, "ingress listening");
    tonic::transport::Server::builder()
        // Bounds what one connection can make the server buffer; excess streams wait in the
        // client.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_service(reflection)
        .add_service(NotificationServiceServer::new(ingress))
        .serve_with_incoming_shutdown(
            // No Nagle: a small gRPC answer must not wait for a delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}
