//! The connector registry: which provider(s) serve each channel, built from `[provider]`.
//!
//! Each provider is configured in its own table (`[provider.twilio]`, `[provider.apns]`, …);
//! a channel is served by the providers configured for it, in the order `[provider.routes]`
//! gives (default: the order of [`PROVIDERS`]), each with the quota and circuit breaker of
//! `[provider.limits.<name>]`, failing over from one to the next (see [`crate::failover`]).
//! The in-app channel is the inbox. A channel with no provider configured uses the recording
//! provider, so `make run` works with no account anywhere. Webhooks go to each recipient's own
//! receiver, so they share no breaker: one receiver down must not stop the others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use herald_schemas::Channel;
use herald_store::{Clock, Store};
use serde::Deserialize;

use crate::Connector;
use crate::apns::{ApnsConfig, ApnsConnector};
use crate::email::{EmailConfig, EmailConnector};
use crate::failover::{Failover, GuardConfig, Guarded};
use crate::fcm::{FcmConfig, FcmConnector};
use crate::in_app::InAppConnector;
use crate::metered::Metered;
use crate::setup::SetupError;
use crate::sms::twilio::{TwilioConfig, TwilioConnector};
use crate::sms::vonage::{VonageConfig, VonageConnector};
use crate::webhook::{self, WebhookConfig, WebhookConnector};

/// Every provider by name, with the channel it serves, in the default order of preference.
pub const PROVIDERS: [(&str, Channel); 7] = [
    ("apns", Channel::PushApns),
    ("fcm", Channel::PushFcm),
    ("twilio", Channel::Sms),
    ("vonage", Channel::Sms),
    ("email", Channel::Email),
    ("webhook", Channel::Webhook),
    ("recording", Channel::InApp),
];

/// `[provider]`: the providers and how channels use them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// SQLite file where every call to the recording provider is recorded.
    pub recording_path: PathBuf,
    /// `[provider.apns]`: push to iOS devices.
    pub apns: Option<ApnsConfig>,
    /// `[provider.fcm]`: push to Android and web devices.
    pub fcm: Option<FcmConfig>,
    /// `[provider.twilio]`: SMS through a Twilio-compatible API.
    pub twilio: Option<TwilioConfig>,
    /// `[provider.vonage]`: SMS through Vonage.
    pub vonage: Option<VonageConfig>,
    /// `[provider.email]`: e-mail over SMTP.
    pub email: Option<EmailConfig>,
    /// `[provider.webhook]`: signed posts to recipients' URLs.
    pub webhook: Option<WebhookConfig>,
    /// `[provider.routes]`: a channel's providers in order of preference, e.g.
    /// `sms = ["vonage", "twilio"]` (`recording` serves any channel). Default: the channel's
    /// configured providers in the order of [`PROVIDERS`], else the recording provider.
    pub routes: BTreeMap<String, Vec<String>>,
    /// `[provider.limits.<name>]`: a provider's quota and circuit breaker.
    pub limits: BTreeMap<String, GuardConfig>,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            recording_path: PathBuf::from("var/herald/deliveries.db"),
            apns: None,
            fcm: None,
            twilio: None,
            vonage: None,
            email: None,
            webhook: None,
            routes: BTreeMap::new(),
            limits: BTreeMap::new(),
        }
    }
}

impl ProvidersConfig {
    /// Whether provider `name` has its table.
    fn configured(&self, name: &str) -> bool {
        match name {
            "apns" => self.apns.is_some(),
            "fcm" => self.fcm.is_some(),
            "twilio" => self.twilio.is_some(),
            "vonage" => self.vonage.is_some(),
            "email" => self.email.is_some(),
            "webhook" => self.webhook.is_some(),
            _ => name == "recording",
        }
    }

    /// The providers of `channel`, in order of preference, checked against the config.
    pub fn route(&self, channel: Channel) -> Result<Vec<String>, SetupError> {
        let bad = |m: String| Err(SetupError::Config(format!("[provider.routes] {m}")));
        for (name, providers) in &self.routes {
            if Channel::parse(name).is_none() {
                return bad(format!("{name:?} is not a channel"));
            }
            for provider in providers {
                if !PROVIDERS.iter().any(|(p, _)| p == provider) {
                    return bad(format!("{name}: {provider:?} is not a provider"));
                }
            }
        }
        for name in self.limits.keys() {
            if !PROVIDERS.iter().any(|(p, _)| p == name) {
                return Err(SetupError::Config(format!(
                    "[provider.limits.{name}]: {name:?} is not a provider"
                )));
            }
        }
        let Some(providers) = self.routes.get(channel.as_str()) else {
            let configured: Vec<String> = PROVIDERS
                .iter()
                .filter(|(name, served)| *served == channel && self.configured(name))
                .map(|(name, _)| (*name).to_owned())
                .collect();
            return Ok(if configured.is_empty() {
                vec!["recording".to_owned()]
            } else {
                configured
            });
        };
        if providers.is_empty() {
            return bad(format!("{} lists no provider", channel.as_str()));
        }
        for provider in providers {
            let serves = PROVIDERS
                .iter()
                .any(|(p, c)| p == provider && (*c == channel || *p == "recording"));
            if !serves {
                return bad(format!("{provider} does not serve {}", channel.as_str()));
            }
            if !self.configured(provider) {
                return bad(format!(
                    "{}: {provider} has no [provider.{provider}] table",
                    channel.as_str()
                ));
            }
        }
        Ok(providers.clone())
    }
}

/// What connectors are built from besides their config.
pub struct Parts {
    /// The store (the inbox is written there).
    pub store: Arc<dyn Store>,
    /// The recording provider, shared by the channels using it.
    pub recording: Arc<dyn Connector>,
    /// The clock of the circuit breakers.
    pub clock: Arc<dyn Clock>,
}

/// The connector serving `channel` as `config` says.
pub fn connector(
    config: &ProvidersConfig,
    channel: Channel,
    parts: &Parts,
) -> Result<Arc<dyn Connector>, SetupError> {
    if channel == Channel::InApp {
        return Ok(Metered::wrap(
            "inbox",
            Arc::new(InAppConnector::new(Arc::clone(&parts.store))),
        ));
    }
    let route = config.route(channel)?;
    if let [only] = &route[..] {
        match only.as_str() {
            "recording" => return Ok(Metered::wrap("recording", Arc::clone(&parts.recording))),
            "webhook" => {
                return webhook_connector(config).map(|c| Metered::wrap("webhook", c));
            }
            _ => {}
        }
    }
    let mut guarded = Vec::with_capacity(route.len());
    for name in &route {
        let connector = Metered::wrap(name, one(config, name, parts)?);
        let limits = config.limits.get(name).cloned().unwrap_or_default();
        guarded.push(Guarded::new(name, connector, &limits)?);
    }
    Ok(Arc::new(Failover::new(guarded, Arc::clone(&parts.clock))?))
}

fn webhook_connector(config: &ProvidersConfig) -> Result<Arc<WebhookConnector>, SetupError> {
    let webhook = config
        .webhook
        .as_ref()
        .ok_or_else(|| SetupError::Config("webhook: no [provider.webhook] table".into()))?;
    let secret = webhook::load_secret(webhook)?;
    Ok(Arc::new(WebhookConnector::new(webhook, secret)?))
}

/// Provider `name`'s connector (its table is known to be there).
fn one(
    config: &ProvidersConfig,
    name: &str,
    parts: &Parts,
) -> Result<Arc<dyn Connector>, SetupError> {
    let missing = || SetupError::Config(format!("{name}: no [provider.{name}] table"));
    Ok(match name {
        "apns" => Arc::new(ApnsConnector::new(
            config.apns.as_ref().ok_or_else(missing)?,
        )?),
        "fcm" => Arc::new(FcmConnector::new(config.fcm.as_ref().ok_or_else(missing)?)?),
        "twilio" => Arc::new(TwilioConnector::new(
            config.twilio.as_ref().ok_or_else(missing)?,
        )?),
        "vonage" => Arc::new(VonageConnector::new(
            config.vonage.as_ref().ok_or_else(missing)?,
        )?),
        "email" => Arc::new(EmailConnector::new(
            config.email.as_ref().ok_or_else(missing)?,
        )?),
        "webhook" => webhook_connector(config)?,
        "recording" => Arc::clone(&parts.recording),
        _ => return Err(missing()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_sms() -> ProvidersConfig {
        ProvidersConfig {
            twilio: Some(TwilioConfig::default()),
            vonage: Some(VonageConfig::default()),
            ..ProvidersConfig::default()
        }
    }

    #[test]
    fn a_channel_without_providers_records_and_one_with_uses_them_in_order() {
        let none = ProvidersConfig::default();
        assert_eq!(none.route(Channel::Sms).expect("route"), ["recording"]);
        assert_eq!(
            with_sms().route(Channel::Sms).expect("route"),
            ["twilio", "vonage"]
        );
        assert_eq!(
            with_sms().route(Channel::Email).expect("route"),
            ["recording"]
        );
    }

    #[test]
    fn routes_choose_the_order_and_are_checked() {
        let mut config = with_sms();
        config
            .routes
            .insert("sms".into(), vec!["vonage".into(), "twilio".into()]);
        assert_eq!(
            config.route(Channel::Sms).expect("route"),
            ["vonage", "twilio"]
        );
        for (channel, providers) in [
            ("sms", vec!["apns"]),
            ("sms", vec!["email"]),
            ("sms", vec![]),
            ("pager", vec!["twilio"]),
            ("sms", vec!["carrier-pigeon"]),
        ] {
            let mut config = with_sms();
            config.routes.insert(
                channel.into(),
                providers.iter().map(|p| (*p).to_owned()).collect(),
            );
            assert!(
                matches!(config.route(Channel::Sms), Err(SetupError::Config(_))),
                "{channel}: {providers:?}"
            );
        }
        let mut limits = with_sms();
        limits
            .limits
            .insert("twillio".into(), GuardConfig::default());
        assert!(limits.route(Channel::Sms).is_err());
    }

    #[test]
    fn the_recording_provider_may_serve_any_channel() {
        let mut config = with_sms();
        config
            .routes
            .insert("sms".into(), vec!["twilio".into(), "recording".into()]);
        assert_eq!(
            config.route(Channel::Sms).expect("route"),
            ["twilio", "recording"]
        );
    }
}
