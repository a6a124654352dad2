//! `marathon-dns export` as a library call: one REST sync, then the zone as text; no DNS
//! listener and no event stream.

mod common;

use std::time::Duration;

use common::*;
use marathon_dns::server::{StartError, export_once};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_syncs_once_and_binds_nothing() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    // An agent known by name, not address: resolved as the server resolves it.
    sim.add_app(SimApp::new(
        "/named",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/named", "localhost", &[]).expect("task");

    // The listen address is taken: a server could not start, the export does not care.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut s = settings(vec![sim.url()]);
    s.listen = vec![taken.local_addr().expect("addr")];

    let zone = tokio::time::timeout(TIMEOUT, export_once(&s))
        .await
        .expect("in time")
        .expect("exported");
    let line = |owner: &str, rtype: &str| {
        zone.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&owner) && f.contains(&rtype)
        })
    };
    assert!(line("marathon.local.", "SOA"), "{zone}");
    assert!(
        line("ns1.marathon.local.", "A"),
        "static records too:\n{zone}"
    );
    assert!(line("_web._tcp.prod.marathon.local.", "SRV"), "{zone}");
    assert!(line("web.prod.marathon.local.", "A"), "{zone}");
    assert!(zone.contains("127.0.0.11"), "{zone}");
    assert!(
        line("named.marathon.local.", "A") || line("named.marathon.local.", "AAAA"),
        "agent name resolved:\n{zone}"
    );

    assert!(sim.requests("/v2/apps") >= 1, "one REST sync");
    assert_eq!(sim.requests("/v2/events"), 0, "no event stream");
}

#[tokio::test]
async fn export_fails_at_once_without_marathon() {
    // A port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let s = settings(vec![format!("http://{addr}")]);
    let got = tokio::time::timeout(Duration::from_secs(30), export_once(&s))
        .await
        .expect("fails in time, no retrying forever");
    assert!(matches!(got, Err(StartError::Client(_))), "{got:?}");
}
