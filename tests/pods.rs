//! Pods against the simulated Marathon, over real UDP and TCP sockets: host and container
//! networking, health, scaling, deletion, a pod/app name clash, and resyncs that heal missed
//! pod events.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use marathon_dns::sim::{
    SimApp, SimContainer, SimEndpoint, SimNetwork, SimPod, SimPort, Simulator,
};

/// `/prod/db`, host networking: `pg` (tcp) and `metrics` (`http`, which means tcp), in two
/// containers.
fn host_pod() -> SimPod {
    SimPod::new(
        "/prod/db",
        SimNetwork::Host,
        vec![
            SimContainer::new("postgres", vec![SimEndpoint::host("pg")]),
            SimContainer::new(
                "exporter",
                vec![SimEndpoint::host("metrics").with_protocols(&["http"])],
            ),
        ],
    )
}

/// `/prod/cache`, container networking: `redis` on 6379, `stats` on 8125 over udp and tcp.
fn container_pod() -> SimPod {
    SimPod::new(
        "/prod/cache",
        SimNetwork::Container,
        vec![
            SimContainer::new("redis", vec![SimEndpoint::container("redis", 6379)]),
            SimContainer::new(
                "statsd",
                vec![SimEndpoint::container("stats", 8125).with_protocols(&["udp", "tcp"])],
            ),
        ],
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The allocated host port of `endpoint` in each of a pod's instances.
fn allocated(sim: &Simulator, pod: &str, endpoint: &str) -> Vec<u16> {
    let mut v: Vec<u16> = sim
        .pod_instances(pod)
        .iter()
        .flat_map(|i| i.containers.iter().flat_map(|c| c.allocated.clone()))
        .filter(|(n, _)| n == endpoint)
        .map(|(_, p)| p)
        .collect();
    v.sort();
    v
}

async fn srv_ports(dns: std::net::SocketAddr, name: &str) -> Vec<u16> {
    let mut v: Vec<u16> = srv(&q(dns, name, RecordType::SRV).await)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

async fn a_records(dns: std::net::SocketAddr, name: &str) -> Vec<String> {
    rdata(&q(dns, name, RecordType::A).await, RecordType::A)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_networking_pod_initial_sync_scale_up_and_down() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(host_pod());
    sim.start_pod_instance("/prod/db", "127.0.0.11", &[], None)
        .expect("instance");
    sim.start_pod_instance("/prod/db", "127.0.0.12", &[], None)
        .expect("instance");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];

    // Initial sync: A at the pod's name (agent addresses), one SRV name per endpoint with
    // the allocated host ports, targets `<instance label>.<pod name>` with glue.
    assert_eq!(
        a_records(dns, "db.prod.marathon.local").await,
        ["127.0.0.11", "127.0.0.12"]
    );
    let m = q(dns, "_pg._tcp.db.prod.marathon.local", RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(
        srv_ports(dns, "_pg._tcp.db.prod.marathon.local").await,
        allocated(&sim, "/prod/db", "pg")
    );
    assert_full_glue(&m);
    for (_, target) in srv(&m) {
        let label = target.split('.').next().expect("label");
        assert_eq!(label.len(), 8, "{target}");
        assert!(target.ends_with(".db.prod.marathon.local."), "{target}");
    }
    // As for an app's first port of a protocol, the first endpoint is also at the leaf name.
    assert_eq!(
        srv_ports(dns, "_db._tcp.prod.marathon.local").await,
        allocated(&sim, "/prod/db", "pg")
    );
    // `http` is TCP; there is no UDP name.
    let t = tcp(
        running.tcp[0],
        &query_message(
            "_metrics._tcp.db.prod.marathon.local",
            RecordType::SRV,
            None,
        ),
    )
    .await;
    assert_eq!(srv(&t).len(), 2);
    assert_full_glue(&t);
    let mut ports: Vec<u16> = srv(&t).into_iter().map(|(p, _)| p).collect();
    ports.sort();
    assert_eq!(ports, allocated(&sim, "/prod/db", "metrics"));
    assert_eq!(
        q(dns, "_metrics._udp.db.prod.marathon.local", RecordType::SRV)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );

    // Scale up, by events only.
    sim.scale_pod("/prod/db", 3, "127.0.0.13", &[]);
    eventually("scaled up to 3", || async {
        a_records(dns, "db.prod.marathon.local").await == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    })
    .await;
    assert_eq!(
        srv_ports(dns, "_pg._tcp.db.prod.marathon.local").await,
        allocated(&sim, "/prod/db", "pg")
    );

    // Scale down (the newest goes), then one instance killed outright.
    sim.scale_pod("/prod/db", 2, "127.0.0.13", &[]);
    eventually("scaled down to 2", || async {
        a_records(dns, "db.prod.marathon.local").await == ["127.0.0.11", "127.0.0.12"]
    })
    .await;
    let first = sim.pod_instance_ids("/prod/db")[0].clone();
    sim.kill_pod_instance(&first);
    eventually("killed instance gone", || async {
        srv_ports(dns, "_pg._tcp.db.prod.marathon.local").await == allocated(&sim, "/prod/db", "pg")
            && a_records(dns, "db.prod.marathon.local").await == ["127.0.0.12"]
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_networking_pod_created_after_start() {
    let sim = Simulator::start().await.expect("sim");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];

    // `pod_created_event` carries `/v2/pods` only: every pod is re-read.
    sim.add_pod(container_pod());
    sim.start_pod_instance("/prod/cache", "127.0.0.21", &[ip("10.9.0.5")], None)
        .expect("instance");
    eventually("pod published", || async {
        a_records(dns, "cache.prod.marathon.local").await == ["10.9.0.5"]
    })
    .await;
    // The instance's own address and the endpoints' container ports, never the agent.
    let m = q(
        dns,
        "_redis._tcp.cache.prod.marathon.local",
        RecordType::SRV,
    )
    .await;
    assert_eq!(srv(&m).len(), 1);
    assert_eq!(srv(&m)[0].0, 6379);
    assert_full_glue(&m);
    assert!(
        m.additionals
            .iter()
            .all(|r| r.data.to_string() == "10.9.0.5")
    );
    for proto in ["_udp", "_tcp"] {
        assert_eq!(
            srv_ports(dns, &format!("_stats.{proto}.cache.prod.marathon.local")).await,
            [8125],
            "{proto}"
        );
    }

    sim.start_pod_instance("/prod/cache", "127.0.0.22", &[ip("10.9.0.6")], None)
        .expect("instance");
    eventually("second instance", || async {
        a_records(dns, "cache.prod.marathon.local").await == ["10.9.0.5", "10.9.0.6"]
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_health_decides_eligibility() {
    let sim = Simulator::start().await.expect("sim");
    let pod = SimPod::new(
        "/prod/web",
        SimNetwork::Host,
        vec![
            SimContainer::new("nginx", vec![SimEndpoint::host("http")]).with_health_check(),
            SimContainer::new("sidecar", vec![]),
        ],
    );
    sim.add_pod(pod);
    let healthy = sim
        .start_pod_instance("/prod/web", "127.0.0.31", &[], None)
        .expect("instance");
    sim.set_pod_health(&healthy, true);
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    assert_eq!(
        a_records(dns, "web.prod.marathon.local").await,
        ["127.0.0.31"]
    );

    // A new instance's check has not reported: not published until it is healthy.
    let fresh = sim
        .start_pod_instance("/prod/web", "127.0.0.32", &[], None)
        .expect("instance");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a_records(dns, "web.prod.marathon.local").await,
        ["127.0.0.31"]
    );
    sim.set_pod_health(&fresh, true);
    eventually("healthy instance published", || async {
        a_records(dns, "web.prod.marathon.local").await == ["127.0.0.31", "127.0.0.32"]
    })
    .await;
    // Turning unhealthy withdraws it at once.
    sim.set_pod_health(&healthy, false);
    eventually("unhealthy instance withdrawn", || async {
        srv_ports(dns, "_http._tcp.web.prod.marathon.local")
            .await
            .len()
            == 1
            && a_records(dns, "web.prod.marathon.local").await == ["127.0.0.32"]
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_disappears() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(host_pod());
    sim.start_pod_instance("/prod/db", "127.0.0.41", &[], None)
        .expect("instance");
    sim.add_app(SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    sim.start_task("/prod/web", "127.0.0.42", &[])
        .expect("task");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    assert_eq!(
        srv(&q(dns, "_pg._tcp.db.prod.marathon.local", RecordType::SRV).await).len(),
        1
    );

    sim.remove_pod("/prod/db");
    eventually("pod gone", || async {
        q(dns, "db.prod.marathon.local", RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NXDomain
    })
    .await;
    assert_eq!(
        q(dns, "_pg._tcp.db.prod.marathon.local", RecordType::SRV)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    // The app next to it is untouched.
    assert_eq!(
        a_records(dns, "web.prod.marathon.local").await,
        ["127.0.0.42"]
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_app_on_one_name_are_merged() {
    let sim = Simulator::start().await.expect("sim");
    // `/team/api.v2` (a pod) and `/team/api-v2` (an app) both map to `api-v2.team`.
    sim.add_app(SimApp::new(
        "/team/api-v2",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    sim.start_task("/team/api-v2", "127.0.0.51", &[])
        .expect("task");
    sim.add_pod(SimPod::new(
        "/team/api.v2",
        SimNetwork::Host,
        vec![SimContainer::new("api", vec![SimEndpoint::host("http")])],
    ));
    sim.start_pod_instance("/team/api.v2", "127.0.0.52", &[], None)
        .expect("instance");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    assert_eq!(
        a_records(dns, "api-v2.team.marathon.local").await,
        ["127.0.0.51", "127.0.0.52"]
    );
    let m = q(
        dns,
        "_http._tcp.api-v2.team.marathon.local",
        RecordType::SRV,
    )
    .await;
    assert_eq!(srv(&m).len(), 2);
    assert_full_glue(&m);

    // Each side still follows its own events.
    let instance = sim.pod_instance_ids("/team/api.v2")[0].clone();
    sim.kill_pod_instance(&instance);
    eventually("pod side withdrawn, app side kept", || async {
        a_records(dns, "api-v2.team.marathon.local").await == ["127.0.0.51"]
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_resync_heals_missed_pod_events() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(host_pod());
    let first = sim
        .start_pod_instance("/prod/db", "127.0.0.61", &[], None)
        .expect("instance");
    let running = start_against(&sim, |s| s.resync_interval = Duration::from_millis(300)).await;
    let dns = running.udp[0];
    assert_eq!(
        a_records(dns, "db.prod.marathon.local").await,
        ["127.0.0.61"]
    );

    // Events lost (Marathon ≤ 1.7 and slow consumers): a new pod, an instance replaced.
    sim.suppress_events(true);
    sim.add_pod(container_pod());
    sim.start_pod_instance("/prod/cache", "127.0.0.62", &[ip("10.9.0.7")], None)
        .expect("instance");
    sim.kill_pod_instance(&first);
    sim.start_pod_instance("/prod/db", "127.0.0.63", &[], None)
        .expect("instance");
    eventually("missed pod events healed", || async {
        a_records(dns, "cache.prod.marathon.local").await == ["10.9.0.7"]
            && a_records(dns, "db.prod.marathon.local").await == ["127.0.0.63"]
            && srv_ports(dns, "_pg._tcp.db.prod.marathon.local").await
                == allocated(&sim, "/prod/db", "pg")
    })
    .await;
    // A deletion missed too.
    sim.remove_pod("/prod/cache");
    eventually("missed deletion healed", || async {
        q(dns, "cache.prod.marathon.local", RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NXDomain
    })
    .await;
    assert!(running.status.stream_connected());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_creation_was_missed_appears_with_its_first_instance() {
    let sim = Simulator::start().await.expect("sim");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    sim.suppress_events(true);
    sim.add_pod(host_pod());
    sim.suppress_events(false);
    // Its containers' `status_update_event`s name an id that is not an app: it is tried as a
    // pod, without waiting for a resync.
    sim.start_pod_instance("/prod/db", "127.0.0.71", &[], None)
        .expect("instance");
    eventually("pod found through its task events", || async {
        a_records(dns, "db.prod.marathon.local").await == ["127.0.0.71"]
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pods_api_keeps_the_pods_and_still_resyncs_apps() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(host_pod());
    sim.start_pod_instance("/prod/db", "127.0.0.81", &[], None)
        .expect("instance");
    sim.add_app(SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    let running = start_against(&sim, |s| s.resync_interval = Duration::from_millis(200)).await;
    let dns = running.udp[0];
    // The pods API fails (a proxy, an ACL) and events are lost: resyncs go on for apps, the
    // pods keep their records.
    sim.fail_pods_api(Some(500));
    sim.suppress_events(true);
    sim.start_task("/prod/web", "127.0.0.82", &[])
        .expect("task");
    eventually("app healed by resync despite the pods failure", || async {
        a_records(dns, "web.prod.marathon.local").await == ["127.0.0.82"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a_records(dns, "db.prod.marathon.local").await,
        ["127.0.0.81"]
    );
    // When the pods API answers again, what was missed meanwhile is healed.
    sim.start_pod_instance("/prod/db", "127.0.0.83", &[], None)
        .expect("instance");
    sim.fail_pods_api(None);
    eventually("pods healed once readable", || async {
        a_records(dns, "db.prod.marathon.local").await == ["127.0.0.81", "127.0.0.83"]
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_networking_pod_publishes_agent_and_host_ports() {
    let sim = Simulator::start().await.expect("sim");
    let mut web = SimEndpoint::container("web", 80);
    web.host_port = Some(0);
    sim.add_pod(SimPod::new(
        "/bridged",
        SimNetwork::Bridge,
        vec![SimContainer::new("nginx", vec![web])],
    ));
    sim.start_pod_instance(
        "/bridged",
        "127.0.0.91",
        &[ip("172.17.0.9")],
        Some(vec![31777]),
    )
    .expect("instance");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    // The agent and the host port: the bridge address and container port are not reachable.
    assert_eq!(
        a_records(dns, "bridged.marathon.local").await,
        ["127.0.0.91"]
    );
    assert_eq!(
        srv_ports(dns, "_web._tcp.bridged.marathon.local").await,
        [31777]
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_includes_pods() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(container_pod());
    sim.start_pod_instance("/prod/cache", "127.0.0.95", &[ip("10.9.0.9")], None)
        .expect("instance");
    let zone = tokio::time::timeout(
        TIMEOUT,
        marathon_dns::server::export_once(&settings(vec![sim.url()])),
    )
    .await
    .expect("in time")
    .expect("exported");
    for wanted in [
        "cache.prod.marathon.local.",
        "_redis._tcp.cache.prod.marathon.local.",
    ] {
        assert!(
            zone.lines().any(|l| l.starts_with(wanted)),
            "{wanted} in:\n{zone}"
        );
    }
    assert!(zone.contains("10.9.0.9"), "{zone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fails_to_parse_keeps_what_was_known() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(host_pod());
    sim.start_pod_instance("/prod/db", "127.0.0.101", &[], None)
        .expect("instance");
    sim.add_pod(container_pod());
    let running = start_against(&sim, |s| s.resync_interval = Duration::from_millis(200)).await;
    let dns = running.udp[0];
    assert_eq!(
        a_records(dns, "db.prod.marathon.local").await,
        ["127.0.0.101"]
    );

    // `/prod/db` turns unparsable and changes meanwhile (events lost): resyncs keep its
    // records as they were, while the other pod, parsed, follows.
    sim.malform_pod("/prod/db", true);
    sim.suppress_events(true);
    sim.start_pod_instance("/prod/db", "127.0.0.102", &[], None)
        .expect("instance");
    sim.start_pod_instance("/prod/cache", "127.0.0.103", &[ip("10.9.0.10")], None)
        .expect("instance");
    eventually("the parsable pod synced by a resync", || async {
        a_records(dns, "cache.prod.marathon.local").await == ["10.9.0.10"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a_records(dns, "db.prod.marathon.local").await,
        ["127.0.0.101"],
        "kept as known"
    );
    // An event about it re-reads it, fails, and keeps it too.
    sim.suppress_events(false);
    let mut malformed = host_pod();
    malformed.malformed = true;
    sim.add_pod(malformed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a_records(dns, "db.prod.marathon.local").await,
        ["127.0.0.101"]
    );
    // Parsable again: healed.
    sim.malform_pod("/prod/db", false);
    eventually("healed once parsable", || async {
        a_records(dns, "db.prod.marathon.local").await == ["127.0.0.101", "127.0.0.102"]
    })
    .await;
    running.shutdown().await;
}

struct Haproxy(std::process::Child);
impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn served_set(frontend: u16, n: usize) -> std::collections::BTreeSet<u16> {
    let mut set = std::collections::BTreeSet::new();
    for _ in 0..n {
        if let Some(p) = served_by(frontend, "db").await {
            set.insert(p);
        }
    }
    set
}

/// HAProxy's `server-template` on a pod endpoint's SRV name: traffic reaches every instance's
/// allocated host port and follows kills and starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_server_template_on_a_pod_endpoint() {
    use std::process::{Command, Stdio};
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    sim.add_pod(SimPod::new(
        "/prod/db",
        SimNetwork::Host,
        vec![
            SimContainer::new(
                "api",
                vec![SimEndpoint::host("api").with_protocols(&["http"])],
            ),
            SimContainer::new("admin", vec![SimEndpoint::host("admin")]),
        ],
    ));
    let mut ports = Vec::new();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let p = http_backend().await;
        ports.push(p);
        // `api` is served by a real backend; `admin` gets a port nobody listens on.
        instances.push(
            sim.start_pod_instance("/prod/db", "127.0.0.1", &[], Some(vec![p, free_port()]))
                .expect("instance"),
        );
    }
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];

    let dir = tempfile::tempdir().expect("tempdir");
    let frontend = free_port();
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n\
         resolvers marathon\n    nameserver dns1 {dns}\n    accepted_payload_size 8192\n    resolve_retries 3\n\
         \x20   timeout resolve 200ms\n    timeout retry 200ms\n    hold obsolete 0s\n    hold valid 1s\n\n\
         frontend fe\n    bind 127.0.0.1:{frontend}\n    default_backend be_db\n\n\
         backend be_db\n    balance roundrobin\n\
         \x20   server-template db 10 _api._tcp.db.prod.marathon.local resolvers marathon resolve-prefer ipv4 init-addr none\n",
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
    let all: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    eventually("traffic reaches every pod instance", || async {
        served_set(frontend, 6).await == all
    })
    .await;

    // A killed instance leaves the rotation (its backend still runs: only DNS removed it).
    sim.kill_pod_instance(&instances[0]);
    let rest: std::collections::BTreeSet<u16> = [ports[1]].into_iter().collect();
    eventually("killed instance out of rotation", || async {
        served_set(frontend, 6).await == rest
    })
    .await;
    // A new instance on a new port gets traffic.
    let p = http_backend().await;
    sim.start_pod_instance("/prod/db", "127.0.0.1", &[], Some(vec![p, free_port()]))
        .expect("instance");
    let mut now = rest.clone();
    now.insert(p);
    let took = eventually("new instance in rotation", || async {
        served_set(frontend, 6).await == now
    })
    .await;
    println!(
        "new pod instance -> serving traffic through HAProxy in {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    running.shutdown().await;
}
