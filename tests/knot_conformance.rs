//! Conformance against a reference authoritative server: the zone marathon-dns serves for a
//! large simulated cluster is exported, loaded into Knot DNS, and the same few thousand queries
//! go to both. Every difference must be one of the deliberate ones listed in `Deliberate`,
//! each with its reason.
//!
//! Needs `knotd` (Debian package `knot`; `.ci/run` installs it); skipped without it (see
//! `require_program`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use marathon_dns::sim::Simulator;
use marathon_dns::zone::export;

/// Differences we keep on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deliberate {
    /// An app that is defined but has no eligible task: its name exists (NODATA) for us; a
    /// master file cannot express an empty name, so Knot says NXDOMAIN. Scaling to zero is not
    /// deleting, and NXDOMAIN would deny the whole subtree to caches (RFC 8020).
    DefinedAppWithoutTasks,
    /// A dual-stack SRV target: we send only its A record as glue, Knot sends A and AAAA.
    /// HAProxy 2.6 takes whichever additional address comes first, ignoring resolve-prefer
    /// (docs/haproxy.md).
    AGlueOnlyForDualStack,
    /// The answer does not fit: we keep as many whole SRV+glue pairs as fit and set TC; Knot
    /// sends TC with zero answers, which HAProxy counts as an error and then empties the
    /// backend (docs/haproxy.md, "Size"). The kept records must be a subset of the full answer.
    TruncationKeepsWholePairs,
    /// A large SRV answer that fits but whose glue does not all fit: Knot silently drops
    /// additional records (allowed by RFC 2181 §9); we keep glue for every SRV record or
    /// truncate whole pairs, because HAProxy falls back to per-target A queries and leaves
    /// servers in MAINT without it (docs/haproxy.md).
    FullGlueForEverySrv,
}

/// Every SRV answer has its target's address in the additional section.
fn glue_complete(m: &Message) -> bool {
    m.answers.iter().all(|r| match &r.data {
        hickory_proto::rr::RData::SRV(s) => m.additionals.iter().any(|a| {
            a.name == s.target && matches!(a.record_type(), RecordType::A | RecordType::AAAA)
        }),
        _ => true,
    })
}

struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_knot(knotd: &std::path::Path, zone_text: &str, origin: &str) -> Knot {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for sub in ["zones", "db", "run"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("zones").join(format!("{origin}.zone")), zone_text).expect("zone");
    let port = free_port();
    let conf = format!(
        "server:\n  rundir: \"{r}/run\"\n  listen: 127.0.0.1@{port}\n  udp-max-payload: 4096\n\
         control:\n  listen: \"{r}/run/knot.sock\"\n\
         database:\n  storage: \"{r}/db\"\n\
         log:\n  - target: stderr\n    any: warning\n\
         template:\n  - id: default\n    storage: \"{r}/zones\"\n    file: \"%s.zone\"\n    zonefile-load: whole\n    zonefile-sync: -1\n    journal-content: none\n\
         zone:\n  - domain: {origin}\n",
        r = root.display()
    );
    std::fs::write(root.join("knot.conf"), conf).expect("conf");
    let child = Command::new(knotd)
        .arg("-c")
        .arg(root.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("knotd starts");
    let knot = Knot {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    eventually("knotd answers for the zone", || async {
        match udp_raw(
            knot.addr,
            &query_message(origin, RecordType::SOA, None)
                .to_vec()
                .expect("encode"),
        )
        .await
        {
            Some(raw) => Message::from_vec(&raw).is_ok_and(|m| m.answers.len() == 1),
            None => false,
        }
    })
    .await;
    knot
}

/// A large cluster touching every naming rule.
/// Records as comparable text: lower-case owner, type, TTL, RDATA.
fn set(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name.to_ascii().to_lowercase(),
                r.record_type(),
                r.ttl,
                r.data
            )
        })
        .collect()
}

async fn ask(server: SocketAddr, name: &str, rtype: RecordType, transport: Transport) -> Message {
    match transport {
        Transport::Udp(edns) => udp(server, &query_message(name, rtype, edns)).await,
        Transport::Tcp => tcp(server, &query_message(name, rtype, Some(4096))).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_dns_matches_knot() {
    let Some(knotd) = require_program("knotd", "knot") else {
        return;
    };
    let sim = Simulator::start().await.expect("sim");
    populate_conformance(&sim);
    // Static records of every kind next to the generated ones: the export must carry them too.
    let zones = tempfile::tempdir().expect("tempdir");
    std::fs::write(zones.path().join("marathon.local.zone"), CONFORMANCE_ZONE).expect("zone file");
    let zones_dir = zones.path().to_path_buf();
    let running = start_against(&sim, |s| s.zones_dir = zones_dir).await;
    let zone = running.store.marathon();
    let text = export::master_file(&zone);
    let knot = start_knot(&knotd, &text, "marathon.local").await;
    let ours = running.udp[0];

    let ConformanceSet { queries, idle } = conformance_set(&zone, &sim);
    assert!(queries.len() > 2000, "only {} queries", queries.len());

    let mut deliberate: BTreeMap<Deliberate, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, rtype, transport) in &queries {
        let a = ask(ours, name, *rtype, *transport).await;
        let b = ask(knot.addr, name, *rtype, *transport).await;
        let what = format!("{name} {rtype} {transport:?}");
        let (ra, rb) = (a.metadata.response_code, b.metadata.response_code);

        let lower = name.to_ascii_lowercase();
        let idle_app = idle.iter().any(|leaf| {
            lower.contains(&format!("_{leaf}."))
                || lower.contains(&format!(".{leaf}."))
                || lower.starts_with(&format!("{leaf}."))
        });
        if ra == ResponseCode::NoError
            && rb == ResponseCode::NXDomain
            && a.answers.is_empty()
            && idle_app
        {
            *deliberate
                .entry(Deliberate::DefinedAppWithoutTasks)
                .or_default() += 1;
            continue;
        }
        if ra != rb {
            failures.push(format!("{what}: rcode {ra} vs knot {rb}"));
            continue;
        }
        if a.metadata.authoritative != b.metadata.authoritative
            || a.metadata.recursion_available != b.metadata.recursion_available
        {
            failures.push(format!(
                "{what}: flags {} vs knot {}",
                a.metadata.flags(),
                b.metadata.flags()
            ));
        }
        if a.edns.is_some() != b.edns.is_some() {
            failures.push(format!("{what}: OPT presence differs"));
        }
        if a.metadata.truncation || b.metadata.truncation {
            // Ours must be a non-empty subset of the full answer, each SRV with its glue.
            let full = ask(ours, name, *rtype, Transport::Tcp).await;
            let ok = a.metadata.truncation
                && !a.answers.is_empty()
                && set(&a.answers).is_subset(&set(&full.answers))
                && glue_complete(&a);
            if ok && b.metadata.truncation {
                *deliberate
                    .entry(Deliberate::TruncationKeepsWholePairs)
                    .or_default() += 1;
            } else {
                failures.push(format!(
                    "{what}: truncation ours tc={} an={} vs knot tc={} an={}",
                    a.metadata.truncation,
                    a.answers.len(),
                    b.metadata.truncation,
                    b.answers.len()
                ));
            }
            continue;
        }
        if set(&a.answers) != set(&b.answers) {
            failures.push(format!(
                "{what}: answers\n  ours {:?}\n  knot {:?}",
                set(&a.answers),
                set(&b.answers)
            ));
        }
        if set(&a.authorities) != set(&b.authorities) {
            failures.push(format!(
                "{what}: authority\n  ours {:?}\n  knot {:?}",
                set(&a.authorities),
                set(&b.authorities)
            ));
        }
        let (ga, gb) = (set(&a.additionals), set(&b.additionals));
        if ga != gb {
            // Only AAAA glue of targets that also have A glue may be missing on our side.
            let missing: Vec<&String> = gb.difference(&ga).collect();
            let only_dual_stack_aaaa = ga.is_subset(&gb)
                && missing.iter().all(|m| {
                    let owner = m.split(' ').next().unwrap_or_default();
                    m.contains(" AAAA ")
                        && ga
                            .iter()
                            .any(|g| g.starts_with(&format!("{owner} ")) && g.contains(" A "))
                });
            // Knot dropped glue that did not fit; ours is complete and adds nothing Knot
            // would not have sent with room (A glue, or AAAA for IPv6-only targets).
            let knot_dropped_glue = glue_complete(&a) && !glue_complete(&b) && {
                let full = ask(knot.addr, name, *rtype, Transport::Tcp).await;
                ga.is_subset(&set(&full.additionals))
            };
            if only_dual_stack_aaaa {
                *deliberate
                    .entry(Deliberate::AGlueOnlyForDualStack)
                    .or_default() += 1;
            } else if knot_dropped_glue {
                *deliberate
                    .entry(Deliberate::FullGlueForEverySrv)
                    .or_default() += 1;
            } else {
                failures.push(format!("{what}: additional\n  ours {ga:?}\n  knot {gb:?}"));
            }
        }
    }

    println!("conformance: {} queries against Knot DNS", queries.len());
    for (d, n) in &deliberate {
        println!("  deliberate difference {d:?}: {n} queries");
    }
    println!("  unexplained differences: {}", failures.len());
    for f in failures.iter().take(20) {
        println!("    {f}");
    }
    assert!(
        failures.is_empty(),
        "{} unexplained differences with Knot (first: {})",
        failures.len(),
        failures[0]
    );
    assert!(
        deliberate.contains_key(&Deliberate::TruncationKeepsWholePairs),
        "truncation was exercised"
    );
    assert!(
        deliberate.contains_key(&Deliberate::DefinedAppWithoutTasks),
        "idle apps were exercised"
    );
    running.shutdown().await;
}
