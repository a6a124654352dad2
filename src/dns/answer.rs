//! What goes into a response, decided once for both query paths (the UDP fast path and
//! hickory's server): rcode, AA, the answer records with their glue, the negative SOA.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::zone::snapshot::{Entry, Glue, Lookup, Outcome, ZoneSnapshot};

/// A response before size limits.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'z> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    /// The zone and what the lookup found (none for errors).
    pub found: Option<(&'z ZoneSnapshot, Lookup<'z>)>,
    /// How far the answer RRset is rotated.
    pub rotation: usize,
}

impl<'z> Plan<'z> {
    pub fn error(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            authoritative: false,
            found: None,
            rotation: 0,
        }
    }

    /// Number of answer entries (each with its glue).
    pub fn len(&self) -> usize {
        self.found.as_ref().map_or(0, |(_, l)| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th answer entry and its glue.
    pub fn entry(&self, i: usize) -> Option<(Entry<'z>, Glue<'z>)> {
        let (zone, lookup) = self.found.as_ref()?;
        let entry = lookup.entry(i, self.rotation)?;
        Some((entry, zone.glue(entry.rec)))
    }

    /// The SOA for the authority section: negative answers only.
    pub fn authority(&self) -> Option<(&'z [u8], u32, &'z crate::zone::data::Rec)> {
        let (zone, lookup) = self.found.as_ref()?;
        match lookup.outcome {
            Outcome::Answer => None,
            Outcome::NoData | Outcome::NxDomain => zone.negative_soa(),
        }
    }
}

/// Decide the response to a standard query for `qname` (lower-cased wire form) in `zone`.
pub fn plan<'z>(
    zone: Option<&'z ZoneSnapshot>,
    qname: &[u8],
    qtype: RecordType,
    qclass: DNSClass,
    id: u16,
) -> Plan<'z> {
    let Some(zone) = zone else {
        return Plan::error(ResponseCode::Refused);
    };
    if qclass != DNSClass::IN && qclass != DNSClass::ANY {
        return Plan::error(ResponseCode::Refused);
    }
    // Zone transfers are not offered (yet): RFC 5936 §2.2.1 allows refusing.
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Plan::error(ResponseCode::Refused);
    }
    // Meta-types other than ANY/AXFR/IXFR are not queryable (RFC 6895 §3.1).
    if qtype == RecordType::OPT || (128..255).contains(&u16::from(qtype)) {
        return Plan::error(ResponseCode::FormErr);
    }
    let lookup = zone.lookup(qname, qtype);
    Plan {
        rcode: match lookup.outcome {
            Outcome::NxDomain => ResponseCode::NXDomain,
            Outcome::Answer | Outcome::NoData => ResponseCode::NoError,
        },
        authoritative: true,
        rotation: lookup.rotation(id),
        found: Some((zone, lookup)),
    }
}
