//! Herald's read side, served from the store by its own process so that a surge of sends never
//! slows reads: `GetNotification` (status and per-channel timeline), `ListInbox` (newest first,
//! opaque page tokens, unread/category filters), `ListFailures`, `UnreadCount`, `MarkRead` and
//! `MarkAllRead` (stored, and emitted as READ engagement events: [`engagement`]) and
//! `WatchInbox` (server streaming with resume tokens: [`watch`]). Handlers validate, call the
//! store, and map its errors to a `Status` in one place ([`herald_proto::store_status`]).

pub mod bounds;
pub mod clicks;
pub mod engagement;
pub mod observed;
pub mod watch;
pub mod watchers;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herald_auth::{Authenticator, Principal, Scope};
use herald_proto::convert::{channel_to_proto, priority_to_proto, state_to_proto};
use herald_proto::store_status;
use herald_proto::v1::management_service_server::ManagementServiceServer;
use herald_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use herald_proto::v1::{
    DeliveryEvent, Failure, GetNotificationRequest, GetNotificationResponse, ListFailuresRequest,
    ListFailuresResponse, ListInboxRequest, ListInboxResponse, MarkAllReadRequest,
    MarkAllReadResponse, MarkReadRequest, MarkReadResponse, Notification, RecordOpenedRequest,
    RecordOpenedResponse, UnreadCountRequest, UnreadCountResponse, WatchInboxRequest,
    WatchInboxResponse,
};
use herald_schemas::EngagementKind;
use herald_store::{
    Clock, FailureQuery, InboxEntryRecord, InboxQuery, Retention, Store, SystemClock, overall_state,
};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::info;

use herald_runtime::outbox::OutboxError;

use crate::engagement::{Engaged, EngagementSink};
use crate::observed::Observed;
use crate::watchers::{WatchLimits, Watchers};

/// Default and maximum inbox page sizes.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;
/// `UnreadCount` stops counting here.
pub const UNREAD_CAP: u32 = 1_000;
/// The most ids one `MarkRead` may name.
pub const MAX_MARK_READ: usize = 100;
/// MarkAllRead marks (and emits events for) this many entries at a time.
pub const MARK_ALL_BATCH: usize = 500;

/// What can stop the query service.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("grpc reflection: {0}")]
    Reflection(#[from] herald_proto::ReflectionError),
    /// The engagement producer failed fatally (its events are kept in the outbox): the process
    /// must restart to get a new one.
    #[error("stopping: {0}")]
    ProducerFailed(String),
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field}: is required")))
    } else {
        Ok(())
    }
}

fn page_size(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(Status::invalid_argument(format!(
            "page_size: at most {MAX_PAGE_SIZE}"
        ))),
        n => Ok(n as usize),
    }
}

pub use herald_proto::convert::inbox_entry;

/// How the query service behaves beyond the store it reads.
#[derive(Clone)]
pub struct QueryOptions {
    /// Where READ engagement events go; `None` stores read state without emitting events
    /// (tests of the read path alone).
    pub engagement: Option<EngagementSink>,
    /// How often a `WatchInbox` stream polls the store.
    pub watch_poll: Duration,
    /// The store's retention, for validating resume tokens.
    pub retention: Retention,
    /// How many `WatchInbox` streams run at most: in all, per tenant, per user.
    pub watch_limits: WatchLimits,
    /// Categories no recipient may mute (the management API refuses such an opt-out).
    pub critical_categories: Vec<String>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            engagement: None,
            watch_poll: Duration::from_millis(250),
            retention: Retention::default(),
            watch_limits: WatchLimits::default(),
            critical_categories: Vec::new(),
        }
    }
}

/// The `QueryService` implementation.
pub struct Query {
    store: Arc<dyn Store>,
    auth: Arc<Authenticator>,
    options: QueryOptions,
    watchers: Watchers,
    shutdown: CancellationToken,
}

impl Query {
    /// A query service reading `store`, its callers checked by `auth`.
    pub fn new(
        store: Arc<dyn Store>,
        auth: Arc<Authenticator>,
        options: QueryOptions,
        shutdown: CancellationToken,
    ) -> Query {
        Query {
            store,
            auth,
            watchers: Watchers::new(options.watch_limits),
            options,
            shutdown,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchInboxResponse, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for Query {
    async fn get_notification(
        &self,
        request: Request<GetNotificationRequest>,
    ) -> Result<Response<GetNotificationResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let mut req = request.into_inner();
        req.tenant = caller.tenant_for(&req.tenant)?;
        if let Principal::Service { .. } = caller {
            caller.service(Scope::Read)?;
        }
        required("notification_id", &req.notification_id)?;
        let not_found = || {
            Status::not_found(format!(
                "notification {:?} not found for tenant {:?} (it may still be on its way from \
                 the ingress)",
                req.notification_id, req.tenant
            ))
        };
        let Some((n, timeline)) = self
            .store
            .get_notification(&req.tenant, &req.notification_id)
            .await
            .map_err(|e| store_status(&e))?
        else {
            return Err(not_found());
        };
        // A user sees only their own notifications; another's reads as absent.
        if let Principal::User { user_id, .. } = &caller
            && *user_id != n.recipient_user_id
        {
            return Err(not_found());
        }
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
        let (metadata, _, mut req) = request.into_parts();
        (req.tenant, req.recipient_user_id) = self
            .inbox_caller(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let before_ms = bounds::time("before_ms", req.before_ms, 0, SystemClock.now_ms())?;
        let page = self
            .store
            .list_inbox(&InboxQuery {
                tenant: req.tenant,
                recipient_user_id: req.recipient_user_id,
                page_size: page_size(req.page_size)?,
                page_token: Some(req.page_token).filter(|t| !t.is_empty()),
                before_ms: Some(before_ms).filter(|ms| *ms > 0),
                unread_only: req.unread_only,
                category: Some(req.category).filter(|c| !c.is_empty()),
            })
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(ListInboxResponse {
            entries: page.entries.into_iter().map(inbox_entry).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_failures(
        &self,
        request: Request<ListFailuresRequest>,
    ) -> Result<Response<ListFailuresResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.service(Scope::Read)?;
        let mut req = request.into_inner();
        req.tenant = caller.tenant_for(&req.tenant)?;
        let (from_ms, to_ms) = bounds::failure_range(req.from_ms, req.to_ms, SystemClock.now_ms())?;
        let page = self
            .store
            .list_failures(&FailureQuery {
                tenant: req.tenant,
                from_ms,
                to_ms,
                page_size: page_size(req.page_size)?,
                page_token: Some(req.page_token).filter(|t| !t.is_empty()),
            })
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(ListFailuresResponse {
            failures: page
                .failures
                .into_iter()
                .map(|f| Failure {
                    notification_id: f.notification_id,
                    recipient_user_id: f.recipient_user_id,
                    category: f.category,
                    channel: f.channel.map_or(0, |c| channel_to_proto(c) as i32),
                    state: state_to_proto(f.state) as i32,
                    reason: f.reason.unwrap_or_default(),
                    at_ms: f.at_ms,
                })
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn unread_count(
        &self,
        request: Request<UnreadCountRequest>,
    ) -> Result<Response<UnreadCountResponse>, Status> {
        let (metadata, _, mut req) = request.into_parts();
        (req.tenant, req.recipient_user_id) = self
            .inbox_caller(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        // Count one past the cap to tell "exactly the cap" from "more".
        let n = self
            .store
            .unread_count(&req.tenant, &req.recipient_user_id, UNREAD_CAP + 1)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(UnreadCountResponse {
            unread: n.min(UNREAD_CAP),
            capped: n > UNREAD_CAP,
        }))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<MarkReadResponse>, Status> {
        let (metadata, _, mut req) = request.into_parts();
        (req.tenant, req.recipient_user_id) = self
            .inbox_caller(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        if req.notification_ids.is_empty() || req.notification_ids.len() > MAX_MARK_READ {
            return Err(Status::invalid_argument(format!(
                "notification_ids: give 1 to {MAX_MARK_READ} ids"
            )));
        }
        if req.notification_ids.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("notification_ids: an id is empty"));
        }
        let newly = self
            .store
            .mark_read(
                &req.tenant,
                &req.recipient_user_id,
                &req.notification_ids,
                SystemClock.now_ms(),
            )
            .await
            .map_err(|e| store_status(&e))?;
        self.emit_read(&newly).await?;
        Ok(Response::new(MarkReadResponse {
            newly_read: newly.into_iter().map(|e| e.notification_id).collect(),
        }))
    }

    async fn record_opened(
        &self,
        request: Request<RecordOpenedRequest>,
    ) -> Result<Response<RecordOpenedResponse>, Status> {
        let event_id = self.opened(request).await?;
        Ok(Response::new(RecordOpenedResponse { event_id }))
    }

    async fn mark_all_read(
        &self,
        request: Request<MarkAllReadRequest>,
    ) -> Result<Response<MarkAllReadResponse>, Status> {
        let (metadata, _, mut req) = request.into_parts();
        (req.tenant, req.recipient_user_id) = self
            .inbox_caller(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let now = SystemClock.now_ms();
        let up_to_ms = bounds::time("up_to_ms", req.up_to_ms, now, now)?;
        // In batches, each stored and its events emitted before the next: memory stays bounded
        // however many entries are unread.
        let mut marked = 0_u64;
        loop {
            let newly = self
                .store
                .mark_all_read(
                    &req.tenant,
                    &req.recipient_user_id,
                    up_to_ms,
                    now,
                    MARK_ALL_BATCH,
                )
                .await
                .map_err(|e| store_status(&e))?;
            self.emit_read(&newly).await?;
            marked += newly.len() as u64;
            if newly.len() < MARK_ALL_BATCH {
                break;
            }
        }
        Ok(Response::new(MarkAllReadResponse {
            marked: u32::try_from(marked).unwrap_or(u32::MAX),
        }))
    }

    type WatchInboxStream = WatchStream;

    async fn watch_inbox(
        &self,
        request: Request<WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        let (metadata, _, mut req) = request.into_parts();
        (req.tenant, req.recipient_user_id) = self
            .inbox_caller(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let slot = self
            .watchers
            .take(&req.tenant, &req.recipient_user_id)
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))?;
        let cursor = match watch::resume_cursor(
            &req.tenant,
            &req.recipient_user_id,
            &req.resume_token,
            &self.options.retention,
        )? {
            Some(cursor) => cursor,
            None => self
                .store
                .feed_start(&req.tenant, &req.recipient_user_id)
                .await
                .map_err(|e| store_status(&e))?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let watch = watch::Watch {
            store: Arc::clone(&self.store),
            tenant: req.tenant,
            user: req.recipient_user_id,
            cursor,
            poll: self.options.watch_poll,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            watch.run(tx, shutdown).await;
            drop(slot);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

impl Query {
    /// `RecordOpened`: the notification must be the caller's user's; its OPENED event is
    /// produced or kept in the outbox.
    async fn opened(&self, request: Request<RecordOpenedRequest>) -> Result<String, Status> {
        let (metadata, _, mut req) = request.into_parts();
        (req.tenant, req.recipient_user_id) = self
            .inbox_caller(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        required("notification_id", &req.notification_id)?;
        let found = self
            .store
            .get_notification(&req.tenant, &req.notification_id)
            .await
            .map_err(|e| store_status(&e))?;
        if found.is_none_or(|(n, _)| n.recipient_user_id != req.recipient_user_id) {
            return Err(Status::not_found(format!(
                "notification {:?} not found for user {:?}",
                req.notification_id, req.recipient_user_id
            )));
        }
        let event = Engaged {
            kind: EngagementKind::Opened,
            notification_id: &req.notification_id,
            tenant: &req.tenant,
            recipient_user_id: &req.recipient_user_id,
            channel: herald_proto::convert::channel_from_proto(req.channel),
            at_ms: SystemClock.now_ms(),
        };
        if let Some(sink) = &self.options.engagement {
            sink.emit(event).await.map_err(|e| match e {
                OutboxError::QueueFull | OutboxError::Full(_) => {
                    Status::resource_exhausted("the engagement producer is overloaded; retry")
                }
                OutboxError::Store(e) => store_status(&e),
            })?;
        }
        Ok(herald_schemas::ids::engagement_id(
            &req.notification_id,
            EngagementKind::Opened,
        ))
    }

    /// The (tenant, user) of an inbox call, as its credential allows.
    async fn inbox_caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        tenant: &str,
        user: &str,
    ) -> Result<(String, String), Status> {
        let caller = self.auth.authenticate(metadata).await?;
        let (tenant, user) = caller.inbox_of(tenant, user)?;
        required("recipient_user_id", &user)?;
        Ok((tenant, user))
    }

    /// Emits READ events for entries this call marked read. The read state is already stored;
    /// an event Kafka cannot take waits in the outbox.
    async fn emit_read(&self, newly: &[InboxEntryRecord]) -> Result<(), Status> {
        match &self.options.engagement {
            Some(sink) if !newly.is_empty() => sink.read(newly).await.map_err(|e| match e {
                OutboxError::QueueFull | OutboxError::Full(_) => Status::resource_exhausted(
                    "the read marks are stored but the engagement producer is overloaded; \
                     retry",
                ),
                OutboxError::Store(e) => store_status(&e),
            }),
            _ => Ok(()),
        }
    }
}

/// Serves the query service (plus health and reflection) on `listener` until `shutdown`, and
/// replays the engagement outbox meanwhile; over TLS with `tls`, in plaintext without.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<herald_proto::tls::ServerTls>>,
    store: Arc<dyn Store>,
    auth: Arc<Authenticator>,
    options: QueryOptions,
    shutdown: CancellationToken,
) -> Result<(), QueryError> {
    // A fatal engagement producer stops the service (its events are kept in the outbox), so
    // that the restarted process replays them with a new producer.
    let stop = match &options.engagement {
        Some(sink) => sink.stop_on_failure(&shutdown),
        None => shutdown.child_token(),
    };
    if let Some(sink) = options.engagement.clone() {
        tokio::spawn(sink.replay(stop.clone()));
    }
    let sink = options.engagement.clone();
    let (health, reflection, reflection_v1alpha) =
        herald_proto::standard_services(&["herald.v1.QueryService", "herald.v1.ManagementService"])
            .await?;
    info!(addr = ?listener.local_addr().ok(), "query service listening");
    let router = herald_proto::server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(Observed::new(ManagementServiceServer::new(
            herald_management::Management::new(
                Arc::clone(&store),
                Arc::clone(&auth),
                sink.as_ref()
                    .map(|s| Arc::new(s.changes()) as Arc<dyn herald_management::Changes>),
                options.critical_categories.clone(),
            ),
        )))
        .add_service(Observed::new(QueryServiceServer::new(Query::new(
            store,
            auth,
            options,
            stop.clone(),
        ))));
    herald_proto::tls::serve(router, listener, tls, stop.cancelled_owned()).await?;
    match sink.and_then(|s| s.failure()) {
        Some(reason) => Err(QueryError::ProducerFailed(reason)),
        None => Ok(()),
    }
}
