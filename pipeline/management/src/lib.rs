//! The management API (`herald.v1.ManagementService`), served by the query process: a tenant's
//! backend registers and removes its recipients' addresses (checked by [`contacts`] first, a
//! refusal naming the field), sets their preferences (critical categories cannot be muted) and
//! quiet hours (checked by `herald_store::quiet`), and
//! exports or erases a recipient's data on request; and uploads templates (checked by
//! `herald-templates`). Every call needs an API key with the
//! `manage` scope and acts on the key's tenant.

pub mod contacts;

use std::sync::Arc;

use herald_auth::{Authenticator, Scope};
use herald_proto::convert::{channel_from_proto, channel_to_proto, inbox_entry};
use herald_proto::v1::management_service_server::ManagementService;
use herald_proto::v1::{
    ContactAddress, EraseRecipientRequest, EraseRecipientResponse, ExportRecipientRequest,
    ExportRecipientResponse, InboxEntry, Preference, PutContactRequest, PutContactResponse,
    PutTemplateRequest, PutTemplateResponse, QuietHours as QuietHoursMessage, RemoveContactRequest,
    RemoveContactResponse, SetPreferenceRequest, SetPreferenceResponse, SetQuietHoursRequest,
    SetQuietHoursResponse, SubscribeRequest, SubscribeResponse,
};
use herald_proto::{FieldViolation, store_status};
use herald_schemas::{Change, ChangeKind, Channel};
use herald_store::{
    Clock, Contact, InboxQuery, QuietHours, QuietHoursError, Store, SystemClock, TemplateRecord,
    quiet,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::info;

/// The most inbox entries an export carries.
pub const MAX_EXPORTED_ENTRIES: usize = 10_000;
/// Longest recipient id and category (as the ingress accepts).
const MAX_ID: usize = 128;

/// Where the management API says what it changed, so that caches elsewhere (the enrich
/// stage's) drop it: `<p>.changes` through an outbox in the query process.
#[tonic::async_trait]
pub trait Changes: Send + Sync {
    /// Publishes `change`, or keeps it to publish later; an error only if neither worked.
    async fn publish(&self, change: Change) -> Result<(), String>;
}

/// The management service.
pub struct Management {
    store: Arc<dyn Store>,
    auth: Arc<Authenticator>,
    /// `None` without a broker (tests of the API alone): there are no caches to tell.
    changes: Option<Arc<dyn Changes>>,
    /// Categories no recipient can opt out of (`[management] critical_categories`).
    critical: Vec<String>,
}

impl Management {
    /// A service over `store`, checking callers with `auth`, announcing its writes to
    /// `changes`.
    pub fn new(
        store: Arc<dyn Store>,
        auth: Arc<Authenticator>,
        changes: Option<Arc<dyn Changes>>,
        critical: Vec<String>,
    ) -> Self {
        Management {
            store,
            auth,
            changes,
            critical,
        }
    }

    /// Announces that `id` (a recipient or a template) of `tenant` changed. The store is
    /// written already: a failure here is UNAVAILABLE, and the caller's retry (every call is
    /// idempotent) announces it again.
    async fn changed(&self, kind: ChangeKind, tenant: &str, id: &str) -> Result<(), Status> {
        let Some(changes) = &self.changes else {
            return Ok(());
        };
        let change = Change {
            kind,
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            at_ms: SystemClock.now_ms(),
        };
        changes.publish(change).await.map_err(|e| {
            Status::unavailable(format!("stored, but announcing the change failed: {e}"))
        })
    }

    /// The (tenant, recipient) a call acts on: the key's tenant, a valid recipient id.
    async fn recipient(
        &self,
        metadata: &MetadataMap,
        tenant: &str,
        user: &str,
    ) -> Result<(String, String), Status> {
        let tenant = self.tenant(metadata, tenant).await?;
        id("recipient_user_id", user)?;
        Ok((tenant, user.to_owned()))
    }

    /// The tenant a call acts on: its API key's, which must have the `manage` scope.
    async fn tenant(&self, metadata: &MetadataMap, tenant: &str) -> Result<String, Status> {
        let caller = self.auth.authenticate(metadata).await?;
        caller.service(Scope::Manage)?;
        Ok(caller.tenant_for(tenant)?)
    }
}

fn id(field: &str, value: &str) -> Result<(), Status> {
    let bad = if value.is_empty() {
        Some("is required".to_owned())
    } else if value.len() > MAX_ID {
        Some(format!("is longer than {MAX_ID} bytes"))
    } else if value.chars().any(char::is_control) {
        Some("contains control characters".to_owned())
    } else {
        None
    };
    match bad {
        Some(why) => Err(FieldViolation::new(field, why).into_status()),
        None => Ok(()),
    }
}

/// A subscription topic's name: `[A-Za-z0-9._-]{1,64}`.
fn topic(field: &str, value: &str) -> Result<(), Status> {
    if herald_templates::is_name(value) {
        Ok(())
    } else {
        Err(FieldViolation::new(field, "must be 1 to 64 of A-Z a-z 0-9 . _ -").into_status())
    }
}

fn channel(field: &str, value: i32) -> Result<Channel, Status> {
    channel_from_proto(value).ok_or_else(|| {
        FieldViolation::new(field, "must name a channel (CHANNEL_SMS, CHANNEL_EMAIL, …)")
            .into_status()
    })
}

/// Quiet hours as asked for, checked field by field.
fn quiet_hours(q: &QuietHoursMessage) -> Result<QuietHours, Status> {
    let violation =
        |field: &str, e: QuietHoursError| FieldViolation::new(field, e.to_string()).into_status();
    quiet::parse_minute(&q.start).map_err(|e| violation("quiet_hours.start", e))?;
    quiet::parse_minute(&q.end).map_err(|e| violation("quiet_hours.end", e))?;
    QuietHours::parse(&q.start, &q.end, &q.time_zone).map_err(|e| match e {
        QuietHoursError::Empty => violation("quiet_hours.end", e),
        e => violation("quiet_hours.time_zone", e),
    })
}

#[tonic::async_trait]
impl ManagementService for Management {
    async fn put_contact(
        &self,
        request: Request<PutContactRequest>,
    ) -> Result<Response<PutContactResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let given = req.contact.unwrap_or_default();
        let channel = channel("contact.channel", given.channel)?;
        let address = contacts::normalize(channel, &given.address)
            .map_err(|why| FieldViolation::new("contact.address", why).into_status())?;
        let contact = Contact { channel, address };
        self.store
            .put_contact(&tenant, &user, &contact)
            .await
            .map_err(|e| store_status(&e))?;
        self.changed(ChangeKind::Recipient, &tenant, &user).await?;
        Ok(Response::new(PutContactResponse {
            contact: Some(ContactAddress {
                channel: channel_to_proto(channel) as i32,
                address: contact.address,
            }),
        }))
    }

    async fn remove_contact(
        &self,
        request: Request<RemoveContactRequest>,
    ) -> Result<Response<RemoveContactResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let channel = channel("channel", req.channel)?;
        let profile = self
            .store
            .recipient_profile(&tenant, &user)
            .await
            .map_err(|e| store_status(&e))?;
        let mut removed = false;
        if let Some(contact) = profile.contacts.iter().find(|c| c.channel == channel) {
            removed = self
                .store
                .disable_contact(&tenant, &user, contact)
                .await
                .map_err(|e| store_status(&e))?;
        }
        if removed {
            self.changed(ChangeKind::Recipient, &tenant, &user).await?;
        }
        Ok(Response::new(RemoveContactResponse { removed }))
    }

    async fn set_preference(
        &self,
        request: Request<SetPreferenceRequest>,
    ) -> Result<Response<SetPreferenceResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let preference = req.preference.unwrap_or_default();
        let channel = channel("preference.channel", preference.channel)?;
        id("preference.category", &preference.category)?;
        if req.opted_out && self.critical.contains(&preference.category) {
            return Err(Status::failed_precondition(format!(
                "category {:?} is critical and cannot be muted",
                preference.category
            )));
        }
        self.store
            .set_opt_out(&tenant, &user, channel, &preference.category, req.opted_out)
            .await
            .map_err(|e| store_status(&e))?;
        self.changed(ChangeKind::Recipient, &tenant, &user).await?;
        Ok(Response::new(SetPreferenceResponse {}))
    }

    async fn set_quiet_hours(
        &self,
        request: Request<SetQuietHoursRequest>,
    ) -> Result<Response<SetQuietHoursResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let quiet = req.quiet_hours.map(|q| quiet_hours(&q)).transpose()?;
        self.store
            .set_quiet_hours(&tenant, &user, quiet.as_ref())
            .await
            .map_err(|e| store_status(&e))?;
        self.changed(ChangeKind::Recipient, &tenant, &user).await?;
        Ok(Response::new(SetQuietHoursResponse {}))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        topic("topic", &req.topic)?;
        self.store
            .subscribe(&tenant, &user, &req.topic, req.subscribed)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(SubscribeResponse {}))
    }

    async fn export_recipient(
        &self,
        request: Request<ExportRecipientRequest>,
    ) -> Result<Response<ExportRecipientResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let profile = self
            .store
            .recipient_profile(&tenant, &user)
            .await
            .map_err(|e| store_status(&e))?;
        let (inbox, inbox_truncated) = self.inbox(&tenant, &user).await?;
        let topics = self
            .store
            .subscriptions_of(&tenant, &user)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(ExportRecipientResponse {
            contacts: profile
                .contacts
                .into_iter()
                .map(|c| ContactAddress {
                    channel: channel_to_proto(c.channel) as i32,
                    address: c.address,
                })
                .collect(),
            opted_out: profile
                .opt_outs
                .into_iter()
                .map(|(channel, category)| Preference {
                    channel: channel_to_proto(channel) as i32,
                    category,
                })
                .collect(),
            inbox,
            inbox_truncated,
            quiet_hours: profile.quiet_hours.map(|q| QuietHoursMessage {
                start: quiet::format_minute(q.start_minute),
                end: quiet::format_minute(q.end_minute),
                time_zone: q.time_zone,
            }),
            topics,
        }))
    }

    async fn put_template(
        &self,
        request: Request<PutTemplateRequest>,
    ) -> Result<Response<PutTemplateResponse>, Status> {
        let (variables, version) = self.template(request).await?;
        Ok(Response::new(PutTemplateResponse { variables, version }))
    }

    async fn erase_recipient(
        &self,
        request: Request<EraseRecipientRequest>,
    ) -> Result<Response<EraseRecipientResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (tenant, user) = self
            .recipient(&metadata, &req.tenant, &req.recipient_user_id)
            .await?;
        let erased = self
            .store
            .erase_recipient(&tenant, &user)
            .await
            .map_err(|e| store_status(&e))?;
        self.changed(ChangeKind::Recipient, &tenant, &user).await?;
        // No user id in the log: the point of the call is to forget them.
        info!(%tenant, contacts = erased.contacts, opt_outs = erased.opt_outs,
              inbox_entries = erased.inbox_entries, "erased a recipient on request");
        Ok(Response::new(EraseRecipientResponse {
            contacts: erased.contacts,
            opt_outs: erased.opt_outs,
            inbox_entries: erased.inbox_entries,
            subscriptions: erased.subscriptions,
        }))
    }
}

impl Management {
    /// `PutTemplate`: each part checked (names, sizes, template syntax), then stored as the
    /// template's next version; the variables it uses and that version.
    async fn template(
        &self,
        request: Request<PutTemplateRequest>,
    ) -> Result<(Vec<String>, u32), Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = self.tenant(&metadata, &req.tenant).await?;
        let parts = herald_templates::Parts {
            template_id: &req.template_id,
            locale: &req.locale,
            title: &req.title,
            body: &req.body,
            action_url: &req.action_url,
        };
        let variables = herald_templates::check(parts)
            .map_err(|r| FieldViolation::new(r.field, r.why).into_status())?;
        let channel = match req.channel {
            0 => None,
            _ => Some(channel("channel", req.channel)?),
        };
        // Two uploads of one template at the same moment may get the same version: the later
        // write wins that version (both are complete variants).
        let variants = self
            .store
            .template_variants(&tenant, &req.template_id)
            .await
            .map_err(|e| store_status(&e))?;
        let version = herald_store::variants::next_version(&variants);
        let record = TemplateRecord {
            tenant,
            template_id: req.template_id,
            locale: req.locale,
            title: req.title,
            body: req.body,
            action_url: (!req.action_url.is_empty()).then_some(req.action_url),
            channel,
            version,
        };
        self.store
            .put_template(&record)
            .await
            .map_err(|e| store_status(&e))?;
        self.changed(ChangeKind::Template, &record.tenant, &record.template_id)
            .await?;
        Ok((variables, version))
    }

    /// The recipient's inbox, newest first, up to [`MAX_EXPORTED_ENTRIES`]; whether more were left.
    async fn inbox(&self, tenant: &str, user: &str) -> Result<(Vec<InboxEntry>, bool), Status> {
        let mut entries = Vec::new();
        let mut query = InboxQuery::first_page(tenant, user, 500);
        loop {
            let page = self
                .store
                .list_inbox(&query)
                .await
                .map_err(|e| store_status(&e))?;
            entries.extend(page.entries.into_iter().map(inbox_entry));
            if entries.len() >= MAX_EXPORTED_ENTRIES {
                entries.truncate(MAX_EXPORTED_ENTRIES);
                return Ok((entries, page.next_page_token.is_some()));
            }
            match page.next_page_token {
                Some(token) => query.page_token = Some(token),
                None => return Ok((entries, false)),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    fn field_of(start: &str, end: &str, zone: &str) -> String {
        let status = quiet_hours(&QuietHoursMessage {
            start: start.into(),
            end: end.into(),
            time_zone: zone.into(),
        })
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status.get_error_details();
        details.bad_request().unwrap().field_violations[0]
            .field
            .clone()
    }

    #[test]
    fn quiet_hours_are_refused_naming_the_field_at_fault() {
        assert_eq!(field_of("24:00", "07:00", "UTC"), "quiet_hours.start");
        assert_eq!(field_of("22:00", "", "UTC"), "quiet_hours.end");
        assert_eq!(field_of("07:00", "07:00", "UTC"), "quiet_hours.end");
        assert_eq!(field_of("22:00", "07:00", ""), "quiet_hours.time_zone");
        assert_eq!(
            field_of("22:00", "07:00", "Nowhere/City"),
            "quiet_hours.time_zone"
        );
    }

    #[test]
    fn good_quiet_hours_are_read_in_minutes() {
        let q = quiet_hours(&QuietHoursMessage {
            start: "22:30".into(),
            end: "06:45".into(),
            time_zone: "America/Sao_Paulo".into(),
        })
        .unwrap();
        assert_eq!((q.start_minute, q.end_minute), (1350, 405));
    }
}
