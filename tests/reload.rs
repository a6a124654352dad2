//! SIGHUP, as an operator uses it: zone files, a rotated token and the configuration file are
//! read again without a restart; a bad reload changes nothing and says why; systemd hears
//! about readiness, reloads and stopping (`Type=notify`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hickory_proto::rr::{RData, RecordType};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

const MARATHON_ZONE: &str = "$ORIGIN marathon.local.\n$TTL 5\n\
@ 60 IN SOA ns1.marathon.local. hostmaster.marathon.local. ( 1 60 30 3600 5 )\n\
@ 60 IN NS ns1.marathon.local.\nns1 60 IN A 127.0.0.1\n";

fn write_zones(dir: &Path, static_ip: &str, extra: Option<&str>) {
    std::fs::write(
        dir.join("marathon.local.zone"),
        format!("{MARATHON_ZONE}registry 60 IN A {static_ip}\n"),
    )
    .expect("write zone");
    if let Some(extra) = extra {
        std::fs::write(
            dir.join("example.test.zone"),
            format!(
                "$ORIGIN example.test.\n@ 60 IN SOA ns1 hostmaster 1 60 30 3600 5\n\
                 @ 60 IN NS ns1\nns1 60 IN A 127.0.0.1\n{extra}\n"
            ),
        )
        .expect("write zone");
    }
}

fn web(sim: &Simulator) {
    sim.add_app(SimApp::new(
        "/web",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    sim.start_task("/web", "10.0.0.1", &[]).expect("task");
}

fn soa_serial(m: &hickory_proto::op::Message) -> u32 {
    m.answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
        .expect("SOA")
}

async fn metric(admin: std::net::SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(&format!("http://{admin}/metrics")).await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_changed_zone_file_and_a_rotated_token() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("mkdir");
    write_zones(&zones, "192.0.2.1", None);
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").expect("token");
    let server = spawn_daemon(
        &[
            "--marathon",
            &sim.url(),
            "--zones-dir",
            zones.to_str().expect("utf-8"),
            "--marathon-token-file",
            token.to_str().expect("utf-8"),
            "--resync-interval",
            "300ms",
        ],
        &[],
    );
    eventually("the app is served", || async {
        rdata(
            &q(server.dns, "web.marathon.local", RecordType::A).await,
            RecordType::A,
        ) == ["10.0.0.1"]
    })
    .await;
    assert_eq!(
        sim.last_authorization().as_deref(),
        Some("token=first-token")
    );
    let m = q(server.dns, "registry.marathon.local", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["192.0.2.1"]);
    let before = soa_serial(&q(server.dns, "marathon.local", RecordType::SOA).await);

    // The operator edits the zone files and rotates the token, then sends SIGHUP.
    write_zones(&zones, "192.0.2.2", Some("new 60 IN A 192.0.2.9"));
    std::fs::write(&token, "second-token\n").expect("token");
    server.signal(libc::SIGHUP);
    let line = server
        .log_line("reloaded", Duration::from_secs(10))
        .expect("the reload is logged");
    assert!(line.contains("credentials_changed=true"), "{line}");
    assert!(
        !line.contains("second-token"),
        "no secret in the log: {line}"
    );

    let m = q(server.dns, "registry.marathon.local", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["192.0.2.2"], "the edited record");
    let m = q(server.dns, "new.example.test", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["192.0.2.9"], "the new zone file");
    let m = q(server.dns, "web.marathon.local", RecordType::A).await;
    assert_eq!(
        rdata(&m, RecordType::A),
        ["10.0.0.1"],
        "Marathon records stay"
    );
    let after = soa_serial(&q(server.dns, "marathon.local", RecordType::SOA).await);
    assert!(after > before, "the serial moves on ({before} → {after})");

    // The next request to Marathon (a resync) carries the new token, without waiting for
    // Marathon to answer 401 to the old one.
    eventually("the new token is used", || async {
        sim.last_authorization().as_deref() == Some("token=second-token")
    })
    .await;
    assert_eq!(
        metric(server.admin, "marathon_dns_reloads_total").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_everything_and_says_why() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    write_zones(dir.path(), "192.0.2.1", Some("www 60 IN A 192.0.2.5"));
    let server = spawn_daemon(
        &[
            "--marathon",
            &sim.url(),
            "--zones-dir",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );
    eventually("the app is served", || async {
        rdata(
            &q(server.dns, "web.marathon.local", RecordType::A).await,
            RecordType::A,
        ) == ["10.0.0.1"]
    })
    .await;
    // One good edit, one broken file: nothing of either is applied.
    write_zones(dir.path(), "192.0.2.2", None);
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$ORIGIN example.test.\n@ 60 IN SOA ns1 hostmaster 1 60 30 3600 5\nwww 60 IN A 999.1.1.1\n",
    )
    .expect("break the zone file");
    server.signal(libc::SIGHUP);
    let line = server
        .log_line("reload failed", Duration::from_secs(10))
        .expect("the failure is logged");
    assert!(
        line.contains("example.test.zone:3"),
        "file and line: {line}"
    );
    let m = q(server.dns, "registry.marathon.local", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["192.0.2.1"], "the old record");
    let m = q(server.dns, "www.example.test", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["192.0.2.5"], "the old zone");
    assert_eq!(
        metric(server.admin, "marathon_dns_reload_failures_total").await,
        Some(1.0)
    );
    let m = q(server.dns, "web.marathon.local", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["10.0.0.1"], "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_config_files_reloadable_keys_and_names_the_others() {
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("marathon-dns.toml");
    let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/zones");
    std::fs::write(
        &config,
        format!(
            "marathon = [\"{}\"]\nttl = 5\nzones-dir = \"{zones}\"\n",
            sim.url()
        ),
    )
    .expect("config");
    let server = spawn_daemon(&["--config", config.to_str().expect("utf-8")], &[]);
    let ttl = || async {
        q(server.dns, "web.marathon.local", RecordType::A)
            .await
            .answers
            .first()
            .map(|r| r.ttl)
    };
    eventually("the app is served", || async { ttl().await == Some(5) }).await;
    std::fs::write(
        &config,
        format!(
            "marathon = [\"{}\"]\nttl = 30\nzones-dir = \"{zones}\"\nstream-timeout = \"90s\"\n",
            sim.url()
        ),
    )
    .expect("config");
    server.signal(libc::SIGHUP);
    let line = server
        .log_line("only a restart applies", Duration::from_secs(10))
        .expect("the keys needing a restart are named");
    assert!(line.ends_with("stream-timeout"), "{line}");
    assert_eq!(ttl().await, Some(30), "the new TTL is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let sim = Simulator::start().await.expect("sim");
    web(&sim);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let server = spawn_daemon(
        &[
            "--marathon",
            &sim.url(),
            "--lame-duck",
            "100ms",
            "--zones-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/zones"),
        ],
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8"))],
    );
    let ready = next();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // READY only after the first sync: the records are there.
    let m = q(server.dns, "web.marathon.local", RecordType::A).await;
    assert_eq!(rdata(&m, RecordType::A), ["10.0.0.1"]);

    server.signal(libc::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");
    server.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
}
