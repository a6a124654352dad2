//! Generator-based fuzzing on stable Rust (coverage-guided fuzzing needs a nightly toolchain,
//! which this project does not require): random and mutated DNS messages over real UDP and TCP
//! sockets to the real binary (split, concatenated and lying TCP frames), and arbitrary bytes
//! into every Marathon decoder. Bounded in time here; `bench/fuzz.sh` runs the same for longer
//! (`MARATHON_DNS_FUZZ_ITERATIONS`, `MARATHON_DNS_FUZZ_SEED`). A failure prints its seed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::RecordType;
use marathon_dns::marathon::{convert, pods, stream::SseBounds};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// xorshift64*: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("MARATHON_DNS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    let seed = std::env::var("MARATHON_DNS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("fuzz seed {seed} (MARATHON_DNS_FUZZ_SEED={seed} repeats it)");
    seed
}

/// Valid queries to start mutations from: every type the server knows, with and without EDNS
/// and options, for names in and out of the zone.
fn seeds() -> Vec<Vec<u8>> {
    let names = [
        "web.marathon.local",
        "_web._tcp.marathon.local",
        "_http._tcp.web.marathon.local",
        "nope.marathon.local",
        "marathon.local",
        "example.org",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::SOA,
        RecordType::NS,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::AXFR,
        RecordType::IXFR,
        RecordType::Unknown(999),
    ];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let edns = match (i + j) % 3 {
                0 => None,
                1 => Some(1232),
                _ => Some(65535),
            };
            let mut m = query_message(name, *t, edns);
            if (i + j) % 4 == 0 {
                let mut e = Edns::new();
                e.set_max_payload(4096);
                e.set_dnssec_ok(true);
                m.set_edns(e);
            }
            out.push(m.to_vec().expect("encode"));
        }
    }
    out
}

/// One fuzzed message: random bytes, or a seed with a few mutations.
fn mutant(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(10) == 0 {
        let n = rng.below(600);
        return rng.bytes(n);
    }
    let mut m = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 => m.truncate(rng.below(m.len() + 1)),
            3 => {
                let n = rng.below(64);
                let extra = rng.bytes(n);
                m.extend(extra);
            }
            // Lying section counts.
            4 if m.len() >= 12 => {
                let i = 4 + 2 * rng.below(4);
                m[i] = rng.next() as u8;
                m[i + 1] = rng.next() as u8;
            }
            // A compression pointer somewhere in the question (loops, forward jumps).
            5 if m.len() > 14 => {
                let i = 12 + rng.below(m.len() - 13);
                m[i] = 0xC0 | (rng.next() as u8 & 0x3F);
                m[i + 1] = rng.next() as u8;
            }
            // Header flags and opcode.
            6 if m.len() >= 4 => {
                m[2] = rng.next() as u8;
                m[3] = rng.next() as u8;
            }
            7 if !m.is_empty() => {
                let a = rng.below(m.len());
                let b = a + rng.below(m.len() - a);
                let slice = m[a..b].to_vec();
                m.splice(a..a, slice);
            }
            _ => {}
        }
    }
    m
}

fn big_app(sim: &Simulator) {
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    for i in 0..40 {
        sim.start_task("/web", &format!("10.0.0.{}", i + 1), &[])
            .expect("task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_paths_survive_random_and_mutated_messages_over_udp_and_tcp() {
    let sim = Simulator::start().await.expect("sim");
    big_app(&sim);
    let mut server = spawn_daemon(
        &[
            "--marathon",
            &sim.url(),
            "--zones-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/zones"),
        ],
        &[],
    );
    eventually("synced", || async {
        !q(server.dns, "web.marathon.local", RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    let seed = seed();
    let mut rng = Rng(seed);
    let seeds = seeds();
    let n = iterations(3000);

    // UDP: everything that comes back must be a DNS response.
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    sock.connect(server.dns).await.expect("connect");
    let reader = {
        let sock = sock.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            let mut replies = 0usize;
            while let Ok(Ok(len)) =
                tokio::time::timeout(Duration::from_millis(1000), sock.recv(&mut buf)).await
            {
                let reply = Message::from_vec(&buf[..len]);
                assert!(
                    reply.as_ref().is_ok_and(
                        |m| m.metadata.message_type == hickory_proto::op::MessageType::Response
                    ),
                    "a reply that is not a DNS response: {:02x?}",
                    &buf[..len.min(64)]
                );
                replies += 1;
            }
            replies
        })
    };
    for i in 0..n {
        let m = mutant(&mut rng, &seeds);
        let _ = sock.send(&m).await;
        if i % 64 == 63 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let replies = reader.await.expect("no undecodable reply");

    // TCP: frames split at random points, several per write, some with lying lengths.
    let mut tcp_answers = 0usize;
    for _ in 0..(n / 100).max(10) {
        let Ok(mut stream) = TcpStream::connect(server.dns).await else {
            continue;
        };
        let mut wire = Vec::new();
        for _ in 0..=rng.below(6) {
            let m = mutant(&mut rng, &seeds);
            let len = match rng.below(12) {
                0 => rng.below(70_000) as u16,
                _ => u16::try_from(m.len()).unwrap_or(u16::MAX),
            };
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend_from_slice(&m);
        }
        let mut at = 0;
        while at < wire.len() {
            let end = (at + 1 + rng.below(wire.len() - at)).min(wire.len());
            if stream.write_all(&wire[at..end]).await.is_err() {
                break;
            }
            at = end;
            if rng.below(3) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Read what comes back until the server closes or goes quiet.
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(Duration::from_millis(200), stream.read_exact(&mut len))
                .await
            {
                Ok(Ok(_)) => {}
                _ => break,
            }
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut body).await.is_err() {
                break;
            }
            assert!(
                Message::from_vec(&body).is_ok(),
                "an undecodable TCP reply (seed {seed})"
            );
            tcp_answers += 1;
        }
    }
    println!("{n} UDP messages → {replies} replies; TCP: {tcp_answers} replies");
    assert!(replies > n / 4, "the server kept answering UDP ({replies})");

    // Still alive, still right, no panic.
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the server died (seed {seed})"
    );
    assert!(
        !q(server.dns, "web.marathon.local", RecordType::A)
            .await
            .answers
            .is_empty()
    );
    let over_tcp = tcp(
        server.dns,
        &query_message("_web._tcp.marathon.local", RecordType::SRV, None),
    )
    .await;
    assert_eq!(over_tcp.answers.len(), 40);
    server.signal(libc::SIGTERM);
    let mut panicked = None;
    while let Ok(line) = server.log.recv_timeout(Duration::from_secs(10)) {
        if line.contains("panicked") {
            panicked = Some(line);
        }
    }
    assert_eq!(panicked, None, "seed {seed}");
}

/// Every Marathon decoder on arbitrary and mutated bytes: errors, never a panic, and bounded
/// time on huge or deeply nested input.
#[test]
fn marathon_decoders_survive_arbitrary_bytes() {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for sub in ["rest", "marathon-lb", "events", "sse"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                corpus.push(bytes);
            }
        }
    }
    assert!(corpus.len() >= 10, "fixtures found");
    let event_types = [
        "status_update_event",
        "health_status_changed_event",
        "instance_health_changed_event",
        "app_terminated_event",
        "api_post_event",
        "deployment_success",
        "deployment_failed",
        "pod_created_event",
        "pod_updated_event",
        "pod_deleted_event",
        "instance_changed_event",
        "unknown_event",
    ];
    for _ in 0..iterations(3000) {
        let base = &corpus[rng.below(corpus.len())];
        let mut m = base.clone();
        for _ in 0..=rng.below(6) {
            match rng.below(5) {
                0 if !m.is_empty() => {
                    let i = rng.below(m.len());
                    m[i] = rng.next() as u8;
                }
                1 => m.truncate(rng.below(m.len() + 1)),
                2 if !m.is_empty() => {
                    // Structural bytes where they hurt.
                    let i = rng.below(m.len());
                    m[i] = b"{}[]\",:\\0-e"[rng.below(11)];
                }
                3 => {
                    let n = rng.below(32);
                    let extra = rng.bytes(n);
                    let at = rng.below(m.len() + 1);
                    m.splice(at..at, extra);
                }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&m);
        let _ = convert::apps_response(&text);
        let _ = convert::apps_stream(&m[..], &mut convert::CollectApps::default());
        let _ = convert::app_response(&text);
        let _ = convert::service_apps_response(&text);
        let _ = convert::leader_response(&text);
        let _ = pods::pods_status_response(&text);
        let _ = pods::pod_status_response(&text);
        let _ = pods::pod_id_of_uri(&text);
        let _ = convert::decode_event(event_types[rng.below(event_types.len())], &text);
        let mut bounds = SseBounds::default();
        let _ = bounds.feed(&m, 1 << 16);
    }
    // Huge fields and deep nesting: an error or a result, quickly.
    let started = std::time::Instant::now();
    let huge_id = format!(
        r#"{{"apps": [{{"id": "/{}", "tasks": []}}]}}"#,
        "a".repeat(8 << 20)
    );
    let _ = convert::apps_response(&huge_id);
    let deep = format!(r#"{{"apps": [{}"#, "[".repeat(200_000));
    assert!(convert::apps_response(&deep).is_err());
    let deep_event = format!(r#"{{"appId": {}}}"#, "[".repeat(200_000));
    assert!(convert::decode_event("status_update_event", &deep_event).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "huge input took {:?}",
        started.elapsed()
    );
}
