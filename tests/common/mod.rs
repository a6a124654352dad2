//! Test helpers: a DNS client over real UDP/TCP sockets and a server wired to the simulator.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use marathon_dns::server::{self, Running, Settings};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn zones_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones")
}

/// Server settings for tests: ephemeral loopback port, the repo's zones. Response rate
/// limiting is off: tests send many identical queries from 127.0.0.1 on purpose (the RRL
/// tests turn it on).
pub fn settings(marathon: Vec<String>) -> Settings {
    let mut s = Settings::new(marathon);
    s.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    s.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    s.zones_dir = zones_dir();
    s.rrl.rate = 0;
    s
}

/// Start a server against `sim` and wait for the first sync.
pub async fn start_against(sim: &Simulator, tweak: impl FnOnce(&mut Settings)) -> Running {
    let mut s = settings(vec![sim.url()]);
    tweak(&mut s);
    let running = server::start(s).await.expect("server starts");
    tokio::time::timeout(TIMEOUT, running.wait_live())
        .await
        .expect("live in time");
    running
}

pub fn query_message(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos())
        % 65_000) as u16
        + 1
}

/// Send raw bytes over UDP and return the raw reply.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.connect(server).await.expect("connect");
    sock.send(bytes).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

pub async fn udp(server: SocketAddr, msg: &Message) -> Message {
    let raw = udp_raw(server, &msg.to_vec().expect("encode"))
        .await
        .expect("UDP reply");
    let reply = Message::from_vec(&raw).expect("decodable reply");
    assert_eq!(reply.metadata.id, msg.metadata.id);
    reply
}

pub async fn tcp(server: SocketAddr, msg: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let bytes = msg.to_vec().expect("encode");
    let len = u16::try_from(bytes.len()).expect("fits");
    stream.write_all(&len.to_be_bytes()).await.expect("write");
    stream.write_all(&bytes).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut len))
        .await
        .expect("in time")
        .expect("len");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("body");
    Message::from_vec(&buf).expect("decodable reply")
}

pub async fn q(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    udp(server, &query_message(name, rtype, Some(4096))).await
}

/// Sorted answer RDATA of a type, as text.
pub fn rdata(m: &Message, rtype: RecordType) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

/// SRV answers as (port, target) pairs, sorted.
pub fn srv(m: &Message) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Every SRV target has exactly one address record in ADDITIONAL, owner byte-identical.
pub fn assert_full_glue(m: &Message) {
    for r in &m.answers {
        if let RData::SRV(s) = &r.data {
            let glue = m
                .additionals
                .iter()
                .filter(|a| matches!(a.record_type(), RecordType::A | RecordType::AAAA))
                .filter(|a| a.name.to_ascii() == s.target.to_ascii())
                .count();
            assert!(glue >= 1, "no glue for {}", s.target);
        }
    }
}

/// Poll `check` against the server until it holds; returns how long it took.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Poll `check` every `every` until it holds or `limit` has passed (then panic); returns how
/// long it took. For peers with their own caches (resolvers), where the bound is a TTL plus
/// slack rather than [`TIMEOUT`].
pub async fn eventually_within<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() >= limit {
            panic!("not within {limit:?}: {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// The TYPE of every resource record in a raw message, section by section, in wire order
/// (answer, authority, additional). Written by hand so that order is what was sent.
pub fn rr_types_in_order(raw: &[u8]) -> [Vec<u16>; 3] {
    fn skip_name(raw: &[u8], mut i: usize) -> usize {
        loop {
            let len = raw[i];
            if len & 0xC0 == 0xC0 {
                return i + 2;
            }
            if len == 0 {
                return i + 1;
            }
            i += 1 + usize::from(len);
        }
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([raw[i], raw[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(raw, i) + 4;
    }
    let mut out: [Vec<u16>; 3] = Default::default();
    for (section, n) in [an, ns, ar].into_iter().enumerate() {
        for _ in 0..n {
            i = skip_name(raw, i);
            let rtype = u16::from_be_bytes([raw[i], raw[i + 1]]);
            let rdlen = usize::from(u16::from_be_bytes([raw[i + 8], raw[i + 9]]));
            out[section].push(rtype);
            i += 10 + rdlen;
        }
    }
    out
}

/// A loopback port free for both TCP and UDP, released for a peer program to bind.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Set to `1` (`.ci/run` does) to make a missing external program a test failure, not a skip.
pub const REQUIRE_INTEROP: &str = "MARATHON_DNS_REQUIRE_INTEROP";

/// Where an external program is: the first executable `name` on `PATH`, then in the sbin
/// directories (Debian puts daemons such as `knotd` and `haproxy` there, and they are not on
/// every user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// An external program a test needs to prove interoperability (`dig`, `knotd`, `haproxy` …),
/// from the Debian package `package`. When it is missing, print one line saying what is
/// skipped and how to get it, and return `None`: the caller returns, and the test passes.
/// With `MARATHON_DNS_REQUIRE_INTEROP=1` a missing program fails the test instead, so that CI
/// cannot skip anything silently.
pub fn require_program(name: &str, package: &str) -> Option<PathBuf> {
    if let Some(path) = find_program(name) {
        return Some(path);
    }
    if std::env::var(REQUIRE_INTEROP).is_ok_and(|v| v == "1") {
        panic!(
            "{name} not found on PATH nor in /usr/local/sbin, /usr/sbin, /sbin, and \
             {REQUIRE_INTEROP}=1 forbids skipping — apt-get install {package}"
        );
    }
    let line = format!("skipped: needs {name} — apt-get install {package}, or run .ci/run");
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and this line must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    None
}

/// A cluster that covers every naming rule: host, bridge and container networks, named and
/// unnamed ports, udp,tcp, health checks, idle apps and apps too big for UDP.
pub fn populate_conformance(sim: &Simulator) {
    let v4 = |a: u8, b: u8| IpAddr::from([10, 40, a, b]);
    for i in 0..240u16 {
        let group = format!("/g{}/s{}", i % 7, i % 3);
        let id = format!("{group}/app{i}");
        let (network, ports) = match i % 6 {
            0 => (
                SimNetwork::Host,
                vec![SimPort::tcp(Some("http"), 0), SimPort::tcp(None, 0)],
            ),
            1 => (
                SimNetwork::Host,
                vec![SimPort::tcp(None, 0).with_protocol("udp,tcp")],
            ),
            2 => (
                SimNetwork::Bridge,
                vec![
                    SimPort::tcp(Some("api"), 8080),
                    SimPort::tcp(None, 9090).with_protocol("udp"),
                ],
            ),
            3 => (SimNetwork::Container, vec![SimPort::tcp(Some("db"), 5432)]),
            4 => (SimNetwork::Host, vec![SimPort::tcp(Some("web"), 0)]),
            _ => (
                SimNetwork::Container,
                vec![SimPort::tcp(None, 80), SimPort::tcp(Some("admin"), 81)],
            ),
        };
        let mut app = SimApp::new(&id, network, ports);
        if i % 5 == 0 {
            app = app.with_health_checks(1);
        }
        sim.add_app(app);
        // Idle apps, big apps (truncation), ordinary ones.
        let tasks = match i % 40 {
            7 => 0,
            13 => 45,
            _ => 1 + usize::from(i % 4),
        };
        for t in 0..tasks {
            let (a, b) = ((i % 250) as u8, (t % 250) as u8 + 1);
            let ips: Vec<IpAddr> = match (network, i % 4) {
                (SimNetwork::Container, 0) => {
                    vec![IpAddr::from_str(&format!("fd00::{i:x}:{t:x}")).expect("v6")]
                }
                (SimNetwork::Container, 1) => vec![
                    v4(a, b),
                    IpAddr::from_str(&format!("fd00::{i:x}:{t:x}")).expect("v6"),
                ],
                _ => vec![v4(a, b)],
            };
            let host = format!("192.0.2.{}", (t % 200) + 1);
            let task = sim.start_task(&id, &host, &ips).expect("task");
            if i % 5 == 0 {
                // Every third task of a health-checked app is unhealthy.
                sim.set_health(&task, t % 3 != 0);
            }
        }
    }
}

/// Static records of every kind next to the generated ones (the Marathon zone's file).
pub const CONFORMANCE_ZONE: &str = "$ORIGIN marathon.local.\n$TTL 30\n\
         @ 60 IN SOA ns1 hostmaster ( 1 60 30 3600 5 )\n@ 60 IN NS ns1\n@ 60 IN NS ns2\n\
         ns1 60 IN A 127.0.0.1\nns2 60 IN A 127.0.0.2\nns2 60 IN AAAA ::2\n\
         notes IN TXT \"hello world\" \"semi;colon \\\"quoted\\\"\"\n\
         mail IN MX 10 mx1.marathon.local.\nmx1 IN A 10.9.0.1\n\
         www IN CNAME web-alias.g1.marathon.local.\nweb-alias.g1 IN A 10.9.0.2\n\
         ext IN CNAME www.example.org.\n";

/// Mixed case, as a 0x20-randomising resolver would send it: every `step`-th letter upper.
pub fn mixed_case(name: &str, seed: usize, step: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + seed).is_multiple_of(step) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// How a conformance query travels.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    /// UDP with this EDNS size, or none.
    Udp(Option<u16>),
    Tcp,
}

/// The conformance query set for a zone built from [`populate_conformance`] and
/// [`CONFORMANCE_ZONE`], and the leaf labels of the apps defined without an eligible task.
pub struct ConformanceSet {
    pub queries: Vec<(String, RecordType, Transport)>,
    pub idle: Vec<String>,
}

pub fn conformance_set(zone: &marathon_dns::zone::ZoneSnapshot, sim: &Simulator) -> ConformanceSet {
    // The query set: every owner name and its ancestors (empty non-terminals), names that do
    // not exist at and below existing names, the idle apps, the apex, other zones.
    let mut names: BTreeSet<String> = BTreeSet::new();
    for r in zone.records() {
        let mut n = r.name.clone();
        while n.num_labels() >= 2 {
            names.insert(n.to_ascii());
            n = n.base_name();
        }
    }
    let owners: Vec<String> = names.iter().cloned().collect();
    for (i, n) in owners.iter().enumerate().step_by(9) {
        names.insert(format!("nx{i}.{n}"));
        names.insert(format!("deeper.nx{i}.{n}"));
    }
    // Apps defined without an eligible task (none started, or all failing health checks).
    let idle_ids: Vec<String> = sim
        .app_ids()
        .into_iter()
        .filter(|id| {
            sim.tasks_of(id)
                .iter()
                .all(|t| !t.health.is_empty() && t.health.iter().any(|alive| !*alive))
        })
        .collect();
    assert!(idle_ids.len() >= 6, "idle apps: {idle_ids:?}");
    let idle: Vec<String> = idle_ids
        .iter()
        .filter_map(|id| id.rsplit('/').next().map(str::to_string))
        .collect();
    for id in &idle_ids {
        let labels: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).rev().collect();
        names.insert(format!("{}.marathon.local.", labels.join(".")));
        names.insert(format!(
            "_{}._tcp.{}.marathon.local.",
            labels[0],
            labels[1..].join(".")
        ));
    }
    names.insert("example.com.".into());
    names.insert("marathon.local.example.".into());
    let types = [
        RecordType::A,
        RecordType::SRV,
        RecordType::AAAA,
        RecordType::SOA,
        RecordType::NS,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::MX,
        RecordType::CNAME,
    ];
    let transports = [
        Transport::Udp(Some(4096)),
        Transport::Udp(None),
        Transport::Tcp,
        Transport::Udp(Some(1232)),
    ];

    let mut queries = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let name = if i % 5 == 0 {
            mixed_case(name, i, 2)
        } else {
            name.clone()
        };
        for k in 0..2 {
            let rtype = if name.starts_with('_') && k == 0 {
                RecordType::SRV
            } else {
                types[(i + k * 3) % types.len()]
            };
            queries.push((name.clone(), rtype, transports[(i + k) % transports.len()]));
        }
    }
    // The static names with every type.
    for name in [
        "marathon.local.",
        "notes",
        "mail",
        "www",
        "ext",
        "ns2",
        "mx1",
        "web-alias.g1",
        "g1",
    ] {
        let name = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.marathon.local.")
        };
        for rtype in types {
            queries.push((name.clone(), rtype, Transport::Udp(Some(4096))));
        }
    }
    // SRV names of big apps over every transport: the truncation cases.
    for name in names
        .iter()
        .filter(|n| n.starts_with("_app13") || n.starts_with("_app53"))
    {
        for t in transports {
            queries.push((name.clone(), RecordType::SRV, t));
        }
    }
    ConformanceSet { queries, idle }
}

/// An HTTP backend on an ephemeral loopback port that answers `served-by <port>`.
pub async fn http_backend() -> u16 {
    use tokio::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let body = format!("served-by {port}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

/// One HTTP request to a local port with this Host header: the backend port that served it
/// (`None`: no answer, or not from a backend, e.g. HAProxy's 503).
pub async fn served_by(port: u16, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    out.split("served-by ").nth(1)?.trim().parse().ok()
}

/// A plain HTTP/1.0 GET of `http://HOST:PORT/PATH`: status and body (`None` if nothing
/// answers). No TLS stack involved: the admin listener is plain HTTP on loopback.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One series of a running server's `/metrics` (the whole line up to the value, labels
/// included); panics with the page if it is missing.
pub async fn admin_metric(running: &Running, series: &str) -> f64 {
    let admin = running.admin.expect("admin listener");
    let (_, body) = http_get(&format!("http://{admin}/metrics"))
        .await
        .expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{body}"))
}

/// The real binary, running; killed when dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    /// Its stderr, line by line.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Send `signal` (e.g. `libc::SIGHUP`) to the process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// The next log line containing `needle`, within `timeout`.
    pub fn log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.log.recv_timeout(Duration::from_millis(50))
                && line.contains(needle)
            {
                return Some(line);
            }
        }
        None
    }
}

/// Start `marathon-dns serve` with `args` (plus loopback listen and admin addresses on
/// ephemeral ports) and `env`; its DNS and admin addresses are read from its log.
pub fn spawn_daemon(args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_marathon-dns"));
    command
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    daemon_from(command)
}

/// Run `command` (the binary, listening on loopback with an admin listener, stderr piped)
/// and read its addresses from its log.
pub fn daemon_from(mut command: std::process::Command) -> Daemon {
    use std::io::BufRead;
    let mut child = command.spawn().expect("binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
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
            dns =
                dns.or_else(|| addr_after(&line, " on ").filter(|_| line.contains("serving DNS")));
            admin = admin.or_else(|| addr_after(&line, "admin HTTP on http://"));
        }
    }
    Daemon {
        child,
        dns: dns.expect("DNS address logged"),
        admin: admin.expect("admin address logged"),
        log: rx,
    }
}
