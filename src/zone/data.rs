//! The compact record data a zone is made of: small fixed-size data inline, names as shared
//! wire-form byte strings, never a hickory `Record` with owned `Name`s per record. hickory
//! records are made from these only off the fast path (the TCP/slow path, export, tests).

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};

use super::name::{self, WireName};

/// The SOA fields, names in wire form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Soa {
    pub mname: WireName,
    pub rname: WireName,
    pub serial: u32,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
    pub minimum: u32,
}

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: WireName,
    },
    Ns(WireName),
    Cname(WireName),
    Ptr(WireName),
    Mx {
        preference: u16,
        exchange: WireName,
    },
    Soa(Box<Soa>),
    /// Data without domain names (TXT, CAA, HINFO, SSHFP, TLSA), in wire form.
    Opaque {
        rtype: u16,
        data: Box<[u8]>,
    },
    /// Anything else from a zone file: served by the slow path only.
    Other(Box<RData>),
}

/// Types whose data holds no domain name, so their wire form can be copied as is.
const OPAQUE: &[RecordType] = &[
    RecordType::TXT,
    RecordType::CAA,
    RecordType::HINFO,
    RecordType::SSHFP,
    RecordType::TLSA,
];

impl Rdata {
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::AAAA,
            Self::Srv { .. } => RecordType::SRV,
            Self::Ns(_) => RecordType::NS,
            Self::Cname(_) => RecordType::CNAME,
            Self::Ptr(_) => RecordType::PTR,
            Self::Mx { .. } => RecordType::MX,
            Self::Soa(_) => RecordType::SOA,
            Self::Opaque { rtype, .. } => RecordType::from(*rtype),
            Self::Other(r) => r.record_type(),
        }
    }

    /// From hickory's data (zone files, tests).
    pub fn from_hickory(record: &Record) -> Self {
        match &record.data {
            RData::A(a) => Self::A(a.0),
            RData::AAAA(a) => Self::Aaaa(a.0),
            RData::SRV(s) => Self::Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: name::exact(&s.target),
            },
            RData::NS(n) => Self::Ns(name::exact(&n.0)),
            RData::CNAME(n) => Self::Cname(name::exact(&n.0)),
            RData::PTR(n) => Self::Ptr(name::exact(&n.0)),
            RData::MX(mx) => Self::Mx {
                preference: mx.preference,
                exchange: name::exact(&mx.exchange),
            },
            RData::SOA(s) => Self::Soa(Box::new(Soa {
                mname: name::exact(&s.mname),
                rname: name::exact(&s.rname),
                serial: s.serial,
                refresh: s.refresh,
                retry: s.retry,
                expire: s.expire,
                minimum: s.minimum,
            })),
            other if OPAQUE.contains(&record.record_type()) => {
                let mut buf = Vec::new();
                let mut encoder = BinEncoder::new(&mut buf);
                match other.emit(&mut encoder) {
                    Ok(()) => Self::Opaque {
                        rtype: u16::from(record.record_type()),
                        data: buf.into(),
                    },
                    Err(_) => Self::Other(Box::new(other.clone())),
                }
            }
            other => Self::Other(Box::new(other.clone())),
        }
    }

    /// hickory's data, for the slow path.
    pub fn to_hickory(&self) -> Option<RData> {
        Some(match self {
            Self::A(a) => RData::A(A(*a)),
            Self::Aaaa(a) => RData::AAAA(AAAA(*a)),
            Self::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::SRV(SRV::new(*priority, *weight, *port, name::to_name(target))),
            Self::Ns(n) => RData::NS(NS(name::to_name(n))),
            Self::Cname(n) => RData::CNAME(CNAME(name::to_name(n))),
            Self::Ptr(n) => RData::PTR(PTR(name::to_name(n))),
            Self::Mx {
                preference,
                exchange,
            } => RData::MX(MX::new(*preference, name::to_name(exchange))),
            Self::Soa(s) => RData::SOA(SOA::new(
                name::to_name(&s.mname),
                name::to_name(&s.rname),
                s.serial,
                s.refresh,
                s.retry,
                s.expire,
                s.minimum,
            )),
            Self::Opaque { rtype, data } => {
                let mut decoder = BinDecoder::new(data);
                let len = hickory_proto::serialize::binary::Restrict::new(data.len() as u16);
                RData::read(&mut decoder, RecordType::from(*rtype), len).ok()?
            }
            Self::Other(r) => (**r).clone(),
        })
    }
}

/// One record of an RRset. `refs` counts the contributions that hold it (several apps can
/// publish the same address under a shared name); it leaves when the last one goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub ttl: u32,
    pub rdata: Rdata,
    pub(crate) refs: u32,
}

/// One owner name: its records sorted by type then data (each type's records, an RRset, are
/// contiguous); none for an empty non-terminal. One allocation per node, sized exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    records: Vec<Rec>,
    /// Contributions that make this name exist (it or a name below it is theirs).
    pub(crate) refs: u32,
}

/// The records of one type at one name.
pub type RRset = [Rec];

fn key(rec: &Rec) -> (RecordType, &Rdata, u32) {
    (rec.rdata.record_type(), &rec.rdata, rec.ttl)
}

impl Node {
    /// The RRset of `rtype`, if the name has one.
    pub fn rrset(&self, rtype: RecordType) -> Option<&RRset> {
        // Linear: a name holds one to three types.
        let start = self
            .records
            .iter()
            .position(|r| r.rdata.record_type() == rtype)?;
        let len = self.records[start..]
            .iter()
            .take_while(|r| r.rdata.record_type() == rtype)
            .count();
        Some(&self.records[start..start + len])
    }

    /// The RRsets in type order.
    pub fn rrsets(&self) -> impl Iterator<Item = &RRset> {
        self.records
            .chunk_by(|a, b| a.rdata.record_type() == b.rdata.record_type())
    }

    /// Add one reference to a record; true if the record is new at this name.
    pub(crate) fn add(&mut self, ttl: u32, rdata: &Rdata) -> bool {
        let wanted = (rdata.record_type(), rdata, ttl);
        match self.records.binary_search_by(|r| key(r).cmp(&wanted)) {
            Ok(i) => {
                self.records[i].refs += 1;
                false
            }
            Err(i) => {
                // Exact capacity: most names hold one to three records for their whole life.
                self.records.reserve_exact(1);
                self.records.insert(
                    i,
                    Rec {
                        ttl,
                        rdata: rdata.clone(),
                        refs: 1,
                    },
                );
                true
            }
        }
    }

    /// Drop one reference to a record; true if that was the last one and it left the name.
    pub(crate) fn remove(&mut self, ttl: u32, rdata: &Rdata) -> bool {
        let wanted = (rdata.record_type(), rdata, ttl);
        let Ok(i) = self.records.binary_search_by(|r| key(r).cmp(&wanted)) else {
            return false;
        };
        self.records[i].refs -= 1;
        if self.records[i].refs > 0 {
            return false;
        }
        self.records.remove(i);
        if self.records.capacity() > 2 * self.records.len() + 2 {
            self.records.shrink_to_fit();
        }
        true
    }

    /// Replace the RRset of `rtype` by one record.
    pub(crate) fn replace(&mut self, ttl: u32, rdata: &Rdata) {
        let rtype = rdata.record_type();
        self.records.retain(|r| r.rdata.record_type() != rtype);
        self.add(ttl, rdata);
    }

    /// Nothing holds this name any more.
    pub(crate) fn is_unused(&self) -> bool {
        self.refs == 0 && self.records.is_empty()
    }
}
