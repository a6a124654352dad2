//! Stopping like a production daemon: SIGTERM turns `/ready` to 503 while DNS keeps
//! answering for the lame-duck period, then the process exits 0; a second signal stops it at
//! once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

/// Start the binary against `sim`.
fn start(sim: &Simulator, lame_duck: &str) -> Daemon {
    spawn_daemon(
        &[
            "--marathon",
            &sim.url(),
            "--lame-duck",
            lame_duck,
            "--zones-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/zones"),
        ],
        &[],
    )
}

async fn ready(admin: SocketAddr) -> Option<u16> {
    http_get(&format!("http://{admin}/ready"))
        .await
        .map(|(status, _)| status)
}

fn sim_app(sim: &Simulator) {
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/web", "10.0.0.1", &[]).expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    let sim = Simulator::start().await.expect("sim");
    sim_app(&sim);
    let mut server = start(&sim, "1500ms");
    eventually("ready", || async { ready(server.admin).await == Some(200) }).await;

    server.signal(libc::SIGTERM);
    let t0 = Instant::now();
    eventually("not ready after SIGTERM", || async {
        ready(server.admin).await == Some(503)
    })
    .await;
    // Still answering DNS in the lame-duck period.
    let m = q(server.dns, "web.marathon.local", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["10.0.0.1"]);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "checked inside the lame duck"
    );

    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "still running {:?} after SIGTERM (lame duck 1.5 s)",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    println!(
        "SIGTERM → exit 0 after {:?} (lame duck 1.5 s)",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let sim = Simulator::start().await.expect("sim");
    sim_app(&sim);
    let mut server = start(&sim, "60s");
    eventually("ready", || async { ready(server.admin).await == Some(200) }).await;
    server.signal(libc::SIGTERM);
    eventually("draining", || async {
        ready(server.admin).await == Some(503)
    })
    .await;
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the second signal was ignored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}
