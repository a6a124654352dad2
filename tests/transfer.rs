//! Zone transfers to the secondaries people run: Knot (`knotd`, Debian package `knot`) and NSD
//! (`nsd`, package `nsd`) take the zone from marathon-dns over AXFR, follow task changes by
//! NOTIFY + IXFR, recover after marathon-dns restarts, and are refused without the TSIG key.
//! The secondaries' configurations are the ones docs/scale-out.md shows. Plus a 100,000-task
//! AXFR (size and duration printed) and the refusals a client sees.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use marathon_dns::server::{self, Running, Settings};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

const ZONE: &str = "marathon.local";
/// A test key (RFC 8945 HMAC-SHA256), base64 of 32 bytes.
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";
const KEY: &str = "transfer.key.";

/// `--allow-transfer 127.0.0.0/8`.
fn loopback() -> marathon_dns::dns::policy::NetList {
    marathon_dns::dns::policy::NetList(vec!["127.0.0.0/8".parse().expect("net")])
}

fn web_app(id: &str) -> SimApp {
    SimApp::new(id, SimNetwork::Host, vec![SimPort::tcp(Some("http"), 0)])
}

/// A small cluster: three apps, a few tasks each.
fn populate(sim: &Simulator) {
    for (app, hosts) in [
        ("/prod/web", &["127.0.0.11", "127.0.0.12"][..]),
        ("/prod/api", &["127.0.0.13"][..]),
        ("/dev/db", &["127.0.0.14", "127.0.0.15", "127.0.0.16"][..]),
    ] {
        sim.add_app(web_app(app));
        for h in hosts {
            sim.start_task(app, h, &[]).expect("task");
        }
    }
}

/// marathon-dns settings for a primary: transfers allowed from loopback, NOTIFY to `notify`.
fn primary_settings(sim: &Simulator, dir: &Path, notify: SocketAddr, tsig: bool) -> Settings {
    let mut s = settings(vec![sim.url()]);
    s.transfer.allow = loopback();
    s.transfer.history = 1000;
    s.transfer.notify = vec![notify];
    if tsig {
        s.transfer.keys = vec![
            marathon_dns::transfer::tsig::Key::parse(&format!("{KEY}:hmac-sha256:{SECRET}"))
                .expect("key"),
        ];
    }
    s.serial_file = Some(dir.join("serial"));
    // Publish bursts promptly: the test measures NOTIFY → IXFR, not coalescing.
    s.coalesce = Duration::from_millis(50);
    s
}

async fn start(s: Settings) -> Running {
    let running = server::start(s).await.expect("server starts");
    tokio::time::timeout(TIMEOUT, running.wait_live())
        .await
        .expect("live in time");
    running
}

/// A secondary server process, killed when dropped; its log kept for the checks.
struct Secondary {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secondary {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Knot as a secondary of `primary` (the configuration docs/scale-out.md shows).
fn knot(knotd: &Path, primary: SocketAddr, port: u16, tsig: bool) -> Secondary {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path().display().to_string();
    for sub in ["zones", "db", "run"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    let key = if tsig {
        format!("key:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {SECRET}\n")
    } else {
        String::new()
    };
    let use_key = if tsig {
        format!("\n    key: {KEY}")
    } else {
        String::new()
    };
    let conf = format!(
        "server:\n  rundir: \"{r}/run\"\n  listen: 127.0.0.1@{port}\n\
         control:\n  listen: \"{r}/run/knot.sock\"\n\
         database:\n  storage: \"{r}/db\"\n\
         log:\n  - target: stderr\n    any: info\n\
         {key}\
         remote:\n  - id: marathon-dns\n    address: {primary_ip}@{primary_port}{use_key}\n\
         acl:\n  - id: notify-from-marathon-dns\n    address: {primary_ip}\n    action: notify{use_key}\n\
         template:\n  - id: default\n    storage: \"{r}/zones\"\n    zonefile-sync: -1\n    zonefile-load: none\n    journal-content: changes\n\
         zone:\n  - domain: {ZONE}\n    master: marathon-dns\n    acl: notify-from-marathon-dns\n",
        primary_ip = primary.ip(),
        primary_port = primary.port(),
    );
    let conf_path = dir.path().join("knot.conf");
    std::fs::write(&conf_path, conf).expect("conf");
    let log = dir.path().join("knot.log");
    let child = Command::new(knotd)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("knotd starts");
    Secondary {
        name: "knot",
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
        _dir: dir,
    }
}

/// NSD as a secondary of `primary` (the configuration docs/scale-out.md shows).
fn nsd(nsd: &Path, primary: SocketAddr, port: u16, tsig: bool) -> Secondary {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path().display().to_string();
    let (key, key_name) = if tsig {
        (
            format!("key:\n  name: \"{KEY}\"\n  algorithm: hmac-sha256\n  secret: \"{SECRET}\"\n"),
            KEY.to_string(),
        )
    } else {
        (String::new(), "NOKEY".to_string())
    };
    let log = dir.path().join("nsd.log");
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{r}\"\n  database: \"\"\n  zonelistfile: \"{r}/zone.list\"\n  xfrdfile: \"{r}/xfrd.state\"\n  xfrdir: \"{r}\"\n  pidfile: \"{r}/nsd.pid\"\n  logfile: \"{log}\"\n  verbosity: 2\n  server-count: 1\n  xfrd-reload-timeout: 0\n\
         remote-control:\n  control-enable: no\n\
         {key}\
         zone:\n  name: \"{ZONE}\"\n  zonefile: \"{ZONE}.zone\"\n  request-xfr: {pip}@{pport} {key_name}\n  allow-notify: {pip} {key_name}\n",
        log = log.display(),
        pip = primary.ip(),
        pport = primary.port(),
    );
    let conf_path = dir.path().join("nsd.conf");
    std::fs::write(&conf_path, conf).expect("conf");
    let child = Command::new(nsd)
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("nsd.stderr")).expect("stderr"))
        .spawn()
        .expect("nsd starts");
    Secondary {
        name: "nsd",
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
        _dir: dir,
    }
}

/// The SOA serial `server` answers for the zone, if any.
async fn serial_at(server: SocketAddr) -> Option<u32> {
    let raw = udp_raw(
        server,
        &query_message(ZONE, RecordType::SOA, None)
            .to_vec()
            .expect("encode"),
    )
    .await?;
    let m = Message::from_vec(&raw).ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// Wait until `secondary` serves `serial`; how long it took.
async fn until_serial(secondary: &Secondary, serial: u32, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if serial_at(secondary.addr).await == Some(serial) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "{} did not reach serial {serial} within {within:?} (has {:?}); its log:\n{}",
        secondary.name,
        serial_at(secondary.addr).await,
        secondary.log_text()
    );
}

/// Every (name, type) of the zone with records, and the answer's RDATA as text.
async fn answers(
    server: SocketAddr,
    keys: &BTreeSet<(String, RecordType)>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (name, rtype) in keys {
        let m = tcp(server, &query_message(name, *rtype, Some(4096))).await;
        let mut data: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == *rtype)
            .map(|r| format!("{} {}", r.ttl, r.data))
            .collect();
        data.sort();
        out.insert(format!("{name} {rtype} {}", m.metadata.response_code), data);
    }
    out
}

fn record_keys(running: &Running) -> BTreeSet<(String, RecordType)> {
    running
        .store
        .marathon()
        .records()
        .iter()
        .map(|r| (r.name.to_ascii(), r.record_type()))
        .collect()
}

/// The secondary answers every record exactly as marathon-dns does.
async fn assert_same_answers(running: &Running, secondary: &Secondary) {
    let keys = record_keys(running);
    assert!(keys.len() > 10, "a real zone: {keys:?}");
    let ours = answers(running.udp[0], &keys).await;
    let theirs = answers(secondary.addr, &keys).await;
    assert_eq!(ours, theirs, "{} answers differently", secondary.name);
}

/// A counter from marathon-dns's `/metrics`.
async fn metric(running: &Running, series: &str) -> u64 {
    admin_metric(running, series).await as u64
}

/// The whole life of a secondary: initial AXFR, identical answers, a burst of task changes
/// followed by NOTIFY + IXFR (and it was IXFR), a restart of marathon-dns (serials keep moving
/// forward; the secondary catches up with the restarted primary).
async fn follows_marathon_dns(secondary_of: impl Fn(SocketAddr, u16) -> Secondary) {
    let sim = Simulator::start().await.expect("sim");
    populate(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    // The secondary's port must be known before marathon-dns starts (to NOTIFY it) and
    // marathon-dns's before the secondary starts (its primary): take marathon-dns's first.
    let dns_port = free_port();
    let primary = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let notify_port = free_port();
    let notify = SocketAddr::from(([127, 0, 0, 1], notify_port));
    let mut s = primary_settings(&sim, dir.path(), notify, false);
    s.listen = vec![primary];
    let running = start(s.clone()).await;
    let secondary = secondary_of(primary, notify_port);
    let serial = running.status.serial();
    let took = until_serial(&secondary, serial, Duration::from_secs(20)).await;
    println!(
        "{}: initial transfer of serial {serial} in {took:?}",
        secondary.name
    );
    assert_same_answers(&running, &secondary).await;
    assert!(metric(&running, "marathon_dns_transfers_total{result=\"axfr\"}").await >= 1);

    // A burst of task changes: new tasks, a killed one, an unhealthy one.
    let before_ixfr = metric(&running, "marathon_dns_transfers_total{result=\"ixfr\"}").await;
    let old = running.status.serial();
    sim.start_task("/prod/web", "127.0.0.21", &[])
        .expect("task");
    sim.start_task("/prod/api", "127.0.0.22", &[])
        .expect("task");
    let db = sim.tasks_of("/dev/db");
    sim.kill_task(&db[0].id);
    sim.add_app(web_app("/prod/new"));
    sim.start_task("/prod/new", "127.0.0.23", &[])
        .expect("task");
    eventually("the burst is published", || async {
        let names = record_keys(&running);
        names.contains(&("new.prod.marathon.local.".to_string(), RecordType::A))
            && running.status.serial() != old
            && srv(&q(
                running.udp[0],
                "_web._tcp.prod.marathon.local",
                RecordType::SRV,
            )
            .await)
            .len()
                == 3
    })
    .await;
    // Let the burst settle into its last serial, then time the secondary against it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = Instant::now();
    let serial = running.status.serial();
    let took = until_serial(&secondary, serial, Duration::from_secs(5)).await;
    println!(
        "{}: NOTIFY + IXFR to serial {serial}: {:?} after the last publish",
        secondary.name,
        published.elapsed().max(took)
    );
    assert_same_answers(&running, &secondary).await;
    let ixfr = metric(&running, "marathon_dns_transfers_total{result=\"ixfr\"}").await;
    assert!(ixfr > before_ixfr, "the secondary caught up by IXFR");
    assert_eq!(
        metric(
            &running,
            "marathon_dns_transfers_total{result=\"ixfr_full_zone\"}"
        )
        .await,
        0,
        "every IXFR came from the history"
    );
    assert!(
        metric(
            &running,
            "marathon_dns_notify_total{outcome=\"acknowledged\"}"
        )
        .await
            >= 1
    );

    // Freshness: from a publish to the secondary serving it (NOTIFY → SOA check → IXFR).
    let mut samples = Vec::new();
    for i in 0..5 {
        let before = running.status.serial();
        sim.start_task("/prod/web", &format!("127.0.1.{i}"), &[])
            .expect("task");
        let published = loop {
            if running.status.serial() != before {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        until_serial(&secondary, running.status.serial(), Duration::from_secs(5)).await;
        samples.push(published.elapsed());
    }
    samples.sort();
    println!(
        "{}: publish → secondary serves it (NOTIFY + IXFR), 5 changes: median {:?}, max {:?}",
        secondary.name, samples[2], samples[4]
    );

    // Restart marathon-dns on the same address: the serial file keeps serials moving forward,
    // the new process has no history, so the secondary's IXFR is answered with the whole zone.
    let last = running.status.serial();
    running.shutdown().await;
    sim.start_task("/prod/api", "127.0.0.24", &[])
        .expect("task");
    let running = start(s).await;
    let restarted = running.status.serial();
    assert!(
        marathon_dns::zone::serial::gt(restarted, last),
        "serial {restarted} after a restart must be newer than {last}"
    );
    let took = until_serial(&secondary, restarted, Duration::from_secs(10)).await;
    println!(
        "{}: caught up with the restarted primary (serial {last} → {restarted}) in {took:?}",
        secondary.name
    );
    assert_same_answers(&running, &secondary).await;
    assert!(
        metric(
            &running,
            "marathon_dns_transfers_total{result=\"ixfr_full_zone\"}"
        )
        .await
            + metric(&running, "marathon_dns_transfers_total{result=\"axfr\"}").await
            >= 1
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_follows_by_notify_and_ixfr_and_across_restarts() {
    let Some(knotd) = require_program("knotd", "knot") else {
        return;
    };
    follows_marathon_dns(|primary, port| knot(&knotd, primary, port, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsd_follows_by_notify_and_ixfr_and_across_restarts() {
    let Some(nsd_path) = require_program("nsd", "nsd") else {
        return;
    };
    follows_marathon_dns(|primary, port| nsd(&nsd_path, primary, port, false)).await;
}

fn key(secret: &str) -> marathon_dns::transfer::tsig::Key {
    marathon_dns::transfer::tsig::Key::parse(&format!("{KEY}:hmac-sha256:{secret}")).expect("key")
}

/// A transfer request as a secondary sends it: AXFR, or IXFR with the client's SOA serial.
fn transfer_request(qtype: RecordType, client_serial: Option<u32>) -> Vec<u8> {
    let mut m = query_message(ZONE, qtype, None);
    if let Some(serial) = client_serial {
        let soa = hickory_proto::rr::rdata::SOA::new(
            "ns.marathon.local.".parse().expect("name"),
            "hostmaster.marathon.local.".parse().expect("name"),
            serial,
            0,
            0,
            0,
            0,
        );
        m.authorities.push(hickory_proto::rr::Record::from_rdata(
            format!("{ZONE}.").parse().expect("name"),
            0,
            RData::SOA(soa),
        ));
    }
    m.to_vec().expect("encode")
}

/// Send a request over TCP and read response messages until the transfer ends: a second SOA
/// (or a single SOA or an error, for a one-message answer). With `signed`, the request is signed
/// and every response checked as a chain... by the counterpart that matters: the real
/// secondaries in the tests above; here only the first message's TSIG is looked at.
async fn transfer(
    server: SocketAddr,
    mut request: Vec<u8>,
    signed: Option<&marathon_dns::transfer::tsig::Key>,
) -> (Vec<Message>, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Some(k) = signed {
        marathon_dns::transfer::tsig::sign_request(k, &mut request, unix_now());
    }
    let mut stream = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let mut frame = (request.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream.write_all(&frame).await.expect("send");
    let (mut messages, mut bytes, mut soas) = (Vec::new(), 0, 0);
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the transfer goes on")
            .expect("a whole message");
        bytes += buf.len() + 2;
        let m = Message::from_vec(&buf).expect("a valid DNS message");
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let done = m.metadata.response_code != ResponseCode::NoError
            || (messages.is_empty() && m.answers.len() == 1 && soas == 1)
            || soas >= 2
                && m.answers
                    .last()
                    .is_some_and(|r| r.record_type() == RecordType::SOA);
        messages.push(m);
        if done {
            return (messages, bytes);
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Knot and NSD configured with the key transfer, are NOTIFYed (signed) and follow IXFRs (each
/// message signed: both check the whole chain); a client without the key is refused, one with
/// the wrong secret gets BADSIG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tsig_secondaries_need_the_key() {
    let (Some(knotd), Some(nsd_path)) = (
        require_program("knotd", "knot"),
        require_program("nsd", "nsd"),
    ) else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    populate(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (knot_port, nsd_port) = (free_port(), free_port());
    let mut s = primary_settings(
        &sim,
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], knot_port)),
        true,
    );
    s.transfer
        .notify
        .push(SocketAddr::from(([127, 0, 0, 1], nsd_port)));
    s.listen = vec![primary];
    let running = start(s).await;
    let secondaries = [
        knot(&knotd, primary, knot_port, true),
        nsd(&nsd_path, primary, nsd_port, true),
    ];
    let serial = running.status.serial();
    for secondary in &secondaries {
        until_serial(secondary, serial, Duration::from_secs(20)).await;
        assert_same_answers(&running, secondary).await;
    }
    sim.start_task("/prod/web", "127.0.0.31", &[])
        .expect("task");
    eventually("the change is published", || async {
        running.status.serial() != serial
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serial = running.status.serial();
    for secondary in &secondaries {
        let took = until_serial(secondary, serial, Duration::from_secs(5)).await;
        println!("{} (TSIG): serial {serial} within {took:?}", secondary.name);
        assert_same_answers(&running, secondary).await;
    }
    assert!(metric(&running, "marathon_dns_transfers_total{result=\"ixfr\"}").await >= 2);
    assert_eq!(
        metric(
            &running,
            "marathon_dns_transfers_total{result=\"tsig_failed\"}"
        )
        .await,
        0
    );
    // Both secondaries acknowledged signed NOTIFYs (each checks the signature).
    assert!(
        metric(
            &running,
            "marathon_dns_notify_total{outcome=\"acknowledged\"}"
        )
        .await
            >= 2
    );

    // Without the key: REFUSED, no records.
    let (m, _) = transfer(primary, transfer_request(RecordType::AXFR, None), None).await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].metadata.response_code, ResponseCode::Refused);
    assert!(m[0].answers.is_empty());
    // With the right name and a wrong secret: NOTAUTH, and the TSIG error says BADSIG.
    let wrong = key("d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=");
    let (m, _) = transfer(
        primary,
        transfer_request(RecordType::AXFR, None),
        Some(&wrong),
    )
    .await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].metadata.response_code, ResponseCode::NotAuth);
    assert!(m[0].answers.is_empty());
    // hickory leaves a TSIG it did not verify among the additional records.
    let tsig = m[0]
        .additionals
        .iter()
        .find_map(|r| match &r.data {
            RData::TSIG(t) => Some(t),
            _ => None,
        })
        .expect("a TSIG record in the error");
    assert!(
        matches!(
            tsig.error,
            Some(hickory_proto::rr::rdata::tsig::TsigError::BadSig)
        ),
        "BADSIG: {tsig:?}"
    );
    assert!(
        tsig.mac.is_empty(),
        "a BADSIG error is unsigned (RFC 8945 §5.3.2)"
    );
    // A signed UPDATE (opcode 5) is NOTIMP, signed: it must not look like it succeeded.
    let mut update = transfer_request(RecordType::SOA, None);
    update[2] = (update[2] & 0x87) | (5 << 3);
    marathon_dns::transfer::tsig::sign_request(&key(SECRET), &mut update, unix_now());
    let answer =
        Message::from_vec(&udp_raw(primary, &update).await.expect("an answer")).expect("valid");
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    assert!(
        answer
            .additionals
            .iter()
            .any(|r| matches!(&r.data, RData::TSIG(t) if !t.mac.is_empty())),
        "signed: {answer:?}"
    );
    // With the key: the whole zone.
    let (m, _) = transfer(
        primary,
        transfer_request(RecordType::AXFR, None),
        Some(&key(SECRET)),
    )
    .await;
    let records: usize = m.iter().map(|m| m.answers.len()).sum();
    assert_eq!(records, running.store.marathon().records().len() + 1);
    assert!(
        metric(
            &running,
            "marathon_dns_transfers_total{result=\"tsig_failed\"}"
        )
        .await
            >= 1
    );
    running.shutdown().await;
}

/// What a client sees: REFUSED outside --allow-transfer; AXFR over UDP is NOTIMP (a transfer
/// needs TCP); IXFR over UDP and an up-to-date IXFR answer the current SOA alone; an IXFR from a
/// serial that is not in the history gets the whole zone; a name that is not a zone apex is
/// NOTAUTH; and before the first sync a transfer is SERVFAIL, so that a secondary keeps its
/// copy instead of taking an empty zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_answers_follow_the_rfcs() {
    let sim = Simulator::start().await.expect("sim");
    populate(&sim);
    // Nobody may transfer: the default.
    let running = start_against(&sim, |_| {}).await;
    let (m, _) = transfer(
        running.tcp[0],
        transfer_request(RecordType::AXFR, None),
        None,
    )
    .await;
    assert_eq!(m[0].metadata.response_code, ResponseCode::Refused);
    running.shutdown().await;

    let running = start_against(&sim, |s| {
        s.transfer.allow = loopback();
    })
    .await;
    let server = running.tcp[0];
    let serial = running.status.serial();
    let udp_axfr = udp(server, &query_message(ZONE, RecordType::AXFR, None)).await;
    assert_eq!(udp_axfr.metadata.response_code, ResponseCode::NotImp);
    let udp_ixfr = Message::from_vec(
        &udp_raw(
            server,
            &transfer_request(RecordType::IXFR, Some(serial.wrapping_sub(5))),
        )
        .await
        .expect("an answer"),
    )
    .expect("valid");
    assert_eq!(udp_ixfr.answers.len(), 1, "IXFR over UDP: the current SOA");
    assert!(matches!(&udp_ixfr.answers[0].data, RData::SOA(s) if s.serial == serial));

    let (m, _) = transfer(
        server,
        transfer_request(RecordType::IXFR, Some(serial)),
        None,
    )
    .await;
    assert_eq!((m.len(), m[0].answers.len()), (1, 1), "up to date: one SOA");
    let (m, _) = transfer(
        server,
        transfer_request(RecordType::IXFR, Some(serial.wrapping_add(10))),
        None,
    )
    .await;
    assert_eq!(
        m[0].answers.len(),
        1,
        "a client ahead (RFC 1995 §2): one SOA"
    );

    // A change, then an IXFR from the serial before it: the difference only.
    sim.start_task("/prod/api", "127.0.0.41", &[])
        .expect("task");
    eventually("published", || async { running.status.serial() != serial }).await;
    let (m, _) = transfer(
        server,
        transfer_request(RecordType::IXFR, Some(serial)),
        None,
    )
    .await;
    let answers: Vec<_> = m.iter().flat_map(|m| m.answers.iter()).collect();
    let soa_serials: Vec<u32> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SOA(s) => Some(s.serial),
            _ => None,
        })
        .collect();
    let now = running.status.serial();
    assert_eq!(
        soa_serials,
        vec![now, serial, now, now],
        "RFC 1995 §4 layout"
    );
    let added: Vec<String> = answers
        .iter()
        .filter(|r| r.record_type() != RecordType::SOA)
        .map(|r| r.to_string())
        .collect();
    assert!(added.iter().any(|r| r.contains("127.0.0.41")), "{added:?}");
    assert!(added.len() < 10, "a difference, not the zone: {added:?}");

    // Every task replaced since a serial: the difference (all removed + all added) is larger
    // than the zone, which is sent instead.
    let before = running.status.serial();
    for app in ["/prod/web", "/prod/api", "/dev/db"] {
        for t in sim.tasks_of(app) {
            sim.kill_task(&t.id);
        }
        for h in ["127.0.0.51", "127.0.0.52", "127.0.0.53"] {
            sim.start_task(app, h, &[]).expect("task");
        }
    }
    eventually("all tasks replaced", || async {
        let mut replaced = true;
        for name in [
            "web.prod.marathon.local",
            "api.prod.marathon.local",
            "db.dev.marathon.local",
        ] {
            let mut a = rdata(&q(server, name, RecordType::A).await, RecordType::A);
            a.sort();
            replaced &= a == ["127.0.0.51", "127.0.0.52", "127.0.0.53"];
        }
        replaced
    })
    .await;
    let full_before = metric(
        &running,
        "marathon_dns_transfers_total{result=\"ixfr_full_zone\"}",
    )
    .await;
    let (m, _) = transfer(
        server,
        transfer_request(RecordType::IXFR, Some(before)),
        None,
    )
    .await;
    let records: usize = m.iter().map(|m| m.answers.len()).sum();
    assert_eq!(
        records,
        running.store.marathon().record_count() + 2,
        "the whole zone, SOA twice"
    );
    assert_eq!(
        metric(
            &running,
            "marathon_dns_transfers_total{result=\"ixfr_full_zone\"}"
        )
        .await,
        full_before + 1
    );

    // A serial never published here: the whole zone, as an AXFR would send it.
    let (m, _) = transfer(
        server,
        transfer_request(RecordType::IXFR, Some(now.wrapping_sub(1000))),
        None,
    )
    .await;
    let records: usize = m.iter().map(|m| m.answers.len()).sum();
    assert_eq!(records, running.store.marathon().records().len() + 1);

    // A reply is never answered, whatever it holds (two servers must not bounce replies).
    let mut reply = transfer_request(RecordType::AXFR, None);
    reply[2] |= 0x80;
    assert!(
        udp_raw(server, &reply).await.is_none(),
        "a reply got an answer"
    );

    let mut not_apex = query_message("web.prod.marathon.local", RecordType::AXFR, None);
    not_apex.metadata.id = 7;
    let (m, _) = transfer(server, not_apex.to_vec().expect("encode"), None).await;
    assert_eq!(m[0].metadata.response_code, ResponseCode::NotAuth);
    running.shutdown().await;

    // Marathon down from the start: the zone is empty, transfers wait for the first sync.
    sim.fail_rest(Some(503));
    let mut s = settings(vec![sim.url()]);
    s.transfer.allow = loopback();
    let running = server::start(s).await.expect("starts");
    let (m, _) = transfer(
        running.tcp[0],
        transfer_request(RecordType::AXFR, None),
        None,
    )
    .await;
    assert_eq!(m[0].metadata.response_code, ResponseCode::ServFail);
    running.shutdown().await;
}

/// A 100,000-task zone goes out whole in one AXFR, in messages of bounded size; size and
/// duration printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_task_zone_transfers_whole() {
    let sim = Simulator::start().await.expect("sim");
    let (apps, per_app) = (1000, 100);
    let started = Instant::now();
    for a in 0..apps {
        let id = format!("/scale/app{a}");
        sim.add_app(web_app(&id));
        for t in 0..per_app {
            let host = std::net::IpAddr::from([10, 1, (a % 250) as u8, t as u8]).to_string();
            sim.start_task_with_ports(&id, &host, &[], Some(vec![20_000 + t as u16]))
                .expect("task");
        }
    }
    let mut s = settings(vec![sim.url()]);
    s.transfer.allow = loopback();
    let running = server::start(s).await.expect("server starts");
    // A debug build syncing 100,000 tasks beside other tests: give it time.
    tokio::time::timeout(Duration::from_secs(180), running.wait_live())
        .await
        .expect("live in time");
    let zone_records = running.store.marathon().records().len();
    println!(
        "{} tasks synced in {:.1?}; {zone_records} records",
        apps * per_app,
        started.elapsed()
    );
    let started = Instant::now();
    let (messages, bytes) = transfer(
        running.tcp[0],
        transfer_request(RecordType::AXFR, None),
        None,
    )
    .await;
    let took = started.elapsed();
    let records: usize = messages.iter().map(|m| m.answers.len()).sum();
    println!(
        "AXFR of {} tasks: {records} records in {} messages, {:.1} MB, {took:.2?}",
        apps * per_app,
        messages.len(),
        bytes as f64 / 1e6
    );
    assert_eq!(records, zone_records + 1, "every record, the SOA twice");
    assert!(matches!(messages[0].answers[0].data, RData::SOA(_)));
    assert!(matches!(
        messages
            .last()
            .and_then(|m| m.answers.last())
            .map(|r| &r.data),
        Some(RData::SOA(_))
    ));
    let srv = messages
        .iter()
        .flat_map(|m| m.answers.iter())
        .filter(|r| r.record_type() == RecordType::SRV)
        .count();
    assert!(srv >= apps * per_app, "an SRV record per task: {srv}");
    running.shutdown().await;
}
