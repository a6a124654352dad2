//! Transfer messages on the wire: what a transfer request asks (read from its raw bytes) and
//! the response stream cut into messages.
//!
//! A response is cut at [`TARGET`] bytes: big enough that a 100,000-task zone takes a few
//! hundred messages, small enough that one message is cheap to build, sign and resend. A
//! record is never cut or dropped: one that does not fit the current message starts the next,
//! and one that fits no message at all fails the transfer (never a silently short zone).

use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::dns::encode::Encoder;
use crate::zone::data::Rdata;

/// A message is closed once it holds this many bytes.
pub const TARGET: usize = 16 * 1024;
/// Room left at the end of every message for its TSIG record.
const TSIG_ROOM: usize = 512;
/// The largest DNS message over TCP.
const MAX_MESSAGE: usize = 65_535;

pub const TYPE_SOA: u16 = 6;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_TSIG: u16 = 250;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;

/// The parts of a transfer request a response needs, read from the request's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferQuery {
    pub id: u16,
    /// Opcode and RD as sent (header bits 11–14 and 8).
    pub flags: u16,
    /// The question section as received: name, type, class.
    pub question: Vec<u8>,
    /// The question's name, lower-cased wire form.
    pub qname: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    /// IXFR: the serial of the SOA the client sent in the authority section.
    pub client_serial: Option<u32>,
    /// The client's EDNS UDP size, if it sent an OPT record (echoed in error answers).
    pub edns: Option<u16>,
}

/// An uncompressed-or-compressed name starting at `at`: its end (the byte after it).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return (at + 2 <= msg.len()).then_some(at + 2),
            l if l & 0xC0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

fn u32_at(msg: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(msg.get(at..at + 4)?.try_into().ok()?))
}

/// Every record of a message after the question: (type, offset of its owner, offset of its
/// data, data length), in order; `None` if malformed.
fn records(msg: &[u8]) -> Option<Vec<(u16, usize, usize, usize)>> {
    let count = |i| u16_at(msg, i).map(usize::from);
    let (questions, total) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::with_capacity(total.min(64));
    for _ in 0..total {
        let owner = at;
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let len = usize::from(u16_at(msg, at + 8)?);
        out.push((rtype, owner, at + 10, len));
        at += 10 + len;
        if at > msg.len() {
            return None;
        }
    }
    Some(out)
}

/// The type of the first question, if the message has one.
pub fn question_type(msg: &[u8]) -> Option<u16> {
    if u16_at(msg, 4)? == 0 {
        return None;
    }
    u16_at(msg, skip_name(msg, 12)?)
}

/// The type of a message's last record (a TSIG is always last, RFC 8945 §5.1). Walks the
/// message without allocating: every TCP query with EDNS is asked.
pub fn last_additional_type(msg: &[u8]) -> Option<u16> {
    if u16_at(msg, 10)? == 0 {
        return None;
    }
    let count = |i| u16_at(msg, i).map(usize::from);
    let total = count(6)? + count(8)? + count(10)?;
    let mut at = 12;
    for _ in 0..count(4)? {
        at = skip_name(msg, at)? + 4;
    }
    let mut last = None;
    for _ in 0..total {
        at = skip_name(msg, at)?;
        last = Some(u16_at(msg, at)?);
        at += 10 + usize::from(u16_at(msg, at + 8)?);
    }
    (at <= msg.len()).then_some(last).flatten()
}

/// The UDP payload size of the message's OPT record, if it has one.
pub fn edns_payload(msg: &[u8]) -> Option<u16> {
    let records = records(msg)?;
    let &(_, _, data, _) = records.iter().find(|r| r.0 == TYPE_OPT)?;
    // The payload size is the OPT record's class field: before TTL (4) and RDLENGTH (2).
    u16_at(msg, data - 8)
}

impl TransferQuery {
    /// The request's opcode (0: QUERY).
    pub fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0x0F
    }

    /// Read a request with exactly one question; `None` if malformed (FORMERR).
    pub fn parse(msg: &[u8]) -> Option<Self> {
        let id = u16_at(msg, 0)?;
        let flags = u16_at(msg, 2)? & 0x7900;
        if u16_at(msg, 4)? != 1 {
            return None;
        }
        let answers = u16_at(msg, 6)?;
        let authorities = u16_at(msg, 8)?;
        // The question name: plain labels only (a pointer cannot point anywhere earlier).
        let mut qname = Vec::new();
        let mut at = 12;
        loop {
            let len = usize::from(*msg.get(at)?);
            if len & 0xC0 != 0 {
                return None;
            }
            qname.push(len as u8);
            if len == 0 {
                at += 1;
                break;
            }
            qname.extend(
                msg.get(at + 1..at + 1 + len)?
                    .iter()
                    .map(u8::to_ascii_lowercase),
            );
            at += 1 + len;
        }
        let qtype = u16_at(msg, at)?;
        let qclass = u16_at(msg, at + 2)?;
        let question = msg.get(12..at + 4)?.to_vec();
        at += 4;
        let mut client_serial = None;
        if qtype == TYPE_IXFR {
            // Skip answers (there should be none), then the first authority record is the
            // client's SOA (RFC 1995 §3).
            for _ in 0..answers {
                at = skip_name(msg, at)?;
                at += 10 + usize::from(u16_at(msg, at + 8)?);
            }
            if authorities > 0 {
                at = skip_name(msg, at)?;
                if u16_at(msg, at)? == TYPE_SOA {
                    let rdata = at + 10;
                    let after_mname = skip_name(msg, rdata)?;
                    let after_rname = skip_name(msg, after_mname)?;
                    client_serial = Some(u32_at(msg, after_rname)?);
                }
            }
        }
        Some(Self {
            id,
            flags,
            question,
            qname,
            qtype,
            qclass,
            client_serial,
            edns: edns_payload(msg),
        })
    }

    /// A header-only response with `rcode` (and the question), for refusals and errors.
    pub fn error(&self, rcode: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.question.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        let flags = 0x8000 | self.flags | u16::from(rcode & 0x0F);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&self.question);
        if let Some(payload) = self.edns {
            // OPT as the query path writes it (RFC 6891 §6.1.1): root owner, version 0.
            out[11] = 1;
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&payload.max(512).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        out
    }
}

/// One record to send: owner (wire form), TTL, data.
pub type Item<'z> = (&'z [u8], u32, &'z Rdata);

/// Why a transfer cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a record of {0} bytes fits no DNS message")]
    RecordTooLarge(usize),
    #[error("record data hickory cannot encode: {0}")]
    Data(String),
}

/// Cuts a record stream into response messages (AA set, the question in each, header counts
/// filled in). Each call to [`Messages::next_message`] builds one message.
pub struct Messages<'z, I: Iterator<Item = Item<'z>>> {
    query: &'z TransferQuery,
    records: std::iter::Peekable<I>,
    buf: Vec<u8>,
}

impl<'z, I: Iterator<Item = Item<'z>>> Messages<'z, I> {
    pub fn new(query: &'z TransferQuery, records: I) -> Self {
        Self {
            query,
            records: records.peekable(),
            buf: vec![0; MAX_MESSAGE],
        }
    }

    /// The next message, `None` when every record has been sent.
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, EncodeError>> {
        self.records.peek()?;
        Some(self.fill())
    }

    fn fill(&mut self) -> Result<Vec<u8>, EncodeError> {
        let query = self.query;
        let mut e = Encoder::new(&mut self.buf, MAX_MESSAGE - TSIG_ROOM);
        let full = |_| EncodeError::RecordTooLarge(MAX_MESSAGE);
        e.write(&[0; 12]).map_err(full)?;
        let question_at = e.len();
        e.write(&query.question).map_err(full)?;
        e.store(question_at, &query.question);
        let mut count = 0u16;
        while e.len() < TARGET && count < u16::MAX {
            let Some(&(owner, ttl, rdata)) = self.records.peek() else {
                break;
            };
            let other = match rdata {
                Rdata::Other(r) => Some(wire_rdata(r)?),
                _ => None,
            };
            if e.record_data(owner, ttl, rdata, other.as_deref()).is_err() {
                if count == 0 {
                    return Err(EncodeError::RecordTooLarge(owner.len() + 10));
                }
                // Starts the next message.
                break;
            }
            self.records.next();
            count += 1;
        }
        let flags = 0x8000 | query.flags | 0x0400;
        let header = &mut e.bytes_mut()[..12];
        header[0..2].copy_from_slice(&query.id.to_be_bytes());
        header[2..4].copy_from_slice(&flags.to_be_bytes());
        header[4..6].copy_from_slice(&1u16.to_be_bytes());
        header[6..8].copy_from_slice(&count.to_be_bytes());
        Ok(e.bytes().to_vec())
    }
}

/// The wire form of record data hickory knows and our encoder does not, names uncompressed.
fn wire_rdata(rdata: &hickory_proto::rr::RData) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    encoder.set_canonical_form(true);
    rdata
        .emit(&mut encoder)
        .map_err(|e| EncodeError::Data(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::name;
    use hickory_proto::op::Message;
    use hickory_proto::rr::{RData, RecordType};
    use std::net::Ipv4Addr;

    fn axfr_request(qname: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&name::parse_ascii(qname).expect("name"));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn ixfr_requests_yield_the_client_serial() {
        // As dig sends it: the SOA owner compressed against the question.
        let mut m = axfr_request("Marathon.Local", TYPE_IXFR);
        m[9] = 1; // NSCOUNT
        m.extend_from_slice(&[0xC0, 12]);
        m.extend_from_slice(&TYPE_SOA.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        let rdata = [&[0u8][..], &[0], &77u32.to_be_bytes(), &[0; 16]].concat();
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        let q = TransferQuery::parse(&m).expect("parses");
        assert_eq!(q.qtype, TYPE_IXFR);
        assert_eq!(q.client_serial, Some(77));
        assert_eq!(
            q.qname,
            name::parse_ascii("marathon.local").expect("n").to_vec()
        );
        // Truncated anywhere before the serial's end: an error, never a panic.
        for cut in 0..m.len() - 16 {
            if let Some(q) = TransferQuery::parse(&m[..cut]) {
                assert_ne!(q.client_serial, Some(77), "cut at {cut}");
            }
        }
    }

    #[test]
    fn the_last_record_type_is_found_and_truncations_are_safe() {
        let mut m = axfr_request("z", TYPE_AXFR);
        assert_eq!(last_additional_type(&m), None, "no additional records");
        m[11] = 1;
        // An OPT record (root owner, type 41, payload 1232, no options).
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(last_additional_type(&m), Some(TYPE_OPT));
        assert_eq!(edns_payload(&m), Some(1232));
        for cut in 0..m.len() {
            assert_eq!(last_additional_type(&m[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_large_zone_is_split_into_whole_messages() {
        let q = TransferQuery::parse(&axfr_request("z", TYPE_AXFR)).expect("parses");
        let owners: Vec<Vec<u8>> = (0..5000)
            .map(|i| {
                name::parse_ascii(&format!("task-{i}.web.z"))
                    .expect("n")
                    .to_vec()
            })
            .collect();
        let data: Vec<Rdata> = (0..5000u32)
            .map(|i| Rdata::A(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let records = owners.iter().zip(&data).map(|(o, d)| (&o[..], 5, d));
        let mut messages = Messages::new(&q, records);
        let mut seen = Vec::new();
        let mut count = 0;
        while let Some(m) = messages.next_message() {
            let m = m.expect("encodes");
            assert!(m.len() <= TARGET + 600, "{}", m.len());
            let parsed = Message::from_vec(&m).expect("a valid message");
            assert!(parsed.metadata.authoritative);
            assert_eq!(parsed.metadata.id, 0x1234);
            assert_eq!(parsed.queries.len(), 1);
            for r in &parsed.answers {
                assert_eq!(r.record_type(), RecordType::A);
                if let RData::A(a) = &r.data {
                    seen.push(u32::from(a.0));
                }
            }
            count += 1;
        }
        assert!(count > 5, "{count} messages");
        let want: Vec<u32> = (0..5000).map(|i| 0x0a00_0000 + i).collect();
        assert_eq!(seen, want, "every record once, in order");
    }

    #[test]
    fn a_record_too_large_for_any_message_fails_the_transfer() {
        let q = TransferQuery::parse(&axfr_request("z", TYPE_AXFR)).expect("parses");
        let owner = name::parse_ascii("big.z").expect("n");
        let data = Rdata::Opaque {
            rtype: 16,
            data: vec![0u8; 70_000].into(),
        };
        let mut messages = Messages::new(&q, std::iter::once((&owner[..], 5, &data)));
        assert!(matches!(
            messages.next_message(),
            Some(Err(EncodeError::RecordTooLarge(_)))
        ));
    }
}
