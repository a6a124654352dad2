//! The query path: one request → one response, from the current snapshots only. No I/O, no
//! locks, no awaiting anything but the send.
//!
//! hickory-server's `Server` owns the sockets, TCP framing and FORMERR for undecodable
//! packets; this handler owns everything an authoritative answer needs (EDNS, rcodes, glue,
//! truncation that keeps SRV records with their glue).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use crate::zone::snapshot::{Entry, Lookup};
use crate::zone::store::ZoneStore;

/// Our EDNS version (RFC 6891 §6.1.3).
const EDNS_VERSION: u8 = 0;
/// RFC 1035 §4.2.1 limit without EDNS, and the floor of any EDNS size (RFC 6891 §6.2.5).
const CLASSIC_UDP: u16 = 512;

/// Options of the query path.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerOptions {
    /// Optional server-side cap on UDP responses (e.g. 1232 to avoid fragmentation). `None`
    /// honours the client's advertised size in full, which HAProxy needs.
    pub max_udp_payload: Option<u16>,
}

/// The authoritative request handler.
#[derive(Debug)]
pub struct DnsHandler {
    zones: Arc<ZoneStore>,
    options: AnswerOptions,
    /// Rotates RRset order per response for load spreading.
    rotation: AtomicUsize,
}

impl DnsHandler {
    pub fn new(zones: Arc<ZoneStore>, options: AnswerOptions) -> Self {
        Self {
            zones,
            options,
            rotation: AtomicUsize::new(0),
        }
    }
}

/// What goes into a response, before size limits.
struct Plan<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    entries: Vec<Entry<'a>>,
    authority: Option<&'a Record>,
}

impl Plan<'_> {
    fn error(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            authoritative: false,
            entries: Vec::new(),
            authority: None,
        }
    }
}

/// Encoded length of a name without compression.
fn name_len(name: &hickory_proto::rr::Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

/// An upper bound of a record's encoded size, without compression.
fn record_bound(r: &Record) -> usize {
    use hickory_proto::rr::RData;
    let rdata = match &r.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(s) => 6 + name_len(&s.target),
        RData::NS(n) => name_len(&n.0),
        RData::SOA(s) => name_len(&s.mname) + name_len(&s.rname) + 20,
        other => 64 + 2 * other.to_string().len(),
    };
    name_len(&r.name) + 10 + rdata
}

/// Cheap check that a plan fits without encoding it: the common case on the query path.
fn surely_fits(request: &Request, plan: &Plan<'_>, limit: usize) -> bool {
    let records: usize = plan
        .entries
        .iter()
        .map(|e| record_bound(e.record) + e.glue().map(record_bound).sum::<usize>())
        .sum::<usize>()
        + plan.authority.map_or(0, record_bound);
    12 + request.queries.as_bytes().len() + records + 11 <= limit
}

/// Whether the response with the first `keep` entries and their glue encodes completely
/// within `limit` bytes.
///
/// Measured with hickory's own encoder under the same limit, because it needs headroom: it
/// writes a name in full before replacing it with a compression pointer.
fn fits(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    plan: &Plan<'_>,
    keep: usize,
    limit: usize,
) -> bool {
    let entries = &plan.entries[..keep];
    let response = MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        entries.iter().map(|e| e.record),
        plan.authority,
        std::iter::empty(),
        entries.iter().flat_map(|e| e.glue()),
    );
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    response
        .destructive_emit(&mut encoder)
        .is_ok_and(|info| !info.truncation)
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);

        // EDNS (RFC 6891): echo OPT with our version; hickory emits it last in ADDITIONAL.
        let mut response_edns = None;
        let mut udp_limit = CLASSIC_UDP;
        if let Some(req_edns) = &request.edns {
            let mut edns = Edns::new();
            edns.set_version(EDNS_VERSION);
            udp_limit = req_edns.max_payload().max(CLASSIC_UDP);
            if let Some(cap) = self.options.max_udp_payload {
                udp_limit = udp_limit.min(cap.max(CLASSIC_UDP));
            }
            edns.set_max_payload(udp_limit);
            response_edns = Some(edns);
        }
        let limit = match request.protocol() {
            Protocol::Udp => usize::from(udp_limit),
            _ => usize::from(u16::MAX),
        };

        let zone;
        let plan = if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            Plan::error(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            Plan::error(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Plan::error(ResponseCode::FormErr)
        } else {
            let query = &request.queries.queries()[0];
            let qtype = query.query_type();
            let name = query.name();
            zone = self.zones.find(name);
            match &zone {
                None => Plan::error(ResponseCode::Refused),
                Some(_)
                    if query.query_class() != DNSClass::IN
                        && query.query_class() != DNSClass::ANY =>
                {
                    Plan::error(ResponseCode::Refused)
                }
                // Zone transfers are not offered (yet): RFC 5936 §2.2.1 allows refusing.
                Some(_) if matches!(qtype, RecordType::AXFR | RecordType::IXFR) => {
                    Plan::error(ResponseCode::Refused)
                }
                Some(_)
                    if matches!(qtype, RecordType::OPT)
                        || u16::from(qtype) >= 128 && u16::from(qtype) < 255 =>
                {
                    // Meta-types other than ANY/AXFR/IXFR are not queryable (RFC 6895 §3.1).
                    Plan::error(ResponseCode::FormErr)
                }
                Some(z) => match z.lookup(name, qtype) {
                    Lookup::Answer(mut entries) => {
                        // Rotate one RRset; a CNAME chain keeps its order.
                        let one_rrset = entries
                            .iter()
                            .all(|e| e.record.record_type() == entries[0].record.record_type());
                        if entries.len() > 1 && one_rrset {
                            let n = self.rotation.fetch_add(1, Ordering::Relaxed) % entries.len();
                            entries.rotate_left(n);
                        }
                        Plan {
                            rcode: ResponseCode::NoError,
                            authoritative: true,
                            entries,
                            authority: None,
                        }
                    }
                    Lookup::NoData(chain) => Plan {
                        rcode: ResponseCode::NoError,
                        authoritative: true,
                        entries: chain,
                        authority: Some(z.negative_soa()),
                    },
                    Lookup::NxDomain(chain) => Plan {
                        rcode: ResponseCode::NXDomain,
                        authoritative: true,
                        entries: chain,
                        authority: Some(z.negative_soa()),
                    },
                },
            }
        };

        metadata.response_code = plan.rcode;
        metadata.authoritative = plan.authoritative;
        metadata.message_type = MessageType::Response;

        // Truncation: keep the largest prefix of whole entries (an SRV record together with its
        // target's address) that fits, and set TC if anything was left out.
        let mut keep = plan.entries.len();
        let edns = response_edns.as_ref();
        if !surely_fits(request, &plan, limit) && !fits(request, edns, metadata, &plan, keep, limit)
        {
            let (mut lo, mut hi) = (0usize, keep);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(request, edns, metadata, &plan, mid, limit) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            keep = lo;
            metadata.truncation = true;
        }

        let entries = &plan.entries[..keep];
        let response = MessageResponseBuilder::new(&request.queries, response_edns.as_ref()).build(
            metadata,
            entries.iter().map(|e| e.record),
            plan.authority,
            std::iter::empty(),
            entries.iter().flat_map(|e| e.glue()),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "failed to send response");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
