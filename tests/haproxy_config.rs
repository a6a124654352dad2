//! `marathon-dns haproxy-config` against the simulated Marathon: the generated configuration
//! (frontends on service ports, SRV backends, marathon-lb labels) is deterministic and valid
//! for the real HAProxy (`haproxy -c`), and `--watch` rewrites and reloads only for definition
//! changes, never for task starts and kills.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_marathon-dns");

fn cluster(sim: &Simulator) {
    sim.add_app(
        SimApp::new(
            "/prod/web",
            SimNetwork::Host,
            vec![SimPort::tcp(Some("http"), 0), SimPort::tcp(None, 0)],
        )
        .with_instances(3)
        .with_label("HAPROXY_0_VHOST", "web.example.com,www.example.com")
        .with_label("HAPROXY_0_BALANCE", "leastconn"),
    );
    sim.add_app(
        SimApp::new(
            "/prod/api",
            SimNetwork::Bridge,
            vec![SimPort::tcp(Some("api"), 8080)],
        )
        .with_label("HAPROXY_0_MODE", "http")
        .with_label("HAPROXY_0_PATH", "/api"),
    );
    sim.add_app(SimApp::new(
        "/infra/dns",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0).with_protocol("udp")],
    ));
    sim.add_app(
        SimApp::new(
            "/internal/db",
            SimNetwork::Host,
            vec![SimPort::tcp(None, 0)],
        )
        .with_label("HAPROXY_GROUP", "internal"),
    );
    for id in ["/prod/web", "/prod/api", "/internal/db"] {
        sim.start_task(id, "127.0.0.1", &[]).expect("task");
    }
}

/// Run `haproxy-config` once against `sim` (off the async workers, which serve the
/// simulator).
async fn generate(sim: &Simulator, extra: &[&str]) -> String {
    let url = sim.url();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .args(["haproxy-config", "--marathon", &url])
            .args(&extra)
            .output()
            .expect("haproxy-config runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_config_follows_service_ports_and_labels_and_is_valid() {
    let sim = Simulator::start().await.expect("sim");
    cluster(&sim);
    const ARGS: &[&str] = &["--nameserver", "127.0.0.1:8053", "--http-port", "18080"];
    let text = generate(&sim, ARGS).await;
    // Service ports are Marathon's: /prod/web got 10000 and 10001, /prod/api 10002.
    for line in [
        "bind 127.0.0.1:10000",
        "server-template t 6 _http._tcp.web.prod.marathon.local resolvers marathon",
        "bind 127.0.0.1:10001",
        "server-template t 6 _port1._tcp.web.prod.marathon.local",
        "balance leastconn",
        "acl host_prod_web_10000 hdr(host),field(1,:) -i web.example.com www.example.com",
        "acl path_prod_api_10002 path_beg /api",
        "use_backend prod_api_10002 if path_prod_api_10002",
        "bind 127.0.0.1:18080",
        "server-template t 4 _api._tcp.api.prod.marathon.local",
        "UDP only",
        "server-template t 4 _db._tcp.internal.marathon.local",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Deterministic: same state, same bytes.
    assert_eq!(text, generate(&sim, ARGS).await);
    // --group keeps only that group.
    let grouped = generate(
        &sim,
        &[
            "--group",
            "internal",
            "--nameserver",
            "tcp@127.0.0.1:8053",
            "--http-port",
            "18080",
        ],
    )
    .await;
    assert!(grouped.contains("_db._tcp.internal.marathon.local"));
    assert!(!grouped.contains("web.prod"));
    assert!(grouped.contains("accepted_payload_size 65535"));

    if let Some(haproxy) = require_program("haproxy", "haproxy") {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, cfg) in [("all.cfg", &text), ("grouped.cfg", &grouped)] {
            let path = dir.path().join(name);
            std::fs::write(&path, cfg).expect("write");
            let check = Command::new(&haproxy)
                .arg("-c")
                .arg("-f")
                .arg(&path)
                .output()
                .expect("haproxy -c");
            assert!(
                check.status.success(),
                "haproxy -c {name}: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

/// Kills the watcher on drop.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn reloads(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_for_definitions_never_for_tasks() {
    let sim = Simulator::start().await.expect("sim");
    cluster(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("haproxy.cfg");
    let log = dir.path().join("reloads.log");
    let _watcher = Watcher(
        Command::new(BIN)
            .args(["haproxy-config", "--marathon", &sim.url(), "--watch"])
            .arg("--output")
            .arg(&cfg)
            .arg("--reload-cmd")
            .arg(format!("echo reload >> '{}'", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watcher starts"),
    );
    eventually("the first configuration", || async { reloads(&log) == 1 }).await;
    let first = std::fs::read_to_string(&cfg).expect("written");
    assert!(first.contains("_http._tcp.web.prod.marathon.local"));

    // 100 task kills and starts: DNS carries them, the configuration stays.
    for i in 0..50 {
        let victim = sim.tasks_of("/prod/web").first().map(|t| t.id.clone());
        if let Some(t) = victim {
            sim.kill_task(&t);
        }
        sim.start_task("/prod/web", &format!("127.0.0.{}", 10 + i % 5), &[])
            .expect("task");
    }
    // Then one definition change; events are handled in order, so once its reload is seen,
    // every task event before it has been too.
    sim.add_app(SimApp::new(
        "/prod/new",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    eventually("the reload for the new app", || async {
        std::fs::read_to_string(&cfg).is_ok_and(|c| c.contains("_new._tcp.prod.marathon.local"))
            && reloads(&log) >= 2
    })
    .await;
    assert_eq!(
        reloads(&log),
        2,
        "one reload at start, one for the new app, none for 100 task events"
    );
    println!("100 task events: 0 reloads; a new app: 1 reload");
}

/// Prints HAProxy's log and the configuration if the test fails.
struct ShowOnFailure<'a>(&'a Path, &'a str);

impl Drop for ShowOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "configuration:\n{}\nHAProxy log:\n{}",
                self.1,
                std::fs::read_to_string(self.0).unwrap_or_default()
            );
        }
    }
}

/// HAProxy running a generated configuration, killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The generated configuration with the real HAProxy and marathon-dns: traffic reaches every
/// task through the app's service port and through its virtual host on the shared HTTP
/// frontend, and a killed task leaves rotation without any reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_config_routes_through_service_ports_and_virtual_hosts() {
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    let (service_port, http_port) = (free_port(), free_port());
    let mut http = SimPort::tcp(Some("http"), 0);
    http.service_port = service_port;
    sim.add_app(
        SimApp::new("/prod/web", SimNetwork::Host, vec![http])
            .with_instances(2)
            .with_label("HAPROXY_0_VHOST", "web.example.com"),
    );
    let backends = [http_backend().await, http_backend().await];
    let mut tasks = Vec::new();
    for port in backends {
        tasks.push(
            sim.start_task_with_ports("/prod/web", "127.0.0.1", &[], Some(vec![port]))
                .expect("task"),
        );
    }
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0].to_string();
    let text = generate(
        &sim,
        &["--nameserver", &dns, "--http-port", &http_port.to_string()],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, &text).expect("write");
    let _haproxy = Haproxy(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).expect("log"))
            .spawn()
            .expect("haproxy starts"),
    );
    let want: std::collections::BTreeSet<u16> = backends.into_iter().collect();
    let log = dir.path().join("haproxy.log");
    let _show = ShowOnFailure(&log, &text);
    let took = eventually("both tasks behind the service port", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.extend(served_by(service_port, "anything").await);
        }
        seen == want
    })
    .await;
    println!("service port: both tasks in rotation {took:?} after HAProxy started");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.extend(served_by(http_port, "web.example.com").await);
    }
    assert_eq!(seen, want, "the virtual host reaches every task");
    assert_eq!(
        served_by(http_port, "other.example.com").await,
        None,
        "another host name is not routed"
    );
    // A task killed in Marathon leaves rotation through DNS (hold obsolete 5 s), no reload.
    sim.kill_task(&tasks[0]);
    let took = eventually("the killed task out of rotation", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.extend(served_by(service_port, "x").await);
        }
        seen == std::collections::BTreeSet::from([backends[1]])
    })
    .await;
    println!(
        "killed task out of rotation after {took:?} (hold obsolete 5 s + timeout resolve 1 s)"
    );
    running.shutdown().await;
}
