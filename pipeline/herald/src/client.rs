//! `herald send`, `herald inbox`, `herald get`: a small gRPC client for trying Herald out.

use anyhow::Context;
use clap::Args;
use herald_proto::convert::{channel_to_proto, priority_to_proto};
use herald_proto::v1::notification_service_client::NotificationServiceClient;
use herald_proto::v1::query_service_client::QueryServiceClient;
use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{
    Channel, DeliveryState, GetNotificationRequest, InlineContent, ListInboxRequest,
    SendNotificationRequest, TemplateRef,
};
use herald_schemas::Priority;

/// Arguments of `herald send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Tenant (calling team or product).
    #[arg(long)]
    pub tenant: String,
    /// Recipient user id.
    #[arg(long)]
    pub user: String,
    /// Category, e.g. general, security, order_update.
    #[arg(long, default_value = "general")]
    pub category: String,
    /// LOW, NORMAL, HIGH or CRITICAL.
    #[arg(long, default_value = "NORMAL", value_parser = parse_priority)]
    pub priority: Priority,
    /// Inline title.
    #[arg(long, default_value = "")]
    pub title: String,
    /// Inline body.
    #[arg(long, default_value = "")]
    pub body: String,
    /// Template id (instead of --title/--body).
    #[arg(long, conflicts_with_all = ["title", "body"])]
    pub template: Option<String>,
    /// Template locale.
    #[arg(long, requires = "template", default_value = "")]
    pub locale: String,
    /// Template variable, `name=value`; repeatable.
    #[arg(long = "var", value_parser = parse_var, requires = "template")]
    pub vars: Vec<(String, String)>,
    /// Channel (in_app, push_apns, push_fcm, sms, email, webhook); repeatable. Default: all the
    /// recipient allows.
    #[arg(long = "channel", value_parser = parse_channel)]
    pub channels: Vec<herald_schemas::Channel>,
    /// Client idempotency key: retries with the same key are delivered once.
    #[arg(long, default_value = "")]
    pub key: String,
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    Priority::parse(&s.to_ascii_uppercase()).ok_or_else(|| format!("unknown priority {s:?}"))
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

/// Parses a channel name as used in topics and config.
pub fn parse_channel(s: &str) -> Result<herald_schemas::Channel, String> {
    herald_schemas::Channel::parse(s).ok_or_else(|| format!("unknown channel {s:?}"))
}

/// A gRPC error as the user should read it: `INVALID_ARGUMENT: tenant: is required`.
fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// How the client commands reach a server: with which credential, and over TLS when given
/// the CA that signed the server's certificate.
#[derive(Clone, Default)]
pub struct Caller {
    /// The API key or user token.
    pub key: Option<String>,
    /// A PEM file of the CA that signed the server's certificate: then `https://`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Caller {
    /// `message` with `authorization: Bearer <key>`, if a key is given.
    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(key) = &self.key {
            let value = format!("Bearer {key}")
                .parse()
                .context("the API key is not a valid header value")?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// A connection to `addr`.
    async fn channel(&self, addr: &str) -> anyhow::Result<tonic::transport::Channel> {
        let endpoint = match &self.ca_file {
            None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?,
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name(host.trim_matches(['[', ']']));
                tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
                    .tls_config(tls)?
            }
        };
        endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))
    }
}

fn state_name(value: i32) -> &'static str {
    DeliveryState::try_from(value).map_or("UNKNOWN", |s| s.as_str_name())
}

fn channel_name(value: i32) -> &'static str {
    Channel::try_from(value).map_or("UNKNOWN", |c| c.as_str_name())
}

/// Sends one notification and prints its id.
pub async fn send(addr: &str, caller: &Caller, a: SendArgs) -> anyhow::Result<String> {
    let mut client = NotificationServiceClient::new(caller.channel(addr).await?);
    let content = match a.template {
        Some(template_id) => Content::Template(TemplateRef {
            template_id,
            locale: a.locale,
            variables: a.vars.into_iter().collect(),
            version: 0,
        }),
        None => Content::Inline(InlineContent {
            title: a.title,
            body: a.body,
            action_url: String::new(),
        }),
    };
    let response = client
        .send_notification(
            caller.request(SendNotificationRequest {
                tenant: a.tenant,
                idempotency_key: a.key,
                recipient_user_id: a.user,
                category: a.category,
                priority: priority_to_proto(a.priority) as i32,
                channels: a
                    .channels
                    .into_iter()
                    .map(|c| channel_to_proto(c) as i32)
                    .collect(),
                content: Some(content),
            })?,
        )
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(format!(
        "{} {}",
        response.notification_id,
        state_name(response.status).trim_start_matches("DELIVERY_STATE_")
    ))
}

/// Lists a page of an inbox.
pub async fn inbox(
    addr: &str,
    caller: &Caller,
    tenant: String,
    user: String,
    page_size: u32,
    page_token: String,
) -> anyhow::Result<String> {
    let mut client = QueryServiceClient::new(caller.channel(addr).await?);
    let page = client
        .list_inbox(caller.request(ListInboxRequest {
            tenant,
            recipient_user_id: user,
            page_size,
            page_token,
            ..Default::default()
        })?)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = String::new();
    if page.entries.is_empty() {
        out.push_str("(inbox is empty)\n");
    }
    for e in page.entries {
        let read = if e.read { "read  " } else { "unread" };
        out.push_str(&format!(
            "{}  {read}  [{}] {} — {}\n",
            e.notification_id, e.category, e.title, e.body
        ));
    }
    if !page.next_page_token.is_empty() {
        out.push_str(&format!(
            "next page: --page-token {}\n",
            page.next_page_token
        ));
    }
    Ok(out)
}

/// Shows a notification's status and timeline.
pub async fn get(
    addr: &str,
    caller: &Caller,
    tenant: String,
    id: String,
) -> anyhow::Result<String> {
    let mut client = QueryServiceClient::new(caller.channel(addr).await?);
    let r = client
        .get_notification(caller.request(GetNotificationRequest {
            tenant,
            notification_id: id,
        })?)
        .await
        .map_err(status_error)?
        .into_inner();
    let n = r.notification.context("response has no notification")?;
    let mut out = format!(
        "{}  {}  user={} category={}\n",
        n.notification_id,
        state_name(n.status).trim_start_matches("DELIVERY_STATE_"),
        n.recipient_user_id,
        n.category
    );
    for e in r.timeline {
        out.push_str(&format!(
            "  {:>15}  {:<20} {}\n",
            channel_name(e.channel).trim_start_matches("CHANNEL_"),
            state_name(e.state).trim_start_matches("DELIVERY_STATE_"),
            e.reason
        ));
    }
    Ok(out)
}
