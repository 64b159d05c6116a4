//! More than one instance of a component: a second deliver process joins the stage's consumer
//! groups while notifications flow and takes some of the six partitions — every e-mail
//! delivered once throughout; and ingress processes sharing one address (`[ingress]
//! reuse_port`) each answer requests, the survivor alone when one dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_tests::bench::produce;
use herald_tests::clients::ingress_on;
use herald_tests::platform::counter_at;
use herald_tests::{Broker, Platform, eventually};
use tonic::transport::Channel;

const TEST_LIMIT: Duration = Duration::from_secs(300);
const USERS: usize = 1_000;
const RECORDS_IN: &str = "herald_stage_records_in_total";
const ANSWERED: &str = "herald_ingress_requests_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deliver_instance_shares_the_partitions_and_nothing_is_lost() {
    tokio::time::timeout(TEST_LIMIT, second_deliver())
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_processes_share_one_address() {
    tokio::time::timeout(TEST_LIMIT, shared_address())
        .await
        .expect("test timed out")
        .unwrap();
}

/// A counter summed over every label, as `addr`'s metrics endpoint serves it now (0 if it
/// does not answer yet).
async fn counter(addr: std::net::SocketAddr, name: &str) -> f64 {
    counter_at(addr, name).await.unwrap_or(0.0)
}

async fn second_deliver() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "partitions = 6\n")?;
    herald_tests::seed_email_contacts(&platform.store_url, "bench", USERS).await?;
    let platform = platform.start().await?;
    let channel = Channel::from_shared(Platform::url(platform.ingress))?
        .connect()
        .await?;
    let client = ingress_on(channel, &platform.api_key("bench").await?)?;
    let recording = platform.recording.clone();
    // Request i goes to user i % USERS; every request is a new notification.
    let mut sent = 0u64;
    let send = |from: u64, n: u64| {
        let client = client.clone();
        async move {
            let ok = herald_tests::bench::stats::closed_loop_count(8, n, move |i| {
                produce::ingress_send(client.clone())(from + i)
            })
            .await;
            anyhow::ensure!(ok == n, "{ok} of {n} accepted");
            anyhow::Ok(())
        }
    };
    let all_delivered = |want: u64| {
        let recording = recording.clone();
        eventually(
            Duration::from_secs(90),
            "every e-mail delivered",
            move || {
                let delivered = herald_connectors::recording::delivered_ids(&recording);
                async move { Ok((delivered? >= want).then_some(())) }
            },
        )
    };
    send(sent, 30).await?;
    sent += 30;
    all_delivered(sent).await?;

    let first = *platform.metrics.get("deliver").unwrap();
    let (mut second, second_metrics) = platform
        .spawn_instance("deliver", &["stage", "deliver"], "second", &[], None)
        .await?;
    // Until the second instance has consumed records of its own: the groups rebalanced.
    let first_before = counter(first, RECORDS_IN).await;
    let rounds = eventually(Duration::from_secs(120), "the second instance busy", || {
        let from = sent;
        sent += 30;
        let round = send(from, 30);
        async move {
            round.await?;
            let theirs = counter(second_metrics, RECORDS_IN).await;
            Ok((theirs > 0.0).then_some(()))
        }
    });
    rounds.await?;
    all_delivered(sent).await?;
    let first_after = counter(first, RECORDS_IN).await;
    let theirs = counter(second_metrics, RECORDS_IN).await;
    assert!(theirs > 0.0, "the second instance consumed nothing");
    assert!(
        first_after > first_before,
        "the first instance stopped consuming once the second joined"
    );

    // Both instances keep delivering side by side.
    send(sent, 60).await?;
    sent += 60;
    all_delivered(sent).await?;
    // Not tested: scaling in. A member that dies for good keeps its partitions on noida-db
    // (not expired within 90 s, static or dynamic membership; docs/BROKERS.md); Apache Kafka
    // hands them on after `session.timeout.ms`. A replaced instance (the same instance id)
    // takes them back at once: the crash tests.
    second.kill().await;

    let calls = herald_connectors::recording::call_count(&platform.recording)?;
    let ids = herald_connectors::recording::delivered_ids(&platform.recording)?;
    assert_eq!(ids, sent, "e-mails delivered: {ids} of {sent}");
    assert_eq!(calls, ids, "{} e-mails delivered twice", calls - ids);
    Ok(())
}

async fn shared_address() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?;
    platform.run_command(&["topics"]).await?;
    let key = platform.api_key("bench").await?;
    let reuse = [("HERALD__INGRESS__REUSE_PORT", "true")];
    let mut instances = Vec::new();
    for name in ["one", "two"] {
        let (proc, metrics) = platform
            .spawn_instance(
                "ingress",
                &["ingress"],
                name,
                &reuse,
                Some("ingress listening"),
            )
            .await?;
        instances.push((proc, metrics));
    }

    // Without reuse_port, a third cannot listen on the address: it says so and exits.
    let (refused, _) = platform
        .spawn_instance("ingress", &["ingress"], "three", &[], None)
        .await?;
    refused
        .wait_for_log("ingress cannot listen on", Duration::from_secs(60))
        .await?;

    // 24 connections: the kernel hands each to one of the two listeners (all to one: 2⁻²³).
    let send_on_fresh_connections = |connections: usize, per_connection: u64| {
        let (url, key) = (Platform::url(platform.ingress), key.clone());
        async move {
            for c in 0..connections {
                let channel = Channel::from_shared(url.clone())?.connect().await?;
                let client = ingress_on(channel, &key)?;
                for i in 0..per_connection {
                    let ok = produce::ingress_send(client.clone())(c as u64 * 100 + i).await;
                    anyhow::ensure!(ok, "a request on connection {c} failed");
                }
            }
            anyhow::Ok(())
        }
    };
    send_on_fresh_connections(24, 5).await?;
    for (proc, metrics) in &instances {
        let answered = counter(*metrics, ANSWERED).await;
        assert!(
            answered > 0.0,
            "{} answered nothing:\n{}",
            proc.log_path().display(),
            proc.log_tail()
        );
    }

    // One dies: new connections reach the other, and every request is answered.
    let (mut dead, _) = instances.remove(0);
    dead.kill().await;
    send_on_fresh_connections(8, 5).await?;
    Ok(())
}
