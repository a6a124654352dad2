//! An immutable zone: every name that exists, its RRsets, and the lookup rules of an
//! authoritative server (RFC 1034 §4.3.2, RFC 2308, RFC 8020). Built off the query path,
//! published whole, never mutated.

use std::collections::{BTreeMap, HashMap};

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// The RRsets at one owner name; empty for an empty non-terminal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub rrsets: BTreeMap<RecordType, Vec<Record>>,
}

/// One answer record and the in-zone address records of the name in its data (SRV target,
/// NS host): the glue that goes to the additional section with it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub record: &'a Record,
    pub glue: [&'a [Record]; 2],
}

impl Entry<'_> {
    /// The glue records, A before AAAA.
    pub fn glue(&self) -> impl Iterator<Item = &Record> {
        self.glue.iter().flat_map(|g| g.iter())
    }
}

/// The result of looking up a name in a zone. Negative results carry the CNAME chain that led
/// to them (empty unless the name was an alias), which goes into the answer section with the
/// final rcode (RFC 6604).
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The name has records of the type asked for.
    Answer(Vec<Entry<'a>>),
    /// The name exists (possibly as an empty non-terminal) but has no data of this type.
    NoData(Vec<Entry<'a>>),
    /// The name does not exist.
    NxDomain(Vec<Entry<'a>>),
}

/// A whole zone at one serial.
#[derive(Debug, Clone)]
pub struct ZoneSnapshot {
    origin: Name,
    lower_origin: LowerName,
    serial: u32,
    soa: Record,
    /// SOA for negative answers: TTL = min(SOA TTL, SOA minimum) (RFC 2308 §3).
    negative_soa: Record,
    nodes: HashMap<LowerName, Node>,
}

const NO_GLUE: &[Record] = &[];
/// Longest CNAME chain followed inside a zone.
const MAX_CNAME_CHAIN: usize = 8;

impl ZoneSnapshot {
    /// Build from a SOA and the other records. Every ancestor of an owner name up to the origin
    /// exists (as an empty non-terminal if it owns nothing). Records outside the origin are
    /// dropped; duplicates are merged.
    pub fn new(soa: Record, records: impl IntoIterator<Item = Record>) -> Self {
        Self::with_names(soa, records, Vec::new())
    }

    /// Like [`Self::new`], plus names that exist without records of their own.
    pub fn with_names(
        soa: Record,
        records: impl IntoIterator<Item = Record>,
        names: Vec<Name>,
    ) -> Self {
        let origin = soa.name.to_lowercase();
        let lower_origin = LowerName::new(&origin);
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let (serial, minimum) = match &soa.data {
            RData::SOA(s) => (s.serial, s.minimum),
            _ => (0, soa.ttl),
        };
        let mut negative_soa = soa.clone();
        negative_soa.ttl = soa.ttl.min(minimum);
        for record in std::iter::once(soa.clone()).chain(records) {
            let owner = LowerName::new(&record.name);
            if !lower_origin.zone_of(&owner) {
                continue;
            }
            let set = nodes
                .entry(owner.clone())
                .or_default()
                .rrsets
                .entry(record.record_type())
                .or_default();
            if !set.contains(&record) {
                set.push(record);
            }
            let mut ancestor = owner.base_name();
            while lower_origin.zone_of(&ancestor) && ancestor != lower_origin {
                nodes.entry(ancestor.clone()).or_default();
                ancestor = ancestor.base_name();
            }
        }
        for name in names {
            let mut name = LowerName::new(&name);
            while lower_origin.zone_of(&name) && name != lower_origin {
                nodes.entry(name.clone()).or_default();
                name = name.base_name();
            }
        }
        for node in nodes.values_mut() {
            for set in node.rrsets.values_mut() {
                set.sort_by(|a, b| a.data.cmp(&b.data));
            }
        }
        Self {
            origin,
            lower_origin,
            serial,
            soa,
            negative_soa,
            nodes,
        }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The SOA for the authority section of negative answers.
    pub fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    /// The same zone at another serial.
    pub fn set_serial(&mut self, serial: u32) {
        for soa in [&mut self.soa, &mut self.negative_soa] {
            if let RData::SOA(s) = &mut soa.data {
                s.serial = serial;
            }
        }
        if let Some(set) = self
            .nodes
            .get_mut(&self.lower_origin)
            .and_then(|n| n.rrsets.get_mut(&RecordType::SOA))
        {
            *set = vec![self.soa.clone()];
        }
        self.serial = serial;
    }

    /// Whether `name` is at or below the origin.
    pub fn contains(&self, name: &LowerName) -> bool {
        self.lower_origin.zone_of(name)
    }

    /// Same records (TTL aside) as `other`: nothing to publish.
    pub fn same_content(&self, other: &Self) -> bool {
        self.origin == other.origin && self.nodes == other.nodes
    }

    /// The RRset of `rtype` at `name`, if any.
    pub fn rrset(&self, name: &LowerName, rtype: RecordType) -> Option<&[Record]> {
        self.nodes.get(name)?.rrsets.get(&rtype).map(Vec::as_slice)
    }

    /// Look `name`/`rtype` up. `name` must be inside the zone ([`Self::contains`]).
    ///
    /// SRV entries carry the A records of their target, or its AAAA records if it has no A
    /// (HAProxy 2.6 uses whichever address comes first, ignoring `resolve-prefer`).
    /// `ANY` is answered minimally (RFC 8482 §4.2): one RRset of the name.
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Lookup<'_> {
        // Follow in-zone CNAMEs (static zones may hold aliases), as RFC 1034 §4.3.2 asks.
        let mut answer: Vec<Entry<'_>> = Vec::new();
        let mut name = name.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.nodes.get(&name) else {
                return Lookup::NxDomain(answer);
            };
            let set = if rtype == RecordType::ANY {
                node.rrsets.values().next()
            } else {
                node.rrsets.get(&rtype)
            };
            if let Some(set) = set {
                answer.extend(set.iter().map(|record| self.entry(record)));
                return Lookup::Answer(answer);
            }
            let cname = node
                .rrsets
                .get(&RecordType::CNAME)
                .and_then(|set| set.first())
                .filter(|_| rtype != RecordType::CNAME);
            let Some(cname) = cname else {
                return Lookup::NoData(answer);
            };
            answer.push(Entry {
                record: cname,
                glue: [NO_GLUE, NO_GLUE],
            });
            let RData::CNAME(target) = &cname.data else {
                break;
            };
            name = LowerName::new(&target.0);
            if !self.contains(&name) {
                break;
            }
        }
        Lookup::Answer(answer)
    }

    /// An answer record with its glue.
    fn entry<'a>(&'a self, record: &'a Record) -> Entry<'a> {
        Entry {
            record,
            glue: match &record.data {
                RData::SRV(srv) => [self.srv_glue(&LowerName::new(&srv.target)), NO_GLUE],
                // RFC 1035 §3.3.9, §3.3.11: NS and MX cause A (and AAAA) additional processing.
                RData::NS(ns) => self.addresses(&ns.0),
                RData::MX(mx) => self.addresses(&mx.exchange),
                _ => [NO_GLUE, NO_GLUE],
            },
        }
    }

    fn addresses(&self, host: &Name) -> [&[Record]; 2] {
        let host = LowerName::new(host);
        [
            self.rrset(&host, RecordType::A).unwrap_or(NO_GLUE),
            self.rrset(&host, RecordType::AAAA).unwrap_or(NO_GLUE),
        ]
    }

    fn srv_glue(&self, target: &LowerName) -> &[Record] {
        self.rrset(target, RecordType::A)
            .or_else(|| self.rrset(target, RecordType::AAAA))
            .unwrap_or(NO_GLUE)
    }

    /// Every record, SOA first, then by owner name and type; for zone export.
    pub fn records(&self) -> Vec<&Record> {
        let mut owners: Vec<&LowerName> = self.nodes.keys().collect();
        owners.sort();
        let mut out = vec![&self.soa];
        for owner in owners {
            for (rtype, set) in &self.nodes[owner].rrsets {
                if *rtype != RecordType::SOA {
                    out.extend(set);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
    use std::str::FromStr;

    fn n(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }
    fn ln(s: &str) -> LowerName {
        LowerName::new(&n(s))
    }

    fn zone() -> ZoneSnapshot {
        let soa = Record::from_rdata(
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
        );
        let t1 = n("aaaa1111.web.prod.marathon.local.");
        ZoneSnapshot::new(
            soa,
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
        assert!(matches!(
            z.lookup(&ln("nope.marathon.local."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup(&ln("below.nope.marathon.local."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup(&ln("prod.marathon.local."), RecordType::A),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            z.lookup(&ln("_tcp.prod.marathon.local."), RecordType::SRV),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            z.lookup(&ln("aaaa1111.web.prod.marathon.local."), RecordType::AAAA),
            Lookup::NoData(_)
        ));
        assert!(!z.contains(&ln("outside.example.")));
        assert_eq!(z.negative_soa().ttl, 5);
        assert_eq!(z.serial(), 7);
    }

    #[test]
    fn srv_carries_glue_and_names_match_any_case() {
        let z = zone();
        let Lookup::Answer(entries) =
            z.lookup(&ln("_WEB._tcp.Prod.marathon.LOCAL."), RecordType::SRV)
        else {
            panic!("no answer")
        };
        assert_eq!(entries.len(), 1);
        let glue: Vec<&Record> = entries[0].glue().collect();
        assert_eq!(glue.len(), 1);
        assert_eq!(glue[0].name, n("aaaa1111.web.prod.marathon.local."));
    }

    #[test]
    fn cnames_are_followed_inside_the_zone() {
        let soa = zone().soa.clone();
        let z = ZoneSnapshot::new(
            soa,
            [
                Record::from_rdata(
                    n("alias.marathon.local."),
                    5,
                    RData::CNAME(CNAME(n("aaaa1111.web.prod.marathon.local."))),
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
        let Lookup::Answer(e) = z.lookup(&ln("alias.marathon.local."), RecordType::A) else {
            panic!()
        };
        let types: Vec<RecordType> = e.iter().map(|e| e.record.record_type()).collect();
        assert_eq!(types, [RecordType::CNAME, RecordType::A]);
        let Lookup::Answer(e) = z.lookup(&ln("away.marathon.local."), RecordType::A) else {
            panic!()
        };
        assert_eq!(e.len(), 1, "out-of-zone target: the CNAME alone");
        let Lookup::Answer(e) = z.lookup(&ln("alias.marathon.local."), RecordType::CNAME) else {
            panic!()
        };
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn any_is_minimal() {
        let z = zone();
        let Lookup::Answer(entries) = z.lookup(&ln("marathon.local."), RecordType::ANY) else {
            panic!("no answer")
        };
        assert_eq!(entries.len(), 1);
    }
}
