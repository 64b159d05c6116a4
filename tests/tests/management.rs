//! The management API against a running platform: addresses are validated (INVALID_ARGUMENT
//! naming the field, with a BadRequest detail) and stored as normalized; a registered number
//! gets SMS; an opt-out suppresses its category on its channel but never a critical category
//! (which cannot be muted either); a recipient's data is exported whole and erased on request;
//! another tenant's recipients are out of reach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_proto::v1::{
    Channel, ContactAddress, DeliveryState, EraseRecipientRequest, ExportRecipientRequest,
    ListInboxRequest, Preference, PutContactRequest, RemoveContactRequest, SetPreferenceRequest,
};
use herald_tests::clients::{QueryClient, first_event};
use herald_tests::{Broker, Platform, eventually, inline_request};
use tonic::Code;
use tonic_types::StatusExt;

const TEST_LIMIT: Duration = Duration::from_secs(240);

fn contact(channel: Channel, address: &str) -> PutContactRequest {
    PutContactRequest {
        tenant: "acme".into(),
        recipient_user_id: "maya".into(),
        contact: Some(ContactAddress {
            channel: channel as i32,
            address: address.into(),
        }),
    }
}

fn preference(channel: Channel, category: &str, opted_out: bool) -> SetPreferenceRequest {
    SetPreferenceRequest {
        tenant: "acme".into(),
        recipient_user_id: "maya".into(),
        preference: Some(Preference {
            channel: channel as i32,
            category: category.into(),
        }),
        opted_out,
    }
}

/// The final state of `id` on `channel`, once it has one.
async fn final_state(query: &QueryClient, id: &str, channel: Channel) -> anyhow::Result<i32> {
    let finals = [
        DeliveryState::Delivered as i32,
        DeliveryState::Suppressed as i32,
    ];
    first_event(query, "acme", id, |e| {
        (e.channel == channel as i32 && finals.contains(&e.state)).then_some(e.state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_are_managed_validated_exported_and_erased() {
    tokio::time::timeout(TEST_LIMIT, manage())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn manage() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut manage = platform.management_client("acme", None).await?;

    // Bad addresses name the field; nothing is stored.
    for (channel, bad) in [
        (Channel::Sms, "0044 20 7946 0000"),
        (Channel::Email, "maya@@example"),
        (Channel::PushApns, "not-hex"),
        (Channel::Webhook, "http://plain.example.com"),
    ] {
        let status = manage.put_contact(contact(channel, bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("a BadRequest detail")
            .field_violations;
        assert_eq!(violations[0].field, "contact.address", "{bad}");
    }
    let missing = PutContactRequest {
        recipient_user_id: String::new(),
        ..contact(Channel::Sms, "+14155550100")
    };
    let status = manage.put_contact(missing).await.unwrap_err();
    assert!(
        status.message().starts_with("recipient_user_id"),
        "{status:?}"
    );

    // Good ones come back as stored.
    let stored = manage
        .put_contact(contact(Channel::Email, "Maya@Example.COM"))
        .await?
        .into_inner()
        .contact
        .unwrap();
    assert_eq!(stored.address, "Maya@example.com");
    manage
        .put_contact(contact(Channel::Sms, "+14155550100"))
        .await?;

    // Opted out of news by SMS; security cannot be muted, and "*" does not reach it.
    manage
        .set_preference(preference(Channel::Sms, "news", true))
        .await?;
    let refused = manage
        .set_preference(preference(Channel::Sms, "security", true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    manage
        .set_preference(preference(Channel::Email, "*", true))
        .await?;

    let mut ingress = platform.ingress_client("acme").await?;
    let query = platform.query_client("acme").await?;
    let send = |category: &str, channels: Vec<Channel>| {
        let mut request = inline_request("acme", "maya", category, category);
        request.channels = channels.into_iter().map(|c| c as i32).collect();
        request
    };
    let news = ingress
        .send_notification(send("news", vec![Channel::Sms, Channel::InApp]))
        .await?
        .into_inner()
        .notification_id;
    let security = ingress
        .send_notification(send("security", vec![Channel::Sms, Channel::Email]))
        .await?
        .into_inner()
        .notification_id;
    let (suppressed, delivered) = (
        DeliveryState::Suppressed as i32,
        DeliveryState::Delivered as i32,
    );
    assert_eq!(final_state(&query, &news, Channel::Sms).await?, suppressed);
    assert_eq!(final_state(&query, &news, Channel::InApp).await?, delivered);
    assert_eq!(
        final_state(&query, &security, Channel::Sms).await?,
        delivered
    );
    assert_eq!(
        final_state(&query, &security, Channel::Email).await?,
        delivered
    );

    // Export: everything kept about her.
    let export = manage
        .export_recipient(ExportRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: "maya".into(),
        })
        .await?
        .into_inner();
    let mut addresses: Vec<&str> = export.contacts.iter().map(|c| c.address.as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["+14155550100", "Maya@example.com"]);
    assert_eq!(export.opted_out.len(), 2);
    assert_eq!(export.inbox.len(), 1);
    assert_eq!(export.inbox[0].notification_id, news);
    assert!(!export.inbox_truncated);

    // Another tenant's key cannot reach her.
    let globex = platform.api_key("globex").await?;
    let mut other = platform.management_client("globex", Some(&globex)).await?;
    let denied = other
        .erase_recipient(EraseRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: "maya".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Removing one address, then erasing her.
    let removed = manage
        .remove_contact(RemoveContactRequest {
            tenant: "acme".into(),
            recipient_user_id: "maya".into(),
            channel: Channel::Sms as i32,
        })
        .await?
        .into_inner();
    assert!(removed.removed);
    let erased = manage
        .erase_recipient(EraseRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: "maya".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (erased.contacts, erased.opt_outs, erased.inbox_entries),
        (1, 2, 1)
    );
    let after = manage
        .export_recipient(ExportRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: "maya".into(),
        })
        .await?
        .into_inner();
    assert!(after.contacts.is_empty() && after.opted_out.is_empty() && after.inbox.is_empty());
    let page = query
        .clone()
        .list_inbox(ListInboxRequest {
            tenant: "acme".into(),
            recipient_user_id: "maya".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(page.entries.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_checked_at_upload_and_rendered_with_logic() {
    tokio::time::timeout(TEST_LIMIT, templates())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn templates() -> anyhow::Result<()> {
    use herald_proto::v1::send_notification_request::Content;
    use herald_proto::v1::{PutTemplateRequest, TemplateRef};

    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut manage = platform.management_client("acme", None).await?;
    let template = |body: &str| PutTemplateRequest {
        tenant: "acme".into(),
        template_id: "shipped".into(),
        locale: "en".into(),
        title: "Order {{ order }}".into(),
        body: body.into(),
        action_url: String::new(),
        channel: 0,
    };
    // A syntax error names the field and the line.
    let status = manage
        .put_template(template("Hi {{ name }},\n{% if vip %}thanks"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let field = &details.bad_request().unwrap().field_violations[0];
    assert_eq!(field.field, "body");
    assert!(field.description.contains("line"), "{field:?}");
    let body = "Hi {{ name }}{% if vip == 'yes' %}, our best customer{% endif %}.";
    let stored = manage.put_template(template(body)).await?.into_inner();
    assert_eq!(stored.variables, ["name", "order", "vip"]);

    let mut ingress = platform.ingress_client("acme").await?;
    let send = |user: &str, vars: &[(&str, &str)]| {
        let mut request = inline_request("acme", user, "orders", "unused");
        request.content = Some(Content::Template(TemplateRef {
            template_id: "shipped".into(),
            locale: "en-GB".into(),
            variables: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            version: 0,
        }));
        request
    };
    let vars = [("name", "Ana"), ("order", "A-7"), ("vip", "yes")];
    ingress.send_notification(send("tina", &vars)).await?;
    let incomplete = ingress
        .send_notification(send("tina", &vars[..2]))
        .await?
        .into_inner()
        .notification_id;
    let query = platform.query_client("acme").await?;
    let entry = eventually(Duration::from_secs(90), "the rendered entry", || {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "tina".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(page.entries.into_iter().next())
        }
    })
    .await?;
    assert_eq!(entry.title, "Order A-7");
    assert_eq!(entry.body, "Hi Ana, our best customer.");
    // The one without `vip` failed, saying which variable it lacked.
    let reason = first_event(&query, "acme", &incomplete, |e| {
        (e.state == DeliveryState::Failed as i32).then(|| e.reason.clone())
    })
    .await?;
    assert!(reason.contains("\"vip\""), "{reason}");

    // A second upload is version 2; a request pinning version 1 still gets the first.
    let v2 = manage
        .put_template(PutTemplateRequest {
            title: "Order {{ order }} v2".into(),
            ..template(body)
        })
        .await?
        .into_inner();
    assert_eq!((stored.version, v2.version), (1, 2));
    let mut pinned = send("pia", &vars);
    if let Some(Content::Template(t)) = pinned.content.as_mut() {
        t.version = 1;
    }
    ingress.send_notification(pinned).await?;
    ingress.send_notification(send("lia", &vars)).await?;
    for (user, title) in [("pia", "Order A-7"), ("lia", "Order A-7 v2")] {
        let got = eventually(Duration::from_secs(90), "the entry", || {
            let mut query = query.clone();
            async move {
                let page = query
                    .list_inbox(ListInboxRequest {
                        tenant: "acme".into(),
                        recipient_user_id: user.into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(page.entries.into_iter().next().map(|e| e.title))
            }
        })
        .await?;
        assert_eq!(got, title, "{user}");
    }

    // The spreadsheet round: acme's templates exported, imported into globex as they are.
    let book = platform.write_file("acme.xlsx", "")?;
    let said = platform
        .run_command(&[
            "templates",
            "export",
            "--tenant",
            "acme",
            "--out",
            &book.display().to_string(),
        ])
        .await?;
    assert!(said.contains("exported 2 templates"), "{said}");
    let said = platform
        .run_command(&[
            "templates",
            "import",
            "--tenant",
            "globex",
            &book.display().to_string(),
        ])
        .await?;
    assert!(said.contains("imported 2 templates"), "{said}");
    let store = herald_stores::open(&platform.store_url).await?;
    let (acme, globex) = (
        store.templates_of("acme").await?,
        store.templates_of("globex").await?,
    );
    assert_eq!(globex.len(), 2);
    let content = |t: &[herald_store::TemplateRecord]| -> Vec<(u32, String, String)> {
        t.iter()
            .map(|t| (t.version, t.title.clone(), t.body.clone()))
            .collect()
    };
    assert_eq!(content(&globex), content(&acme), "every version, as it was");
    // A file that is not a workbook: refused, nothing applied.
    let junk = platform.write_file("junk.xlsx", "template_id,locale\nx,en\n")?;
    let refused = platform
        .run_command(&[
            "templates",
            "import",
            "--tenant",
            "initech",
            &junk.display().to_string(),
        ])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not an .xlsx workbook"), "{refused}");
    assert!(store.templates_of("initech").await?.is_empty());
    Ok(())
}
