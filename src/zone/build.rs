//! Cluster model → zone records (the naming rules applied). Pure: addresses of agents that are
//! not IP literals come from a lookup the caller resolved beforehand.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::Name;

use super::data::{Rdata, Soa};
use super::name::{self as wire, WireName};
use crate::cluster::{App, Network};
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

    /// The SOA's data at `serial`.
    pub fn rdata(&self, serial: u32, minimum: u32) -> Rdata {
        Rdata::Soa(Box::new(Soa {
            mname: wire::exact(&self.mname),
            rname: wire::exact(&self.rname),
            serial,
            refresh: self.refresh,
            retry: self.retry,
            expire: self.expire,
            minimum,
        }))
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

/// The records one DNS name's apps publish (several apps only when their ids map to the same
/// name), kept by the builder so that the next version can be diffed against it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contribution {
    /// (owner, TTL, data), sorted and without duplicates.
    pub records: Vec<(WireName, u32, Rdata)>,
    /// Every name these apps make exist (record owners, and names of defined apps without
    /// eligible tasks), sorted and without duplicates.
    pub names: Vec<WireName>,
    pub warnings: BTreeSet<Warning>,
}

impl Contribution {
    fn finish(mut self) -> Self {
        self.records.sort();
        self.records.dedup();
        self.names
            .extend(self.records.iter().map(|(o, _, _)| o.clone()));
        self.names.sort();
        self.names.dedup();
        // Kept until the next change of these apps: no spare capacity.
        self.records.shrink_to_fit();
        self.names.shrink_to_fit();
        self
    }
}

/// Addresses of agents whose host name is not an IP literal (resolved beforehand by the
/// caller); empty if unknown.
pub type HostLookup<'a> = &'a dyn Fn(&str) -> Vec<IpAddr>;

/// Agent host names that need DNS resolution (not IP literals) for the eligible tasks of
/// host- and bridge-networked apps.
pub fn hosts_to_resolve<'a>(
    apps: impl IntoIterator<Item = &'a App>,
    include_unhealthy: bool,
) -> BTreeSet<String> {
    apps.into_iter()
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

/// The DNS name of an app, `None` if it would exceed 253 octets.
pub fn app_name(app_id: &str, cfg: &ZoneConfig) -> Option<String> {
    naming::app_name(app_id, &cfg.origin.to_ascii())
}

/// The records of the apps that share the DNS name `name`. `reserved` holds the labels
/// directly below `name` that belong to other apps or groups (task labels must not shadow
/// them).
pub fn contribution(
    apps: &[&App],
    name: &str,
    cfg: &ZoneConfig,
    reserved: &BTreeSet<String>,
    resolved: HostLookup<'_>,
) -> Contribution {
    let zone = cfg.origin.to_ascii();
    let mut out = Contribution::default();
    if apps.len() > 1 {
        out.warnings.insert(Warning::NameCollision {
            name: name.to_string(),
            apps: apps.iter().map(|a| a.id.clone()).collect(),
        });
    }
    for app in apps {
        app_records(app, name, &zone, cfg, reserved, resolved, &mut out);
    }
    out.finish()
}

fn address(ip: IpAddr) -> Rdata {
    match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    }
}

/// The SRV owner names of each port, per protocol, by the naming rules (independent of tasks).
fn srv_owners(app: &App, name: &str, zone: &str, out: &mut Contribution) -> Vec<Vec<WireName>> {
    let mut seen_proto = BTreeSet::new();
    app.ports
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let mut owners = Vec::new();
            for proto in &spec.protocols {
                let first = seen_proto.insert(*proto);
                if first {
                    owners.push(naming::app_srv_name(&app.id, proto.label(), zone));
                }
                match spec.name.as_deref() {
                    Some(n) if !n.is_empty() => {
                        owners.push(naming::port_srv_name(name, Some(n), index, proto.label()));
                    }
                    _ if !first => {
                        owners.push(naming::port_srv_name(name, None, index, proto.label()));
                    }
                    _ => {}
                }
            }
            let parsed: Vec<_> = owners
                .iter()
                .filter_map(|o| o.as_deref().and_then(wire::parse_ascii))
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
    resolved: HostLookup<'_>,
    out: &mut Contribution,
) {
    let Some(app_name) = wire::parse_ascii(name) else {
        return;
    };
    let owners = srv_owners(app, name, zone, out);
    // A defined app's names exist even with no eligible task (NODATA, not NXDOMAIN): scaling
    // to zero is not deleting, and NXDOMAIN would deny the whole subtree (RFC 8020).
    out.names.push(app_name.clone());
    out.names.extend(owners.iter().flatten().cloned());

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
                Err(_) => match resolved(&task.host) {
                    ips if !ips.is_empty() => ips,
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
            out.records.push((app_name.clone(), ttl, address(*ip)));
        }
        // SRV records need the task's own name as their target.
        let Some(task_name) =
            naming::join(std::slice::from_ref(label), name).and_then(|n| wire::parse_ascii(&n))
        else {
            out.warnings.insert(Warning::DerivedNameTooLong {
                app_id: app.id.clone(),
            });
            continue;
        };
        for ip in &addresses {
            out.records.push((task_name.clone(), ttl, address(*ip)));
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
            for owner in port_owners {
                out.records.push((
                    owner.clone(),
                    ttl,
                    Rdata::Srv {
                        priority: 0,
                        weight: 1,
                        port,
                        target: task_name.clone(),
                    },
                ));
            }
        }
    }
}

/// The next serial: newer than the last one (RFC 1982) and, when the clock allows, the
/// current Unix time, so that it also grows across restarts.
pub fn next_serial(previous: u32, unix_now: u64) -> u32 {
    super::serial::next(previous, unix_now)
}

#[cfg(test)]
mod tests;
