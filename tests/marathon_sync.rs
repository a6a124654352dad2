//! The server against the simulated Marathon, over real UDP and TCP sockets: answers after
//! every kind of event, after a dropped stream, after lost events, across a standby redirect,
//! through Marathon failures.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use marathon_dns::marathon::client::Auth;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

fn web_app() -> SimApp {
    SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    )
}

async fn srv_count(server: std::net::SocketAddr, name: &str) -> usize {
    srv(&q(server, name, RecordType::SRV).await).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_then_every_event_kind() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let t1 = sim
        .start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    sim.start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];

    // Initial snapshot: SRV with full glue, over UDP and TCP alike.
    let m = q(dns, "_web._tcp.prod.marathon.local", RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(srv(&m).len(), 2);
    assert_full_glue(&m);
    let t = tcp(
        running.tcp[0],
        &query_message("_http._tcp.web.prod.marathon.local", RecordType::SRV, None),
    )
    .await;
    assert_eq!(srv(&t).len(), 2);
    assert_full_glue(&t);
    assert_eq!(
        rdata(
            &q(dns, "web.prod.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["127.0.0.11", "127.0.0.12"]
    );

    // status_update_event TASK_RUNNING: a new task appears.
    let started = std::time::Instant::now();
    let t3 = sim
        .start_task("/prod/web", "127.0.0.13", &[])
        .expect("task");
    eventually("new task visible", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 3
    })
    .await;
    let latency = started.elapsed();
    println!(
        "event -> visible in DNS: {:.1} ms (task start)",
        latency.as_secs_f64() * 1000.0
    );

    // status_update_event TASK_KILLED: it goes.
    let started = std::time::Instant::now();
    sim.kill_task(&t1);
    eventually("killed task gone", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 2
    })
    .await;
    println!(
        "event -> visible in DNS: {:.1} ms (task kill)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let a = rdata(
        &q(dns, "web.prod.marathon.local", RecordType::A).await,
        RecordType::A,
    );
    assert_eq!(a, ["127.0.0.12", "127.0.0.13"]);

    // api_post_event: a new app is fetched and published.
    sim.add_app(SimApp::new(
        "/jobs",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0).with_protocol("udp,tcp")],
    ));
    sim.start_task("/jobs", "127.0.0.21", &[]).expect("task");
    eventually("new app published", || async {
        srv_count(dns, "_jobs._udp.marathon.local").await == 1
            && srv_count(dns, "_jobs._tcp.marathon.local").await == 1
    })
    .await;

    // app_terminated_event: the app's names vanish (NXDOMAIN), the zone stays.
    sim.remove_app("/jobs");
    eventually("removed app is NXDOMAIN", || async {
        q(dns, "jobs.marathon.local", RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NXDomain
    })
    .await;
    let _ = t3;
    assert_eq!(running.status.malformed_events(), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_gate_publication() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app().with_health_checks(1));
    let t1 = sim
        .start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    sim.set_health(&t1, true);
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    assert_eq!(srv_count(dns, "_web._tcp.prod.marathon.local").await, 1);

    // A new task is not published until its health check passes.
    let t2 = sim
        .start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    // Events are applied in order: once a later event's change is visible, t2's was applied.
    sim.add_app(SimApp::new(
        "/marker",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/marker", "127.0.0.99", &[]).expect("task");
    eventually("a later event applied", || async {
        srv_count(dns, "_marker._tcp.marathon.local").await == 1
    })
    .await;
    assert_eq!(
        srv_count(dns, "_web._tcp.prod.marathon.local").await,
        1,
        "unchecked task must wait"
    );
    sim.set_health(&t2, true);
    let took = eventually("healthy task published", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 2
    })
    .await;
    println!(
        "event -> visible in DNS: {:.1} ms (health up)",
        took.as_secs_f64() * 1000.0
    );

    // health_status_changed_event alive=false removes it at once.
    sim.set_health(&t1, false);
    let took = eventually("unhealthy task removed", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 1
    })
    .await;
    println!(
        "event -> visible in DNS: {:.1} ms (health down)",
        took.as_secs_f64() * 1000.0
    );
    running.shutdown().await;

    // --include-unhealthy publishes it anyway.
    let running = start_against(&sim, |s| s.include_unhealthy = true).await;
    assert_eq!(
        srv_count(running.udp[0], "_web._tcp.prod.marathon.local").await,
        2
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_reconnects_and_resyncs() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let t1 = sim
        .start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];
    let streams_before = sim.requests("/v2/events");

    // Changes made while the stream is down (no events delivered) …
    sim.suppress_events(true);
    sim.drop_streams();
    sim.kill_task(&t1);
    sim.start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    sim.suppress_events(false);
    // … are healed by the full resync that follows the reconnect.
    eventually("resynced after reconnect", || async {
        rdata(
            &q(dns, "web.prod.marathon.local", RecordType::A).await,
            RecordType::A,
        ) == ["127.0.0.12"]
    })
    .await;
    assert!(
        sim.requests("/v2/events") > streams_before,
        "stream was reopened"
    );
    // And the new stream delivers events again.
    sim.start_task("/prod/web", "127.0.0.13", &[])
        .expect("task");
    eventually("events flow on the new stream", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 2
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_events_are_healed_by_periodic_resync() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let running = start_against(&sim, |s| s.resync_interval = Duration::from_millis(300)).await;
    let dns = running.udp[0];
    assert_eq!(
        q(dns, "web.prod.marathon.local", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );

    // Marathon ≤ 1.7 silently drops events for slow consumers: the stream stays up.
    sim.suppress_events(true);
    sim.start_task("/prod/web", "127.0.0.14", &[])
        .expect("task");
    let took = eventually("lost event healed", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 1
    })
    .await;
    assert!(running.status.stream_connected());
    println!(
        "lost event healed by periodic resync after {:.0} ms (interval 300 ms)",
        took.as_secs_f64() * 1000.0
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_redirect_is_followed_with_credentials() {
    let leader = Simulator::start().await.expect("leader");
    let standby = leader.standby().await.expect("standby");
    let auth = Auth::basic("dns:s3cret").expect("auth");
    leader.require_auth(Some(auth.header_value()));
    standby.require_auth(Some(auth.header_value()));
    // The standby cannot name the leader, so the client falls back to the configured URL and
    // must follow the standby's 302 for /v2/events, re-sending credentials.
    standby.leader_unknown(true);
    leader.add_app(web_app());
    leader
        .start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");

    // Both masters listed, as operators do: credentials go only to listed hosts.
    let mut s = settings(vec![standby.url(), leader.url()]);
    s.leader_lookup = false;
    s.auth = Some(auth);
    let running = marathon_dns::server::start(s).await.expect("start");
    tokio::time::timeout(TIMEOUT, running.wait_synced())
        .await
        .expect("synced");
    let dns = running.udp[0];
    eventually("stream on the leader", || async {
        running.status.stream_connected()
    })
    .await;
    assert!(
        leader.requests("/v2/events") >= 1,
        "stream opened on the leader"
    );
    assert!(
        standby.requests("/v2/events") >= 1,
        "standby was asked first"
    );

    leader
        .start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    eventually("events from the leader", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 2
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_lookup_through_a_standby() {
    let leader = Simulator::start().await.expect("leader");
    let standby = leader.standby().await.expect("standby");
    leader.add_app(web_app());
    leader
        .start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let running = start_against(&standby, |_| {}).await;
    eventually("stream connected", || async {
        running.status.stream_connected()
    })
    .await;
    assert!(standby.requests("/v2/leader") >= 1);
    assert_eq!(
        standby.requests("/v2/events"),
        0,
        "went to the leader directly"
    );
    assert_eq!(
        srv_count(running.udp[0], "_web._tcp.prod.marathon.local").await,
        1
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_failures_keep_the_last_good_zone() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let running = start_against(&sim, |s| s.resync_interval = Duration::from_millis(200)).await;
    let dns = running.udp[0];

    // REST answers 503 and the stream drops: DNS keeps answering from the last good state.
    sim.fail_rest(Some(503));
    sim.drop_streams();
    let failed = running.status.failed_resyncs();
    eventually("a resync failed", || async {
        running.status.failed_resyncs() > failed
    })
    .await;
    assert_eq!(
        srv_count(dns, "_web._tcp.prod.marathon.local").await,
        1,
        "fail static"
    );

    // Malformed JSON and unknown event types are skipped and counted.
    sim.emit_raw("status_update_event", "{\"appId\": 42, truncated");
    sim.emit_raw("brand_new_event_type", "{}");
    eventually("bad events counted", || async {
        running.status.malformed_events() >= 1
    })
    .await;
    assert_eq!(srv_count(dns, "_web._tcp.prod.marathon.local").await, 1);

    // Marathon recovers: so do we, by ourselves.
    sim.fail_rest(None);
    sim.start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    eventually("recovered", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 2
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_modes_and_name_resolution() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/api",
        SimNetwork::Bridge,
        vec![SimPort::tcp(Some("api"), 8080)],
    ));
    sim.add_app(SimApp::new(
        "/db/cache",
        SimNetwork::Container,
        vec![SimPort::tcp(Some("redis"), 6379)],
    ));
    sim.add_app(SimApp::new(
        "/named",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/api", "127.0.0.31", &[]).expect("task");
    let v6: IpAddr = "fd00::5".parse().expect("ip");
    sim.start_task(
        "/db/cache",
        "127.0.0.32",
        &[IpAddr::from([10, 1, 0, 5]), v6],
    )
    .expect("task");
    // An agent known by host name is resolved through the system resolver.
    sim.start_task("/named", "localhost", &[]).expect("task");
    let running = start_against(&sim, |_| {}).await;
    let dns = running.udp[0];

    let bridge = q(dns, "_api._tcp.marathon.local", RecordType::SRV).await;
    assert_eq!(
        srv(&bridge)[0].0,
        sim.tasks_of("/api")[0].ports[0],
        "host port, not container port"
    );
    assert_eq!(
        rdata(
            &q(dns, "api.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["127.0.0.31"],
        "agent, not bridge IP"
    );

    let container = q(dns, "_redis._tcp.cache.db.marathon.local", RecordType::SRV).await;
    assert_eq!(srv(&container)[0].0, 6379);
    assert_eq!(
        rdata(
            &q(dns, "cache.db.marathon.local", RecordType::A).await,
            RecordType::A
        ),
        ["10.1.0.5"]
    );
    assert_eq!(
        rdata(
            &q(dns, "cache.db.marathon.local", RecordType::AAAA).await,
            RecordType::AAAA
        ),
        ["fd00::5"]
    );

    let named = rdata(
        &q(dns, "named.marathon.local", RecordType::A).await,
        RecordType::A,
    );
    assert_eq!(named, ["127.0.0.1"]);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_is_reconnected_heartbeats_keep_it() {
    let timeout = Duration::from_millis(500);
    // Marathon's heartbeat (a bare CRLF every 10 s, here 100 ms) keeps a quiet stream open.
    let sim = Simulator::start_on(([127, 0, 0, 1], 0).into(), Duration::from_millis(100))
        .await
        .expect("sim");
    sim.add_app(web_app());
    let beating = start_against(&sim, |s| s.stream_timeout = timeout).await;

    // A half-open connection (no bytes at all) is detected by the read timeout and replaced.
    // Started after the other, with the same timeout, it is also the clock for the other:
    // once it has been replaced twice, the heartbeat stream has been quiet (but for heartbeats)
    // for more than twice the timeout.
    let silent = Simulator::start_on(([127, 0, 0, 1], 0).into(), Duration::from_secs(3600))
        .await
        .expect("sim");
    silent.add_app(web_app());
    let running = start_against(&silent, |s| {
        s.stream_timeout = timeout;
        // Every reconnect resyncs at once here (a stream replaced every 0.5 s would otherwise
        // never be seen live between two held-back resyncs).
        s.reconnect_resync_min = Duration::ZERO;
    })
    .await;
    eventually("silent stream replaced twice", || async {
        running.status.reconnects() >= 2
    })
    .await;
    assert_eq!(
        beating.status.reconnects(),
        0,
        "heartbeats must count as activity"
    );
    assert_eq!(sim.requests("/v2/events"), 1, "one stream, never replaced");
    beating.shutdown().await;
    eventually("live again", || async { running.status.is_live() }).await;
    silent
        .start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    eventually("events after reconnect", || async {
        srv_count(running.udp[0], "_web._tcp.prod.marathon.local").await == 1
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_bursts_are_coalesced() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/burst",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    let running = start_against(&sim, |_| {}).await;
    let before = running.status.publishes();
    for i in 0..200u16 {
        sim.start_task(
            "/burst",
            &format!("127.0.{}.{}", 3 + i / 250, 1 + i % 250),
            &[],
        )
        .expect("task");
    }
    let dns = running.tcp[0];
    eventually("all 200 published", || async {
        srv(&tcp(
            dns,
            &query_message("_burst._tcp.marathon.local", RecordType::SRV, None),
        )
        .await)
        .len()
            == 200
    })
    .await;
    let publishes = running.status.publishes() - before;
    println!("200 task events -> {publishes} zone publishes");
    assert!(publishes < 50, "{publishes} publishes for one burst");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_grows_and_survives_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serial_file = dir.path().join("serial");
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let mut last = 0;
    for round in 0..3 {
        let sf = serial_file.clone();
        let running = start_against(&sim, move |s| s.serial_file = Some(sf)).await;
        // A burst in the same second pushes the serial ahead of the clock …
        for _ in 0..5 {
            let before = running.status.serial();
            sim.start_task("/prod/web", &format!("127.0.0.{}", 20 + round), &[])
                .expect("task");
            eventually("publish", || async { running.status.serial() > before }).await;
        }
        let serial = running.status.serial();
        assert!(serial > last, "round {round}: serial {serial} after {last}");
        last = serial;
        running.shutdown().await;
        // … and the restart continues from there.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serial_file_covers_every_served_serial_and_damage_is_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serial_file = dir.path().join("serial");
    let on_disk = || {
        std::fs::read_to_string(&serial_file)
            .expect("serial file")
            .trim()
            .parse::<u32>()
            .expect("a number")
    };
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let sf = serial_file.clone();
    let running = start_against(&sim, move |s| s.serial_file = Some(sf)).await;
    // Whatever is served is already covered on disk (a crash now cannot reuse it).
    for i in 0..20 {
        let before = running.status.serial();
        sim.start_task("/prod/web", &format!("127.0.1.{}", 10 + i), &[])
            .expect("task");
        eventually("publish", || async { running.status.serial() > before }).await;
        assert!(
            on_disk() >= running.status.serial(),
            "served {} but the file says {}",
            running.status.serial(),
            on_disk()
        );
    }
    let served = running.status.serial();
    running.shutdown().await;

    // A power loss mid-write on a filesystem without data journaling: an empty file. The
    // server warns and starts, with a serial from the clock that still moves forward.
    std::fs::write(&serial_file, "").expect("truncate");
    let sf = serial_file.clone();
    let running = start_against(&sim, move |s| s.serial_file = Some(sf)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let serial = u64::from(running.status.serial());
    assert!(serial >= now - 5, "serial {serial} from the clock ({now})");
    assert!(
        on_disk() >= running.status.serial(),
        "and a new reservation is on disk"
    );
    println!("served {served} before; after the damaged file: {serial}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_task_events_are_skipped_cleanly() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let running = start_against(&sim, |_| {}).await;
    // Pods emit status_update_event with the pod id as appId; /v2/apps/{pod} is a 404.
    let event = |n: u32| {
        format!(
            r#"{{"slaveId":"s1","taskId":"mypod.instance-0a1b2c3d-0000-11e6-8000-00000000000{n}.web","taskStatus":"TASK_RUNNING","message":"","appId":"/mypod","host":"127.0.0.9","ipAddresses":[],"ports":[31999],"version":"2026-11-27T00:00:00.000Z","eventType":"status_update_event","timestamp":"2026-11-27T00:00:00.000Z"}}"#
        )
    };
    sim.emit_raw("status_update_event", &event(1));
    eventually("pod looked up once", || async {
        sim.requests("/v2/apps/mypod") == 1
    })
    .await;
    for n in 2..6 {
        sim.emit_raw("status_update_event", &event(n));
    }
    // A real app's event after them proves they were all processed.
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    eventually("later events applied", || async {
        srv_count(running.udp[0], "_web._tcp.prod.marathon.local").await == 1
    })
    .await;
    assert_eq!(
        sim.requests("/v2/apps/mypod"),
        1,
        "no re-fetch storm for pod tasks"
    );
    assert_eq!(
        q(running.udp[0], "mypod.marathon.local", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    running.shutdown().await;
}

/// A slow Marathon snapshot does not hold events back, and when it arrives, older than the
/// events applied meanwhile, it does not undo them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_during_a_slow_resync_and_survive_it() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    let first = sim
        .start_task("/prod/web", "127.0.0.21", &[])
        .expect("task");
    let running = start_against(&sim, |s| s.resync_interval = Duration::from_millis(200)).await;
    let dns = running.udp[0];
    let name = "_web._tcp.prod.marathon.local";
    assert_eq!(srv_count(dns, name).await, 1);

    // Every snapshot now arrives 1.5 s after Marathon took it.
    sim.delay_rest(Some(Duration::from_millis(1500)));
    let resyncs = running.status.resyncs();
    let requests = sim.requests("/v2/apps");
    eventually("a slow snapshot in flight", || async {
        sim.requests("/v2/apps") > requests
    })
    .await;
    // Taken before these events: the snapshot still has `first` and not `second`.
    sim.kill_task(&first);
    sim.start_task("/prod/web", "127.0.0.22", &[])
        .expect("task");
    let took = eventually("events applied during the resync", || async {
        let m = q(dns, "web.prod.marathon.local", RecordType::A).await;
        rdata(&m, RecordType::A) == ["127.0.0.22"]
    })
    .await;
    assert!(
        took < Duration::from_millis(1000),
        "events waited for the snapshot: {took:?}"
    );
    assert_eq!(running.status.resyncs(), resyncs + 1, "still in flight");
    // The stale snapshot lands; the events are replayed over it.
    let serial = running.status.serial();
    eventually("the slow snapshot applied", || async {
        running.status.resyncs() > resyncs + 1
    })
    .await;
    let m = q(dns, "web.prod.marathon.local", RecordType::A).await;
    assert_eq!(
        rdata(&m, RecordType::A),
        ["127.0.0.22"],
        "serial was {serial}"
    );
    sim.delay_rest(None);
    running.shutdown().await;
}
