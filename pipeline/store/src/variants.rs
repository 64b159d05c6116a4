//! Which variant of a template a notification gets, pure: a template is every row stored under
//! its id ([`TemplateRecord`]: locale × channel × version).
//!
//! 1. Versions: the latest, or with a pinned version the latest at or below it (the template
//!    as it was when that version was uploaded).
//! 2. Locale: the one asked for, else its language (`pt` for `pt-BR`), else the first locale in
//!    name order — among the locales that have a variant at that version.
//! 3. Channel: in that locale, the channel's own variant, else the one for every channel.

use std::collections::BTreeMap;

use herald_schemas::Channel;

use crate::TemplateRecord;

/// The variants of one template a request gets, in its resolved locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen<'a> {
    /// The locale resolved.
    pub locale: &'a str,
    /// The latest eligible version of each channel's variant (`None`: every channel).
    by_channel: BTreeMap<Option<&'a str>, &'a TemplateRecord>,
}

impl<'a> Chosen<'a> {
    /// What `channel` renders: its own variant, else the one for every channel.
    pub fn for_channel(&self, channel: Channel) -> Option<&'a TemplateRecord> {
        self.by_channel
            .get(&Some(channel.as_str()))
            .or_else(|| self.by_channel.get(&None))
            .copied()
    }

    /// The variant for every channel, if there is one.
    pub fn generic(&self) -> Option<&'a TemplateRecord> {
        self.by_channel.get(&None).copied()
    }
}

/// Picks from `variants` (one template's rows) for `locale` at `version` (`None`: latest);
/// `None` if no variant is at or below the version.
pub fn choose<'a>(
    variants: &'a [TemplateRecord],
    locale: Option<&str>,
    version: Option<u32>,
) -> Option<Chosen<'a>> {
    let eligible: Vec<&TemplateRecord> = variants
        .iter()
        .filter(|t| version.is_none_or(|v| t.version <= v))
        .collect();
    let locale = locale.unwrap_or_default();
    let language = locale.split(['-', '_']).next().unwrap_or_default();
    let resolved = eligible.iter().map(|t| t.locale.as_str()).min_by_key(|l| {
        let rank = if !locale.is_empty() && *l == locale {
            0
        } else if !language.is_empty() && *l == language {
            1
        } else {
            2
        };
        (rank, *l)
    })?;
    let mut by_channel: BTreeMap<Option<&str>, &TemplateRecord> = BTreeMap::new();
    for t in eligible.into_iter().filter(|t| t.locale == resolved) {
        let key = t.channel.map(Channel::as_str);
        match by_channel.get(&key) {
            Some(kept) if kept.version >= t.version => {}
            _ => {
                by_channel.insert(key, t);
            }
        }
    }
    Some(Chosen {
        locale: resolved,
        by_channel,
    })
}

/// The version a new upload of a template with these `variants` gets.
pub fn next_version(variants: &[TemplateRecord]) -> u32 {
    variants
        .iter()
        .map(|t| t.version)
        .max()
        .unwrap_or(0)
        .saturating_add(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(locale: &str, channel: Option<Channel>, version: u32, title: &str) -> TemplateRecord {
        TemplateRecord {
            tenant: "t".into(),
            template_id: "welcome".into(),
            locale: locale.into(),
            channel,
            version,
            title: title.into(),
            body: String::new(),
            action_url: None,
        }
    }

    fn title(c: &Chosen<'_>, channel: Channel) -> Option<String> {
        c.for_channel(channel).map(|t| t.title.clone())
    }

    fn rows() -> Vec<TemplateRecord> {
        vec![
            t("en", None, 1, "en v1"),
            t("en", None, 3, "en v3"),
            t("en", Some(Channel::Sms), 2, "en sms v2"),
            t("pt-BR", None, 1, "pt-BR v1"),
            t("pt", None, 2, "pt v2"),
            t("de", None, 4, "de v4"),
        ]
    }

    #[test]
    fn the_latest_version_of_each_channel_s_variant_in_the_asked_locale() {
        let rows = rows();
        let c = choose(&rows, Some("en"), None).unwrap();
        assert_eq!(c.locale, "en");
        assert_eq!(title(&c, Channel::Email).as_deref(), Some("en v3"));
        assert_eq!(title(&c, Channel::Sms).as_deref(), Some("en sms v2"));
    }

    #[test]
    fn a_pinned_version_is_the_template_as_it_was() {
        let rows = rows();
        let c = choose(&rows, Some("en"), Some(2)).unwrap();
        assert_eq!(title(&c, Channel::Email).as_deref(), Some("en v1"));
        assert_eq!(title(&c, Channel::Sms).as_deref(), Some("en sms v2"));
        let c = choose(&rows, Some("en"), Some(1)).unwrap();
        assert_eq!(
            title(&c, Channel::Sms).as_deref(),
            Some("en v1"),
            "no SMS variant yet"
        );
        // German exists only from version 4: at 3 a German request falls back.
        let c = choose(&rows, Some("de"), Some(3)).unwrap();
        assert_eq!(c.locale, "en");
        assert!(choose(&rows, None, Some(0)).is_none());
    }

    #[test]
    fn locales_fall_back_to_the_language_then_the_first() {
        let rows = rows();
        assert_eq!(choose(&rows, Some("pt-BR"), None).unwrap().locale, "pt-BR");
        assert_eq!(choose(&rows, Some("pt-PT"), None).unwrap().locale, "pt");
        assert_eq!(choose(&rows, Some("fr"), None).unwrap().locale, "de");
        assert_eq!(choose(&rows, None, None).unwrap().locale, "de");
        assert!(choose(&[], Some("en"), None).is_none());
    }

    #[test]
    fn a_locale_with_only_a_channel_s_variant_serves_no_other_channel() {
        let rows = vec![t("fr", Some(Channel::Sms), 1, "fr sms")];
        let c = choose(&rows, Some("fr"), None).unwrap();
        assert!(c.for_channel(Channel::Email).is_none());
        assert!(c.generic().is_none());
        assert_eq!(title(&c, Channel::Sms).as_deref(), Some("fr sms"));
    }

    #[test]
    fn a_new_upload_is_the_next_version() {
        assert_eq!(next_version(&rows()), 5);
        assert_eq!(next_version(&[]), 1);
    }
}
