//! Recipients (contacts, opt-outs, quiet hours) and templates: hot keyspace only, no TTL.

use herald_schemas::Channel;
use herald_store::retention::DAY_MS;
use herald_store::{Contact, Erasure, Month, QuietHours, RecipientProfile, TemplateRecord};

use crate::Result;
use crate::codec;
use crate::cql::{all, exec, lwt};
use crate::store::Inner;
use crate::tiers::Tier;

type TemplateRow = (String, String, String, String, String, Option<String>);
type VariantRow = (
    String,
    String,
    String,
    String,
    i32,
    String,
    String,
    Option<String>,
);

impl Inner {
    pub(crate) async fn recipient_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<RecipientProfile> {
        let st = &self.st.shared;
        let (contacts, opt_outs, quiet) = futures::try_join!(
            all::<(String, String)>(&self.session, &st.select_contacts, (tenant, user_id)),
            all::<(String, String)>(&self.session, &st.select_opt_outs, (tenant, user_id)),
            all::<(i32, i32, String)>(
                &self.session,
                &self.st.quiet.select_quiet_hours,
                (tenant, user_id)
            ),
        )?;
        let mut contacts = contacts
            .into_iter()
            .map(|(channel, address)| {
                Ok(Contact {
                    channel: codec::channel(&channel)?,
                    address,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        contacts.sort_by(|a, b| a.channel.as_str().cmp(b.channel.as_str()));
        let mut opt_outs = opt_outs
            .into_iter()
            .map(|(channel, category)| Ok((codec::channel(&channel)?, category)))
            .collect::<Result<Vec<_>>>()?;
        opt_outs.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        let quiet_hours = quiet
            .into_iter()
            .next()
            .map(|(start, end, time_zone)| {
                Ok::<_, crate::Error>(QuietHours {
                    start_minute: codec::minute(start)?,
                    end_minute: codec::minute(end)?,
                    time_zone,
                })
            })
            .transpose()?;
        Ok(RecipientProfile {
            contacts,
            opt_outs,
            quiet_hours,
        })
    }

    pub(crate) async fn set_quiet_hours(
        &self,
        tenant: &str,
        user_id: &str,
        quiet: Option<&QuietHours>,
    ) -> Result<()> {
        let st = &self.st.quiet;
        match quiet {
            Some(q) => {
                let values = (
                    tenant,
                    user_id,
                    i32::from(q.start_minute),
                    i32::from(q.end_minute),
                    q.time_zone.as_str(),
                );
                exec(&self.session, &st.insert_quiet_hours, values).await
            }
            None => exec(&self.session, &st.delete_quiet_hours, (tenant, user_id)).await,
        }
    }

    /// Deletes the recipient's contacts and opt-outs (one partition each), and in both tiers
    /// every month's inbox, feed and id rows; counts what went (inbox entries by distinct id).
    pub(crate) async fn erase_recipient(&self, tenant: &str, user_id: &str) -> Result<Erasure> {
        let profile = self.recipient_profile(tenant, user_id).await?;
        let shared = &self.st.shared;
        exec(&self.session, &shared.delete_contacts_of, (tenant, user_id)).await?;
        exec(&self.session, &shared.delete_opt_outs_of, (tenant, user_id)).await?;
        let quiet = &self.st.quiet.delete_quiet_hours;
        exec(&self.session, quiet, (tenant, user_id)).await?;
        let subscriptions = self.unsubscribe_all(tenant, user_id).await?;
        let mut ids = std::collections::BTreeSet::new();
        let top = self.time.now().saturating_add(DAY_MS);
        for month in Month::newest_first(self.time.oldest_kept(), top) {
            let key = (tenant, user_id, month.bucket());
            for tier in [Tier::Hot, Tier::Archive] {
                let st = self.st.tier(tier);
                let found: Vec<(String,)> = all(&self.session, &st.select_inbox_ids, key).await?;
                for (id,) in found {
                    exec(
                        &self.session,
                        &st.delete_inbox_by_id,
                        (tenant, user_id, &id),
                    )
                    .await?;
                    ids.insert(id);
                }
                exec(&self.session, &st.delete_inbox_month, key).await?;
                exec(&self.session, &st.delete_feed_month, key).await?;
            }
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Erasure {
            contacts: count(profile.contacts.len()),
            opt_outs: count(profile.opt_outs.len()),
            inbox_entries: count(ids.len()),
            subscriptions: count(subscriptions),
        })
    }

    pub(crate) async fn put_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact: &Contact,
    ) -> Result<()> {
        let values = (
            tenant,
            user_id,
            contact.channel.as_str(),
            contact.address.as_str(),
        );
        exec(&self.session, &self.st.shared.insert_contact, values).await
    }

    pub(crate) async fn disable_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact: &Contact,
    ) -> Result<bool> {
        let values = (
            tenant,
            user_id,
            contact.channel.as_str(),
            contact.address.as_str(),
        );
        Ok(lwt(&self.session, &self.st.shared.delete_contact, values)
            .await?
            .applied)
    }

    pub(crate) async fn set_opt_out(
        &self,
        tenant: &str,
        user_id: &str,
        channel: Channel,
        category: &str,
        opted_out: bool,
    ) -> Result<()> {
        let st = &self.st.shared;
        let statement = if opted_out {
            &st.insert_opt_out
        } else {
            &st.delete_opt_out
        };
        exec(
            &self.session,
            statement,
            (tenant, user_id, channel.as_str(), category),
        )
        .await
    }

    /// Every variant of a template (one partition of each table): `template_versions`, and
    /// the rows written before versions existed as version 1 for every channel unless that
    /// variant was written again since. Sorted by locale, channel, version.
    pub(crate) async fn template_variants(
        &self,
        tenant: &str,
        template_id: &str,
    ) -> Result<Vec<TemplateRecord>> {
        let st = &self.st.shared;
        let key = (tenant, template_id);
        let (rows, legacy): (Vec<VariantRow>, Vec<TemplateRow>) = futures::try_join!(
            all(&self.session, &st.select_template_versions, key),
            all(&self.session, &st.select_templates, key),
        )?;
        let mut variants = rows
            .into_iter()
            .map(
                |(tenant, template_id, locale, channel, version, title, body, action_url)| {
                    Ok(TemplateRecord {
                        tenant,
                        template_id,
                        locale,
                        channel: match channel.as_str() {
                            "" => None,
                            c => Some(codec::channel(c)?),
                        },
                        version: u32::try_from(version).map_err(|_| {
                            crate::Error::Decode(format!("template version {version}"))
                        })?,
                        title,
                        body,
                        action_url,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        for (tenant, template_id, locale, title, body, action_url) in legacy {
            let replaced = variants
                .iter()
                .any(|v| v.locale == locale && v.channel.is_none() && v.version == 1);
            if !replaced {
                variants.push(TemplateRecord {
                    tenant,
                    template_id,
                    locale,
                    channel: None,
                    version: 1,
                    title,
                    body,
                    action_url,
                });
            }
        }
        variants.sort_by(|a, b| {
            let key =
                |t: &TemplateRecord| (t.locale.clone(), t.channel.map(Channel::as_str), t.version);
            key(a).cmp(&key(b))
        });
        Ok(variants)
    }

    pub(crate) async fn templates_of(&self, tenant: &str) -> Result<Vec<TemplateRecord>> {
        let mut ids: Vec<(String,)> = all(
            &self.session,
            &self.st.shared.select_template_ids,
            (tenant,),
        )
        .await?;
        ids.sort();
        let mut all_templates = Vec::new();
        for (id,) in ids {
            all_templates.extend(self.template_variants(tenant, &id).await?);
        }
        Ok(all_templates)
    }

    pub(crate) async fn put_template(&self, t: &TemplateRecord) -> Result<()> {
        let version = i32::try_from(t.version)
            .map_err(|_| crate::Error::Decode(format!("template version {}", t.version)))?;
        let values = (
            t.tenant.as_str(),
            t.template_id.as_str(),
            t.locale.as_str(),
            t.channel.map_or("", Channel::as_str),
            version,
            t.title.as_str(),
            t.body.as_str(),
            t.action_url.as_deref(),
        );
        exec(&self.session, &self.st.shared.insert_template, values).await?;
        let id = (t.tenant.as_str(), t.template_id.as_str());
        exec(&self.session, &self.st.shared.insert_template_id, id).await
    }
}
