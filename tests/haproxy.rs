//! A real HAProxy 2.6 (`server-template` + `resolvers`) routing through marathon-dns to
//! dynamic ports. The `example_*` tests run the files of `docs/examples/haproxy/` exactly as
//! shipped, with only their placeholders filled in (and, where a test says so, an error hold
//! shortened, which the files mark as tunable), and print the propagation times they measure
//! (`cargo test --test haproxy -- --nocapture`). Needs `haproxy` (Debian package `haproxy`;
//! `.ci/run` installs it); skipped without it (see `require_program`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Haproxy(Child);
impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request through HAProxy; the backend port that served it.
async fn through(frontend: u16) -> Option<u16> {
    served_by(frontend, "web").await
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

/// One command on HAProxy's admin socket (a plain Unix stream socket: one command per
/// connection, HAProxy closes it after the answer).
async fn admin(sock: &Path, cmd: &str) -> String {
    let sock = sock.to_path_buf();
    let cmd = format!("{cmd}\n");
    tokio::task::spawn_blocking(move || {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(cmd.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap_or_default()
}

/// `show servers state <backend>`: (address, port) of every server that has one.
async fn resolved_servers(sock: &Path, backend: &str) -> BTreeSet<(String, u16)> {
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
        let p = http_backend().await;
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
    let p = http_backend().await;
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

// ---------------------------------------------------------------------------------------------
// The shipped examples, docs/examples/haproxy/*.cfg, run as they are.

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/haproxy");

/// The backend every example defines.
const BACKEND: &str = "be_app";

/// Error holds (`hold nx|other|refused|timeout`) the tests that wait for them use instead of
/// the examples' 30 s: marked tunable in the files.
const SHORT_HOLD: &str = "3s";
const ERROR_HOLDS: [&str; 4] = ["hold nx", "hold other", "hold refused", "hold timeout"];

/// One HAProxy running one example file.
struct Example {
    sock: PathBuf,
    frontend: u16,
    log: PathBuf,
    _haproxy: Haproxy,
    _dir: tempfile::TempDir,
}

impl Drop for Example {
    fn drop(&mut self) {
        // A failing test shows what HAProxy logged (server state changes, DNS updates).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "--- last HAProxy log lines ({}):", self.log.display());
            for l in tail.iter().rev() {
                let _ = writeln!(err, "{l}");
            }
        }
    }
}

/// Change the value of a directive the example marks `(tunable` in the comment block above
/// it; anything else is refused, so the tests cannot drift from the shipped file.
fn tune(cfg: &str, directive: &str, value: &str) -> String {
    let lines: Vec<&str> = cfg.lines().collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let t = lines[i].trim_start();
            t.starts_with(directive) && t[directive.len()..].starts_with(' ')
        })
        .collect();
    assert_eq!(at.len(), 1, "{directive} once in the example");
    let i = at[0];
    let comment_block: Vec<&str> = lines[..i]
        .iter()
        .rev()
        .skip_while(|l| !l.trim_start().starts_with('#'))
        .take_while(|l| l.trim_start().starts_with('#'))
        .copied()
        .collect();
    assert!(
        comment_block.iter().any(|l| l.contains("(tunable")),
        "{directive} is not marked tunable in the example"
    );
    let indent = &lines[i][..lines[i].len() - lines[i].trim_start().len()];
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    out[i] = format!("{indent}{directive} {value}");
    out.join("\n") + "\n"
}

/// Start HAProxy on `docs/examples/haproxy/<file>` with its placeholders filled in and the
/// given tunables changed; waits until the admin socket answers.
async fn run_example(
    haproxy: &Path,
    file: &str,
    nameservers: [SocketAddr; 2],
    srv_name: &str,
    tunables: &[(&str, &str)],
) -> Example {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("admin.sock");
    let frontend = free_port();
    let shipped = std::fs::read_to_string(Path::new(EXAMPLES).join(file)).expect("example");
    let placeholders = [
        ("@ADMIN_SOCKET@", sock.display().to_string()),
        ("@NAMESERVER_1@", nameservers[0].to_string()),
        ("@NAMESERVER_2@", nameservers[1].to_string()),
        ("@FRONTEND_PORT@", frontend.to_string()),
        ("@SRV_NAME@", srv_name.to_string()),
    ];
    let mut cfg = shipped.clone();
    for (placeholder, value) in &placeholders {
        assert!(shipped.contains(placeholder), "{file} has no {placeholder}");
        cfg = cfg.replace(placeholder, value);
    }
    // Nothing else a user would have to fill in.
    let leftover: Vec<&str> = cfg
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(leftover.is_empty(), "unfilled placeholders: {leftover:?}");
    for (directive, value) in tunables {
        cfg = tune(&cfg, directive, value);
    }
    let cfg_path = dir.path().join(file);
    std::fs::write(&cfg_path, &cfg).expect("config");
    let check = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .expect("haproxy runs");
    assert!(
        check.status.success(),
        "haproxy -c {file}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = dir.path().join("haproxy.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("haproxy starts");
    let example = Example {
        sock,
        frontend,
        log,
        _haproxy: Haproxy(child),
        _dir: dir,
    };
    within("admin socket answers", Duration::from_secs(10), || async {
        admin(&example.sock, "show info")
            .await
            .contains("Name: HAProxy")
    })
    .await;
    example
}

/// Poll `check` every 50 ms until it holds or `bound` passes; how long it took.
async fn within<F, Fut>(what: &str, bound: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type SetCheck = Box<dyn Fn(&BTreeSet<u16>) -> bool + Send>;

/// Poll the ports HAProxy has from DNS every 50 ms; when each check first holds (each within
/// `bound`).
async fn first_times<const N: usize>(
    sock: &Path,
    bound: Duration,
    checks: [SetCheck; N],
) -> [Duration; N] {
    let start = Instant::now();
    let mut took: [Option<Duration>; N] = [None; N];
    loop {
        let now = in_dns(sock).await;
        for (i, check) in checks.iter().enumerate() {
            if took[i].is_none() && check(&now) {
                took[i] = Some(start.elapsed());
            }
        }
        if took.iter().all(Option::is_some) {
            return took.map(Option::unwrap_or_default);
        }
        assert!(
            start.elapsed() < bound,
            "not within {bound:?}; HAProxy has {now:?}, done: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// One server slot of `show servers state`.
#[derive(Debug, Clone)]
struct Slot {
    addr: String,
    port: u16,
    /// `srv_op_state`: 0 stopped, 2 running (UP).
    op: u8,
    /// `srv_admin_state`: bit 0x20 = maintenance because DNS gave no address.
    admin: u16,
}

async fn slots(sock: &Path, backend: &str) -> Vec<Slot> {
    let text = admin(sock, &format!("show servers state {backend}")).await;
    let mut lines = text.lines();
    let Some(header) = lines.find(|l| l.starts_with("# be_id")) else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split_whitespace().collect();
    let col = |name: &str| cols.iter().position(|c| *c == name).expect("column");
    let (a, p, o, m) = (
        col("srv_addr"),
        col("srv_port"),
        col("srv_op_state"),
        col("srv_admin_state"),
    );
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > a.max(p).max(o).max(m))
        .map(|f| Slot {
            addr: f[a].to_string(),
            port: f[p].parse().unwrap_or(0),
            op: f[o].parse().unwrap_or(0),
            admin: f[m].parse().unwrap_or(0),
        })
        .collect()
}

/// Ports of the slots that hold a task from DNS (whatever their health).
async fn in_dns(sock: &Path) -> BTreeSet<u16> {
    slots(sock, BACKEND)
        .await
        .iter()
        .filter(|s| s.admin & 0x20 == 0 && s.addr != "-" && s.port != 0)
        .map(|s| s.port)
        .collect()
}

/// Ports of the slots that hold a task and are UP.
async fn up(sock: &Path) -> BTreeSet<u16> {
    slots(sock, BACKEND)
        .await
        .iter()
        .filter(|s| s.admin & 0x20 == 0 && s.addr != "-" && s.port != 0 && s.op == 2)
        .map(|s| s.port)
        .collect()
}

/// One HTTP request through the frontend: status, and the backend port that served it.
async fn get(frontend: u16) -> Option<(u16, Option<u16>)> {
    let mut s = TcpStream::connect(("127.0.0.1", frontend)).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: app\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let port = out
        .split("served-by ")
        .nth(1)
        .and_then(|p| p.trim().parse().ok());
    Some((status, port))
}

/// How many of `n` requests each backend port served; `None` counts failures (e.g. 503).
async fn spread(frontend: u16, n: usize) -> BTreeMap<Option<u16>, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let port = get(frontend).await.and_then(|(_, p)| p);
        *m.entry(port).or_default() += 1;
    }
    m
}

/// The resolver counters of every nameserver in `show resolvers`: (nameserver, counter) → value.
async fn resolver_counters(sock: &Path) -> BTreeMap<(String, String), u64> {
    let text = admin(sock, "show resolvers marathon").await;
    let mut out = BTreeMap::new();
    let mut ns = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("nameserver ") {
            ns = rest.trim_end_matches(':').to_string();
        } else if let Some((k, v)) = t.split_once(':')
            && let Ok(v) = v.trim().parse()
        {
            out.insert((ns.clone(), k.trim().to_string()), v);
        }
    }
    out
}

fn counter_sum(c: &BTreeMap<(String, String), u64>, name: &str) -> u64 {
    c.iter()
        .filter(|((_, k), _)| k == name)
        .map(|(_, v)| *v)
        .sum()
}

/// Two marathon-dns instances against one simulated Marathon, as the examples expect.
async fn two_instances(sim: &Simulator) -> [marathon_dns::server::Running; 2] {
    [
        start_against(sim, |_| {}).await,
        start_against(sim, |_| {}).await,
    ]
}

/// Start a task of `app` with a real backend on its host port; marks it healthy when the
/// app has health checks. (task id, port)
async fn task_with_backend(sim: &Simulator, app: &str, healthy: bool) -> (String, u16) {
    let p = http_backend().await;
    let id = sim
        .start_task_with_ports(app, "127.0.0.1", &[], Some(vec![p]))
        .expect("task");
    if healthy {
        sim.set_health(&id, true);
    }
    (id, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_follows_starts_kills_moves_and_health() {
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    // Marathon health checks: marathon-dns publishes a task once its checks pass.
    sim.add_app(
        SimApp::new("/web", SimNetwork::Host, vec![SimPort::tcp(None, 0)]).with_health_checks(1),
    );
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(task_with_backend(&sim, "/web", true).await);
    }
    let dns = two_instances(&sim).await;
    let started = Instant::now();
    let hp = run_example(
        &haproxy,
        "haproxy.cfg",
        [dns[0].udp[0], dns[1].udp[0]],
        "_web._tcp.marathon.local",
        &[],
    )
    .await;
    let ports = |t: &[(String, u16)]| t.iter().map(|(_, p)| *p).collect::<BTreeSet<u16>>();

    // Round robin over every task: 3 requests each out of 9.
    let all = ports(&tasks);
    within(
        "every task UP in HAProxy",
        Duration::from_secs(15),
        || async { up(&hp.sock).await == all },
    )
    .await;
    println!(
        "haproxy.cfg: HAProxy start -> 3 tasks UP in {}",
        secs(started.elapsed())
    );
    let expect: BTreeMap<Option<u16>, usize> = all.iter().map(|p| (Some(*p), 3)).collect();
    assert_eq!(spread(hp.frontend, 9).await, expect, "round robin");

    // Start: a task is not routed before its Marathon health check passes, then at once.
    let (fresh, fresh_port) = task_with_backend(&sim, "/web", false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !in_dns(&hp.sock).await.contains(&fresh_port),
        "a task without a passing health check must not be routed"
    );
    let t0 = Instant::now();
    sim.set_health(&fresh, true);
    within(
        "healthy new task in rotation",
        Duration::from_secs(10),
        || async { up(&hp.sock).await.contains(&fresh_port) },
    )
    .await;
    let start_took = t0.elapsed();
    within(
        "healthy new task serves",
        Duration::from_secs(5),
        || async { spread(hp.frontend, 4).await.contains_key(&Some(fresh_port)) },
    )
    .await;
    println!(
        "task start (health check passes) -> UP in HAProxy {}, serving {}",
        secs(start_took),
        secs(t0.elapsed())
    );
    tasks.push((fresh, fresh_port));

    // Kill one task and fail another's health check, at the same moment. Their backends keep
    // running and pass HAProxy's checks, so only DNS can take them out.
    let (killed, killed_port) = tasks.remove(0);
    let (sick, sick_port) = tasks.remove(0);
    sim.kill_task(&killed);
    sim.set_health(&sick, false);
    let [kill_took, sick_took] = first_times(
        &hp.sock,
        Duration::from_secs(20),
        [
            Box::new(move |now: &BTreeSet<u16>| !now.contains(&killed_port)),
            Box::new(move |now: &BTreeSet<u16>| !now.contains(&sick_port)),
        ],
    )
    .await;
    println!(
        "task kill -> out of HAProxy {}; health check fails -> out {} (hold obsolete 5s + timeout resolve 1s)",
        secs(kill_took),
        secs(sick_took)
    );
    let rest = ports(&tasks);
    assert_eq!(in_dns(&hp.sock).await, rest);
    let expect: BTreeMap<Option<u16>, usize> = rest.iter().map(|p| (Some(*p), 3)).collect();
    assert_eq!(
        spread(hp.frontend, 6).await,
        expect,
        "round robin after kill"
    );

    // Move: Marathon restarts the task elsewhere (new task, new host port), the old one dies.
    let (old, old_port) = tasks.remove(0);
    sim.kill_task(&old);
    let (moved, moved_port) = task_with_backend(&sim, "/web", true).await;
    let [in_took, out_took] = first_times(
        &hp.sock,
        Duration::from_secs(20),
        [
            Box::new(move |now: &BTreeSet<u16>| now.contains(&moved_port)),
            Box::new(move |now: &BTreeSet<u16>| !now.contains(&old_port)),
        ],
    )
    .await;
    println!(
        "task moved to another port -> new port in {}, old port out {}",
        secs(in_took),
        secs(out_took)
    );
    tasks.push((moved, moved_port));
    let now = ports(&tasks);
    within(
        "traffic on the moved set",
        Duration::from_secs(5),
        || async {
            spread(hp.frontend, 2 * now.len())
                .await
                .into_keys()
                .collect::<BTreeSet<_>>()
                == now.iter().map(|p| Some(*p)).collect()
        },
    )
    .await;

    // Every answer was valid and complete.
    let c = resolver_counters(&hp.sock).await;
    for name in [
        "invalid",
        "too_big",
        "truncated",
        "nx",
        "refused",
        "other",
        "cname_error",
    ] {
        assert_eq!(counter_sum(&c, name), 0, "{name}: {c:?}");
    }
    assert!(counter_sum(&c, "valid") > 0, "{c:?}");
    for d in dns {
        d.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_scaled_to_zero_gives_503_then_recovers() {
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    let a = task_with_backend(&sim, "/web", false).await;
    let b = task_with_backend(&sim, "/web", false).await;
    let dns = two_instances(&sim).await;
    let holds: Vec<(&str, &str)> = ERROR_HOLDS.iter().map(|h| (*h, SHORT_HOLD)).collect();
    let hp = run_example(
        &haproxy,
        "haproxy.cfg",
        [dns[0].udp[0], dns[1].udp[0]],
        "_web._tcp.marathon.local",
        &holds,
    )
    .await;
    let both: BTreeSet<u16> = [a.1, b.1].into();
    within("both tasks UP", Duration::from_secs(15), || async {
        up(&hp.sock).await == both
    })
    .await;

    // Scale to zero. The backends stay up: only DNS can empty HAProxy.
    let t0 = Instant::now();
    sim.kill_task(&a.0);
    sim.kill_task(&b.0);
    within(
        "503 once the app has no task",
        Duration::from_secs(20),
        || async { matches!(get(hp.frontend).await, Some((503, _))) },
    )
    .await;
    let took = t0.elapsed();
    assert!(in_dns(&hp.sock).await.is_empty());
    let c = resolver_counters(&hp.sock).await;
    // HAProxy 2.6 counts the NODATA answer under `any_err` (not nx, refused, invalid …).
    assert!(counter_sum(&c, "any_err") > 0, "NODATA is an error: {c:?}");
    assert_eq!(counter_sum(&c, "invalid"), 0, "{c:?}");
    println!(
        "scaled to zero -> backend empty, HTTP 503 after {} (hold other {SHORT_HOLD}; 30s as shipped)",
        secs(took)
    );

    // A task starts again: back at once.
    let t0 = Instant::now();
    let c = task_with_backend(&sim, "/web", false).await;
    within("the new task serves", Duration::from_secs(10), || async {
        matches!(get(hp.frontend).await, Some((200, Some(p))) if p == c.1)
    })
    .await;
    println!(
        "scaled back to one task -> serving after {}",
        secs(t0.elapsed())
    );
    for d in dns {
        d.shutdown().await;
    }
}

/// Raw reply to one query over TCP.
async fn tcp_raw(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).await.expect("connect");
    let len = u16::try_from(query.len()).expect("fits");
    s.write_all(&len.to_be_bytes()).await.expect("write");
    s.write_all(query).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(TIMEOUT, s.read_exact(&mut len))
        .await
        .expect("in time")
        .expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.expect("reply");
    buf
}

/// An SRV query as HAProxy sends it (lower case, RD, EDNS with `accepted_payload_size`).
fn srv_query(name: &str, payload: u16) -> Vec<u8> {
    query_message(name, hickory_proto::rr::RecordType::SRV, Some(payload))
        .to_vec()
        .expect("encode")
}

/// (bytes, TC flag, ANCOUNT) of a raw reply.
fn shape(raw: &[u8]) -> (usize, bool, u16) {
    (
        raw.len(),
        raw[2] & 0x02 != 0,
        u16::from_be_bytes([raw[6], raw[7]]),
    )
}

/// How many tasks of an app fit in one SRV answer, measured on marathon-dns's real answers:
/// `tasks` tasks are started (on ports nothing listens on; they are only counted), then the
/// name is asked as HAProxy asks it over UDP (`accepted_payload_size 8192`) and over TCP
/// (65535). Prints bytes and records of each answer.
async fn capacity(sim: &Simulator, dns: &marathon_dns::server::Running, app: &str, srv: &str) {
    let tasks = 700u16;
    sim.add_app(SimApp::new(
        app,
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    for i in 0..tasks {
        sim.start_task_with_ports(app, "127.0.0.1", &[], Some(vec![20_000 + i]))
            .expect("task");
    }
    // Wait until the TCP answer is full (truncated near 64 KB): what it holds then is the
    // capacity, whether or not the last few of the 700 tasks are in yet.
    within("every task in DNS", Duration::from_secs(10), || async {
        let (len, tc, an) = shape(&tcp_raw(dns.tcp[0], &srv_query(srv, 65_535)).await);
        an == tasks || (tc && len > 60_000)
    })
    .await;
    for (transport, raw) in [
        (
            "UDP, accepted_payload_size 8192",
            udp_raw(dns.udp[0], &srv_query(srv, 8192))
                .await
                .expect("UDP reply"),
        ),
        (
            "TCP, accepted_payload_size 65535",
            tcp_raw(dns.tcp[0], &srv_query(srv, 65_535)).await,
        ),
    ] {
        let (len, tc, an) = shape(&raw);
        println!(
            "{app} with {tasks} tasks, {transport}: {len} B, TC={tc}, {an} SRV records \
             ({:.1} B per task)",
            len as f64 / f64::from(an)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_tcp_serves_an_app_too_big_for_udp() {
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    const TASKS: usize = 200;
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/big",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    let dns = two_instances(&sim).await;

    // How many tasks fit, for a short and a realistic app name.
    capacity(&sim, &dns[0], "/many", "_many._tcp.marathon.local").await;
    capacity(
        &sim,
        &dns[0],
        "/prod/payments/checkout-api",
        "_checkout-api._tcp.payments.prod.marathon.local",
    )
    .await;

    let mut ports = BTreeSet::new();
    for _ in 0..TASKS {
        ports.insert(task_with_backend(&sim, "/big", false).await.1);
    }
    let srv = "_big._tcp.marathon.local";
    within("every task in DNS", Duration::from_secs(10), || async {
        shape(&tcp_raw(dns[0].tcp[0], &srv_query(srv, 65_535)).await).2 == TASKS as u16
    })
    .await;
    // Too big for the UDP example's 8192: truncated, with only some of the tasks.
    let (udp_len, udp_tc, udp_an) = shape(
        &udp_raw(dns[0].udp[0], &srv_query(srv, 8192))
            .await
            .expect("UDP reply"),
    );
    let (tcp_len, tcp_tc, tcp_an) = shape(&tcp_raw(dns[0].tcp[0], &srv_query(srv, 65_535)).await);
    println!(
        "{TASKS} tasks: UDP/8192 -> {udp_len} B, TC={udp_tc}, {udp_an} SRV records; \
         TCP/65535 -> {tcp_len} B, TC={tcp_tc}, {tcp_an} SRV records"
    );
    assert!(udp_tc && usize::from(udp_an) < TASKS && udp_an > 0);
    assert!(!tcp_tc && usize::from(tcp_an) == TASKS);

    let started = Instant::now();
    let hp = run_example(
        &haproxy,
        "haproxy-tcp.cfg",
        [dns[0].tcp[0], dns[1].tcp[0]],
        srv,
        &[],
    )
    .await;
    within("all 200 servers UP", Duration::from_secs(20), || async {
        up(&hp.sock).await == ports
    })
    .await;
    println!(
        "haproxy-tcp.cfg: {TASKS} tasks UP in {}",
        secs(started.elapsed())
    );
    // Round robin: each of the 200 once in 200 requests.
    let expect: BTreeMap<Option<u16>, usize> = ports.iter().map(|p| (Some(*p), 1)).collect();
    assert_eq!(spread(hp.frontend, TASKS).await, expect, "round robin");
    let c = resolver_counters(&hp.sock).await;
    for name in ["invalid", "too_big", "truncated", "any_err"] {
        assert_eq!(counter_sum(&c, name), 0, "{name}: {c:?}");
    }
    for d in dns {
        d.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_survives_marathon_and_single_marathon_dns_outages() {
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    let mut all = BTreeSet::new();
    for _ in 0..3 {
        all.insert(task_with_backend(&sim, "/web", false).await.1);
    }
    let [dns1, dns2] = two_instances(&sim).await;
    // Error holds shortened to 3 s: an outage that reached HAProxy as errors, empty answers or
    // silence would empty the backend after about 5 s; the outage below lasts 10 s.
    let holds: Vec<(&str, &str)> = ERROR_HOLDS.iter().map(|h| (*h, SHORT_HOLD)).collect();
    let hp = run_example(
        &haproxy,
        "haproxy.cfg",
        [dns1.udp[0], dns2.udp[0]],
        "_web._tcp.marathon.local",
        &holds,
    )
    .await;
    within("every task UP", Duration::from_secs(15), || async {
        up(&hp.sock).await == all
    })
    .await;
    let before = resolver_counters(&hp.sock).await;

    // Marathon down: every REST call 503, the event streams cut, and the stream endpoint
    // failing too (401: the simulator has no other switch for /v2/events).
    let tries = sim.requests("/v2/events");
    sim.fail_rest(Some(503));
    sim.require_auth(Some("Bearer marathon-is-down".into()));
    sim.drop_streams();
    let outage = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut requests = 0;
    while t0.elapsed() < outage {
        assert_eq!(
            up(&hp.sock).await,
            all,
            "servers lost {} into a Marathon outage",
            secs(t0.elapsed())
        );
        let served = spread(hp.frontend, 3).await;
        assert!(!served.contains_key(&None), "a request failed: {served:?}");
        requests += 3;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        sim.requests("/v2/events") > tries,
        "marathon-dns did not even try to reconnect during the outage"
    );
    let after = resolver_counters(&hp.sock).await;
    assert_eq!(
        counter_sum(&after, "any_err"),
        counter_sum(&before, "any_err"),
        "marathon-dns answered an error during the Marathon outage: {after:?}"
    );
    assert!(counter_sum(&after, "valid") > counter_sum(&before, "valid"));
    println!(
        "Marathon outage of {}: {} of {} servers UP throughout, {requests} requests all served \
         (error holds {SHORT_HOLD})",
        secs(outage),
        all.len(),
        all.len()
    );

    // Marathon back: marathon-dns reconnects by itself (its backoff), a new task is routed.
    sim.fail_rest(None);
    sim.require_auth(None);
    let t0 = Instant::now();
    let (_, p) = task_with_backend(&sim, "/web", false).await;
    within(
        "a task started after the outage",
        Duration::from_secs(40),
        || async { up(&hp.sock).await.contains(&p) },
    )
    .await;
    all.insert(p);
    println!(
        "Marathon back -> a task started at that moment is UP in HAProxy after {} \
         (marathon-dns's reconnect backoff + timeout resolve)",
        secs(t0.elapsed())
    );

    // HAProxy takes whichever instance answers first: both must have caught up with Marathon
    // (each reconnects on its own backoff) before one of them goes.
    for dns in [dns1.udp[0], dns2.udp[0]] {
        within(
            "both marathon-dns instances caught up",
            Duration::from_secs(40),
            || async {
                let m = q(
                    dns,
                    "_web._tcp.marathon.local",
                    hickory_proto::rr::RecordType::SRV,
                )
                .await;
                srv(&m)
                    .iter()
                    .map(|(port, _)| *port)
                    .collect::<BTreeSet<u16>>()
                    == all
            },
        )
        .await;
    }
    within(
        "every task UP on both answers",
        Duration::from_secs(15),
        || async { up(&hp.sock).await == all },
    )
    .await;

    // One marathon-dns instance down: the other one answers, nothing changes.
    dns1.shutdown().await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        assert_eq!(up(&hp.sock).await, all, "one marathon-dns instance down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("one of two marathon-dns instances down for 6 s: all servers stayed UP");

    // Every instance down: HAProxy keeps the servers for `hold timeout` after the last valid
    // answer, then removes them all.
    dns2.shutdown().await;
    let t0 = Instant::now();
    within("backend emptied", Duration::from_secs(20), || async {
        in_dns(&hp.sock).await.is_empty()
    })
    .await;
    let took = t0.elapsed();
    assert!(matches!(get(hp.frontend).await, Some((503, _))));
    println!(
        "every marathon-dns instance down -> backend emptied after {} (hold timeout \
         {SHORT_HOLD}; 30s as shipped), then 503",
        secs(took)
    );
}

/// The guide shows the UDP example verbatim and every line by which the `tcp@` example
/// differs from it, so what users read is what the tests run. (Needs no HAProxy.)
#[test]
fn guide_shows_the_examples_as_tested() {
    let read = |p: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).expect("file")
    };
    let guide = read("docs/haproxy.md");
    let udp = read("docs/examples/haproxy/haproxy.cfg");
    let tcp = read("docs/examples/haproxy/haproxy-tcp.cfg");
    assert!(
        guide.contains(&format!("```haproxy\n{udp}```")),
        "docs/haproxy.md must show docs/examples/haproxy/haproxy.cfg verbatim"
    );
    let directives = |cfg: &str| -> BTreeSet<String> {
        cfg.lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let only_tcp: BTreeSet<String> = directives(&tcp)
        .difference(&directives(&udp))
        .cloned()
        .collect();
    let after = guide
        .split("docs/examples/haproxy/haproxy-tcp.cfg`: the same file, except for these lines:")
        .nth(1)
        .expect("the tcp@ section");
    let block = after
        .split("```haproxy\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the tcp@ block");
    assert_eq!(directives(block), only_tcp, "the guide's tcp@ lines");
    // The directive a line sets: its keyword, and the name for the named ones.
    let key = |l: &String| {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w[0] {
            "nameserver" | "server-template" => format!("{} {}", w[0], w[1]),
            _ => w[0].to_string(),
        }
    };
    let only_udp: BTreeSet<String> = directives(&udp)
        .difference(&directives(&tcp))
        .map(key)
        .collect();
    let replaced: BTreeSet<String> = only_tcp.iter().map(key).collect();
    assert_eq!(
        only_udp, replaced,
        "haproxy-tcp.cfg changes no other directive"
    );
}
