//! The metrics every process serves, read over HTTP as Prometheus would:
//! - the lag exporter's `herald_consumer_lag` is what was produced minus what was consumed, in a
//!   run where that is known (a stage not started has consumed nothing; a started one catches
//!   up to zero), with the producing stages' own counters agreeing;
//! - a whole platform's processes count requests by code, records per stage, deliveries'
//!   end-to-end latency and provider calls — with no user or notification id in any label;
//! - every metric the Grafana dashboard and the alert rules under `helm/` use is exported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use herald_proto::v1::{ListInboxRequest, SendNotificationRequest};
use herald_telemetry::metrics as m;
use herald_telemetry::scrape::{Sample, sum};
use herald_tests::{Broker, Platform, eventually, inline_request, repo_root};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const SENT: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_produced_minus_consumed() {
    tokio::time::timeout(TEST_LIMIT, lag())
        .await
        .expect("test timed out")
        .unwrap();
}

fn request(i: usize) -> SendNotificationRequest {
    inline_request(
        "acme",
        &format!("user-{}", i % 7),
        "general",
        &format!("n{i}"),
    )
}

/// Sends `n` notifications; their ids.
async fn send(
    ingress: &mut herald_tests::clients::IngressClient,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..n {
        let sent = ingress.send_notification(request(i)).await?;
        ids.push(sent.into_inner().notification_id);
    }
    Ok(ids)
}

/// Waits until the lag exporter shows `want` records of lag for each (stage, …) listed.
async fn wait_lag(platform: &Platform, want: &[(&str, f64)]) -> anyhow::Result<Vec<Sample>> {
    eventually(Duration::from_secs(90), "the lag", || async {
        let samples = platform.scrape("lag-exporter").await?;
        let now: Vec<f64> = want
            .iter()
            .map(|(stage, _)| sum(&samples, m::CONSUMER_LAG, &[("stage", stage)]))
            .collect();
        let wanted: Vec<f64> = want.iter().map(|(_, n)| *n).collect();
        Ok((now == wanted).then_some(samples))
    })
    .await
}

async fn lag() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    // At-least-once: no transaction markers, so a partition's end is exactly what was produced.
    let platform = Platform::configure_mode(&broker, false, "")?;
    platform.run_command(&["topics"]).await?;
    let _ingress = platform
        .spawn_component(&["ingress"], Some(platform.ingress))
        .await?;
    let _enrich = platform.spawn_component(&["stage", "enrich"], None).await?;
    let _exporter = platform.spawn_component(&["lag-exporter"], None).await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let ids = send(&mut ingress, SENT).await?;
    let n = SENT as f64;
    // Enrich consumed all it was given; rate-limit, not running, none of what enrich produced.
    let lag = wait_lag(&platform, &[("enrich", 0.0), ("rate-limit", n)]).await?;
    let enrich = platform.scrape("enrich").await?;
    assert_eq!(sum(&enrich, m::STAGE_IN, &[("stage", "enrich")]), n);
    assert_eq!(sum(&enrich, m::STAGE_OUT, &[("stage", "enrich")]), n);
    let ingress_metrics = platform.scrape("ingress").await?;
    assert_eq!(
        sum(&ingress_metrics, m::INGRESS_REQUESTS, &[("code", "OK")]),
        n
    );
    // Per partition too: every partition of the enriched topic is in the table.
    let partitions: BTreeSet<&str> = lag
        .iter()
        .filter(|s| s.name == m::CONSUMER_LAG && s.label("stage") == "rate-limit")
        .map(|s| s.label("partition"))
        .collect();
    assert!(partitions.len() >= 2, "{partitions:?}");

    // Rate-limit starts and catches up; fan-out, not running, lags by what it admitted.
    let _rate_limit = platform
        .spawn_component(&["stage", "rate-limit"], None)
        .await?;
    wait_lag(&platform, &[("rate-limit", 0.0), ("fan-out", n)]).await?;
    let limited = platform.scrape("rate-limit").await?;
    assert_eq!(sum(&limited, m::STAGE_IN, &[("stage", "rate-limit")]), n);
    assert_no_ids(&[&lag, &enrich, &ingress_metrics, &limited], &ids);
    Ok(())
}

/// No label value names a user or a notification.
fn assert_no_ids(pages: &[&[Sample]], ids: &[String]) {
    for sample in pages.iter().flat_map(|p| p.iter()) {
        for value in sample.labels.values() {
            assert!(
                !value.contains("user-") && !ids.iter().any(|id| value.contains(id.as_str())),
                "an unbounded label value: {sample:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_its_metrics_and_the_dashboards_use_only_real_ones() {
    tokio::time::timeout(TEST_LIMIT, whole_platform())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn whole_platform() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let ids = send(&mut ingress, 5).await?;
    // A refused request is counted under its code.
    let mut bad = request(99);
    bad.recipient_user_id.clear();
    assert!(ingress.send_notification(bad).await.is_err());
    let deliver = eventually(Duration::from_secs(120), "five deliveries", || async {
        let deliver = platform.scrape("deliver").await?;
        let done = sum(
            &deliver,
            &format!("{}_count", m::DELIVERY_SECONDS),
            &[("channel", "in_app"), ("outcome", "delivered")],
        );
        Ok((done >= 5.0).then_some(deliver))
    })
    .await?;
    assert_eq!(
        sum(
            &deliver,
            m::PROVIDER_CALLS,
            &[("provider", "inbox"), ("outcome", "delivered")]
        ),
        5.0
    );
    let mut query = platform.query_client("acme").await?;
    query
        .list_inbox(ListInboxRequest {
            tenant: "acme".into(),
            recipient_user_id: "user-1".into(),
            ..Default::default()
        })
        .await?;
    let mut pages = Vec::new();
    for component in platform.metrics.keys() {
        let page = platform.scrape(component).await?;
        assert!(
            page.iter().all(|s| s.label("component") == *component),
            "{component} labels its samples as itself"
        );
        pages.push(page);
    }
    let all: Vec<Sample> = pages.concat();
    let ingress_metrics = platform.scrape("ingress").await?;
    assert_eq!(
        sum(&ingress_metrics, m::INGRESS_REQUESTS, &[("code", "OK")]),
        5.0
    );
    assert_eq!(
        sum(
            &ingress_metrics,
            m::INGRESS_REQUESTS,
            &[("code", "INVALID_ARGUMENT")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &all,
            m::QUERY_REQUESTS,
            &[("rpc", "ListInbox"), ("code", "OK")]
        ),
        1.0
    );
    // Exactly-once stages commit transactions.
    assert!(sum(&all, m::STAGE_COMMITS, &[("stage", "enrich")]) >= 1.0);
    let borrowed: Vec<&[Sample]> = pages.iter().map(Vec::as_slice).collect();
    assert_no_ids(&borrowed, &ids);

    // Every herald_* name the dashboard and the rules use is exported by some process.
    let exported: BTreeSet<String> = all.iter().map(|s| base_name(&s.name)).collect();
    for file in [
        "helm/herald/dashboards/herald.json",
        "helm/herald/alerts/herald-rules.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file))?;
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file} uses {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics nobody exports: {missing:?}"
        );
    }
    Ok(())
}

/// A histogram's parts under its own name.
fn base_name(name: &str) -> String {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
        .to_owned()
}

/// The `herald_…` metric names a dashboard or rules file mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("herald_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // Only a name at a word boundary (not a job label like `xherald_…`).
        let boundary = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if boundary {
            names.insert(base_name(&word));
        }
        rest = &rest[at + word.len().max(1)..];
    }
    names
}
