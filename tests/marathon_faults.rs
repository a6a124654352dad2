//! A hostile or broken Marathon (or a proxy in front of it) cannot hurt the zone: every fault
//! is reproduced against the simulator, and the records stay while the server keeps answering.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;
use marathon_dns::server;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

fn web(sim: &Simulator) {
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/web", "10.0.0.1", &[]).expect("task");
}

async fn web_a(running: &server::Running) -> Vec<String> {
    rdata(
        &q(running.udp[0], "web.marathon.local", RecordType::A).await,
        RecordType::A,
    )
}

/// Let a few resyncs (every 200 ms) run against the broken Marathon.
async fn resyncs_fail(running: &server::Running, n: u64) {
    let before = running.status.failed_resyncs();
    eventually("resyncs fail", || async {
        running.status.failed_resyncs() >= before + n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_without_apps_or_not_an_object_keeps_the_zone() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let running = start_against(&sim, |s| {
        s.resync_interval = Duration::from_millis(200);
    })
    .await;
    assert_eq!(web_a(&running).await, ["10.0.0.1"]);
    for body in [
        "{}",
        "[]",
        r#"{"apps": {"id": "/web"}}"#,
        r#"{"apps": [{"id": "/web""#,
    ] {
        sim.apps_body(Some(body.to_string()));
        resyncs_fail(&running, 1).await;
        assert_eq!(web_a(&running).await, ["10.0.0.1"], "after {body}");
    }
    sim.apps_body(None);
    sim.start_task("/web", "10.0.0.2", &[]).expect("task");
    eventually("healthy again", || async {
        web_a(&running).await.len() == 2
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_that_fail_to_parse_or_lack_their_tasks_keep_their_records() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    sim.add_app(SimApp::new(
        "/api",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/api", "10.0.1.1", &[]).expect("task");
    let running = start_against(&sim, |s| {
        s.resync_interval = Duration::from_millis(200);
    })
    .await;
    // /web without its tasks, /api unparseable: both keep what was published; /new is read.
    sim.apps_body(Some(
        r#"{"apps": [{"id": "/web", "instances": 1},
                     {"id": "/api", "tasks": "oops"},
                     {"id": "/new", "portDefinitions": [{"port": 0, "protocol": "tcp"}],
                      "tasks": [{"id": "new.7c1e0a0e-0000-11e6-8000-000000000001", "appId": "/new",
                                 "host": "10.0.2.1", "ports": [31000], "state": "TASK_RUNNING",
                                 "ipAddresses": [{"ipAddress": "10.0.2.1", "protocol": "IPv4"}]}]}]}"#
            .to_string(),
    ));
    eventually("the new app is read", || async {
        !rdata(
            &q(running.udp[0], "new.marathon.local", RecordType::A).await,
            RecordType::A,
        )
        .is_empty()
    })
    .await;
    resyncs_ok(&running, 2).await;
    assert_eq!(
        web_a(&running).await,
        ["10.0.0.1"],
        "no tasks field ≠ no tasks"
    );
    assert_eq!(
        rdata(
            &q(running.udp[0], "api.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["10.0.1.1"],
        "a bad app keeps its last good version"
    );
    running.shutdown().await;
}

async fn resyncs_ok(running: &server::Running, n: u64) {
    let before = running.status.resyncs();
    eventually("resyncs run", || async {
        running.status.resyncs() >= before + n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_snapshot_is_refused_and_the_zone_kept() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let running = start_against(&sim, |s| {
        s.resync_interval = Duration::from_millis(200);
        s.marathon_max_body = 16 << 10;
    })
    .await;
    // 200 tasks that only a (too big) snapshot would show.
    sim.suppress_events(true);
    for i in 0..200 {
        sim.start_task("/web", &format!("10.0.3.{}", i + 1), &[])
            .expect("task");
    }
    resyncs_fail(&running, 2).await;
    assert_eq!(web_a(&running).await, ["10.0.0.1"]);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_stream_does_not_pull_a_snapshot_per_reconnect() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let running = start_against(&sim, |s| {
        s.resync_interval = Duration::from_secs(3600);
    })
    .await;
    let before = sim.requests("/v2/apps");
    for _ in 0..8 {
        sim.drop_streams();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snapshots = sim.requests("/v2/apps") - before;
    println!("8 stream drops in 1.2 s → {snapshots} full snapshots");
    assert!(snapshots <= 2, "{snapshots} snapshots for 8 reconnects");
    // Events still flow, and the zone follows.
    sim.start_task("/web", "10.0.0.2", &[]).expect("task");
    eventually("events after the flapping", || async {
        web_a(&running).await.len() == 2
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_a_redirect_off_the_configured_hosts() {
    for allow in [false, true] {
        let leader = Simulator::start().await.expect("sim");
        web(&leader);
        let standby = leader.standby().await.expect("standby");
        // The standby is configured as "localhost"; it redirects the stream to 127.0.0.1, a
        // host the operator did not list.
        let configured = standby.url().replace("127.0.0.1", "localhost");
        let mut s = settings(vec![configured]);
        s.leader_lookup = false;
        s.auth = marathon_dns::marathon::client::Auth::basic("alice:s3cret");
        s.marathon_redirect_credentials = allow;
        let running = server::start(s).await.expect("starts");
        tokio::time::timeout(TIMEOUT, running.wait_live())
            .await
            .expect("live");
        assert_eq!(web_a(&running).await, ["10.0.0.1"]);
        assert!(
            standby.last_authorization().is_some(),
            "the configured host gets the credentials"
        );
        let at_leader = leader.last_authorization();
        if allow {
            assert!(
                at_leader.is_some(),
                "allowed by --marathon-redirect-credentials"
            );
        } else {
            assert_eq!(at_leader, None, "the redirect target got the credentials");
        }
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_takes_long_to_render_still_syncs() {
    // Marathon renders /v2/apps whole before sending a byte: on a big cluster that is seconds
    // of silence. A read timeout (30 s) allows it; a total request timeout would never sync.
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    sim.delay_rest(Some(Duration::from_secs(11)));
    let mut s = settings(vec![sim.url()]);
    s.leader_lookup = false;
    let running = server::start(s).await.expect("starts");
    tokio::time::timeout(Duration::from_secs(40), running.wait_synced())
        .await
        .expect("synced despite 11 s of silence");
    assert_eq!(web_a(&running).await, ["10.0.0.1"]);
    running.shutdown().await;
}
