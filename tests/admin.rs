//! The HTTP admin listener against the simulated Marathon: `/ready` flips 503 → 200 after the
//! first sync and stays 200 while Marathon is down (fail static), `/metrics` moves as events
//! arrive, `/v1/records` and `/v1/zone` show the published zone.

mod common;

use common::*;
use marathon_dns::marathon::client::Auth;
use marathon_dns::server;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

async fn get(url: &str) -> (u16, String) {
    http_get(url).await.expect("admin answers")
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_metrics_and_zone_views() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    sim.start_task("/prod/web", "10.0.0.1", &[]).expect("task");
    // Marathon refuses at first: answering, but not ready.
    sim.fail_rest(Some(503));
    let mut s = settings(vec![sim.url()]);
    s.auth = Auth::basic("alice:s3cret-admin");
    let running = server::start(s).await.expect("starts");
    let base = format!("http://{}", running.admin.expect("admin listener"));
    assert_eq!(get(&format!("{base}/health")).await.0, 200);
    let (code, body) = get(&format!("{base}/ready")).await;
    assert_eq!(code, 503, "{body}");

    sim.fail_rest(None);
    eventually("ready after the first sync", || async {
        get(&format!("{base}/ready")).await.0 == 200
    })
    .await;
    running.wait_live().await;

    // Metrics move with events.
    let (_, before) = get(&format!("{base}/metrics")).await;
    assert_eq!(metric(&before, "marathon_dns_marathon_synced"), 1.0);
    let records = metric(&before, "marathon_dns_zone_records");
    assert_eq!(
        records as usize,
        running.store.marathon().record_count(),
        "{before}"
    );
    assert!(
        records >= 3.0,
        "NS, its address and the task's records: {records}"
    );
    let publishes = metric(&before, "marathon_dns_zone_publishes_total");
    let events = metric(&before, "marathon_dns_events_total");
    let status_updates = metric(
        &before,
        "marathon_dns_events_received_total{type=\"status_update_event\"}",
    );
    assert!(before.contains("marathon_dns_build_info{version="));
    sim.start_task("/prod/web", "10.0.0.2", &[]).expect("task");
    eventually("metrics follow the event", || async {
        let (_, now) = get(&format!("{base}/metrics")).await;
        metric(&now, "marathon_dns_zone_publishes_total") > publishes
            && metric(&now, "marathon_dns_events_total") > events
            && metric(
                &now,
                "marathon_dns_events_received_total{type=\"status_update_event\"}",
            ) > status_updates
    })
    .await;
    let (_, now) = get(&format!("{base}/metrics")).await;
    assert!(
        metric(&now, "marathon_dns_event_to_answer_seconds_count") >= 1.0,
        "the event's latency is observed:\n{now}"
    );
    // Queries are counted by protocol, type and rcode.
    let dns = running.udp[0];
    q(
        dns,
        "_http._tcp.web.prod.marathon.local",
        hickory_proto::rr::RecordType::SRV,
    )
    .await;
    q(dns, "nope.marathon.local", hickory_proto::rr::RecordType::A).await;
    tcp(
        dns,
        &query_message(
            "web.prod.marathon.local",
            hickory_proto::rr::RecordType::A,
            None,
        ),
    )
    .await;
    let (_, now) = get(&format!("{base}/metrics")).await;
    for series in [
        "marathon_dns_queries_total{protocol=\"udp\",type=\"SRV\",rcode=\"NOERROR\"}",
        "marathon_dns_queries_total{protocol=\"udp\",type=\"A\",rcode=\"NXDOMAIN\"}",
        "marathon_dns_queries_total{protocol=\"tcp\",type=\"A\",rcode=\"NOERROR\"}",
    ] {
        assert!(metric(&now, series) >= 1.0, "{series}");
    }
    assert!(
        metric(
            &now,
            "marathon_dns_response_size_bytes_count{protocol=\"udp\"}"
        ) >= 2.0
    );

    // The zone as JSON and as a master file.
    let (code, body) = get(&format!("{base}/v1/records?name=web.prod.marathon.local")).await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let addrs: Vec<&str> = json["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["type"] == "A")
        .filter_map(|r| r["data"].as_str())
        .collect();
    assert_eq!(addrs, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        get(&format!("{base}/v1/records?name=nope.marathon.local"))
            .await
            .0,
        404
    );
    let (code, zone) = get(&format!("{base}/v1/zone")).await;
    assert_eq!(code, 200);
    assert!(
        zone.contains("_http._tcp.web.prod.marathon.local."),
        "{zone}"
    );

    // Marathon down: still ready (the last good zone is served), and the staleness shows.
    let failed = running.status.failed_resyncs();
    sim.fail_rest(Some(503));
    sim.drop_streams();
    eventually("a failed resync during the outage", || async {
        running.status.failed_resyncs() > failed
    })
    .await;
    let (code, body) = get(&format!("{base}/ready")).await;
    assert_eq!(code, 200, "fail static: {body}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(metric(&metrics, "marathon_dns_resync_failures_total") > 0.0);
    assert!(metric(&metrics, "marathon_dns_seconds_since_last_sync") >= 0.0);

    // Never a credential.
    for page in ["/ready", "/metrics", "/v1/zone"] {
        let (_, body) = get(&format!("{base}{page}")).await;
        assert!(!body.contains("s3cret-admin"), "{page} shows a credential");
    }
    sim.fail_rest(None);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_view_shows_the_model() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    ));
    let task = sim.start_task("/prod/web", "10.0.0.1", &[]).expect("task");
    let running = start_against(&sim, |_| {}).await;
    let base = format!("http://{}", running.admin.expect("admin listener"));
    let (code, body) = get(&format!("{base}/v1/apps")).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let app = &v["apps"][0];
    assert_eq!(app["id"], "/prod/web");
    assert_eq!(app["name"], "web.prod.marathon.local");
    assert_eq!(app["tasks"][0]["id"], task.as_str());
    assert_eq!(app["tasks"][0]["host"], "10.0.0.1");
    assert_eq!(app["tasks"][0]["published"], true);
    let (code, one) = get(&format!("{base}/v1/apps?id=/prod/web")).await;
    assert_eq!(code, 200);
    let one: serde_json::Value = serde_json::from_str(&one).expect("JSON");
    assert_eq!(one["id"], "/prod/web");
    assert_eq!(get(&format!("{base}/v1/apps?id=/nope")).await.0, 404);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_that_heals_missed_events_is_counted_as_drift() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/web", "10.0.0.1", &[]).expect("task");
    let running = start_against(&sim, |s| {
        s.resync_interval = std::time::Duration::from_millis(300);
    })
    .await;
    running.wait_live().await;
    let base = format!("http://{}", running.admin.expect("admin listener"));
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(
        metric(&text, "marathon_dns_resync_drift_records_total"),
        0.0
    );
    // An event the stream never delivers: only the next resync learns of the task.
    sim.suppress_events(true);
    sim.start_task("/web", "10.0.0.2", &[]).expect("task");
    eventually("the resync heals the zone", || async {
        let m = q(
            running.udp[0],
            "web.marathon.local",
            hickory_proto::rr::RecordType::A,
        )
        .await;
        rdata(&m, hickory_proto::rr::RecordType::A).len() == 2
    })
    .await;
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(metric(&text, "marathon_dns_resync_drift_apps_total"), 1.0);
    // The new task's A record, its SRV record and its task label's A record.
    assert!(
        metric(&text, "marathon_dns_resync_drift_records_total") >= 3.0,
        "{text}"
    );
    running.shutdown().await;
}
