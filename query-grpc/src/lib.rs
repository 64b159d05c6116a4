//! Herald's read side: `GetNotification` (status and per-channel timeline) and `ListInbox`
//! (newest first, opaque page tokens), served from the store by its own process so that a surge
//! of sends never slows reads. Handlers validate, call the store, and map errors to a `Status`
//! in one place ([`store_status`]).

use std::sync::Arc;

use herald_proto::convert::{channel_to_proto, priority_to_proto, state_to_proto};
use herald_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use herald_proto::v1::{
    DeliveryEvent, GetNotificationRequest, GetNotificationResponse, InboxEntry, ListInboxRequest,
    ListInboxResponse, Notification,
};
use herald_store::{InboxQuery, Store, StoreError, overall_state};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// Default and maximum inbox page sizes.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// What can stop the query service.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("grpc reflection: {0}")]
    Reflection(#[from] herald_proto::ReflectionError),
}

/// The one mapping from store errors to gRPC statuses.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::BadPageToken => {
            Status::invalid_argument("page_token: not a token this service issued")
        }
        StoreError::BadUrl { .. } => Status::internal(e.to_string()),
        StoreError::Sqlite(_) | StoreError::Worker(_) => {
            warn!(error = %e, "store read failed");
            Status::unavailable(format!("store unavailable: {e}"))
        }
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field}: is required")))
    } else {
        Ok(())
    }
}

/// The `QueryService` implementation.
pub struct Query {
    store: Arc<dyn Store>,
}

impl Query {
    /// A query service reading `store`.
    pub fn new(store: Arc<dyn Store>) -> Query {
        Query { store }
    }
}

#[tonic::async_trait]
impl QueryService for Query {
    async fn get_notification(
        &self,
        request: Request<GetNotificationRequest>,
    ) -> Result<Response<GetNotificationResponse>, Status> {
        let req = request.into_inner();
        required("tenant", &req.tenant)?;
        required("notification_id", &req.notification_id)?;
        let Some((n, timeline)) = self
            .store
            .get_notification(&req.tenant, &req.notification_id)
            .await
            .map_err(store_status)?
        else {
            return Err(Status::not_found(format!(
                "notification {:?} not found for tenant {:?} (it may still be on its way from \
                 the ingress)",
                req.notification_id, req.tenant
            )));
        };
        let status = state_to_proto(overall_state(&timeline)) as i32;
        Ok(Response::new(GetNotificationResponse {
            notification: Some(Notification {
                notification_id: n.notification_id,
                tenant: n.tenant,
                recipient_user_id: n.recipient_user_id,
                category: n.category,
                priority: priority_to_proto(n.priority) as i32,
                status,
                created_at_ms: n.created_at_ms,
            }),
            timeline: timeline
                .into_iter()
                .map(|e| DeliveryEvent {
                    channel: e.channel.map_or(0, |c| channel_to_proto(c) as i32),
                    state: state_to_proto(e.state) as i32,
                    reason: e.reason.unwrap_or_default(),
                    at_ms: e.at_ms,
                })
                .collect(),
        }))
    }

    async fn list_inbox(
        &self,
        request: Request<ListInboxRequest>,
    ) -> Result<Response<ListInboxResponse>, Status> {
        let req = request.into_inner();
        required("tenant", &req.tenant)?;
        required("recipient_user_id", &req.recipient_user_id)?;
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: at most {MAX_PAGE_SIZE}"
                )));
            }
            n => n,
        };
        let page = self
            .store
            .list_inbox(&InboxQuery {
                tenant: req.tenant,
                recipient_user_id: req.recipient_user_id,
                page_size: page_size as usize,
                page_token: Some(req.page_token).filter(|t| !t.is_empty()),
            })
            .await
            .map_err(store_status)?;
        Ok(Response::new(ListInboxResponse {
            entries: page
                .entries
                .into_iter()
                .map(|e| InboxEntry {
                    notification_id: e.notification_id,
                    category: e.category,
                    title: e.title,
                    body: e.body,
                    action_url: e.action_url.unwrap_or_default(),
                    created_at_ms: e.created_at_ms,
                    read: e.read_at_ms.is_some(),
                })
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}

/// HTTP/2 streams one client connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;

/// Serves the query service (plus health and reflection) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), QueryError> {
    let (health, reflection) = herald_proto::standard_services("herald.v1.QueryService").await?;
    info!(addr = ?listener.local_addr().ok(), "query service listening");
    tonic::transport::Server::builder()
        // Bounds what one connection can make the server buffer; excess streams wait in the
        // client.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_service(reflection)
        .add_service(QueryServiceServer::new(Query::new(store)))
        .serve_with_incoming_shutdown(
            // No Nagle: a small gRPC answer must not wait for a delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}
