//! An immutable zone: every name that exists, its RRsets, and the lookup rules of an
//! authoritative server (RFC 1034 §4.3.2, RFC 2308, RFC 8020).
//!
//! The nodes live in a persistent map ([`Nodes`]): a snapshot is an O(1) clone of the
//! builder's map, and a publish that changes a few names copies only the paths to them, so
//! successive snapshots share almost everything. A published snapshot is never mutated.
//! Lookups allocate nothing: they return borrowed records.

use hickory_proto::rr::{Name, Record, RecordType};

use super::data::{RRset, Rdata, Rec};
use super::name::{self, WireName};

pub use super::nodes::Nodes;

/// Longest CNAME chain followed inside a zone.
pub const MAX_CNAME_CHAIN: usize = 8;

/// How a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The name has records of the type asked for (or a CNAME chain left the zone).
    Answer,
    /// The name exists (possibly as an empty non-terminal) but has no data of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

/// One answer record with its owner name (wire form, as stored).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'z> {
    pub owner: &'z [u8],
    pub rec: &'z Rec,
}

/// The result of a lookup: the CNAMEs followed (they go into the answer section whatever the
/// outcome, RFC 6604) and the final RRset of an answer.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'z> {
    pub outcome: Outcome,
    chain: [Option<Entry<'z>>; MAX_CNAME_CHAIN],
    chain_len: usize,
    rrset: Option<(&'z [u8], &'z RRset)>,
}

impl<'z> Lookup<'z> {
    fn new() -> Self {
        Self {
            outcome: Outcome::Answer,
            chain: [None; MAX_CNAME_CHAIN],
            chain_len: 0,
            rrset: None,
        }
    }

    /// Number of answer records.
    pub fn len(&self) -> usize {
        self.chain_len + self.rrset.map_or(0, |(_, s)| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How far the final RRset is rotated for a response with this message ID. Clients pick
    /// random IDs (RFC 5452), so answers spread evenly without any shared counter; the same
    /// query (ID included) always gets the same order. A CNAME chain keeps its order.
    pub fn rotation(&self, id: u16) -> usize {
        match self.rrset {
            Some((_, set)) if self.chain_len == 0 && set.len() > 1 => usize::from(id) % set.len(),
            _ => 0,
        }
    }

    /// The `i`-th answer record, the final RRset rotated left by `rotation`.
    pub fn entry(&self, i: usize, rotation: usize) -> Option<Entry<'z>> {
        if i < self.chain_len {
            return self.chain[i];
        }
        let (owner, set) = self.rrset?;
        let n = set.len();
        let j = i - self.chain_len;
        (j < n).then(|| Entry {
            owner,
            rec: &set[(j + rotation) % n],
        })
    }
}

/// Glue for one answer record: up to two address RRsets with their owner.
pub type Glue<'z> = [Option<(&'z [u8], &'z RRset)>; 2];

/// A whole zone at one serial.
#[derive(Debug, Clone)]
pub struct ZoneSnapshot {
    origin: WireName,
    origin_name: Name,
    serial: u32,
    /// TTL of the SOA in negative answers: min(SOA TTL, SOA minimum) (RFC 2308 §3).
    negative_ttl: u32,
    /// Records other than the SOA.
    records: usize,
    nodes: Nodes,
}

impl ZoneSnapshot {
    /// A zone from its parts; the SOA must be at the origin in `nodes`.
    pub(crate) fn from_parts(origin: WireName, nodes: Nodes, records: usize) -> Self {
        let (serial, negative_ttl) = nodes
            .get(&origin)
            .and_then(|n| n.rrset(RecordType::SOA))
            .and_then(|s| s.first())
            .map_or((0, 0), |r| match &r.rdata {
                Rdata::Soa(soa) => (soa.serial, r.ttl.min(soa.minimum)),
                _ => (0, r.ttl),
            });
        Self {
            origin_name: name::to_name(&origin),
            origin,
            serial,
            negative_ttl,
            records,
            nodes,
        }
    }

    /// A static zone from a SOA and the other records. Every ancestor of an owner name up to
    /// the origin exists (as an empty non-terminal if it owns nothing). Records outside the
    /// origin are dropped; duplicates are merged.
    pub fn new(soa: Record, records: impl IntoIterator<Item = Record>) -> Self {
        let origin = name::lower(&soa.name);
        let mut nodes = Nodes::new();
        let mut count = 0;
        let mut seen = std::collections::BTreeSet::new();
        for record in std::iter::once(soa).chain(records) {
            let owner = name::lower(&record.name);
            if !name::is_within(&owner, &origin) {
                continue;
            }
            let rdata = Rdata::from_hickory(&record);
            if !seen.insert((owner.clone(), record.ttl, rdata.clone())) {
                continue;
            }
            let is_soa = rdata.record_type() == RecordType::SOA;
            if nodes.update(&owner, |n| n.add(record.ttl, &rdata)) && !is_soa {
                count += 1;
            }
            add_name(&mut nodes, &owner, &origin);
        }
        Self::from_parts(origin, nodes, count)
    }

    /// Records in the zone, the SOA excluded (what an AXFR sends between its two SOAs).
    pub fn record_count(&self) -> usize {
        self.records
    }

    pub fn origin(&self) -> &Name {
        &self.origin_name
    }

    /// The origin in wire form.
    pub fn origin_wire(&self) -> &[u8] {
        &self.origin
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Number of names (empty non-terminals included).
    pub fn names(&self) -> usize {
        self.nodes.len()
    }

    /// The SOA for the authority section of negative answers: owner, TTL and the record.
    pub fn negative_soa(&self) -> Option<(&[u8], u32, &Rec)> {
        let (owner, node) = self.nodes.get_key_value(&self.origin[..])?;
        let rec = node.rrset(RecordType::SOA)?.first()?;
        Some((owner, self.negative_ttl, rec))
    }

    /// Whether `name` (lower-cased wire form) is at or below the origin.
    pub fn contains(&self, name: &[u8]) -> bool {
        name::is_within(name, &self.origin)
    }

    /// Look `name`/`rtype` up. `name` must be lower-cased wire form inside the zone
    /// ([`Self::contains`]).
    ///
    /// `ANY` is answered minimally (RFC 8482 §4.2): one RRset of the name.
    pub fn lookup(&self, name: &[u8], rtype: RecordType) -> Lookup<'_> {
        // Follow in-zone CNAMEs (static zones may hold aliases), as RFC 1034 §4.3.2 asks.
        let mut out = Lookup::new();
        let mut lowered = [0u8; name::MAX_WIRE];
        let mut name: &[u8] = name;
        for _ in 0..MAX_CNAME_CHAIN {
            let Some((owner, node)) = self.nodes.get_key_value(name) else {
                out.outcome = Outcome::NxDomain;
                return out;
            };
            let set = if rtype == RecordType::ANY {
                node.rrsets().next()
            } else {
                node.rrset(rtype)
            };
            if let Some(set) = set {
                out.rrset = Some((owner, set));
                return out;
            }
            let cname = node
                .rrset(RecordType::CNAME)
                .and_then(|set| set.first())
                .filter(|_| rtype != RecordType::CNAME);
            let Some(cname) = cname else {
                out.outcome = Outcome::NoData;
                return out;
            };
            out.chain[out.chain_len] = Some(Entry { owner, rec: cname });
            out.chain_len += 1;
            let Rdata::Cname(target) = &cname.rdata else {
                break;
            };
            let len = target.len().min(name::MAX_WIRE);
            lowered[..len].copy_from_slice(&target[..len]);
            lowered[..len].make_ascii_lowercase();
            // Label length bytes are < 64, untouched by ASCII lower-casing.
            let next = &lowered[..len];
            if !self.contains(next) {
                break;
            }
            // The next lookup borrows from `self.nodes` through its key, not from `lowered`.
            match self.nodes.get_key_value(next) {
                Some((key, _)) => name = key,
                None => {
                    out.outcome = Outcome::NxDomain;
                    return out;
                }
            }
        }
        out
    }

    /// The in-zone address records that go with an answer record: an SRV target's A
    /// records, or its AAAA records if it has no A (HAProxy 2.6 uses whichever address comes
    /// first, ignoring `resolve-prefer`); both for NS and MX hosts (RFC 1035 §3.3.9, §3.3.11).
    pub fn glue(&self, rec: &Rec) -> Glue<'_> {
        let rrset = |host: &[u8], rtype| {
            // Generated targets are lower-case already; zone-file data may not be.
            let found = if host.iter().any(u8::is_ascii_uppercase) {
                let mut lowered = [0u8; name::MAX_WIRE];
                let len = host.len().min(name::MAX_WIRE);
                lowered[..len].copy_from_slice(&host[..len]);
                lowered[..len].make_ascii_lowercase();
                self.nodes.get_key_value(&lowered[..len])
            } else {
                self.nodes.get_key_value(host)
            };
            let (owner, node) = found?;
            node.rrset(rtype).map(|set| (&owner[..], set))
        };
        match &rec.rdata {
            Rdata::Srv { target, .. } => [
                rrset(target, RecordType::A).or_else(|| rrset(target, RecordType::AAAA)),
                None,
            ],
            Rdata::Ns(host) | Rdata::Mx { exchange: host, .. } => {
                [rrset(host, RecordType::A), rrset(host, RecordType::AAAA)]
            }
            _ => [None, None],
        }
    }

    /// Every record, owners in no particular order, without copying (zone transfers).
    pub fn iter_records(&self) -> impl Iterator<Item = (&WireName, &Rec)> + Send + '_ {
        self.nodes
            .iter()
            .flat_map(|(owner, node)| node.rrsets().flatten().map(move |r| (owner, r)))
    }

    /// The SOA as owner, TTL and data (every served zone has one).
    pub fn soa_record(&self) -> Option<(&[u8], u32, &Rdata)> {
        let (owner, node) = self.nodes.get_key_value(&self.origin)?;
        let rec = node.rrset(RecordType::SOA)?.first()?;
        Some((&owner[..], rec.ttl, &rec.rdata))
    }

    /// Every record as hickory records, SOA first, then by owner name and type; for zone
    /// export and tests.
    pub fn records(&self) -> Vec<Record> {
        let mut owners: Vec<&WireName> = self.nodes.iter().map(|(k, _)| k).collect();
        owners.sort_by_key(|w| name::to_name(w));
        let mut soa = Vec::new();
        let mut out = Vec::new();
        for owner in owners {
            let name = name::to_name(owner);
            let Some(node) = self.nodes.get(owner) else {
                continue;
            };
            for set in node.rrsets() {
                for rec in set {
                    let Some(data) = rec.rdata.to_hickory() else {
                        continue;
                    };
                    let record = Record::from_rdata(name.clone(), rec.ttl, data);
                    if rec.rdata.record_type() == RecordType::SOA {
                        soa.push(record);
                    } else {
                        out.push(record);
                    }
                }
            }
        }
        soa.extend(out);
        soa
    }
}

/// Count one more holder of `owner` and each of its ancestors below `origin`.
pub(crate) fn add_name(nodes: &mut Nodes, owner: &WireName, origin: &[u8]) {
    if !name::is_within(owner, origin) || &owner[..] == origin {
        return;
    }
    nodes.update(owner, |n| n.refs += 1);
    let mut at: &[u8] = owner;
    while let Some(up) = name::parent(at) {
        if !name::is_within(up, origin) || up == origin {
            break;
        }
        nodes.update_bytes(up, |n| n.refs += 1);
        at = up;
    }
}

/// Drop one holder of `owner` and each of its ancestors; names nothing holds disappear.
pub(crate) fn remove_name(nodes: &mut Nodes, owner: &[u8], origin: &[u8]) {
    let mut at: &[u8] = owner;
    while name::is_within(at, origin) && at != origin {
        nodes.update_bytes(at, |n| n.refs = n.refs.saturating_sub(1));
        let Some(up) = name::parent(at) else { break };
        at = up;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
    use std::str::FromStr;

    fn n(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }
    fn w(s: &str) -> WireName {
        name::parse_ascii(s).expect("name")
    }

    fn soa() -> Record {
        Record::from_rdata(
            n("marathon.local."),
            60,
            RData::SOA(SOA::new(
                n("ns1.marathon.local."),
                n("hostmaster.marathon.local."),
                7,
                60,
                30,
                3600,
                5,
            )),
        )
    }

    fn zone() -> ZoneSnapshot {
        let t1 = n("aaaa1111.web.prod.marathon.local.");
        ZoneSnapshot::new(
            soa(),
            [
                Record::from_rdata(t1.clone(), 5, RData::A(A::new(10, 0, 0, 1))),
                Record::from_rdata(
                    n("_web._tcp.prod.marathon.local."),
                    5,
                    RData::SRV(SRV::new(0, 1, 31000, t1)),
                ),
                Record::from_rdata(n("outside.example."), 5, RData::A(A::new(1, 1, 1, 1))),
            ],
        )
    }

    #[test]
    fn nxdomain_nodata_and_empty_non_terminals() {
        let z = zone();
        let outcome = |s: &str, t| z.lookup(&w(s), t).outcome;
        assert_eq!(
            outcome("nope.marathon.local.", RecordType::A),
            Outcome::NxDomain
        );
        assert_eq!(
            outcome("below.nope.marathon.local.", RecordType::A),
            Outcome::NxDomain
        );
        assert_eq!(
            outcome("prod.marathon.local.", RecordType::A),
            Outcome::NoData
        );
        assert_eq!(
            outcome("_tcp.prod.marathon.local.", RecordType::SRV),
            Outcome::NoData
        );
        assert_eq!(
            outcome("aaaa1111.web.prod.marathon.local.", RecordType::AAAA),
            Outcome::NoData
        );
        assert!(!z.contains(&w("outside.example.")));
        assert_eq!(z.negative_soa().map(|s| s.1), Some(5));
        assert_eq!(z.serial(), 7);
    }

    #[test]
    fn srv_carries_glue() {
        let z = zone();
        let found = z.lookup(&w("_web._tcp.prod.marathon.local."), RecordType::SRV);
        assert_eq!(found.outcome, Outcome::Answer);
        assert_eq!(found.len(), 1);
        let entry = found.entry(0, 0).expect("entry");
        let glue = z.glue(entry.rec);
        let (owner, set) = glue[0].expect("glue");
        assert_eq!(owner, &w("aaaa1111.web.prod.marathon.local.")[..]);
        assert_eq!(set.len(), 1);
        assert!(glue[1].is_none());
    }

    #[test]
    fn cnames_are_followed_inside_the_zone() {
        let z = ZoneSnapshot::new(
            soa(),
            [
                Record::from_rdata(
                    n("alias.marathon.local."),
                    5,
                    RData::CNAME(CNAME(n("AAAA1111.web.prod.marathon.local."))),
                ),
                Record::from_rdata(
                    n("aaaa1111.web.prod.marathon.local."),
                    5,
                    RData::A(A::new(10, 0, 0, 1)),
                ),
                Record::from_rdata(
                    n("away.marathon.local."),
                    5,
                    RData::CNAME(CNAME(n("www.example."))),
                ),
            ],
        );
        let found = z.lookup(&w("alias.marathon.local."), RecordType::A);
        let types: Vec<RecordType> = (0..found.len())
            .filter_map(|i| found.entry(i, 0))
            .map(|e| e.rec.rdata.record_type())
            .collect();
        assert_eq!(types, [RecordType::CNAME, RecordType::A]);
        let found = z.lookup(&w("away.marathon.local."), RecordType::A);
        assert_eq!(
            (found.outcome, found.len()),
            (Outcome::Answer, 1),
            "out-of-zone target: the CNAME alone"
        );
        assert_eq!(
            z.lookup(&w("alias.marathon.local."), RecordType::CNAME)
                .len(),
            1
        );
    }

    #[test]
    fn any_is_minimal_and_rotation_follows_the_id() {
        let z = zone();
        let found = z.lookup(&w("marathon.local."), RecordType::ANY);
        assert_eq!(found.len(), 1);
        let many = ZoneSnapshot::new(
            soa(),
            (1..=3).map(|i| {
                Record::from_rdata(n("web.marathon.local."), 5, RData::A(A::new(10, 0, 0, i)))
            }),
        );
        let found = many.lookup(&w("web.marathon.local."), RecordType::A);
        assert_eq!(found.rotation(4), 1);
        let first = |id| {
            let e = found.entry(0, found.rotation(id)).expect("entry");
            e.rec.rdata.clone()
        };
        assert_ne!(first(0), first(1));
        assert_eq!(first(1), first(4));
    }
}
