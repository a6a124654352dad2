//! The naming rules, end to end from the cluster model to looked-up records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::{Name, RecordType};

use super::*;
use crate::cluster::{Cluster, PortSpec, Proto, Task, TaskState};
use crate::zone::builder::ZoneBuilder;
use crate::zone::snapshot::{Outcome, ZoneSnapshot};

fn cfg() -> ZoneConfig {
    ZoneConfig {
        origin: Name::from_str("marathon.local.").expect("name"),
        ttl: 5,
        include_unhealthy: false,
    }
}

fn port(name: Option<&str>, protocols: &[Proto]) -> PortSpec {
    PortSpec {
        name: name.map(str::to_string),
        protocols: protocols.to_vec(),
        consumes_host_port: true,
        container_port: None,
    }
}

fn task(n: u8, host: &str, ports: &[u16]) -> Task {
    Task {
        id: format!("x.instance-{n:02x}000000-b669-11e6-a48f-0ea4f4b1778c._app.1"),
        instance: None,
        host: host.into(),
        state: TaskState::Running,
        ip_addresses: vec![IpAddr::from([172, 17, 0, n])],
        host_ports: ports.to_vec(),
        health: vec![],
    }
}

fn app(id: &str, network: Network, ports: Vec<PortSpec>, tasks: Vec<Task>) -> App {
    App {
        id: id.into(),
        network,
        ports,
        health_checks: 0,
        tasks: tasks.into_iter().collect(),
    }
}

/// What the tests look at besides the zone.
struct Generated {
    warnings: BTreeSet<Warning>,
}

fn zone_of(apps: Vec<App>, cfg: &ZoneConfig) -> (ZoneSnapshot, Generated) {
    let cluster = Cluster {
        apps: apps.into_iter().map(|a| (a.id.clone(), a)).collect(),
    };
    let mut resolved = BTreeMap::new();
    resolved.insert(
        "agent1.example".to_string(),
        vec![IpAddr::from([10, 0, 0, 99])],
    );
    let lookup = |h: &str| resolved.get(h).cloned().unwrap_or_default();
    let soa = SoaTemplate::default_for(&cfg.origin);
    let mut builder = ZoneBuilder::new(cfg.clone(), soa, &[], 1);
    builder.update(&cluster, cluster.apps.keys(), &lookup);
    let warnings = builder.warnings();
    (builder.snapshot(1), Generated { warnings })
}

fn wire(s: &str) -> crate::zone::name::WireName {
    crate::zone::name::parse_ascii(s).expect("name")
}

fn rdata(zone: &ZoneSnapshot, name: &str, rtype: RecordType) -> Vec<String> {
    let found = zone.lookup(&wire(name), rtype);
    match found.outcome {
        Outcome::Answer => {
            let mut v: Vec<String> = (0..found.len())
                .filter_map(|i| found.entry(i, 0))
                .filter_map(|e| e.rec.rdata.to_hickory())
                .map(|d| d.to_string())
                .collect();
            v.sort();
            v
        }
        Outcome::NoData => vec!["NODATA".into()],
        Outcome::NxDomain => vec!["NXDOMAIN".into()],
    }
}

/// The glue of each SRV answer at `name`: (target, glue owner, glue types).
fn srv_glue(zone: &ZoneSnapshot, name: &str) -> Vec<(Vec<u8>, Vec<u8>, Vec<RecordType>)> {
    let found = zone.lookup(&wire(name), RecordType::SRV);
    assert_eq!(found.outcome, Outcome::Answer, "{name}");
    (0..found.len())
        .filter_map(|i| found.entry(i, 0))
        .map(|e| {
            let crate::zone::data::Rdata::Srv { target, .. } = &e.rec.rdata else {
                panic!("not SRV")
            };
            let glue: Vec<_> = zone.glue(e.rec).into_iter().flatten().collect();
            let owner = glue.first().map(|(o, _)| o.to_vec()).unwrap_or_default();
            let types = glue
                .iter()
                .flat_map(|(_, set)| set.iter().map(|r| r.rdata.record_type()))
                .collect();
            (target.to_vec(), owner, types)
        })
        .collect()
}

#[test]
fn host_app_a_srv_named_and_unnamed_ports() {
    let cfg = cfg();
    let web = app(
        "/prod/web",
        Network::Host,
        vec![
            port(Some("http"), &[Proto::Tcp]),
            port(None, &[Proto::Tcp]),
            port(Some("dns"), &[Proto::Udp, Proto::Tcp]),
        ],
        vec![
            task(1, "10.0.0.1", &[31000, 31001, 31002]),
            task(2, "10.0.0.2", &[31010, 31011, 31012]),
        ],
    );
    let (zone, g) = zone_of(vec![web], &cfg);
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    assert_eq!(
        rdata(&zone, "web.prod.marathon.local.", RecordType::A),
        ["10.0.0.1", "10.0.0.2"]
    );
    // First port of each protocol under the short name.
    assert_eq!(
        rdata(&zone, "_web._tcp.prod.marathon.local.", RecordType::SRV),
        [
            "0 1 31000 01000000.web.prod.marathon.local.",
            "0 1 31010 02000000.web.prod.marathon.local."
        ]
    );
    assert_eq!(
        rdata(&zone, "_web._udp.prod.marathon.local.", RecordType::SRV),
        [
            "0 1 31002 01000000.web.prod.marathon.local.",
            "0 1 31012 02000000.web.prod.marathon.local."
        ]
    );
    // Named ports below the app name, each protocol.
    assert_eq!(
        rdata(
            &zone,
            "_http._tcp.web.prod.marathon.local.",
            RecordType::SRV
        )
        .len(),
        2
    );
    assert_eq!(
        rdata(&zone, "_dns._udp.web.prod.marathon.local.", RecordType::SRV).len(),
        2
    );
    assert_eq!(
        rdata(&zone, "_dns._tcp.web.prod.marathon.local.", RecordType::SRV).len(),
        2
    );
    // Unnamed further port by index.
    assert_eq!(
        rdata(
            &zone,
            "_port1._tcp.web.prod.marathon.local.",
            RecordType::SRV
        ),
        [
            "0 1 31001 01000000.web.prod.marathon.local.",
            "0 1 31011 02000000.web.prod.marathon.local."
        ]
    );
    // Task names resolve; the group is an empty non-terminal.
    assert_eq!(
        rdata(&zone, "01000000.web.prod.marathon.local.", RecordType::A),
        ["10.0.0.1"]
    );
    assert_eq!(
        rdata(&zone, "prod.marathon.local.", RecordType::A),
        ["NODATA"]
    );
    assert_eq!(
        rdata(
            &zone,
            "_port0._tcp.web.prod.marathon.local.",
            RecordType::SRV
        ),
        ["NXDOMAIN"]
    );
}

#[test]
fn defined_app_without_tasks_is_nodata_not_nxdomain() {
    let cfg = cfg();
    let idle = app(
        "/prod/idle",
        Network::Host,
        vec![port(Some("http"), &[Proto::Tcp])],
        vec![],
    );
    let (zone, _) = zone_of(vec![idle], &cfg);
    assert_eq!(
        rdata(&zone, "idle.prod.marathon.local.", RecordType::A),
        ["NODATA"]
    );
    assert_eq!(
        rdata(&zone, "_idle._tcp.prod.marathon.local.", RecordType::SRV),
        ["NODATA"]
    );
    assert_eq!(
        rdata(
            &zone,
            "_http._tcp.idle.prod.marathon.local.",
            RecordType::SRV
        ),
        ["NODATA"]
    );
    assert_eq!(
        rdata(&zone, "x.idle.prod.marathon.local.", RecordType::A),
        ["NXDOMAIN"]
    );
}

#[test]
fn bridge_publishes_agent_and_host_port_never_the_bridge_ip() {
    let cfg = cfg();
    let api = app(
        "/api",
        Network::Bridge,
        vec![PortSpec {
            container_port: Some(8080),
            ..port(Some("api"), &[Proto::Tcp])
        }],
        vec![task(1, "10.0.0.1", &[31555])],
    );
    let (zone, _) = zone_of(vec![api], &cfg);
    assert_eq!(
        rdata(&zone, "api.marathon.local.", RecordType::A),
        ["10.0.0.1"]
    );
    assert_eq!(
        rdata(&zone, "_api._tcp.marathon.local.", RecordType::SRV),
        ["0 1 31555 01000000.api.marathon.local."]
    );
    let export = crate::zone::export::master_file(&zone);
    assert!(!export.contains("172.17."), "bridge IP leaked:\n{export}");
}

#[test]
fn container_network_uses_task_ips_and_container_ports_ipv6_too() {
    let cfg = cfg();
    let mut t = task(1, "10.0.0.1", &[]);
    t.ip_addresses = vec![
        IpAddr::from_str("fd00::1").expect("ip"),
        IpAddr::from([10, 9, 0, 1]),
    ];
    let db = app(
        "/db/cache",
        Network::Container,
        vec![PortSpec {
            consumes_host_port: false,
            container_port: Some(6379),
            ..port(Some("redis"), &[Proto::Tcp])
        }],
        vec![t],
    );
    let (zone, _) = zone_of(vec![db], &cfg);
    assert_eq!(
        rdata(&zone, "cache.db.marathon.local.", RecordType::A),
        ["10.9.0.1"]
    );
    assert_eq!(
        rdata(&zone, "cache.db.marathon.local.", RecordType::AAAA),
        ["fd00::1"]
    );
    assert_eq!(
        rdata(
            &zone,
            "_redis._tcp.cache.db.marathon.local.",
            RecordType::SRV
        ),
        ["0 1 6379 01000000.cache.db.marathon.local."]
    );
    // Glue prefers A for a dual-stack target (HAProxy ignores resolve-prefer there).
    let glue = srv_glue(&zone, "_cache._tcp.db.marathon.local.");
    assert_eq!(glue[0].2, [RecordType::A]);
}

#[test]
fn ipv6_only_target_gets_aaaa_glue() {
    let cfg = cfg();
    let mut t = task(1, "x", &[]);
    t.ip_addresses = vec![IpAddr::from_str("fd00::7").expect("ip")];
    let a = app(
        "/v6",
        Network::Container,
        vec![PortSpec {
            consumes_host_port: false,
            container_port: Some(80),
            ..port(None, &[Proto::Tcp])
        }],
        vec![t],
    );
    let (zone, _) = zone_of(vec![a], &cfg);
    let glue = srv_glue(&zone, "_v6._tcp.marathon.local.");
    assert_eq!(glue[0].2, [RecordType::AAAA]);
}

#[test]
fn health_rule_and_include_unhealthy() {
    let mut cfg = cfg();
    let mut healthy = task(1, "10.0.0.1", &[31000]);
    healthy.health = vec![true, true];
    let mut sick = task(2, "10.0.0.2", &[31001]);
    sick.health = vec![true, false];
    let unknown = task(3, "10.0.0.3", &[31002]);
    let mut staging = task(4, "10.0.0.4", &[31003]);
    staging.state = TaskState::NotRunning("TASK_STAGING".into());
    let mut a = app(
        "/hc",
        Network::Host,
        vec![port(None, &[Proto::Tcp])],
        vec![healthy, sick, unknown, staging],
    );
    a.health_checks = 2;
    let (zone, _) = zone_of(vec![a.clone()], &cfg);
    assert_eq!(
        rdata(&zone, "hc.marathon.local.", RecordType::A),
        ["10.0.0.1"]
    );
    cfg.include_unhealthy = true;
    let (zone, _) = zone_of(vec![a], &cfg);
    assert_eq!(
        rdata(&zone, "hc.marathon.local.", RecordType::A),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    );
}

#[test]
fn dots_long_labels_too_long_names_and_collisions() {
    let cfg = cfg();
    let dotted = app(
        "/team/api.v2",
        Network::Host,
        vec![],
        vec![task(1, "10.0.0.1", &[])],
    );
    let long_seg = "s".repeat(70);
    let long = app(
        &format!("/{long_seg}"),
        Network::Host,
        vec![],
        vec![task(2, "10.0.0.2", &[])],
    );
    let huge: String = (0..5).map(|_| format!("/{}", "h".repeat(60))).collect();
    let too_long = app(&huge, Network::Host, vec![], vec![task(3, "10.0.0.3", &[])]);
    let a = app(
        "/a/b.c",
        Network::Host,
        vec![],
        vec![task(4, "10.0.0.4", &[])],
    );
    let b = app(
        "/a/b-c",
        Network::Host,
        vec![],
        vec![task(5, "10.0.0.5", &[])],
    );
    let (zone, g) = zone_of(vec![dotted, long, too_long, a, b], &cfg);
    assert_eq!(
        rdata(&zone, "api-v2.team.marathon.local.", RecordType::A),
        ["10.0.0.1"]
    );
    let shortened = format!("{}.marathon.local.", crate::naming::label(&long_seg));
    assert_eq!(rdata(&zone, &shortened, RecordType::A), ["10.0.0.2"]);
    assert!(g.warnings.contains(&Warning::NameTooLong { app_id: huge }));
    assert_eq!(
        rdata(&zone, "b-c.a.marathon.local.", RecordType::A),
        ["10.0.0.4", "10.0.0.5"],
        "merged"
    );
    assert!(g.warnings.iter().any(
        |w| matches!(w, Warning::NameCollision { name, .. } if name == "b-c.a.marathon.local")
    ));
}

#[test]
fn long_but_legal_app_names_keep_their_addresses_and_warn() {
    let cfg = cfg();
    // App name of ~245 octets: fits, but task names (+9) and SRV names (+10) do not.
    let segs: Vec<String> = (0..4).map(|i| format!("{i}{}", "x".repeat(56))).collect();
    let id = format!("/{}", segs.join("/"));
    let a = app(
        &id,
        Network::Host,
        vec![port(None, &[Proto::Tcp])],
        vec![task(1, "10.0.0.1", &[31000])],
    );
    let (zone, g) = zone_of(vec![a], &cfg);
    let name = format!("{}.marathon.local.", naming::app_labels(&id).join("."));
    assert!(name.len() > 240 && name.len() <= 254, "{}", name.len());
    assert_eq!(rdata(&zone, &name, RecordType::A), ["10.0.0.1"]);
    assert!(
        g.warnings
            .contains(&Warning::DerivedNameTooLong { app_id: id })
    );
}

#[test]
fn task_labels_never_shadow_child_apps() {
    let cfg = cfg();
    // The child app's label equals the parent's task label.
    let parent = app(
        "/web",
        Network::Host,
        vec![],
        vec![task(1, "10.0.0.1", &[])],
    );
    let child = app(
        "/web/01000000",
        Network::Host,
        vec![],
        vec![task(2, "10.0.0.2", &[])],
    );
    let (zone, _) = zone_of(vec![parent, child], &cfg);
    assert_eq!(
        rdata(&zone, "01000000.web.marathon.local.", RecordType::A),
        ["10.0.0.2"],
        "child app owns its name"
    );
    assert_eq!(
        rdata(&zone, "web.marathon.local.", RecordType::A),
        ["10.0.0.1"]
    );
}

#[test]
fn agent_host_names_are_resolved_or_skipped_with_a_warning() {
    let cfg = cfg();
    let a = app(
        "/named",
        Network::Host,
        vec![port(None, &[Proto::Tcp])],
        vec![
            task(1, "agent1.example", &[31000]),
            task(2, "unknown", &[31001]),
        ],
    );
    let (zone, g) = zone_of(vec![a], &cfg);
    assert_eq!(
        rdata(&zone, "named.marathon.local.", RecordType::A),
        ["10.0.0.99"]
    );
    assert!(
        g.warnings
            .iter()
            .any(|w| matches!(w, Warning::UnresolvedHost { host, .. } if host == "unknown"))
    );
}

#[test]
fn srv_glue_covers_every_target() {
    let cfg = cfg();
    let tasks = (1..=20)
        .map(|n| task(n, "10.0.0.1", &[31000 + u16::from(n)]))
        .collect();
    let a = app(
        "/many",
        Network::Host,
        vec![port(None, &[Proto::Tcp])],
        tasks,
    );
    let (zone, _) = zone_of(vec![a], &cfg);
    let glue = srv_glue(&zone, "_many._tcp.marathon.local.");
    assert_eq!(glue.len(), 20);
    for (target, owner, types) in &glue {
        assert_eq!(types.len(), 1);
        assert_eq!(owner, target, "glue owner is the SRV target");
    }
}

#[test]
fn serial_only_grows() {
    assert_eq!(next_serial(5, 1000), 1000);
    assert_eq!(next_serial(2000, 1000), 2001);
    assert_eq!(next_serial(1000, 1000), 1001, "same second, still grows");
}
