//! The UDP fast path answers byte for byte as hickory's server does (the reference path,
//! which also serves TCP): the Knot-conformance cluster and query set, plus unusual queries,
//! sent over real UDP sockets to both, served from the very same zone snapshot.

mod common;

use std::net::SocketAddr;

use common::*;
use hickory_proto::op::{Edns, Message, OpCode};
use hickory_proto::rr::RecordType;
use marathon_dns::dns::listen::{self, ListenOptions};
use marathon_dns::sim::Simulator;

/// One query as bytes, with a fixed ID so that both paths rotate the same way.
fn packet(name: &str, rtype: RecordType, edns: Option<u16>, id: u16) -> Vec<u8> {
    let mut m = query_message(name, rtype, edns);
    m.metadata.id = id;
    m.to_vec().expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_answers_exactly_as_hickory() {
    let sim = Simulator::start().await.expect("sim");
    populate_conformance(&sim);
    let zones = tempfile::tempdir().expect("tempdir");
    std::fs::write(zones.path().join("marathon.local.zone"), CONFORMANCE_ZONE).expect("zone");
    let zones_dir = zones.path().to_path_buf();
    // The fast path with a server-side cap, so that capped sizes are compared too.
    let running = start_against(&sim, |s| {
        s.zones_dir = zones_dir;
        s.udp_workers = 2;
    })
    .await;
    let fast = running.udp[0];
    // hickory's own UDP server on the same store: the same snapshot answers both.
    let reference = listen::serve(
        &[SocketAddr::from(([127, 0, 0, 1], 0))],
        running.store.clone(),
        &ListenOptions::default(),
        Default::default(),
    )
    .await
    .expect("reference server");
    let slow = reference.udp[0];

    // The Knot-conformance query set (TCP ones asked over UDP with EDNS 4096 here), then the
    // same names with more types and UDP sizes: truncation at every size, AXFR, unknown types.
    let zone = running.store.marathon();
    let ConformanceSet { queries, .. } = conformance_set(&zone, &sim);
    let extra_types = [RecordType::AXFR, RecordType::Unknown(200), RecordType::SRV];
    let sizes = [Some(512), Some(65535), Some(100), None];
    let mut packets = Vec::new();
    for (i, (name, rtype, transport)) in queries.iter().enumerate() {
        let size = match transport {
            Transport::Udp(size) => *size,
            Transport::Tcp => Some(4096),
        };
        let id = (i * 7) as u16;
        packets.push(packet(name, *rtype, size, id));
        if i % 3 == 0 {
            let rtype = extra_types[(i / 3) % extra_types.len()];
            packets.push(packet(
                name,
                rtype,
                sizes[(i / 3) % sizes.len()],
                id ^ 0x5a5a,
            ));
        }
    }
    let owners: Vec<String> = zone.records().iter().map(|r| r.name.to_ascii()).collect();
    // Unusual queries: both paths must still agree (most go to hickory on the fast side too).
    let srv_name = owners
        .iter()
        .find(|n| n.starts_with("_http._tcp."))
        .expect("an SRV name")
        .clone();
    let mut odd: Vec<Vec<u8>> = Vec::new();
    let base = query_message(&srv_name, RecordType::SRV, Some(1232));
    let mut m = base.clone();
    m.metadata.checking_disabled = true;
    m.metadata.recursion_desired = false;
    odd.push(m.to_vec().expect("encode"));
    let mut m = base.clone();
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(true);
    m.set_edns(e);
    odd.push(m.to_vec().expect("encode"));
    let mut m = base.clone();
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    odd.push(m.to_vec().expect("encode"));
    let mut m = base.clone();
    m.metadata.op_code = OpCode::Notify;
    odd.push(m.to_vec().expect("encode"));
    let mut m = base.clone();
    m.add_query(hickory_proto::op::Query::query(
        "two.marathon.local.".parse().expect("name"),
        RecordType::A,
    ));
    odd.push(m.to_vec().expect("encode"));
    // A cookie option (dig sends one by default) and a class other than IN.
    let mut cookie = packet(&srv_name, RecordType::SRV, Some(4096), 4242);
    let rdlen_at = cookie.len() - 2;
    cookie[rdlen_at..].copy_from_slice(&12u16.to_be_bytes());
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    odd.push(cookie);
    let mut chaos = packet("marathon.local.", RecordType::SOA, None, 77);
    let n = chaos.len();
    chaos[n - 2..].copy_from_slice(&3u16.to_be_bytes());
    odd.push(chaos);
    // Truncated and garbage packets.
    odd.push(packet("marathon.local.", RecordType::SOA, None, 78)[..20].to_vec());
    odd.push(vec![0xab; 40]);
    packets.extend(odd);

    let mut compared = 0;
    for p in &packets {
        let a = udp_raw(fast, p).await;
        let b = udp_raw(slow, p).await;
        assert_eq!(
            a.as_deref().map(hex),
            b.as_deref().map(hex),
            "fast path and hickory differ for query {}",
            describe(p)
        );
        compared += usize::from(a.is_some());
    }
    assert!(
        compared > 1500,
        "only {compared} of {} queries answered",
        packets.len()
    );
    println!(
        "{compared} answers byte-identical on both paths ({} queries)",
        packets.len()
    );
    reference.shutdown().await;
    running.shutdown().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn describe(p: &[u8]) -> String {
    match Message::from_vec(p) {
        Ok(m) => format!("{:?} {:?}", m.queries, m.edns.map(|e| e.max_payload())),
        Err(_) => format!("{} raw bytes", p.len()),
    }
}
