//! gRPC clients that call as a tenant's backend would: with an API key of that tenant (every
//! scope), made in the platform's store the first time a tenant is named.

use herald_auth::{Scope, keys};
use herald_proto::v1::management_service_client::ManagementServiceClient;
use herald_proto::v1::notification_service_client::NotificationServiceClient;
use herald_proto::v1::query_service_client::QueryServiceClient;
use herald_store::{Clock, SystemClock};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Platform;

/// Adds `authorization: Bearer <credential>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// For `credential` (an API key or a user token).
    pub fn new(credential: &str) -> anyhow::Result<Bearer> {
        Ok(Bearer(format!("Bearer {credential}").parse()?))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry a credential.
pub type Authed = InterceptedService<Channel, Bearer>;
/// The ingress, as one tenant.
pub type IngressClient = NotificationServiceClient<Authed>;
/// The query service, as one tenant (or one user).
pub type QueryClient = QueryServiceClient<Authed>;
/// The management API (served by the query process), as one tenant.
pub type ManagementClient = ManagementServiceClient<Authed>;

/// An ingress client on `channel` calling with `credential`.
pub fn ingress_on(channel: Channel, credential: &str) -> anyhow::Result<IngressClient> {
    Ok(NotificationServiceClient::with_interceptor(
        channel,
        Bearer::new(credential)?,
    ))
}

/// A query client on `channel` calling with `credential`.
pub fn query_on(channel: Channel, credential: &str) -> anyhow::Result<QueryClient> {
    Ok(QueryServiceClient::with_interceptor(
        channel,
        Bearer::new(credential)?,
    ))
}

impl Platform {
    /// An API key of `tenant` with every scope, made (in the platform's store) on first use.
    pub async fn api_key(&self, tenant: &str) -> anyhow::Result<String> {
        if let Some(key) = self.keys.lock().ok().and_then(|k| k.get(tenant).cloned()) {
            return Ok(key);
        }
        let new = keys::make(tenant, &Scope::ALL, "test", SystemClock.now_ms(), None);
        let store = herald_stores::open(&self.store_url).await?;
        store.put_api_key(&new.record).await?;
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(tenant.to_owned(), new.key.clone());
        }
        Ok(new.key)
    }

    /// The ingress, as `tenant`'s backend.
    pub async fn ingress_client(&self, tenant: &str) -> anyhow::Result<IngressClient> {
        let channel = Channel::from_shared(Platform::url(self.ingress))?
            .connect()
            .await?;
        ingress_on(channel, &self.api_key(tenant).await?)
    }

    /// The management API, as `tenant`'s backend (or with `credential` when given).
    pub async fn management_client(
        &self,
        tenant: &str,
        credential: Option<&str>,
    ) -> anyhow::Result<ManagementClient> {
        let channel = Channel::from_shared(Platform::url(self.query))?
            .connect()
            .await?;
        let key = match credential {
            Some(c) => c.to_owned(),
            None => self.api_key(tenant).await?,
        };
        Ok(ManagementServiceClient::with_interceptor(
            channel,
            Bearer::new(&key)?,
        ))
    }

    /// The query service, as `tenant`'s backend.
    pub async fn query_client(&self, tenant: &str) -> anyhow::Result<QueryClient> {
        let channel = Channel::from_shared(Platform::url(self.query))?
            .connect()
            .await?;
        query_on(channel, &self.api_key(tenant).await?)
    }
}

/// The first event of notification `id`'s timeline (tenant `tenant`) that `pick` picks, once
/// there is one (at most 90 s).
pub async fn first_event<T>(
    query: &QueryClient,
    tenant: &str,
    id: &str,
    pick: impl Fn(&herald_proto::v1::DeliveryEvent) -> Option<T> + Copy,
) -> anyhow::Result<T> {
    crate::eventually(
        std::time::Duration::from_secs(90),
        "a timeline event",
        || {
            let mut query = query.clone();
            let request = herald_proto::v1::GetNotificationRequest {
                tenant: tenant.to_owned(),
                notification_id: id.to_owned(),
            };
            async move {
                let Ok(got) = query.get_notification(request).await else {
                    return Ok(None);
                };
                Ok(got.into_inner().timeline.iter().find_map(pick))
            }
        },
    )
    .await
}
