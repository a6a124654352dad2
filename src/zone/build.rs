//! Cluster model → zone records (the naming rules applied). Pure: addresses of agents that are
//! not IP literals come from a lookup the caller resolved beforehand.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};

use super::snapshot::ZoneSnapshot;
use crate::cluster::{App, Cluster, Network};
use crate::naming;

/// Settings that shape the generated records.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The zone, e.g. `marathon.local.`.
    pub origin: Name,
    pub ttl: u32,
    pub include_unhealthy: bool,
}

/// The SOA fields taken from the zone file (serial and minimum are ours).
#[derive(Debug, Clone)]
pub struct SoaTemplate {
    pub ttl: u32,
    pub mname: Name,
    pub rname: Name,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
}

impl SoaTemplate {
    /// A default for a zone without a zone file.
    pub fn default_for(origin: &Name) -> Self {
        let child = |l: &str| {
            Name::from_str(l)
                .and_then(|n| n.append_domain(origin))
                .unwrap_or_else(|_| origin.clone())
        };
        Self {
            ttl: 60,
            mname: child("ns1"),
            rname: child("hostmaster"),
            refresh: 60,
            retry: 30,
            expire: 3600,
        }
    }

    pub fn record(&self, origin: &Name, serial: u32, minimum: u32) -> Record {
        Record::from_rdata(
            origin.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                self.mname.clone(),
                self.rname.clone(),
                serial,
                self.refresh,
                self.retry,
                self.expire,
                minimum,
            )),
        )
    }
}

/// Something the build noticed that an operator should hear about (logged once by the caller).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    NameTooLong {
        app_id: String,
    },
    /// The app name fits but some of its SRV or task names would not.
    DerivedNameTooLong {
        app_id: String,
    },
    NameCollision {
        name: String,
        apps: Vec<String>,
    },
    UnresolvedHost {
        app_id: String,
        host: String,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DerivedNameTooLong { app_id } => write!(
                f,
                "some SRV or task names of app {app_id} would exceed 253 octets and are not published"
            ),
            Self::NameTooLong { app_id } => write!(
                f,
                "app {app_id} skipped: its DNS name would exceed 253 octets"
            ),
            Self::NameCollision { name, apps } => {
                write!(
                    f,
                    "apps {} all map to {name}: their records are merged",
                    apps.join(", ")
                )
            }
            Self::UnresolvedHost { app_id, host } => {
                write!(
                    f,
                    "tasks of {app_id} on agent {host:?} skipped: the host name does not resolve"
                )
            }
        }
    }
}

/// The generated records plus what went wrong on the way.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub records: Vec<Record>,
    /// Names that exist even without records (defined apps without eligible tasks).
    pub names: Vec<Name>,
    pub warnings: BTreeSet<Warning>,
}

/// Agent host names that need DNS resolution (not IP literals) for the eligible tasks of
/// host- and bridge-networked apps.
pub fn hosts_to_resolve(cluster: &Cluster, include_unhealthy: bool) -> BTreeSet<String> {
    cluster
        .apps
        .values()
        .filter(|a| a.network != Network::Container)
        .flat_map(|a| {
            a.tasks
                .values()
                .filter(move |t| a.is_eligible(t, include_unhealthy))
        })
        .filter(|t| t.host.parse::<IpAddr>().is_err())
        .map(|t| t.host.clone())
        .collect()
}

/// Apply the naming rules to every app.
pub fn generate(
    cluster: &Cluster,
    cfg: &ZoneConfig,
    resolved: &BTreeMap<String, Vec<IpAddr>>,
) -> Generated {
    let zone = cfg.origin.to_ascii();
    let mut out = Generated::default();

    // App name → app ids (collisions), and for every name the labels directly below it
    // (task labels must not shadow child apps or groups).
    let mut by_name: BTreeMap<String, Vec<&App>> = BTreeMap::new();
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for app in cluster.apps.values() {
        let labels = naming::app_labels(&app.id);
        let Some(name) = naming::join(&labels, &zone) else {
            out.warnings.insert(Warning::NameTooLong {
                app_id: app.id.clone(),
            });
            continue;
        };
        for i in 0..labels.len() {
            if let Some(parent) = naming::join(&labels[i + 1..], &zone) {
                children
                    .entry(parent.to_ascii_lowercase())
                    .or_default()
                    .insert(labels[i].clone());
            }
        }
        by_name.entry(name).or_default().push(app);
    }

    for (name, apps) in &by_name {
        if apps.len() > 1 {
            out.warnings.insert(Warning::NameCollision {
                name: name.clone(),
                apps: apps.iter().map(|a| a.id.clone()).collect(),
            });
        }
        let reserved = children
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        for app in apps {
            app_records(app, name, &zone, cfg, &reserved, resolved, &mut out);
        }
    }
    out
}

fn parse_name(s: &str) -> Option<Name> {
    let mut n = Name::from_str(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

/// The SRV owner names of each port, per protocol, by the naming rules (independent of tasks).
fn srv_owners(
    app: &App,
    name: &str,
    zone: &str,
    out: &mut Generated,
) -> Vec<Vec<(crate::cluster::Proto, Name)>> {
    let mut seen_proto = BTreeSet::new();
    app.ports
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let mut owners = Vec::new();
            for proto in &spec.protocols {
                let first = seen_proto.insert(*proto);
                if first {
                    owners.push((*proto, naming::app_srv_name(&app.id, proto.label(), zone)));
                }
                match spec.name.as_deref() {
                    Some(n) if !n.is_empty() => owners.push((
                        *proto,
                        naming::port_srv_name(name, Some(n), index, proto.label()),
                    )),
                    _ if !first => owners.push((
                        *proto,
                        naming::port_srv_name(name, None, index, proto.label()),
                    )),
                    _ => {}
                }
            }
            let parsed: Vec<_> = owners
                .iter()
                .filter_map(|(p, o)| o.as_deref().and_then(parse_name).map(|o| (*p, o)))
                .collect();
            if parsed.len() < owners.len() {
                out.warnings.insert(Warning::DerivedNameTooLong {
                    app_id: app.id.clone(),
                });
            }
            parsed
        })
        .collect()
}

fn app_records(
    app: &App,
    name: &str,
    zone: &str,
    cfg: &ZoneConfig,
    reserved: &BTreeSet<String>,
    resolved: &BTreeMap<String, Vec<IpAddr>>,
    out: &mut Generated,
) {
    let Some(app_name) = parse_name(name) else {
        return;
    };
    let owners = srv_owners(app, name, zone, out);
    // A defined app's names exist even with no eligible task (NODATA, not NXDOMAIN): scaling
    // to zero is not deleting, and NXDOMAIN would deny the whole subtree (RFC 8020).
    out.names.push(app_name.clone());
    out.names
        .extend(owners.iter().flatten().map(|(_, o)| o.clone()));

    let ttl = cfg.ttl;
    let eligible: Vec<_> = app
        .tasks
        .values()
        .filter(|t| app.is_eligible(t, cfg.include_unhealthy))
        .collect();
    let labels = naming::task_labels(eligible.iter().map(|t| t.id.as_str()), reserved);

    for (task, (_, label)) in eligible.iter().zip(&labels) {
        let addresses: Vec<IpAddr> = match app.network {
            Network::Container => task.ip_addresses.clone(),
            Network::Host | Network::Bridge => match task.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => match resolved.get(&task.host) {
                    Some(ips) if !ips.is_empty() => ips.clone(),
                    _ => {
                        out.warnings.insert(Warning::UnresolvedHost {
                            app_id: app.id.clone(),
                            host: task.host.clone(),
                        });
                        continue;
                    }
                },
            },
        };
        if addresses.is_empty() {
            continue;
        }
        for ip in &addresses {
            out.records.push(address_record(&app_name, ttl, *ip));
        }
        // SRV records need the task's own name as their target.
        let Some(task_name) =
            naming::join(std::slice::from_ref(label), name).and_then(|n| parse_name(&n))
        else {
            out.warnings.insert(Warning::DerivedNameTooLong {
                app_id: app.id.clone(),
            });
            continue;
        };
        for ip in &addresses {
            out.records.push(address_record(&task_name, ttl, *ip));
        }

        // Marathon's alignment: ports that take a host port consume the task's list in order.
        let mut host_ports = task.host_ports.iter().copied();
        for (spec, port_owners) in app.ports.iter().zip(&owners) {
            let host_port = if spec.consumes_host_port {
                host_ports.next()
            } else {
                None
            };
            let port = match app.network {
                Network::Host | Network::Bridge => host_port,
                Network::Container => spec.container_port.filter(|p| *p != 0).or(host_port),
            };
            let Some(port) = port else { continue };
            for (_, owner) in port_owners {
                out.records.push(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, 1, port, task_name.clone())),
                ));
            }
        }
    }
}

/// The Marathon zone: generated records, static records from its zone file and a SOA.
pub fn snapshot(
    soa: &SoaTemplate,
    serial: u32,
    cfg: &ZoneConfig,
    generated: Generated,
    statics: &[Record],
) -> ZoneSnapshot {
    ZoneSnapshot::with_names(
        soa.record(&cfg.origin, serial, cfg.ttl),
        statics.iter().cloned().chain(generated.records),
        generated.names,
    )
}

/// The next serial: greater than the last one and, when the clock allows, the current Unix
/// time, so that it also grows across restarts.
pub fn next_serial(previous: u32, unix_now: u64) -> u32 {
    let now = u32::try_from(unix_now).unwrap_or(u32::MAX);
    now.max(previous.wrapping_add(1))
}

#[cfg(test)]
mod tests;
