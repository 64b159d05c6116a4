//! What enrich reads from the store for every request — a recipient's profile, a template — kept
//! in bounded caches (moka's synchronous cache: no I/O under it, so it is used from async code
//! as it is; least recently used out, each entry at most `ttl` old). A change
//! read from `<p>.changes` drops the entries it names ([`Lookups::forget`]), so an opt-out
//! applies within the time the change takes to arrive, not the ttl.
//!
//! A read that started before a change and finishes after it must not put the old value back:
//! every change advances a generation, and a value read while the generation moved is returned
//! but not kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_schemas::{Change, ChangeKind};
use herald_store::{RecipientProfile, Store, StoreError, TemplateRecord};
use moka::sync::Cache;

/// The caches' bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries per cache (profiles, templates); 0 turns caching off.
    pub entries: u64,
    /// The longest an entry is used without reading the store again: the bound on staleness if
    /// a change is missed (the follower restarting, the topic unreachable).
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            entries: 100_000,
            ttl: Duration::from_secs(60),
        }
    }
}

type ProfileKey = (String, String);
type TemplateKey = (String, String);

/// The store's reads enrich makes, cached.
pub struct Lookups {
    store: Arc<dyn Store>,
    profiles: Option<Cache<ProfileKey, RecipientProfile>>,
    templates: Option<Cache<TemplateKey, Arc<Vec<TemplateRecord>>>>,
    generation: AtomicU64,
}

impl Lookups {
    /// Reads through `store`, caching as `config` says.
    pub fn new(store: Arc<dyn Store>, config: CacheConfig) -> Lookups {
        let on = config.entries > 0;
        Lookups {
            store,
            profiles: on.then(|| {
                Cache::builder()
                    .max_capacity(config.entries)
                    .time_to_live(config.ttl)
                    .build()
            }),
            templates: on.then(|| {
                Cache::builder()
                    .max_capacity(config.entries)
                    .time_to_live(config.ttl)
                    .support_invalidation_closures()
                    .build()
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// The store read through.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A recipient's contacts, opt-outs and quiet hours.
    pub async fn profile(&self, tenant: &str, user: &str) -> Result<RecipientProfile, StoreError> {
        let load = self.store.recipient_profile(tenant, user);
        let key = || (tenant.to_owned(), user.to_owned());
        self.through(self.profiles.as_ref(), key, load).await
    }

    /// Every variant of a template ([`Store::template_variants`]); none (no such template) is
    /// cached too.
    pub async fn template(
        &self,
        tenant: &str,
        template_id: &str,
    ) -> Result<Arc<Vec<TemplateRecord>>, StoreError> {
        let load = async {
            let variants = self.store.template_variants(tenant, template_id).await?;
            Ok(Arc::new(variants))
        };
        let key = || (tenant.to_owned(), template_id.to_owned());
        self.through(self.templates.as_ref(), key, load).await
    }

    /// The cached value of `key`, or what `load` reads, kept unless a change arrived while it
    /// read (it may be older than the change).
    async fn through<K, V>(
        &self,
        cache: Option<&Cache<K, V>>,
        key: impl FnOnce() -> K,
        load: impl Future<Output = Result<V, StoreError>>,
    ) -> Result<V, StoreError>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let Some(cache) = cache else {
            return load.await;
        };
        let key = key();
        if let Some(found) = cache.get(&key) {
            return Ok(found);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let value = load.await?;
        if self.generation.load(Ordering::Acquire) == generation {
            cache.insert(key, value.clone());
        }
        Ok(value)
    }

    /// Drops what `change` names: the recipient's profile, or the template in every locale
    /// (every template of the tenant for [`herald_schemas::ALL_TEMPLATES`]).
    pub fn forget(&self, change: &Change) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change.kind {
            ChangeKind::Recipient => {
                if let Some(cache) = &self.profiles {
                    let key = (change.tenant.clone(), change.id.clone());
                    cache.invalidate(&key);
                }
            }
            ChangeKind::Template => {
                if let Some(cache) = &self.templates {
                    let (tenant, id) = (change.tenant.clone(), change.id.clone());
                    if id == herald_schemas::ALL_TEMPLATES {
                        // Only fails without support_invalidation_closures, set above.
                        let _ = cache.invalidate_entries_if(move |k, _| k.0 == tenant);
                    } else {
                        cache.invalidate(&(tenant, id));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use herald_schemas::Channel;
    use herald_store::Contact;
    use herald_store_sqlite::SqliteStore;

    use super::*;

    async fn lookups(config: CacheConfig) -> (tempfile::TempDir, Lookups) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("herald.db"))
            .await
            .unwrap();
        (dir, Lookups::new(Arc::new(store), config))
    }

    fn change(kind: ChangeKind, tenant: &str, id: &str) -> Change {
        Change {
            kind,
            tenant: tenant.into(),
            id: id.into(),
            at_ms: 0,
        }
    }

    fn template(tenant: &str, id: &str, locale: &str, title: &str) -> TemplateRecord {
        TemplateRecord {
            tenant: tenant.into(),
            template_id: id.into(),
            locale: locale.into(),
            title: title.into(),
            body: "b".into(),
            action_url: None,
            channel: None,
            version: 1,
        }
    }

    #[tokio::test]
    async fn a_cached_profile_is_used_until_a_change_names_its_recipient() {
        let (_dir, l) = lookups(CacheConfig::default()).await;
        let store = Arc::clone(l.store());
        store
            .set_opt_out("t", "ann", Channel::Sms, "news", true)
            .await
            .unwrap();
        let first = l.profile("t", "ann").await.unwrap();
        store
            .set_opt_out("t", "ann", Channel::Sms, "news", false)
            .await
            .unwrap();
        assert_eq!(
            l.profile("t", "ann").await.unwrap(),
            first,
            "from the cache"
        );
        // Another recipient's change leaves hers cached.
        l.forget(&change(ChangeKind::Recipient, "t", "bob"));
        l.forget(&change(ChangeKind::Recipient, "other", "ann"));
        assert_eq!(l.profile("t", "ann").await.unwrap(), first);
        l.forget(&change(ChangeKind::Recipient, "t", "ann"));
        assert!(l.profile("t", "ann").await.unwrap().opt_outs.is_empty());
    }

    #[tokio::test]
    async fn a_template_change_drops_every_locale_and_an_import_every_template() {
        let (_dir, l) = lookups(CacheConfig::default()).await;
        let store = Arc::clone(l.store());
        for (id, locale) in [("a", "en"), ("a", "de"), ("b", "en")] {
            store
                .put_template(&template("t", id, locale, "old"))
                .await
                .unwrap();
        }
        let read = |id: &'static str, locale: &'static str| {
            let l = &l;
            async move {
                let variants = l.template("t", id).await.unwrap();
                let chosen = herald_store::variants::choose(&variants, Some(locale), None);
                chosen.unwrap().generic().unwrap().title.clone()
            }
        };
        for (id, locale) in [("a", "en"), ("a", "de"), ("b", "en")] {
            assert_eq!(read(id, locale).await, "old");
            store
                .put_template(&template("t", id, locale, "new"))
                .await
                .unwrap();
        }
        l.forget(&change(ChangeKind::Template, "t", "a"));
        assert_eq!(read("a", "en").await, "new");
        assert_eq!(read("a", "de").await, "new");
        assert_eq!(read("b", "en").await, "old", "b was not named");
        l.forget(&change(
            ChangeKind::Template,
            "t",
            herald_schemas::ALL_TEMPLATES,
        ));
        assert_eq!(read("b", "en").await, "new");
    }

    #[tokio::test]
    async fn a_missing_template_is_cached_as_missing_until_told() {
        let (_dir, l) = lookups(CacheConfig::default()).await;
        assert!(l.template("t", "late").await.unwrap().is_empty());
        l.store()
            .put_template(&template("t", "late", "en", "x"))
            .await
            .unwrap();
        assert!(l.template("t", "late").await.unwrap().is_empty());
        l.forget(&change(ChangeKind::Template, "t", "late"));
        assert_eq!(l.template("t", "late").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl_even_without_a_change() {
        let config = CacheConfig {
            entries: 10,
            ttl: Duration::from_millis(50),
        };
        let (_dir, l) = lookups(config).await;
        let sms = Contact {
            channel: Channel::Sms,
            address: "+15550100".into(),
        };
        assert!(l.profile("t", "ann").await.unwrap().contacts.is_empty());
        l.store().put_contact("t", "ann", &sms).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(l.profile("t", "ann").await.unwrap().contacts, vec![sms]);
    }

    #[tokio::test]
    async fn with_no_entries_every_read_goes_to_the_store() {
        let config = CacheConfig {
            entries: 0,
            ..CacheConfig::default()
        };
        let (_dir, l) = lookups(config).await;
        assert!(l.profile("t", "ann").await.unwrap().opt_outs.is_empty());
        l.store()
            .set_opt_out("t", "ann", Channel::Sms, "*", true)
            .await
            .unwrap();
        assert_eq!(l.profile("t", "ann").await.unwrap().opt_outs.len(), 1);
    }

    #[tokio::test]
    async fn a_read_overtaken_by_a_change_is_returned_but_not_kept() {
        let (_dir, l) = lookups(CacheConfig::default()).await;
        let cache = l.profiles.as_ref().unwrap();
        let key = || ("t".to_owned(), "ann".to_owned());
        // The change arrives while the value is read.
        let load = async {
            l.forget(&change(ChangeKind::Recipient, "t", "ann"));
            Ok(RecipientProfile::default())
        };
        let got = l.through(Some(cache), key, load).await.unwrap();
        assert_eq!(got, RecipientProfile::default());
        assert!(cache.get(&key()).is_none(), "the old value is not kept");
        // Read undisturbed, it is.
        let load = async { Ok(RecipientProfile::default()) };
        l.through(Some(cache), key, load).await.unwrap();
        assert!(cache.get(&key()).is_some());
    }
}
