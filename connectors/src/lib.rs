//! Provider connectors: one [`Connector`] per channel, each turning a [`Dispatch`] into an
//! [`Outcome`].
//!
//! - [`in_app`]: the in-app channel; delivering means writing the user's inbox.
//! - [`recording`]: a provider that records every call in a SQLite file, for `make run` and the
//!   tests (the crash tests count its rows to prove nothing was sent twice).
//! - [`webhook`]: a signed HTTPS POST to the recipient's URL.
//! - [`email`]: e-mail over SMTP (STARTTLS or implicit TLS, AUTH), text and HTML, one-click
//!   unsubscribe headers.
//! - [`sms`]: SMS through a Twilio-compatible API or Vonage's.
//! - [`fcm`]: Firebase Cloud Messaging (HTTP v1), authorised with a service-account key.
//! - [`apns`]: Apple Push Notification service (HTTP/2), authorised with an ES256 provider
//!   token signed with the team's `.p8` key.
//! - [`failover`]: a channel's providers with a rate limit and a circuit breaker each, failing
//!   over to the next while one's circuit is open.
//! - [`registry`]: which providers serve each channel, built from `[provider]`.
//! - [`setup`]: what the HTTP connectors share when they start (client, credentials).
//!
//! A channel with no provider configured uses the recording provider.

pub mod apns;
pub mod email;
pub mod failover;
pub mod fcm;
pub mod in_app;
pub mod metered;
pub mod recording;
pub mod registry;
pub mod setup;
pub mod sms;
pub mod webhook;

use async_trait::async_trait;
use herald_schemas::Dispatch;

/// What a provider did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the provider.
    Delivered {
        /// The provider's id for the message, if it gives one.
        provider_message_id: Option<String>,
    },
    /// A temporary failure (timeout, 5xx, throttling): try again later.
    Retry {
        /// What failed.
        reason: String,
        /// The provider's Retry-After, if it gave one: the next attempt waits at least this.
        after: Option<std::time::Duration>,
    },
    /// A permanent failure: do not try again.
    Failed(String),
    /// The address is no longer valid (APNs 410, FCM UNREGISTERED, hard bounce).
    InvalidToken(String),
}

impl Outcome {
    /// A temporary failure without a Retry-After.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            after: None,
        }
    }
}

/// A dispatch to `address` on `channel`, for the connectors' tests.
#[cfg(test)]
pub(crate) fn test_dispatch(channel: herald_schemas::Channel, address: &str) -> Dispatch {
    Dispatch {
        delivery_id: "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into(),
        notification_id: "n1".into(),
        attempt: 1,
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "news".into(),
        priority: herald_schemas::Priority::Normal,
        channel,
        address: address.into(),
        title: "Hi".into(),
        body: "there".into(),
        action_url: None,
        requested_at_ms: 1,
        not_before_ms: None,
        last_error: None,
    }
}

/// Sends `dispatches` through `connector` one after another: an outcome per dispatch, in order.
pub async fn send_each<C: Connector + ?Sized>(
    connector: &C,
    dispatches: &[Dispatch],
) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(dispatches.len());
    for dispatch in dispatches {
        outcomes.push(connector.send(dispatch).await);
    }
    outcomes
}

/// A channel's provider.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Delivers one dispatch. Implementations should pass `dispatch.delivery_id` to the provider
    /// as an idempotency key where the provider supports one.
    async fn send(&self, dispatch: &Dispatch) -> Outcome;

    /// Delivers several dispatches (of an idempotent connector: the deliver stage calls this
    /// once per batch), returning an outcome per dispatch in order. The default sends one after
    /// another; a connector that can deliver many in one call (the inbox: one store write)
    /// overrides it.
    async fn send_many(&self, dispatches: &[Dispatch]) -> Vec<Outcome> {
        send_each(self, dispatches).await
    }

    /// Whether sending the same dispatch twice has the effect of sending it once (an upsert
    /// keyed by the delivery). Such connectors skip the delivery ledger's two extra writes.
    fn idempotent(&self) -> bool {
        false
    }
}
