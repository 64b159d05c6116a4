//! Any bytes as a `SendNotificationRequest` on the wire: decoding and validation never panic;
//! a request that validates carries only bounded fields, has a digest, and its event survives
//! an Avro round trip.
#![no_main]

use herald_ingress::validate::{Policy, limits, to_event_with};
use herald_proto::v1::SendNotificationRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SendNotificationRequest::decode(data) else {
        return;
    };
    let policy = Policy {
        link_schemes: vec!["https".into(), "acme".into()],
    };
    let Ok(event) = to_event_with(request, 1_700_000_000_000, &policy) else {
        return;
    };
    assert!(!event.tenant.is_empty() && event.tenant.len() <= limits::NAME);
    assert!(event.recipient_user_id.len() <= limits::ID);
    if let Some(inline) = &event.inline {
        assert!(inline.title.len() <= limits::TITLE && inline.body.len() <= limits::BODY);
        if let Some(url) = &inline.action_url {
            let lower = url.to_ascii_lowercase();
            assert!(lower.starts_with("https://") || lower.starts_with("acme://"), "{url}");
        }
    }
    if let Some(t) = &event.template {
        assert!(t.variables.len() <= limits::VARIABLES);
    }
    let digest = herald_schemas::ids::request_digest(&event);
    assert!(!digest.is_empty());
    let bytes = herald_schemas::codec::encode(&event).expect("a valid event encodes");
    let back: herald_schemas::NotificationRequested =
        herald_schemas::codec::decode(&bytes).expect("and decodes");
    assert_eq!(back, event);
});
