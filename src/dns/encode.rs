//! The response encoder of the UDP fast path: writes a [`Plan`] into a caller's buffer with
//! no heap allocation, byte for byte as hickory's encoder writes the same response (same name
//! compression, same size checks), so that both paths answer identically (tested).
//!
//! hickory's rules, reproduced here: names are compressed against earlier *record* names only
//! (the question is stored as one opaque candidate, type and class included, so nothing
//! matches it); candidates are byte-exact suffixes, at most 64 of them, recorded only below
//! offset 0x3FFF; at most 120 names are compressed per message; SRV targets are written in
//! full (RFC 2782) but recorded as candidates; a name is written in full before it is replaced
//! by a pointer, so that much room is needed; a record that does not fit is rolled back
//! (pointers too, the compressed-name count not).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::answer::Plan;
use crate::zone::data::{Rdata, Rec};
use crate::zone::name;

const MAX_CANDIDATES: usize = 64;
const MAX_COMPRESSED_NAMES: usize = 120;
const CLASS_IN: u16 = 1;

/// The parts of the request a response repeats.
#[derive(Debug, Clone, Copy)]
pub struct Query<'q> {
    pub id: u16,
    /// Opcode, RD and CD as the client sent them (header byte 2 and 3 masks applied here).
    pub flags: u16,
    /// The question section exactly as received: name, type, class.
    pub question: &'q [u8],
    /// The UDP payload size for the OPT record, if the client sent EDNS.
    pub edns: Option<u16>,
}

#[derive(Debug)]
pub struct Full;

/// A response writer over a caller's buffer (also used by `transfer` for AXFR/IXFR
/// messages).
pub struct Encoder<'b, 'z> {
    buf: &'b mut [u8],
    pos: usize,
    max: usize,
    candidates: [(u16, &'z [u8]); MAX_CANDIDATES],
    ncandidates: usize,
    compressed: usize,
}

impl<'b, 'z> Encoder<'b, 'z> {
    pub(crate) fn new(buf: &'b mut [u8], max: usize) -> Self {
        let max = max.min(buf.len());
        Self {
            buf,
            pos: 0,
            max,
            candidates: [(0, &[]); MAX_CANDIDATES],
            ncandidates: 0,
            compressed: 0,
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.pos + bytes.len();
        if end > self.max {
            return Err(Full);
        }
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn u16(&mut self, v: u16) -> Result<(), Full> {
        self.write(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), Full> {
        self.write(&v.to_be_bytes())
    }

    pub(crate) fn store(&mut self, offset: usize, suffix: &'z [u8]) {
        if self.pos < 0x3FFF && self.ncandidates < MAX_CANDIDATES {
            self.candidates[self.ncandidates] = (offset as u16, suffix);
            self.ncandidates += 1;
        }
    }

    fn find(&self, suffix: &[u8]) -> Option<u16> {
        self.candidates[..self.ncandidates]
            .iter()
            .find(|(_, c)| *c == suffix)
            .map(|(offset, _)| *offset)
    }

    /// A wire-form name (root label included), compressed or only recorded.
    fn name(&mut self, wire: &'z [u8], compress: bool) -> Result<(), Full> {
        let labels = &wire[..wire.len().saturating_sub(1)];
        let start = self.pos;
        self.write(labels)?;
        let compression = compress && self.compressed < MAX_COMPRESSED_NAMES;
        if compression {
            self.compressed += 1;
        }
        for at in name::label_starts(labels) {
            let suffix = &labels[at..];
            if compression && let Some(pointer) = self.find(suffix) {
                self.pos = start + at;
                return self.u16(0xC000 | pointer);
            }
            self.store(start + at, suffix);
        }
        self.write(&[0])
    }

    fn rdata(&mut self, rdata: &'z Rdata) -> Result<(), Full> {
        match rdata {
            Rdata::A(a) => self.write(&a.octets()),
            Rdata::Aaaa(a) => self.write(&a.octets()),
            Rdata::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.u16(*priority)?;
                self.u16(*weight)?;
                self.u16(*port)?;
                self.name(target, false)
            }
            Rdata::Ns(n) | Rdata::Cname(n) | Rdata::Ptr(n) => self.name(n, true),
            Rdata::Mx {
                preference,
                exchange,
            } => {
                self.u16(*preference)?;
                self.name(exchange, true)
            }
            Rdata::Soa(soa) => {
                self.name(&soa.mname, true)?;
                self.name(&soa.rname, true)?;
                self.u32(soa.serial)?;
                self.u32(soa.refresh as u32)?;
                self.u32(soa.retry as u32)?;
                self.u32(soa.expire as u32)?;
                self.u32(soa.minimum)
            }
            Rdata::Opaque { data, .. } => self.write(data),
            // Never planned on the fast path (see `supported`).
            Rdata::Other(_) => Err(Full),
        }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    /// The message written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// The message written so far, to patch its header.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.pos]
    }

    /// One record, rolled back entirely if it does not fit.
    fn record(&mut self, owner: &'z [u8], ttl: u32, rec: &'z Rec) -> Result<(), Full> {
        self.record_data(owner, ttl, &rec.rdata, None)
    }

    /// One record from its parts; `other` is the rdata of a type this encoder does not know
    /// (`Rdata::Other`), already in wire form. Rolled back entirely if it does not fit.
    pub(crate) fn record_data(
        &mut self,
        owner: &'z [u8],
        ttl: u32,
        rdata: &'z Rdata,
        other: Option<&[u8]>,
    ) -> Result<(), Full> {
        let (pos, ncandidates) = (self.pos, self.ncandidates);
        let result = (|| {
            self.name(owner, true)?;
            self.u16(u16::from(rdata.record_type()))?;
            self.u16(CLASS_IN)?;
            self.u32(ttl)?;
            let length_at = self.pos;
            self.u16(0)?;
            match (rdata, other) {
                (Rdata::Other(_), Some(bytes)) => self.write(bytes)?,
                _ => self.rdata(rdata)?,
            }
            let length = (self.pos - length_at - 2) as u16;
            self.buf[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
            Ok(())
        })();
        if result.is_err() {
            self.pos = pos;
            self.ncandidates = ncandidates;
        }
        result
    }

    /// The OPT record: root owner (counted as a compressed name, as hickory does), our
    /// payload size, version 0, no flags, no options.
    fn opt(&mut self, payload: u16) -> Result<(), Full> {
        let pos = self.pos;
        if self.compressed < MAX_COMPRESSED_NAMES {
            self.compressed += 1;
        }
        let result = (|| {
            self.write(&[0])?;
            self.u16(u16::from(RecordType::OPT))?;
            self.u16(payload.max(512))?;
            self.u32(0)?;
            self.u16(0)
        })();
        if result.is_err() {
            self.pos = pos;
        }
        result
    }
}

/// Whether every record of the plan can be written by this encoder (zone-file types it does
/// not know go through hickory).
pub fn supported(plan: &Plan<'_>) -> bool {
    let known = |rec: &Rec| !matches!(rec.rdata, Rdata::Other(_));
    (0..plan.len()).all(|i| {
        plan.entry(i).is_some_and(|(entry, glue)| {
            known(entry.rec) && glue.iter().flatten().all(|(_, set)| set.iter().all(known))
        })
    })
}

/// Write the response with the first `keep` entries; `Err` if anything did not fit.
fn write_response<'z>(
    buf: &mut [u8],
    limit: usize,
    query: &Query<'z>,
    plan: &Plan<'z>,
    keep: usize,
    truncated: bool,
) -> Result<usize, Full> {
    let mut e = Encoder::new(buf, limit);
    e.write(&[0; 12])?;
    let question_at = e.pos;
    e.write(query.question)?;
    e.store(question_at, query.question);
    let mut answers = 0u16;
    for i in 0..keep {
        if let Some((entry, _)) = plan.entry(i) {
            e.record(entry.owner, entry.rec.ttl, entry.rec)?;
            answers += 1;
        }
    }
    let mut authority = 0u16;
    if let Some((owner, ttl, rec)) = plan.authority() {
        e.record(owner, ttl, rec)?;
        authority = 1;
    }
    let mut additional = 0u16;
    for i in 0..keep {
        if let Some((_, glue)) = plan.entry(i) {
            for (owner, set) in glue.iter().flatten() {
                for rec in set.iter() {
                    e.record(owner, rec.ttl, rec)?;
                    additional += 1;
                }
            }
        }
    }
    if let Some(payload) = query.edns {
        e.opt(payload)?;
        additional += 1;
    }
    // Header: QR, opcode and RD from the query, AA, TC; RA clear; CD from the query.
    let rcode = u16::from(plan.rcode) & 0x000F;
    let flags = 0x8000
        | (query.flags & 0x7900)
        | if plan.authoritative { 0x0400 } else { 0 }
        | if truncated { 0x0200 } else { 0 }
        | (query.flags & 0x0010)
        | rcode;
    let header = &mut e.buf[..12];
    header[0..2].copy_from_slice(&query.id.to_be_bytes());
    header[2..4].copy_from_slice(&flags.to_be_bytes());
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    header[6..8].copy_from_slice(&answers.to_be_bytes());
    header[8..10].copy_from_slice(&authority.to_be_bytes());
    header[10..12].copy_from_slice(&additional.to_be_bytes());
    Ok(e.pos)
}

/// Encode the response to `query` within `limit` bytes: everything if it fits, else the
/// largest prefix of whole entries (an SRV record with its glue) with TC set — the same
/// search as the hickory path. `None` when even no entries do not fit (left to hickory).
pub fn response<'z>(
    buf: &mut [u8],
    limit: usize,
    query: &Query<'z>,
    plan: &Plan<'z>,
) -> Option<usize> {
    let all = plan.len();
    if let Ok(len) = write_response(buf, limit, query, plan, all, false) {
        return Some(len);
    }
    let (mut lo, mut hi) = (0usize, all);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if write_response(buf, limit, query, plan, mid, false).is_ok() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    write_response(buf, limit, query, plan, lo, true).ok()
}

/// Only the rcodes that fit the 4-bit header field are produced here (BADVERS and other
/// extended codes go through hickory).
pub fn plain_rcode(rcode: ResponseCode) -> bool {
    u16::from(rcode) < 16
}
