//! One test body for every [`Store`] backend: each function takes a fresh store and panics on the
//! first broken expectation. Backends call [`run_all`] from their tests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use herald_schemas::{Channel, DeliveryState, Priority};

use crate::*;

pub async fn run_all(store: &dyn Store) {
    notifications_and_timeline(store).await;
    inbox_pages_newest_first(store).await;
    tenants_are_isolated(store).await;
    contacts_and_templates(store).await;
    ledger_keeps_the_first_outcome(store).await;
}

fn notification(tenant: &str, id: &str) -> NotificationRecord {
    NotificationRecord {
        tenant: tenant.into(),
        notification_id: id.into(),
        recipient_user_id: "alice".into(),
        category: "news".into(),
        priority: Priority::High,
        created_at_ms: 1_000,
    }
}

fn event(id: &str, channel: Option<Channel>, state: DeliveryState, at: i64) -> DeliveryEventRecord {
    DeliveryEventRecord {
        tenant: "t1".into(),
        notification_id: id.into(),
        result_id: format!("{id}/{channel:?}/{state:?}"),
        channel,
        state,
        reason: None,
        at_ms: at,
    }
}

pub async fn notifications_and_timeline(store: &dyn Store) {
    assert!(store.get_notification("t1", "n1").await.unwrap().is_none());
    let n = notification("t1", "n1");
    store.upsert_notification(&n).await.unwrap();
    store.upsert_notification(&n).await.unwrap();
    let accepted = event("n1", None, DeliveryState::Accepted, 1_000);
    let delivered = event("n1", Some(Channel::Email), DeliveryState::Delivered, 1_500);
    // Out of order and twice: replays must not duplicate the timeline.
    for e in [&delivered, &accepted, &delivered, &accepted] {
        store.record_delivery_event(e).await.unwrap();
    }
    let (got, timeline) = store.get_notification("t1", "n1").await.unwrap().unwrap();
    assert_eq!(got, n);
    assert_eq!(timeline, vec![accepted, delivered]);
    assert_eq!(overall_state(&timeline), DeliveryState::Delivered);
}

fn entry(tenant: &str, user: &str, id: &str, at: i64) -> InboxEntryRecord {
    InboxEntryRecord {
        tenant: tenant.into(),
        recipient_user_id: user.into(),
        notification_id: id.into(),
        category: "news".into(),
        title: format!("title {id}"),
        body: "body".into(),
        action_url: None,
        created_at_ms: at,
        read_at_ms: None,
    }
}

pub async fn inbox_pages_newest_first(store: &dyn Store) {
    // 25 entries, two sharing a timestamp, inserted out of order and some twice.
    let mut expected = Vec::new();
    for i in (0..25).rev() {
        let at = if i == 10 { 10_009 } else { 10_000 + i };
        let e = entry("t1", "bob", &format!("n{i:02}"), at);
        store.upsert_inbox_entry(&e).await.unwrap();
        if i % 7 == 0 {
            store.upsert_inbox_entry(&e).await.unwrap();
        }
        expected.push(e);
    }
    expected.sort_by(|a, b| {
        (b.created_at_ms, &b.notification_id).cmp(&(a.created_at_ms, &a.notification_id))
    });
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_inbox(&InboxQuery {
                tenant: "t1".into(),
                recipient_user_id: "bob".into(),
                page_size: 10,
                page_token: token.take(),
            })
            .await
            .unwrap();
        assert!(page.entries.len() <= 10);
        seen.extend(page.entries);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let bad = store
        .list_inbox(&InboxQuery {
            tenant: "t1".into(),
            recipient_user_id: "bob".into(),
            page_size: 10,
            page_token: Some("not-a-token".into()),
        })
        .await;
    assert!(matches!(bad, Err(StoreError::BadPageToken)));
}

pub async fn tenants_are_isolated(store: &dyn Store) {
    store
        .upsert_notification(&notification("t2", "secret"))
        .await
        .unwrap();
    store
        .upsert_inbox_entry(&entry("t2", "carol", "secret", 1))
        .await
        .unwrap();
    assert!(
        store
            .get_notification("t3", "secret")
            .await
            .unwrap()
            .is_none()
    );
    let page = store
        .list_inbox(&InboxQuery {
            tenant: "t3".into(),
            recipient_user_id: "carol".into(),
            page_size: 10,
            page_token: None,
        })
        .await
        .unwrap();
    assert!(page.entries.is_empty());
}

pub async fn contacts_and_templates(store: &dyn Store) {
    assert_eq!(
        store.recipient_profile("t1", "dave").await.unwrap(),
        RecipientProfile::default()
    );
    let email = Contact {
        channel: Channel::Email,
        address: "old@example.com".into(),
    };
    store.put_contact("t1", "dave", &email).await.unwrap();
    let email = Contact {
        channel: Channel::Email,
        address: "dave@example.com".into(),
    };
    store.put_contact("t1", "dave", &email).await.unwrap();
    let profile = store.recipient_profile("t1", "dave").await.unwrap();
    assert_eq!(profile.contacts, vec![email]);

    let template = |locale: &str, title: &str| TemplateRecord {
        tenant: "t1".into(),
        template_id: "welcome".into(),
        locale: locale.into(),
        title: title.into(),
        body: "Hello {{name}}".into(),
        action_url: None,
    };
    store
        .put_template(&template("en", "Welcome"))
        .await
        .unwrap();
    store
        .put_template(&template("pt-BR", "Bem-vindo"))
        .await
        .unwrap();
    let title = |t: Option<TemplateRecord>| t.map(|t| t.title);
    assert_eq!(
        title(
            store
                .template("t1", "welcome", Some("pt-BR"))
                .await
                .unwrap()
        )
        .as_deref(),
        Some("Bem-vindo")
    );
    assert_eq!(
        title(
            store
                .template("t1", "welcome", Some("en-GB"))
                .await
                .unwrap()
        )
        .as_deref(),
        Some("Welcome")
    );
    assert!(
        store
            .template("t1", "welcome", Some("de"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .template("t1", "missing", None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .template("t2", "welcome", None)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn ledger_keeps_the_first_outcome(store: &dyn Store) {
    assert_eq!(
        store.ledger_begin("d1", 1).await.unwrap(),
        LedgerBegin::Fresh
    );
    // A crash before finishing: the next attempt learns it is inside the provider window.
    assert_eq!(
        store.ledger_begin("d1", 2).await.unwrap(),
        LedgerBegin::Unfinished
    );
    assert_eq!(store.ledger_resends().await.unwrap(), 1);
    let first = LedgerEntry {
        delivery_id: "d1".into(),
        state: DeliveryState::Delivered,
        reason: None,
        provider_message_id: Some("p-1".into()),
        at_ms: 5,
    };
    store.ledger_finish(&first).await.unwrap();
    let second = LedgerEntry {
        state: DeliveryState::Failed,
        ..first.clone()
    };
    store.ledger_finish(&second).await.unwrap();
    assert_eq!(
        store.ledger_begin("d1", 9).await.unwrap(),
        LedgerBegin::Done(first)
    );
    assert_eq!(
        store.ledger_resends().await.unwrap(),
        1,
        "a finished delivery is not a resend"
    );
    // A provider's "retry later" withdraws the attempt: the next one is fresh, not a resend.
    assert_eq!(
        store.ledger_begin("d3", 1).await.unwrap(),
        LedgerBegin::Fresh
    );
    store.ledger_abandon("d3").await.unwrap();
    assert_eq!(
        store.ledger_begin("d3", 2).await.unwrap(),
        LedgerBegin::Fresh
    );
    assert_eq!(
        store.ledger_begin("d3", 3).await.unwrap(),
        LedgerBegin::Unfinished
    );
    assert_eq!(store.ledger_resends().await.unwrap(), 2);
    // Finishing without beginning (a connector that records directly) also works.
    let other = LedgerEntry {
        delivery_id: "d2".into(),
        ..second
    };
    store.ledger_finish(&other).await.unwrap();
    assert_eq!(
        store.ledger_begin("d2", 9).await.unwrap(),
        LedgerBegin::Done(other)
    );
}
