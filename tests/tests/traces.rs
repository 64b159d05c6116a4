//! End-to-end traces: with `[telemetry] otlp_endpoint` pointing at an OTLP receiver the test
//! runs, one notification sent with the caller's `traceparent` leaves one trace — the caller's —
//! with a span from every process it passed (ingress, enrich, rate-limit, fan-out, deliver with
//! its provider call, store-writer with its write), each a child of the one before; and with the
//! endpoint pointing nowhere, the platform delivers as usual.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herald_proto::v1::ListInboxRequest;
use herald_tests::otlp::{OtlpReceiver, ReceivedSpan};
use herald_tests::{Broker, Platform, eventually, free_port, inline_request};

const TEST_LIMIT: Duration = Duration::from_secs(240);
/// The caller's trace and span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Every process's span names a notification passes, by service.
const EXPECTED: &[(&str, &str)] = &[
    ("herald-ingress", "SendNotification"),
    ("herald-enrich", "enrich"),
    ("herald-rate-limit", "rate-limit"),
    ("herald-fan-out", "fan-out"),
    ("herald-deliver", "deliver.in_app"),
    ("herald-deliver", "provider.send_many"),
    ("herald-store-writer", "store-writer"),
    ("herald-store-writer", "store.write"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_notification_through_every_process() {
    tokio::time::timeout(TEST_LIMIT, one_trace())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn one_trace() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?
        .with_telemetry(&format!("otlp_endpoint = \"{}\"", receiver.endpoint()))?
        .start()
        .await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut request = tonic::Request::new(inline_request("acme", "tracy", "general", "traced"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse()?,
    );
    let id = ingress
        .send_notification(request)
        .await?
        .into_inner()
        .notification_id;

    let trace = eventually(Duration::from_secs(120), "every process's span", || async {
        let trace: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == TRACE_ID)
            .collect();
        let seen: BTreeSet<(&str, &str)> = trace
            .iter()
            .map(|s| (s.service.as_str(), s.name.as_str()))
            .collect();
        let complete = EXPECTED.iter().all(|e| seen.contains(e));
        Ok(complete.then_some(trace))
    })
    .await?;

    // Each span hangs off one in the same trace; the ingress's off the caller's.
    let by_id: BTreeMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for span in &trace {
        let parent = span.parent_id.as_str();
        assert!(
            parent == CALLER_SPAN || by_id.contains_key(parent),
            "{span:?} has a parent outside the trace"
        );
    }
    let ingress_span = trace
        .iter()
        .find(|s| s.name == "SendNotification")
        .expect("the ingress span");
    assert_eq!(ingress_span.parent_id, CALLER_SPAN);
    assert_eq!(
        ingress_span.attributes.get("herald.notification_id"),
        Some(&id)
    );
    // The hops chain: deliver's record span descends from fan-out's, which descends from
    // rate-limit's, enrich's and the ingress's.
    let chain = [
        "deliver.in_app",
        "fan-out",
        "rate-limit",
        "enrich",
        "SendNotification",
    ];
    let deliver = trace.iter().find(|s| s.name == chain[0]).expect("deliver");
    let mut at = deliver;
    for want in &chain[1..] {
        at = by_id
            .get(at.parent_id.as_str())
            .copied()
            .unwrap_or_else(|| panic!("{} has no parent in the trace", at.name));
        assert_eq!(at.name, *want, "the parent of a hop");
    }
    for span in trace.iter().filter(|s| s.service != "herald-ingress") {
        if span.name == "store.write" || span.name.starts_with("provider.") {
            continue;
        }
        assert_eq!(
            span.attributes.get("herald.notification_id"),
            Some(&id),
            "{span:?}"
        );
        assert_eq!(
            span.attributes.get("herald.tenant").map(String::as_str),
            Some("acme")
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_the_export_stays_out_of_the_way() {
    tokio::time::timeout(TEST_LIMIT, no_collector())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn no_collector() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let nowhere = format!("otlp_endpoint = \"http://127.0.0.1:{}\"", free_port());
    let platform = Platform::configure(&broker, "")?
        .with_telemetry(&nowhere)?
        .start()
        .await?;
    let mut ingress = platform.ingress_client("acme").await?;
    for i in 0..3 {
        let request = inline_request("acme", "nora", "general", &format!("n{i}"));
        ingress.send_notification(request).await?;
    }
    let query = platform.query_client("acme").await?;
    eventually(Duration::from_secs(90), "three deliveries", || {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "nora".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.entries.len() == 3).then_some(()))
        }
    })
    .await
}
