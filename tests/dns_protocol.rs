//! Wire-level behaviour of the authoritative server over real sockets: rcodes, flags,
//! negative answers, EDNS, truncation, TCP, malformed input.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cluster with a small app, a big one (120 tasks) and a dual-stack container app.
async fn cluster() -> (Simulator, marathon_dns::server::Running) {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    sim.add_app(SimApp::new(
        "/big",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.add_app(SimApp::new(
        "/idle",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    for i in 0..3u8 {
        sim.start_task("/prod/web", &format!("127.0.1.{}", i + 1), &[])
            .expect("task");
    }
    for i in 0..120u8 {
        sim.start_task("/big", &format!("127.0.2.{}", i + 1), &[])
            .expect("task");
    }
    let running = start_against(&sim, |_| {}).await;
    (sim, running)
}

fn soa_ttl_in_authority(m: &Message) -> Option<u32> {
    match m.authorities.as_slice() {
        [r] if r.record_type() == RecordType::SOA => Some(r.ttl),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcodes_flags_and_negative_answers() {
    let (_sim, running) = cluster().await;
    let dns = running.udp[0];

    let pos = q(dns, "web.prod.marathon.local", RecordType::A).await;
    assert_eq!(pos.metadata.response_code, ResponseCode::NoError);
    assert!(pos.metadata.authoritative && !pos.metadata.recursion_available);
    assert!(
        pos.authorities.is_empty(),
        "no authority records in positive answers"
    );

    // NXDOMAIN and NODATA (RFC 2308), both with the SOA, TTL = min(SOA TTL 60, minimum 5).
    for (name, rtype, rcode) in [
        ("nope.marathon.local", RecordType::A, ResponseCode::NXDomain),
        (
            "deeper.nope.marathon.local",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("prod.marathon.local", RecordType::A, ResponseCode::NoError), // empty non-terminal
        (
            "_tcp.prod.marathon.local",
            RecordType::SRV,
            ResponseCode::NoError,
        ),
        (
            "web.prod.marathon.local",
            RecordType::AAAA,
            ResponseCode::NoError,
        ),
        (
            "web.prod.marathon.local",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        ("idle.marathon.local", RecordType::A, ResponseCode::NoError), // app without tasks
        (
            "_idle._tcp.marathon.local",
            RecordType::SRV,
            ResponseCode::NoError,
        ),
    ] {
        let m = q(dns, name, rtype).await;
        assert_eq!(m.metadata.response_code, rcode, "{name} {rtype}");
        assert!(m.answers.is_empty(), "{name}");
        assert!(m.metadata.authoritative, "{name}");
        assert_eq!(
            soa_ttl_in_authority(&m),
            Some(5),
            "{name}: SOA in authority"
        );
    }

    // Outside every served zone: REFUSED, no recursion.
    let m = q(dns, "example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative && !m.metadata.recursion_available);

    // Apex: SOA and NS, and the name server's address from zones/.
    let soa = q(dns, "marathon.local", RecordType::SOA).await;
    assert_eq!(soa.answers.len(), 1);
    assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
    let RData::SOA(s) = &soa.answers[0].data else {
        panic!("SOA")
    };
    assert_eq!(s.minimum, 5);
    assert_eq!(s.serial, running.status.serial());
    let ns = q(dns, "marathon.local", RecordType::NS).await;
    assert_eq!(rdata(&ns, RecordType::NS), ["ns1.marathon.local."]);
    assert!(
        ns.additionals
            .iter()
            .any(|r| r.name.to_ascii() == "ns1.marathon.local."),
        "NS glue"
    );
    assert_eq!(
        rdata(
            &q(dns, "ns1.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["127.0.0.1"]
    );

    // ANY: minimal (RFC 8482), one RRset.
    let any = q(dns, "web.prod.marathon.local", RecordType::ANY).await;
    assert_eq!(any.metadata.response_code, ResponseCode::NoError);
    assert!(
        any.answers
            .iter()
            .all(|r| r.record_type() == any.answers[0].record_type())
    );

    // Zone transfers are not offered.
    let axfr = tcp(
        running.tcp[0],
        &query_message("marathon.local", RecordType::AXFR, None),
    )
    .await;
    assert_eq!(axfr.metadata.response_code, ResponseCode::Refused);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_echoed_byte_for_byte_and_names_match_any_case() {
    let (_sim, running) = cluster().await;
    let dns = running.udp[0];
    let msg = query_message("_WeB._TcP.pRoD.MaRaThOn.LoCaL", RecordType::SRV, Some(4096));
    let sent = msg.to_vec().expect("encode");
    let raw = udp_raw(dns, &sent).await.expect("reply");
    // Header (12) + the question, identical.
    let qlen = sent.len() - 12 - 11; // minus the OPT record (11 bytes)
    assert_eq!(&raw[12..12 + qlen], &sent[12..12 + qlen]);
    let m = Message::from_vec(&raw).expect("decode");
    assert_eq!(srv(&m).len(), 3);
    assert_full_glue(&m);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_opt_last_badvers_and_sizes() {
    let (_sim, running) = cluster().await;
    let dns = running.udp[0];

    // OPT echoed, and last in ADDITIONAL, after every glue record (HAProxy stops at OPT).
    let msg = query_message("_web._tcp.prod.marathon.local", RecordType::SRV, Some(8192));
    let raw = udp_raw(dns, &msg.to_vec().expect("encode"))
        .await
        .expect("reply");
    let [answers, authority, additional] = rr_types_in_order(&raw);
    assert_eq!(answers, [33, 33, 33]);
    assert!(
        authority.is_empty(),
        "nothing may end a positive SRV answer in AUTHORITY"
    );
    assert_eq!(additional, [1, 1, 1, 41]);
    let m = Message::from_vec(&raw).expect("decode");
    assert_eq!(m.edns.as_ref().map(Edns::version), Some(0));

    // EDNS version 1: BADVERS, with an OPT of version 0.
    let mut bad = query_message("web.prod.marathon.local", RecordType::A, Some(4096));
    if let Some(e) = bad.edns.as_mut() {
        e.set_version(1);
    }
    let m = udp(dns, &bad).await;
    assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS");
    assert_eq!(m.edns.as_ref().map(Edns::version), Some(0));

    // The client's advertised size is honoured in full: 120 tasks (~8 KB) in one datagram.
    let big = udp(
        dns,
        &query_message("_big._tcp.marathon.local", RecordType::SRV, Some(16_384)),
    )
    .await;
    assert!(!big.metadata.truncation);
    assert_eq!(srv(&big).len(), 120);
    assert_full_glue(&big);
    running.shutdown().await;
}

/// Truncated answers keep whole SRV+glue pairs, set TC, never drop to zero answers, and TCP
/// returns everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_keeps_whole_pairs() {
    let (_sim, running) = cluster().await;
    let dns = running.udp[0];
    for edns in [None, Some(512), Some(1232), Some(4096)] {
        let msg = query_message("_big._tcp.marathon.local", RecordType::SRV, edns);
        let raw = udp_raw(dns, &msg.to_vec().expect("encode"))
            .await
            .expect("reply");
        let limit = usize::from(edns.unwrap_or(512));
        assert!(raw.len() <= limit, "{edns:?}: {} > {limit}", raw.len());
        let m = Message::from_vec(&raw).expect("decode");
        assert!(m.metadata.truncation, "{edns:?}: TC");
        assert!(!m.answers.is_empty(), "{edns:?}: TC with zero answers");
        let glue = m
            .additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count();
        assert_eq!(glue, m.answers.len(), "{edns:?}: one glue record per SRV");
        assert_full_glue(&m);
        // Nearly full: another pair (~60 bytes, plus the encoder's headroom for one name)
        // would not have fitted.
        assert!(
            raw.len() + 128 > limit,
            "{edns:?}: {} bytes used of {limit}",
            raw.len()
        );
    }
    let all = tcp(
        running.tcp[0],
        &query_message("_big._tcp.marathon.local", RecordType::SRV, None),
    )
    .await;
    assert!(!all.metadata.truncation);
    assert_eq!(srv(&all).len(), 120);
    assert_full_glue(&all);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_udp_cap() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/big",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    for i in 0..60u8 {
        sim.start_task("/big", &format!("127.0.2.{}", i + 1), &[])
            .expect("task");
    }
    let running = start_against(&sim, |s| s.max_udp_payload = Some(1232)).await;
    let msg = query_message("_big._tcp.marathon.local", RecordType::SRV, Some(8192));
    let raw = udp_raw(running.udp[0], &msg.to_vec().expect("encode"))
        .await
        .expect("reply");
    assert!(raw.len() <= 1232);
    assert!(Message::from_vec(&raw).expect("decode").metadata.truncation);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_rotate_between_responses() {
    let (_sim, running) = cluster().await;
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let m = q(
            running.udp[0],
            "_web._tcp.prod.marathon.local",
            RecordType::SRV,
        )
        .await;
        firsts.insert(m.answers[0].data.to_string());
        assert_eq!(m.answers.len(), 3, "always the complete set");
    }
    assert!(firsts.len() > 1, "order never changed");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelining_answers_matched_by_id() {
    let (_sim, running) = cluster().await;
    let mut stream = tokio::net::TcpStream::connect(running.tcp[0])
        .await
        .expect("connect");
    let names = [
        "web.prod.marathon.local",
        "nope.marathon.local",
        "marathon.local",
        "big.marathon.local",
    ];
    let mut ids = Vec::new();
    let mut batch = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut m = query_message(name, RecordType::A, None);
        m.metadata.id = 1000 + i as u16;
        ids.push(m.metadata.id);
        let bytes = m.to_vec().expect("encode");
        batch.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        batch.extend_from_slice(&bytes);
    }
    stream
        .write_all(&batch)
        .await
        .expect("write all four at once");
    let mut seen = Vec::new();
    for _ in 0..names.len() {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.expect("len");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.expect("body");
        let m = Message::from_vec(&buf).expect("decode");
        let i = ids
            .iter()
            .position(|id| *id == m.metadata.id)
            .expect("known id");
        assert_eq!(m.queries[0].name().to_ascii(), format!("{}.", names[i]));
        seen.push(m.metadata.id);
    }
    seen.sort();
    assert_eq!(seen, ids);
    running.shutdown().await;
}

async fn raw_query(dns: SocketAddr, bytes: &[u8]) -> Option<Message> {
    udp_raw(dns, bytes)
        .await
        .map(|raw| Message::from_vec(&raw).expect("decodable reply"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_requests() {
    let (_sim, running) = cluster().await;
    let dns = running.udp[0];
    let good = query_message("web.prod.marathon.local", RecordType::A, None);
    let good_bytes = good.to_vec().expect("encode");

    // QDCOUNT 0 and 2: FORMERR.
    let mut none = good_bytes[..12].to_vec();
    none[5] = 0;
    let m = raw_query(dns, &none).await.expect("reply to QDCOUNT=0");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let mut two = good.clone();
    two.add_query(good.queries[0].clone());
    assert_eq!(
        udp(dns, &two).await.metadata.response_code,
        ResponseCode::FormErr
    );

    // Truncated question, random garbage, a lone header byte: no crash (FORMERR or silence).
    let cut = &good_bytes[..good_bytes.len() - 3];
    if let Some(m) = raw_query(dns, cut).await {
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }
    let _ = udp_raw(dns, &[0xde, 0xad]).await;
    let _ = udp_raw(dns, &[0xff; 300]).await;

    // Opcodes other than QUERY: NOTIMP.
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut m = good.clone();
        m.metadata.op_code = op;
        assert_eq!(
            udp(dns, &m).await.metadata.response_code,
            ResponseCode::NotImp,
            "{op:?}"
        );
    }

    // Still serving.
    assert_eq!(udp(dns, &good).await.answers.len(), 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_zones_are_served_and_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("marathon.local.zone"),
        "$ORIGIN marathon.local.\n$TTL 30\n@ IN SOA ns1 hostmaster ( 1 60 30 3600 5 )\n@ IN NS ns1\nns1 IN A 127.0.0.1\nlegacy IN A 10.9.9.9\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$ORIGIN example.test.\n$TTL 30\n@ IN SOA ns1 hostmaster ( 7 60 30 3600 30 )\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN TXT \"hello\"\n",
    )
    .expect("write");
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/web", "127.0.0.5", &[]).expect("task");
    let path = dir.path().to_path_buf();
    let running = start_against(&sim, |s| s.zones_dir = path).await;
    let dns = running.udp[0];
    assert_eq!(
        rdata(
            &q(dns, "legacy.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["10.9.9.9"]
    );
    assert_eq!(
        rdata(
            &q(dns, "web.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["127.0.0.5"]
    );
    let txt = q(dns, "www.example.test", RecordType::TXT).await;
    assert!(txt.metadata.authoritative);
    assert_eq!(rdata(&txt, RecordType::TXT), ["hello"]);
    let nx = q(dns, "nope.example.test", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_ttl_in_authority(&nx), Some(30));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed() {
    let sim = Simulator::start().await.expect("sim");
    let running = start_against(&sim, |s| {
        s.tcp.idle_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(running.tcp[0])
        .await
        .expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection still open: {read:?}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_zone_file_the_zone_still_has_soa_and_ns() {
    let empty = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::start().await.expect("sim");
    let path = empty.path().to_path_buf();
    let running = start_against(&sim, |s| s.zones_dir = path).await;
    let dns = running.udp[0];
    assert_eq!(
        q(dns, "marathon.local", RecordType::SOA)
            .await
            .answers
            .len(),
        1
    );
    assert_eq!(
        rdata(
            &q(dns, "marathon.local", RecordType::NS).await,
            RecordType::NS
        ),
        ["ns1.marathon.local."]
    );
    running.shutdown().await;
}

/// Thousands of random and mutated packets: every reply decodes, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_random_and_mutated_packets() {
    let (_sim, running) = cluster().await;
    let dns = running.udp[0];
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    sock.connect(dns).await.expect("connect");
    let valid = query_message("_web._tcp.prod.marathon.local", RecordType::SRV, Some(4096))
        .to_vec()
        .expect("encode");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut replies = 0;
    let mut buf = vec![0u8; 65_535];
    for i in 0..3000 {
        let packet: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut p = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p.truncate(p.len() - (next() % 4) as usize);
            p
        };
        sock.send(&packet).await.expect("send");
        // Drain whatever came back so far; every reply must be a well-formed DNS message.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(0), sock.recv(&mut buf)).await
        {
            assert!(
                Message::from_vec(&buf[..n]).is_ok(),
                "undecodable reply to packet {i}"
            );
            replies += 1;
        }
    }
    assert!(replies > 100, "only {replies} replies");
    // Still serving, over UDP and TCP.
    let m = udp(
        dns,
        &query_message("_web._tcp.prod.marathon.local", RecordType::SRV, Some(4096)),
    )
    .await;
    assert_eq!(srv(&m).len(), 3);
    let t = tcp(
        running.tcp[0],
        &query_message("web.prod.marathon.local", RecordType::A, None),
    )
    .await;
    assert_eq!(t.answers.len(), 3);
    running.shutdown().await;
}
