//! The Marathon zone, kept up to date in proportion to the change.
//!
//! Records are compiled per *unit* (the apps that share one DNS name; usually one app) and
//! merged into a persistent node map with reference counts, so that names shared by several
//! units (empty non-terminals, colliding names, a group's SRV name) stay right when one unit
//! changes. An update touches only the units of the apps it is given, plus the units directly
//! above them when the set of child labels changes (task labels must not shadow a child).
//! Publishing is an O(1) clone of the map. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hickory_proto::rr::{Record, RecordType};

use super::build::{self, Contribution, HostLookup, SoaTemplate, Warning, ZoneConfig};
use super::data::Rdata;
use super::name::{self, WireName};
use super::snapshot::{self, Nodes, ZoneSnapshot};
use crate::cluster::{AppId, Cluster};
use crate::naming;

/// What an update did.
#[derive(Debug, Default)]
pub struct Updated {
    /// Records or names changed: a new serial is due.
    pub changed: bool,
    /// Records added plus records removed.
    pub records_changed: usize,
    /// Warnings of the recomputed units that were not there before (log them once).
    pub new_warnings: Vec<Warning>,
}

#[derive(Debug, Clone)]
pub struct ZoneBuilder {
    cfg: ZoneConfig,
    zone: String,
    origin: WireName,
    soa: SoaTemplate,
    serial: u32,
    nodes: Nodes,
    /// DNS name → the apps that map to it.
    by_name: HashMap<String, Vec<AppId>>,
    /// Apps skipped because their DNS name would be too long.
    too_long: BTreeSet<AppId>,
    /// Name → labels directly below it that belong to apps or groups, with counts.
    children: HashMap<String, BTreeMap<String, u32>>,
    units: HashMap<String, Contribution>,
    /// Units whose last build skipped agents that did not resolve.
    unresolved: BTreeSet<String>,
    /// Records that entered (+1) or left (-1) the zone since the last `take_changes`, when
    /// asked to keep them (IXFR): net per record, so churn within one publish cancels out.
    changes: Option<BTreeMap<Change, i8>>,
    /// Records in the node map, the SOA excluded.
    records: usize,
}

/// One record of the zone as IXFR lists it: owner, TTL, data.
pub type Change = (WireName, u32, Rdata);

/// The records a publish removed and added (each sorted, none in both).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub removed: Vec<Change>,
    pub added: Vec<Change>,
}

impl ZoneBuilder {
    /// An empty Marathon zone: SOA at `serial` and the static records of its zone file.
    pub fn new(cfg: ZoneConfig, soa: SoaTemplate, statics: &[Record], serial: u32) -> Self {
        let origin = name::lower(&cfg.origin);
        let mut nodes = Nodes::new();
        let mut static_unit = Contribution::default();
        for r in statics {
            let owner = name::lower(&r.name);
            if name::is_within(&owner, &origin) && r.record_type() != RecordType::SOA {
                static_unit
                    .records
                    .push((owner, r.ttl, Rdata::from_hickory(r)));
            }
        }
        static_unit.records.sort();
        static_unit.records.dedup();
        let mut records = 0;
        for (owner, ttl, rdata) in &static_unit.records {
            if nodes.update(owner, |n| n.add(*ttl, rdata)) {
                records += 1;
            }
            snapshot::add_name(&mut nodes, owner, &origin);
        }
        let mut builder = Self {
            zone: cfg.origin.to_ascii(),
            cfg,
            origin,
            soa,
            serial,
            nodes,
            by_name: HashMap::new(),
            too_long: BTreeSet::new(),
            children: HashMap::new(),
            units: HashMap::new(),
            unresolved: BTreeSet::new(),
            changes: None,
            records,
        };
        builder.set_soa(serial);
        builder
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Start keeping the records that enter and leave the zone, for [`Self::take_changes`].
    /// Off by default: without transfers nobody reads them.
    pub fn keep_changes(&mut self) {
        self.changes.get_or_insert_with(BTreeMap::new);
    }

    /// Whether changes are being kept.
    pub fn keeps_changes(&self) -> bool {
        self.changes.is_some()
    }

    /// The records removed and added since the last call (SOA excluded: its serial is the
    /// transfer's own business).
    pub fn take_changes(&mut self) -> Changes {
        let mut out = Changes::default();
        let Some(changes) = self.changes.as_mut() else {
            return out;
        };
        for (change, net) in std::mem::take(changes) {
            match net {
                1.. => out.added.push(change),
                ..=-1 => out.removed.push(change),
                0 => {}
            }
        }
        out
    }

    fn note(&mut self, change: (&WireName, u32, &Rdata), delta: i8) {
        if let Some(changes) = self.changes.as_mut() {
            let (owner, ttl, rdata) = change;
            *changes
                .entry((owner.clone(), ttl, rdata.clone()))
                .or_insert(0) += delta;
        }
    }

    /// Put the SOA at `serial` into the apex node.
    fn set_soa(&mut self, serial: u32) {
        let soa = self.soa.rdata(serial, self.cfg.ttl);
        let ttl = self.soa.ttl;
        self.nodes.update(&self.origin, |n| n.replace(ttl, &soa));
        self.serial = serial;
    }

    /// The zone as it is now, at `serial`.
    pub fn snapshot(&mut self, serial: u32) -> ZoneSnapshot {
        if serial != self.serial {
            self.set_soa(serial);
        }
        ZoneSnapshot::from_parts(self.origin.clone(), self.nodes.clone(), self.records)
    }

    /// Apps whose units skipped agents that did not resolve (to try again later).
    pub fn apps_with_unresolved_hosts(&self) -> Vec<AppId> {
        self.unresolved
            .iter()
            .filter_map(|n| self.by_name.get(n))
            .flatten()
            .cloned()
            .collect()
    }

    /// Every warning of the current zone.
    pub fn warnings(&self) -> BTreeSet<Warning> {
        let mut all: BTreeSet<Warning> = self
            .units
            .values()
            .flat_map(|u| u.warnings.iter().cloned())
            .collect();
        all.extend(
            self.too_long
                .iter()
                .map(|id| Warning::NameTooLong { app_id: id.clone() }),
        );
        all
    }

    /// Bring the records of `apps` up to date with `cluster` (an id missing from `cluster` is
    /// a removed app). Cost: the units of these apps and of their parent names, not the zone.
    pub fn update<'a>(
        &mut self,
        cluster: &Cluster,
        apps: impl IntoIterator<Item = &'a AppId>,
        resolved: HostLookup<'_>,
    ) -> Updated {
        let mut out = Updated::default();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        for id in apps {
            // An app's name follows from its id alone.
            let name = build::app_name(id, &self.cfg);
            let exists = cluster.apps.contains_key(id);
            let linked = match &name {
                Some(n) => self
                    .by_name
                    .get(n)
                    .is_some_and(|ids| ids.binary_search(id).is_ok()),
                None => self.too_long.contains(id),
            };
            match (exists, linked, name) {
                (true, true, Some(n)) => {
                    dirty.insert(n);
                }
                // Appeared or gone: its unit changes, and so do the units above it (their
                // reserved child labels).
                (true, false, Some(n)) => self.link(id, &n, &mut dirty),
                (false, true, Some(n)) => self.unlink(id, &n, &mut dirty),
                (true, false, None) => {
                    self.too_long.insert(id.clone());
                    out.new_warnings
                        .push(Warning::NameTooLong { app_id: id.clone() });
                }
                (false, true, None) => {
                    self.too_long.remove(id);
                }
                _ => {}
            }
        }
        for unit in dirty {
            self.rebuild_unit(cluster, &unit, resolved, &mut out);
        }
        out
    }

    /// The names of `id`'s ancestors (groups), nearest first, and the label below each.
    fn ancestry(&self, id: &str) -> Vec<(String, String)> {
        let labels = naming::app_labels(id);
        (0..labels.len())
            .filter_map(|i| {
                naming::join(&labels[i + 1..], &self.zone)
                    .map(|parent| (parent.to_ascii_lowercase(), labels[i].clone()))
            })
            .collect()
    }

    fn link(&mut self, id: &AppId, name: &str, dirty: &mut BTreeSet<String>) {
        let ids = self.by_name.entry(name.to_string()).or_default();
        if let Err(i) = ids.binary_search(id) {
            ids.insert(i, id.clone());
        }
        dirty.insert(name.to_string());
        for (parent, label) in self.ancestry(id) {
            let count = self
                .children
                .entry(parent.clone())
                .or_default()
                .entry(label)
                .or_insert(0);
            *count += 1;
            if *count == 1 && self.by_name.contains_key(&parent) {
                dirty.insert(parent);
            }
        }
    }

    fn unlink(&mut self, id: &AppId, name: &str, dirty: &mut BTreeSet<String>) {
        if let Some(ids) = self.by_name.get_mut(name) {
            if let Ok(i) = ids.binary_search(id) {
                ids.remove(i);
            }
            if ids.is_empty() {
                self.by_name.remove(name);
            }
        }
        dirty.insert(name.to_string());
        for (parent, label) in self.ancestry(id) {
            let Some(labels) = self.children.get_mut(&parent) else {
                continue;
            };
            let gone = labels.get_mut(&label).is_some_and(|c| {
                *c -= 1;
                *c == 0
            });
            if gone {
                labels.remove(&label);
                if labels.is_empty() {
                    self.children.remove(&parent);
                }
                if self.by_name.contains_key(&parent) {
                    dirty.insert(parent);
                }
            }
        }
    }

    /// Recompute one unit and apply the difference to the nodes.
    fn rebuild_unit(
        &mut self,
        cluster: &Cluster,
        unit: &str,
        resolved: HostLookup<'_>,
        out: &mut Updated,
    ) {
        let apps: Vec<&crate::cluster::App> = self
            .by_name
            .get(unit)
            .into_iter()
            .flatten()
            .filter_map(|id| cluster.apps.get(id))
            .collect();
        let new = if apps.is_empty() {
            Contribution::default()
        } else {
            let empty = BTreeMap::new();
            let reserved: BTreeSet<String> = self
                .children
                .get(&unit.to_ascii_lowercase())
                .unwrap_or(&empty)
                .keys()
                .cloned()
                .collect();
            build::contribution(&apps, unit, &self.cfg, &reserved, resolved)
        };
        let old = self.units.remove(unit).unwrap_or_default();
        out.new_warnings.extend(
            new.warnings
                .iter()
                .filter(|w| !old.warnings.contains(w))
                .cloned(),
        );
        if new
            .warnings
            .iter()
            .any(|w| matches!(w, Warning::UnresolvedHost { .. }))
        {
            self.unresolved.insert(unit.to_string());
        } else {
            self.unresolved.remove(unit);
        }
        if old.records != new.records || old.names != new.names {
            out.records_changed += self.apply(&old, &new);
            out.changed = true;
        }
        if !apps.is_empty() {
            self.units.insert(unit.to_string(), new);
        }
    }

    /// Replace `old`'s records and names by `new`'s: additions first, so that shared names
    /// never drop to zero references in between. Returns the records added and removed.
    fn apply(&mut self, old: &Contribution, new: &Contribution) -> usize {
        let origin = self.origin.clone();
        let mut records = 0;
        for n in sorted_minus(&new.names, &old.names) {
            snapshot::add_name(&mut self.nodes, n, &origin);
        }
        for (owner, ttl, rdata) in sorted_minus(&new.records, &old.records) {
            if self.nodes.update(owner, |n| n.add(*ttl, rdata)) {
                self.records += 1;
                self.note((owner, *ttl, rdata), 1);
            }
            records += 1;
        }
        for (owner, ttl, rdata) in sorted_minus(&old.records, &new.records) {
            if self.nodes.update_bytes(owner, |n| n.remove(*ttl, rdata)) {
                self.records -= 1;
                self.note((owner, *ttl, rdata), -1);
            }
            records += 1;
        }
        for n in sorted_minus(&old.names, &new.names) {
            snapshot::remove_name(&mut self.nodes, n, &origin);
        }
        records
    }
}

/// Items of sorted `a` that are not in sorted `b`.
fn sorted_minus<'a, T: Ord>(a: &'a [T], b: &'a [T]) -> impl Iterator<Item = &'a T> {
    let mut j = 0;
    a.iter().filter(move |x| {
        while j < b.len() && b[j] < **x {
            j += 1;
        }
        !(j < b.len() && b[j] == **x)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{App, Network, PortSpec, Proto, Task, TaskState};
    use crate::zone::snapshot::Outcome;
    use std::str::FromStr;

    fn cfg() -> ZoneConfig {
        ZoneConfig {
            origin: hickory_proto::rr::Name::from_str("marathon.local.").expect("name"),
            ttl: 5,
            include_unhealthy: false,
        }
    }

    fn app(id: &str) -> App {
        App {
            id: id.into(),
            network: Network::Host,
            ports: vec![PortSpec {
                name: Some("http".into()),
                protocols: vec![Proto::Tcp],
                consumes_host_port: true,
                container_port: None,
            }],
            health_checks: 0,
            tasks: Default::default(),
        }
    }

    fn task(uuid_head: &str, host: &str, port: u16) -> Task {
        Task {
            id: format!("x.instance-{uuid_head}-b669-11e6-a48f-0ea4f4b1778c._app.1"),
            instance: None,
            host: host.into(),
            state: TaskState::Running,
            ip_addresses: vec![],
            host_ports: vec![port],
            health: vec![],
        }
    }

    /// A reproducible pseudo-random `0..n` source (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    fn full(cluster: &Cluster) -> Vec<String> {
        let soa = SoaTemplate::default_for(&cfg().origin);
        let mut b = ZoneBuilder::new(cfg(), soa, &[], 1);
        b.update(cluster, cluster.apps.keys(), &|_| Vec::new());
        text(&mut b)
    }

    fn text(b: &mut ZoneBuilder) -> Vec<String> {
        let z = b.snapshot(1);
        let mut names: Vec<String> = z.records().iter().map(|r| r.to_string()).collect();
        // Empty non-terminals exist too: compare the set of names.
        names.push(format!("{} names", z.names()));
        names
    }

    fn outcome(b: &mut ZoneBuilder, name: &str) -> Outcome {
        let z = b.snapshot(1);
        let w = crate::zone::name::parse_ascii(name).expect("name");
        z.lookup(&w, RecordType::A).outcome
    }

    #[test]
    fn incremental_updates_equal_a_full_build() {
        // A small cluster with shared groups, a collision (api.v2 / api-v2), a child app whose
        // label equals a parent's task label, and the same agent address in several apps.
        let ids = [
            "/prod/web",
            "/prod/api.v2",
            "/prod/api-v2",
            "/prod",
            "/prod/c7c311a4",
            "/dev/web",
        ];
        let mut cluster = Cluster::default();
        let soa = SoaTemplate::default_for(&cfg().origin);
        let mut b = ZoneBuilder::new(cfg(), soa, &[], 1);
        let mut next = xorshift(12345u64);
        for step in 0..400 {
            let id = ids[next(ids.len() as u64) as usize].to_string();
            match next(5) {
                0 => {
                    cluster.apps.remove(&id);
                }
                1 | 2 => {
                    let a = cluster.apps.entry(id.clone()).or_insert_with(|| app(&id));
                    let head = ["c7c311a4", "0badf00d", "12345678"][next(3) as usize];
                    let host = format!("10.0.0.{}", next(3));
                    let t = task(head, &host, 31000 + next(4) as u16);
                    a.tasks.insert(t);
                }
                3 => {
                    if let Some(a) = cluster.apps.get_mut(&id) {
                        let first = a.tasks.values().next().map(|t| t.id.clone());
                        if let Some(k) = first {
                            a.tasks.remove(&k);
                        }
                    }
                }
                _ => {
                    if let Some(a) = cluster.apps.get_mut(&id) {
                        for t in a.tasks.values_mut() {
                            t.state = if t.state == TaskState::Running {
                                TaskState::NotRunning("TASK_STAGING".into())
                            } else {
                                TaskState::Running
                            };
                        }
                    }
                }
            }
            b.update(&cluster, [&id], &|_| Vec::new());
            assert_eq!(text(&mut b), full(&cluster), "step {step}: {id}");
        }
    }

    /// Records of the zone as IXFR sees them (SOA excluded).
    fn record_set(b: &mut ZoneBuilder) -> BTreeSet<Change> {
        let z = b.snapshot(1);
        z.iter_records()
            .filter(|(_, r)| r.rdata.record_type() != RecordType::SOA)
            .map(|(o, r)| (o.clone(), r.ttl, r.rdata.clone()))
            .collect()
    }

    #[test]
    fn kept_changes_are_exactly_the_difference_between_publishes() {
        // Shared records (two apps publishing the same agent address under a group's name)
        // must appear in the changes only when the last holder goes.
        let ids = ["/prod/web", "/prod/api", "/prod/web/v2"];
        let mut cluster = Cluster::default();
        let soa = SoaTemplate::default_for(&cfg().origin);
        let mut b = ZoneBuilder::new(cfg(), soa, &[], 1);
        b.keep_changes();
        let mut next = xorshift(99u64);
        let mut before = record_set(&mut b);
        for step in 0..300 {
            // Several updates between two publishes: churn inside one delta nets out.
            for _ in 0..=next(3) {
                let id = ids[next(ids.len() as u64) as usize].to_string();
                match next(3) {
                    0 => {
                        cluster.apps.remove(&id);
                    }
                    1 => {
                        let a = cluster.apps.entry(id.clone()).or_insert_with(|| app(&id));
                        let head = ["c7c311a4", "0badf00d"][next(2) as usize];
                        let t = task(head, &format!("10.0.0.{}", next(2)), 31000);
                        a.tasks.insert(t);
                    }
                    _ => {
                        if let Some(a) = cluster.apps.get_mut(&id) {
                            let first = a.tasks.values().next().map(|t| t.id.clone());
                            if let Some(k) = first {
                                a.tasks.remove(&k);
                            }
                        }
                    }
                }
                b.update(&cluster, [&id], &|_| Vec::new());
            }
            let changes = b.take_changes();
            let after = record_set(&mut b);
            assert_eq!(b.snapshot(1).record_count(), after.len(), "step {step}");
            let removed: BTreeSet<Change> = before.difference(&after).cloned().collect();
            let added: BTreeSet<Change> = after.difference(&before).cloned().collect();
            assert_eq!(
                changes.removed.into_iter().collect::<BTreeSet<_>>(),
                removed,
                "step {step}"
            );
            assert_eq!(
                changes.added.into_iter().collect::<BTreeSet<_>>(),
                added,
                "step {step}"
            );
            before = after;
        }
    }

    #[test]
    fn shared_names_and_empty_non_terminals_come_and_go() {
        let mut cluster = Cluster::default();
        let soa = SoaTemplate::default_for(&cfg().origin);
        let mut b = ZoneBuilder::new(cfg(), soa, &[], 1);
        for id in ["/prod/web", "/prod/api"] {
            let mut a = app(id);
            let t = task("0badf00d", "10.0.0.1", 31000);
            a.tasks.insert(t);
            cluster.apps.insert(id.into(), a);
        }
        let ids: Vec<AppId> = cluster.apps.keys().cloned().collect();
        assert!(b.update(&cluster, &ids, &|_| Vec::new()).changed);
        assert_eq!(outcome(&mut b, "prod.marathon.local"), Outcome::NoData);
        cluster.apps.remove("/prod/web");
        let web = "/prod/web".to_string();
        assert!(b.update(&cluster, [&web], &|_| Vec::new()).changed);
        assert_eq!(
            outcome(&mut b, "web.prod.marathon.local"),
            Outcome::NxDomain
        );
        assert_eq!(outcome(&mut b, "api.prod.marathon.local"), Outcome::Answer);
        assert_eq!(outcome(&mut b, "prod.marathon.local"), Outcome::NoData);
        let api = "/prod/api".to_string();
        cluster.apps.remove(&api);
        b.update(&cluster, [&api], &|_| Vec::new());
        assert_eq!(outcome(&mut b, "prod.marathon.local"), Outcome::NxDomain);
        // Nothing left but the apex.
        assert_eq!(b.snapshot(2).names(), 1);
        assert_eq!(b.snapshot(3).serial(), 3);
        assert!(
            !b.update(&cluster, [&api], &|_| Vec::new()).changed,
            "no-op"
        );
    }
}
