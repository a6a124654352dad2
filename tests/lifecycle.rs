//! Stopping like a production daemon: SIGTERM turns `/ready` to 503 while DNS keeps
//! answering for the lame-duck period, then the process exits 0; a second signal stops it at
//! once.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

struct Server {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary against `sim`; its DNS and admin addresses from its log.
fn start(sim: &Simulator, lame_duck: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["serve", "--marathon", &sim.url(), "--lame-duck", lame_duck])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--zones-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/zones")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr_after = |line: &str, marker: &str| -> Option<SocketAddr> {
        let rest = line.split(marker).nth(1)?;
        rest.split([' ', '/']).find_map(|w| w.parse().ok())
    };
    let (mut dns, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (dns.is_none() || admin.is_none()) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            dns = dns.or_else(|| addr_after(&line, "marathon.local on "));
            admin = admin.or_else(|| addr_after(&line, "admin HTTP on http://"));
        }
    }
    Server {
        child,
        dns: dns.expect("DNS address logged"),
        admin: admin.expect("admin address logged"),
    }
}

async fn ready(admin: SocketAddr) -> Option<u16> {
    http_get(&format!("http://{admin}/ready"))
        .await
        .map(|(status, _)| status)
}

fn signal(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending SIGTERM to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
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

    signal(&server.child);
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
    signal(&server.child);
    eventually("draining", || async {
        ready(server.admin).await == Some(503)
    })
    .await;
    let t0 = Instant::now();
    signal(&server.child);
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
