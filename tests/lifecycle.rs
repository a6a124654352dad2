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

/// `marathon-dns healthcheck`, as the Docker image's HEALTHCHECK runs it.
fn healthcheck(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .arg("healthcheck")
        .args(args)
        .output()
        .expect("binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_follows_the_server() {
    let sim = Simulator::start().await.expect("sim");
    sim_app(&sim);
    let mut server = start(&sim, "60s");
    eventually("ready", || async { ready(server.admin).await == Some(200) }).await;
    // The image sets the listener as 0.0.0.0:PORT: the check asks loopback.
    let wildcard = format!("0.0.0.0:{}", server.admin.port());
    let ok = healthcheck(&["--admin-listen", &wildcard]);
    assert!(ok.status.success(), "{ok:?}");
    server.signal(libc::SIGTERM);
    eventually("draining", || async {
        ready(server.admin).await == Some(503)
    })
    .await;
    let admin = server.admin.to_string();
    assert!(
        healthcheck(&["--admin-listen", &admin]).status.success(),
        "alive while draining"
    );
    let not_ready = healthcheck(&["--admin-listen", &admin, "--path", "/ready"]);
    assert!(!not_ready.status.success());
    assert!(
        String::from_utf8_lossy(&not_ready.stderr).contains("/ready answered 503"),
        "{not_ready:?}"
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
    let gone = healthcheck(&["--admin-listen", &admin, "--timeout", "1s"]);
    assert!(!gone.status.success(), "a dead server fails the check");
}
