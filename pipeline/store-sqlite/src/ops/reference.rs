//! Reference data, in the main file (it does not age): recipients' contacts, opt-outs and quiet
//! hours, and
//! templates with their locale fallback.

use herald_schemas::Channel;
use herald_store::{Contact, Erasure, QuietHours, RecipientProfile, TemplateRecord};
use rusqlite::{OptionalExtension, params};

use crate::codec::{TEMPLATE_COLUMNS, template_row, text_enum};
use crate::error::Result;
use crate::files::lock;
use crate::store::Inner;

impl Inner {
    pub(crate) fn recipient_profile(&self, tenant: &str, user: &str) -> Result<RecipientProfile> {
        let c = self.main()?;
        let contacts = c
            .prepare_cached(
                "SELECT channel, address FROM contacts WHERE tenant = ?1 AND user_id = ?2
                 ORDER BY channel",
            )?
            .query_map(params![tenant, user], |r| {
                Ok(Contact {
                    channel: text_enum(0, r.get(0)?, Channel::parse)?,
                    address: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let opt_outs = c
            .prepare_cached(
                "SELECT channel, category FROM opt_outs WHERE tenant = ?1 AND user_id = ?2
                 ORDER BY channel, category",
            )?
            .query_map(params![tenant, user], |r| {
                Ok((text_enum(0, r.get(0)?, Channel::parse)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let quiet_hours = c
            .prepare_cached(
                "SELECT start_minute, end_minute, time_zone FROM quiet_hours
                 WHERE tenant = ?1 AND user_id = ?2",
            )?
            .query_row(params![tenant, user], |r| {
                Ok(QuietHours {
                    start_minute: r.get(0)?,
                    end_minute: r.get(1)?,
                    time_zone: r.get(2)?,
                })
            })
            .optional()?;
        Ok(RecipientProfile {
            contacts,
            opt_outs,
            quiet_hours,
        })
    }

    pub(crate) fn set_quiet_hours(
        &self,
        tenant: &str,
        user: &str,
        quiet: Option<&QuietHours>,
    ) -> Result<()> {
        let c = self.main()?;
        match quiet {
            Some(q) => c
                .prepare_cached(
                    "INSERT INTO quiet_hours (tenant, user_id, start_minute, end_minute, time_zone)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT DO UPDATE SET start_minute = excluded.start_minute,
                         end_minute = excluded.end_minute, time_zone = excluded.time_zone",
                )?
                .execute(params![
                    tenant,
                    user,
                    q.start_minute,
                    q.end_minute,
                    q.time_zone
                ])?,
            None => c
                .prepare_cached("DELETE FROM quiet_hours WHERE tenant = ?1 AND user_id = ?2")?
                .execute(params![tenant, user])?,
        };
        Ok(())
    }

    pub(crate) fn put_contact(&self, tenant: &str, user: &str, contact: &Contact) -> Result<()> {
        self.main()?
            .prepare_cached(
                "INSERT INTO contacts (tenant, user_id, channel, address) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, user_id, channel) DO UPDATE SET address = excluded.address",
            )?
            .execute(params![
                tenant,
                user,
                contact.channel.as_str(),
                contact.address
            ])?;
        Ok(())
    }

    pub(crate) fn disable_contact(
        &self,
        tenant: &str,
        user: &str,
        contact: &Contact,
    ) -> Result<bool> {
        let removed = self
            .main()?
            .prepare_cached(
                "DELETE FROM contacts
                 WHERE tenant = ?1 AND user_id = ?2 AND channel = ?3 AND address = ?4",
            )?
            .execute(params![
                tenant,
                user,
                contact.channel.as_str(),
                contact.address
            ])?;
        Ok(removed > 0)
    }

    /// Deletes the recipient's contacts and opt-outs (main file) and inbox rows (every month
    /// file kept); counts what went.
    pub(crate) fn erase_recipient(&self, tenant: &str, user: &str) -> Result<Erasure> {
        let (contacts, opt_outs, subscriptions) = {
            let c = self.main()?;
            let contacts = c
                .prepare_cached("DELETE FROM contacts WHERE tenant = ?1 AND user_id = ?2")?
                .execute(params![tenant, user])?;
            let opt_outs = c
                .prepare_cached("DELETE FROM opt_outs WHERE tenant = ?1 AND user_id = ?2")?
                .execute(params![tenant, user])?;
            c.prepare_cached("DELETE FROM quiet_hours WHERE tenant = ?1 AND user_id = ?2")?
                .execute(params![tenant, user])?;
            let subscriptions = c
                .prepare_cached("DELETE FROM subscriptions WHERE tenant = ?1 AND user_id = ?2")?
                .execute(params![tenant, user])?;
            (contacts, opt_outs, subscriptions)
        };
        let mut inbox_entries = 0;
        for (_, month) in self.kept_months()? {
            inbox_entries += lock(&month)?
                .prepare_cached("DELETE FROM inbox WHERE tenant = ?1 AND recipient_user_id = ?2")?
                .execute(params![tenant, user])?;
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Erasure {
            contacts: count(contacts),
            opt_outs: count(opt_outs),
            inbox_entries: count(inbox_entries),
            subscriptions: count(subscriptions),
        })
    }

    pub(crate) fn set_opt_out(
        &self,
        tenant: &str,
        user: &str,
        channel: Channel,
        category: &str,
        opted_out: bool,
    ) -> Result<()> {
        let sql = if opted_out {
            "INSERT INTO opt_outs (tenant, user_id, channel, category) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM opt_outs
             WHERE tenant = ?1 AND user_id = ?2 AND channel = ?3 AND category = ?4"
        };
        self.main()?.prepare_cached(sql)?.execute(params![
            tenant,
            user,
            channel.as_str(),
            category
        ])?;
        Ok(())
    }

    /// Every variant of one template.
    pub(crate) fn template_variants(&self, tenant: &str, id: &str) -> Result<Vec<TemplateRecord>> {
        Ok(self
            .main()?
            .prepare_cached(&format!(
                "SELECT {TEMPLATE_COLUMNS} FROM template_versions
                 WHERE tenant = ?1 AND template_id = ?2 ORDER BY locale, channel, version"
            ))?
            .query_map(params![tenant, id], template_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn templates_of(&self, tenant: &str) -> Result<Vec<TemplateRecord>> {
        Ok(self
            .main()?
            .prepare_cached(&format!(
                "SELECT {TEMPLATE_COLUMNS} FROM template_versions
                 WHERE tenant = ?1 ORDER BY template_id, locale, channel, version"
            ))?
            .query_map(params![tenant], template_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn put_template(&self, t: &TemplateRecord) -> Result<()> {
        self.put_templates(std::slice::from_ref(t))
    }

    /// Many templates in one transaction.
    pub(crate) fn put_templates(&self, templates: &[TemplateRecord]) -> Result<()> {
        let mut c = self.main()?;
        let tx = c.transaction()?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO template_versions ({TEMPLATE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO UPDATE SET title = excluded.title,
                     body = excluded.body, action_url = excluded.action_url"
            ))?;
            for t in templates {
                insert.execute(params![
                    t.tenant,
                    t.template_id,
                    t.locale,
                    t.channel.map_or("", Channel::as_str),
                    t.version,
                    t.title,
                    t.body,
                    t.action_url
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
