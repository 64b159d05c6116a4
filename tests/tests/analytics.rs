//! What analysts read, read as they would: `scripts/read_topic.py` (fastavro and confluent-kafka
//! from PyPI, none of Herald's code) decodes `<p>.delivery-result` and `<p>.engagement` from the
//! broker with only the `.avsc` files of `schemas/`, and finds every state of the notifications
//! sent and the READ events of the ones marked read — the snippet docs/ANALYTICS.md shows; and
//! `herald tail` shows operators the same records as JSON lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use herald_proto::v1::{ListInboxRequest, MarkReadRequest};
use herald_tests::{Broker, Platform, inline_request, repo_root, settled};

const TEST_LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_reads_results_and_engagement_with_fastavro_from_the_avsc_files() {
    tokio::time::timeout(TEST_LIMIT, analytics())
        .await
        .expect("test timed out")
        .unwrap();
}

/// The JSON lines `read_topic.py` prints for `topic`, decoded with `schemas`.
async fn read(
    bootstrap: &str,
    topic: &str,
    schemas: &[&str],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut cmd = tokio::process::Command::new(repo_root().join("scripts/analytics.sh"));
    cmd.arg("read")
        .args(["--bootstrap", bootstrap, "--topic", topic, "--idle-s", "3"]);
    for s in schemas {
        cmd.arg("--schema").arg(repo_root().join(s));
    }
    let out =
        tokio::time::timeout(Duration::from_secs(180), cmd.kill_on_drop(true).output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "read_topic.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        !stderr.contains("offset"),
        "records it could not read: {stderr}"
    );
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

async fn analytics() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let query = platform.query_client("acme").await?;
    let mut ids = BTreeSet::new();
    for i in 0..3 {
        let request = inline_request("acme", "ana", "general", &format!("hello {i}"));
        let id = ingress
            .send_notification(request)
            .await?
            .into_inner()
            .notification_id;
        ids.insert(id);
    }
    // Delivered in-app, then read: a READ engagement event each.
    settled(Duration::from_secs(90), "the inbox", || {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "ana".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.entries.len() == 3).then_some(()))
        }
    })
    .await?;
    let marked = query
        .clone()
        .mark_read(MarkReadRequest {
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            notification_ids: ids.iter().cloned().collect(),
        })
        .await?
        .into_inner();
    assert_eq!(marked.newly_read.len(), 3);

    let results = read(
        &broker.bootstrap,
        &format!("{}.delivery-result", platform.prefix),
        &["schemas/delivery_result.avsc"],
    )
    .await?;
    for id in &ids {
        let states: BTreeSet<&str> = results
            .iter()
            .filter(|r| r["notification_id"] == id.as_str())
            .filter_map(|r| r["state"].as_str())
            .collect();
        assert!(
            ["DISPATCHED", "DELIVERED"]
                .iter()
                .all(|s| states.contains(s)),
            "{id}: {states:?}"
        );
        let delivered = results
            .iter()
            .find(|r| r["notification_id"] == id.as_str() && r["state"] == "DELIVERED")
            .expect("a DELIVERED result");
        assert_eq!(delivered["tenant"], "acme");
        assert_eq!(delivered["recipient_user_id"], "ana");
        assert_eq!(delivered["channel"], "IN_APP");
        assert!(delivered["at_ms"].is_string() || delivered["at_ms"].is_number());
    }

    let engagement = read(
        &broker.bootstrap,
        &format!("{}.engagement", platform.prefix),
        &["schemas/engagement.avsc"],
    )
    .await?;
    let read_ids: BTreeSet<&str> = engagement
        .iter()
        .filter(|e| e["kind"] == "READ")
        .filter_map(|e| e["notification_id"].as_str())
        .collect();
    assert_eq!(read_ids, ids.iter().map(String::as_str).collect());

    // A notification's path, as an operator asks for it.
    let first = ids.iter().next().expect("an id");
    let trace = platform
        .run_command(&["trace", first, "--tenant", "acme"])
        .await?;
    for step in ["ACCEPTED", "DISPATCHED", "DELIVERED"] {
        assert!(
            trace.lines().any(|l| l.contains(step) && l.contains(" ms")),
            "{step} in\n{trace}"
        );
    }

    // The operators' view of the same topic: `herald tail` decodes it to JSON lines.
    let tailed = platform
        .run_command(&[
            "tail",
            "delivery-result",
            "--from-beginning",
            "--idle-s",
            "3",
        ])
        .await?;
    let lines: Vec<serde_json::Value> = tailed
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        lines.len(),
        results.len(),
        "as many records as fastavro read"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["error"].is_null() && l["offset"].is_i64())
    );
    for id in &ids {
        assert!(
            lines
                .iter()
                .any(|l| l["event"]["notification_id"] == id.as_str()
                    && l["event"]["state"] == "DELIVERED"
                    && l["key"] == "acme/ana"),
            "{id} delivered, in herald tail"
        );
    }
    let future = (std::time::SystemTime::now() + Duration::from_secs(3_600))
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let none = platform
        .run_command(&["tail", "engagement", "--since-ms", &future, "--idle-s", "2"])
        .await?;
    assert!(
        none.trim().is_empty(),
        "nothing written after a time to come: {none}"
    );
    let max = platform
        .run_command(&["tail", "engagement", "--from-beginning", "--max", "2"])
        .await?;
    assert_eq!(max.lines().count(), 2);
    assert!(
        platform
            .run_command(&["tail", "txn-probe", "--from-beginning", "--idle-s", "1"])
            .await
            .is_err(),
        "a topic that carries no events is refused"
    );
    Ok(())
}
