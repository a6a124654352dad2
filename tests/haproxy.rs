//! A real HAProxy 2.6 (`server-template` + `resolvers`) routing through marathon-dns to
//! dynamic ports: what users of the README's HAProxy snippet get. Needs `haproxy` (Debian
//! package `haproxy`; `.ci/run` installs it); skipped without it (see `require_program`).

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

struct Haproxy(Child);
impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP backend answering `served-by <port>`.
async fn backend() -> u16 {
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

/// One request through HAProxy; the backend port that served it.
async fn through(frontend: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", frontend)).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    out.split("served-by ").nth(1)?.trim().parse().ok()
}

async fn served_set(frontend: u16, n: usize) -> BTreeSet<u16> {
    let mut set = BTreeSet::new();
    for _ in 0..n {
        if let Some(p) = through(frontend).await {
            set.insert(p);
        }
    }
    set
}

async fn admin(sock: &std::path::Path, cmd: &str) -> String {
    let Ok(mut s) = UnixStream::connect(sock).await else {
        return String::new();
    };
    let _ = s.write_all(format!("{cmd}\n").as_bytes()).await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await;
    out
}

/// `show servers state <backend>`: (address, port) of every server that has one.
async fn resolved_servers(sock: &std::path::Path, backend: &str) -> BTreeSet<(String, u16)> {
    let text = admin(sock, &format!("show servers state {backend}")).await;
    let mut lines = text.lines();
    let Some(header) = lines.find(|l| l.starts_with("# be_id")) else {
        return BTreeSet::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split_whitespace().collect();
    let (Some(addr_i), Some(port_i)) = (
        cols.iter().position(|c| *c == "srv_addr"),
        cols.iter().position(|c| *c == "srv_port"),
    ) else {
        return BTreeSet::new();
    };
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > port_i && f[addr_i] != "-" && f[port_i] != "0")
        .filter_map(|f| Some((f[addr_i].to_string(), f[port_i].parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_server_template_follows_marathon() {
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.add_app(SimApp::new(
        "/big",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    let mut ports = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let p = backend().await;
        ports.push(p);
        tasks.push(
            sim.start_task_with_ports("/web", "127.0.0.1", &[], Some(vec![p]))
                .expect("task"),
        );
    }
    // 60 tasks: ~5 KB of SRV + glue, within HAProxy's accepted_payload_size 8192.
    let big: BTreeSet<(String, u16)> = (0..60u16)
        .map(|i| ("127.0.0.1".to_string(), 40_000 + i))
        .collect();
    for (_, p) in &big {
        sim.start_task_with_ports("/big", "127.0.0.1", &[], Some(vec![*p]))
            .expect("task");
    }
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("admin.sock");
    let frontend = free_port();
    let cfg = format!(
        "global\n    stats socket {sock} level admin\n\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n\
         resolvers marathon\n    nameserver dns1 {dns}\n    accepted_payload_size 8192\n    resolve_retries 3\n\
         \x20   timeout resolve 200ms\n    timeout retry 200ms\n    hold obsolete 0s\n    hold valid 1s\n\n\
         frontend fe\n    bind 127.0.0.1:{frontend}\n    default_backend be_web\n\n\
         backend be_web\n    balance roundrobin\n\
         \x20   server-template web 10 _web._tcp.marathon.local resolvers marathon resolve-prefer ipv4 init-addr none\n\n\
         backend be_big\n\
         \x20   server-template big 80 _big._tcp.marathon.local resolvers marathon resolve-prefer ipv4 init-addr none\n",
        sock = sock.display()
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).expect("config");
    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .expect("haproxy runs");
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _haproxy = Haproxy(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts"),
    );

    // All 60 big-app servers resolved from one SRV answer with full glue.
    eventually("HAProxy resolved all 60 servers", || async {
        resolved_servers(&sock, "be_big").await == big
    })
    .await;

    // Round robin over the three live backends.
    let all: BTreeSet<u16> = ports.iter().copied().collect();
    eventually("traffic reaches every task", || async {
        served_set(frontend, 9).await == all
    })
    .await;

    // Kill a task in Marathon: HAProxy stops sending it traffic (its backend still runs, so
    // only DNS can have removed it).
    sim.kill_task(&tasks[0]);
    let rest: BTreeSet<u16> = ports[1..].iter().copied().collect();
    eventually("killed task out of rotation", || async {
        served_set(frontend, 8).await == rest
    })
    .await;

    // Start a new task on a new dynamic port: it gets traffic.
    let p = backend().await;
    sim.start_task_with_ports("/web", "127.0.0.1", &[], Some(vec![p]))
        .expect("task");
    let mut now: BTreeSet<u16> = rest.clone();
    now.insert(p);
    let took = eventually("new task in rotation", || async {
        served_set(frontend, 9).await == now
    })
    .await;
    println!(
        "new task -> serving traffic through HAProxy in {:.0} ms",
        took.as_secs_f64() * 1000.0
    );

    // HAProxy saw no invalid, truncated, too big or error answers.
    let stats = admin(&sock, "show resolvers marathon").await;
    for counter in [
        "invalid",
        "too_big",
        "truncated",
        "nx",
        "refused",
        "other",
        "any_err",
    ] {
        let value = stats
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{counter}:")))
            .map(|v| v.trim().to_string());
        assert_eq!(value.as_deref(), Some("0"), "{counter} in:\n{stats}");
    }
    running.shutdown().await;
}
