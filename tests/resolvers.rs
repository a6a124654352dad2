//! Real resolvers forwarding the zone to marathon-dns, each run with the exact config that
//! `docs/resolvers.md` shows (`docs/examples/resolvers/*`, only the `@…@` placeholders filled
//! in with loopback addresses, ephemeral ports and a temporary directory): unbound
//! (`stub-zone`), dnsmasq (`server=/zone/addr#port`) and BIND 9 (a forward zone). Through each
//! one: a task start and a task kill are seen within the TTL (plus slack), NXDOMAIN and NODATA
//! pass through with the zone's SOA, an NXDOMAIN is cached no longer than the SOA minimum
//! (`--ttl`), and names outside the zone are not resolved (no internet). Needs the Debian
//! packages `unbound`, `dnsmasq-base` and `bind9` (`.ci/run` installs them); each test is
//! skipped without its program (see `require_program`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use marathon_dns::server::Settings;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

/// The zone the example files forward (docs/resolvers.md recommends it over `.local`).
const ZONE: &str = "marathon.internal";
/// How long past the TTL a change may take to show through a resolver before the test fails:
/// generous, so that a slow machine does not flake; the measured figures are printed.
const SLACK: Duration = Duration::from_secs(5);
/// How long a resolver may take to start and answer its first query.
const STARTUP: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// A resolver daemon in the foreground, killed when the test ends. When the test fails, its
/// log is printed.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Self { name, child, log }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "--- last lines of the {} log ---", self.name);
            for line in tail.iter().rev() {
                let _ = writeln!(err, "{line}");
            }
        }
    }
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/resolvers")
}

/// The first `@NAME@` placeholder left in `text`, if any.
fn leftover_placeholder(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|i| {
        let rest = text.get(i + 1..)?;
        let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_'))?;
        (bytes[i] == b'@' && end > 0 && rest[end..].starts_with('@'))
            .then(|| &text[i..=i + end + 1])
    })
}

/// An example file with its placeholders filled in, written to `dir`; its path.
fn render(template: &str, dns: SocketAddr, listen: SocketAddr, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(examples_dir().join(template)).expect("example file");
    assert!(
        text.contains(&format!("\"{ZONE}\"")) || text.contains(&format!("/{ZONE}/")),
        "{template} forwards {ZONE}"
    );
    let text = text
        .replace("@MARATHON_DNS_ADDR@", &dns.ip().to_string())
        .replace("@MARATHON_DNS_PORT@", &dns.port().to_string())
        .replace("@LISTEN_ADDR@", &listen.ip().to_string())
        .replace("@LISTEN_PORT@", &listen.port().to_string())
        .replace("@RUN_DIR@", &dir.display().to_string());
    assert_eq!(leftover_placeholder(&text), None, "{template}");
    let path = dir.join(template);
    std::fs::write(&path, text).expect("write config");
    path
}

/// One UDP query; `None` when there is no (matching, decodable) reply in time.
async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Option<Message> {
    let msg = query_message(name, rtype, Some(1232));
    let raw = udp_raw(server, &msg.to_vec().ok()?).await?;
    let reply = Message::from_vec(&raw).ok()?;
    (reply.metadata.id == msg.metadata.id).then_some(reply)
}

async fn srv_ports(server: SocketAddr, name: &str) -> BTreeSet<u16> {
    match ask(server, name, RecordType::SRV).await {
        Some(m) => srv(&m).into_iter().map(|(port, _)| port).collect(),
        None => BTreeSet::new(),
    }
}

fn ports(p: &[u16]) -> BTreeSet<u16> {
    p.iter().copied().collect()
}

/// The negative answer's SOA: owned by the zone apex, its TTL no more than `ttl`.
fn assert_negative(m: &Message, rcode: ResponseCode, ttl: u32, what: &str) {
    assert_eq!(m.metadata.response_code, rcode, "{what}");
    assert!(m.answers.is_empty(), "{what}: {:?}", m.answers);
    let soa = m
        .authorities
        .iter()
        .find(|r| matches!(r.data, RData::SOA(_)))
        .unwrap_or_else(|| panic!("{what}: SOA in AUTHORITY, got {:?}", m.authorities));
    assert_eq!(soa.name.to_ascii(), format!("{ZONE}."), "{what}");
    assert!(soa.ttl <= ttl, "{what}: SOA TTL {} > {ttl}", soa.ttl);
}

/// The whole scenario through one resolver. `start` gets marathon-dns's address, the address
/// the resolver must listen on and its working directory, and starts the resolver.
async fn through_resolver(
    resolver: &str,
    start: impl FnOnce(SocketAddr, SocketAddr, &Path) -> Daemon,
) {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    let first = sim
        .start_task_with_ports("/web", "127.0.0.11", &[], Some(vec![31001]))
        .expect("task");
    let running = start_against(&sim, |s| s.zone = ZONE.into()).await;
    let ttl_secs = Settings::new(vec![]).ttl;
    let ttl = Duration::from_secs(u64::from(ttl_secs));
    let bound = ttl + SLACK;

    let dir = tempfile::tempdir().expect("tempdir");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _daemon = start(running.udp[0], listen, dir.path());

    let web = format!("_web._tcp.{ZONE}.");
    let took = eventually_within(&format!("{resolver} forwards {web}"), STARTUP, POLL, || {
        let web = web.clone();
        async move { srv_ports(listen, &web).await == ports(&[31001]) }
    })
    .await;
    println!(
        "{resolver}: first answer through the resolver after {:.2} s (start-up included)",
        took.as_secs_f64()
    );
    // A recursive answer (not marathon-dns's own authoritative one) with the zone's TTL.
    let m = ask(listen, &web, RecordType::SRV).await.expect("reply");
    assert!(m.metadata.recursion_available, "{resolver} answered");
    assert!(m.answers.iter().all(|r| r.ttl <= ttl_secs), "{m:?}");

    // A task starts: seen once the cached answer expires (TTL), plus marathon-dns's own delay.
    let started = Instant::now();
    sim.start_task_with_ports("/web", "127.0.0.12", &[], Some(vec![31002]))
        .expect("task");
    eventually_within(&format!("{resolver}: task start seen"), bound, POLL, || {
        let web = web.clone();
        async move { srv_ports(listen, &web).await == ports(&[31001, 31002]) }
    })
    .await;
    println!(
        "{resolver}: task start seen through the resolver after {:.2} s (TTL {ttl_secs} s)",
        started.elapsed().as_secs_f64()
    );

    // A task is killed: gone once the cached answer expires.
    let started = Instant::now();
    sim.kill_task(&first);
    eventually_within(&format!("{resolver}: task kill seen"), bound, POLL, || {
        let web = web.clone();
        async move { srv_ports(listen, &web).await == ports(&[31002]) }
    })
    .await;
    println!(
        "{resolver}: task kill seen through the resolver after {:.2} s (TTL {ttl_secs} s)",
        started.elapsed().as_secs_f64()
    );
    let a = ask(listen, &format!("web.{ZONE}."), RecordType::A)
        .await
        .expect("reply");
    assert_eq!(rdata(&a, RecordType::A), ["127.0.0.12"], "{resolver}");

    // NXDOMAIN and NODATA pass through, with the zone's SOA for negative caching.
    let nx = ask(listen, &format!("no-such-app.{ZONE}."), RecordType::A)
        .await
        .expect("reply");
    assert_negative(&nx, ResponseCode::NXDomain, ttl_secs, "NXDOMAIN");
    let nodata = ask(listen, &format!("web.{ZONE}."), RecordType::TXT)
        .await
        .expect("reply");
    assert_negative(&nodata, ResponseCode::NoError, ttl_secs, "NODATA");

    // An NXDOMAIN is cached no longer than the SOA minimum (= --ttl): a new app shows up.
    let api = format!("_api._tcp.{ZONE}.");
    let m = ask(listen, &api, RecordType::SRV).await.expect("reply");
    assert_negative(
        &m,
        ResponseCode::NXDomain,
        ttl_secs,
        "NXDOMAIN before the app",
    );
    let started = Instant::now();
    sim.add_app(SimApp::new(
        "/api",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task_with_ports("/api", "127.0.0.13", &[], Some(vec![31003]))
        .expect("task");
    eventually_within(&format!("{resolver}: new app seen"), bound, POLL, || {
        let api = api.clone();
        async move { srv_ports(listen, &api).await == ports(&[31003]) }
    })
    .await;
    println!(
        "{resolver}: new app seen through the resolver after {:.2} s (its NXDOMAIN was cached)",
        started.elapsed().as_secs_f64()
    );

    // Nothing outside the zone is resolved: no internet, no other data.
    let started = Instant::now();
    let out = ask(listen, "example.com.", RecordType::A)
        .await
        .expect("reply");
    assert!(
        matches!(
            out.metadata.response_code,
            ResponseCode::Refused | ResponseCode::ServFail
        ),
        "{resolver} answered example.com: {out:?}"
    );
    assert!(out.answers.is_empty(), "{resolver}: {out:?}");
    println!(
        "{resolver}: example.com -> {} in {:.0} ms (only the zone is answered)",
        out.metadata.response_code,
        started.elapsed().as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_stub_zone() {
    let Some(unbound) = require_program("unbound", "unbound") else {
        return;
    };
    through_resolver("unbound", |dns, listen, dir| {
        let conf = render("unbound.conf", dns, listen, dir);
        let mut cmd = Command::new(&unbound);
        cmd.arg("-d").arg("-c").arg(conf).current_dir(dir);
        Daemon::spawn("unbound", cmd, dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsmasq_server_for_the_zone() {
    let Some(dnsmasq) = require_program("dnsmasq", "dnsmasq-base") else {
        return;
    };
    through_resolver("dnsmasq", |dns, listen, dir| {
        let conf = render("dnsmasq.conf", dns, listen, dir);
        let mut cmd = Command::new(&dnsmasq);
        cmd.arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .current_dir(dir);
        Daemon::spawn("dnsmasq", cmd, dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind9_forward_zone() {
    let Some(named) = require_program("named", "bind9") else {
        return;
    };
    through_resolver("BIND 9", |dns, listen, dir| {
        let conf = render("named.conf", dns, listen, dir);
        let mut cmd = Command::new(&named);
        cmd.arg("-g").arg("-c").arg(conf).current_dir(dir);
        Daemon::spawn("named", cmd, dir)
    })
    .await;
}

#[test]
fn placeholders_are_found() {
    assert_eq!(
        leftover_placeholder("a @LISTEN_PORT@ b"),
        Some("@LISTEN_PORT@")
    );
    assert_eq!(leftover_placeholder("127.0.0.1@53 x@y.z"), None);
    assert_eq!(
        leftover_placeholder("stub-addr: 1.2.3.4@@MARATHON_DNS_PORT@"),
        Some("@MARATHON_DNS_PORT@")
    );
}

/// `docs/resolvers.md` shows every example file verbatim: what users read is what runs here.
#[test]
fn the_docs_show_the_example_files_verbatim() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/resolvers.md"),
    )
    .expect("docs/resolvers.md");
    let mut shown = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("examples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("example file");
        let block = format!("```\n{}\n```", text.trim_end());
        assert!(
            doc.contains(&block),
            "docs/resolvers.md does not show {} verbatim",
            path.display()
        );
        shown.push(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    shown.sort();
    assert_eq!(shown, ["dnsmasq.conf", "named.conf", "unbound.conf"]);
}
