//! The query path: one request → one response, from the current snapshots only. No I/O, no
//! locks, no awaiting anything but the send.
//!
//! hickory-server's `Server` owns the sockets, TCP framing and FORMERR for undecodable
//! packets; this handler owns everything an authoritative answer needs (EDNS, rcodes, glue,
//! truncation that keeps SRV records with their glue).

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use super::answer::{self, Plan};
use super::metrics::{Counters, DnsMetrics, Transport};
use super::policy::{NetList, Rrl};
use crate::zone::data::Rec;
use crate::zone::name;
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

/// Who is answered and how much (see [`super::policy`]).
#[derive(Debug, Default)]
pub struct Policy {
    /// `--allow-query`: REFUSED outside these networks (empty: everyone).
    pub allow_query: NetList,
    /// Response rate limiting on UDP, if on.
    pub rrl: Option<Rrl>,
    /// Zone transfers and TSIG-signed queries are theirs (our TCP listener and the UDP
    /// hand-off pass them on before the handler sees them).
    pub transfers: Option<Arc<crate::transfer::Transfers>>,
}

/// The authoritative request handler.
#[derive(Debug)]
pub struct DnsHandler {
    zones: Arc<ZoneStore>,
    options: AnswerOptions,
    policy: Policy,
    metrics: Arc<DnsMetrics>,
    /// This handler's own counters (the hickory path: TCP and unusual UDP queries).
    counters: Arc<Counters>,
}

impl DnsHandler {
    /// A handler counting into a registry of its own.
    pub fn new(zones: Arc<ZoneStore>, options: AnswerOptions) -> Self {
        Self::with_metrics(zones, options, Arc::default())
    }

    /// A handler counting into `metrics` (shared with the admin listener).
    pub fn with_metrics(
        zones: Arc<ZoneStore>,
        options: AnswerOptions,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        Self {
            counters: metrics.block(),
            zones,
            options,
            policy: Policy::default(),
            metrics,
        }
    }

    /// The same handler under `policy`.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The counters of the hickory path (TCP and UDP hand-offs).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The registry the handler and the UDP workers count into.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    /// The UDP size limit for a request: the client's EDNS size (at least 512) under the
    /// server's cap, or 512 without EDNS (RFC 1035 §4.2.1, RFC 6891 §6.2.5).
    pub fn udp_limit(&self, client_edns: Option<u16>) -> u16 {
        match client_edns {
            None => CLASSIC_UDP,
            Some(size) => {
                let size = size.max(CLASSIC_UDP);
                match self.options.max_udp_payload {
                    Some(cap) => size.min(cap.max(CLASSIC_UDP)),
                    None => size,
                }
            }
        }
    }

    pub fn zones(&self) -> &ZoneStore {
        &self.zones
    }
}

/// The plan's records as hickory records: answers (with their glue) and the authority SOA.
struct Records {
    entries: Vec<(Record, Vec<Record>)>,
    authority: Option<Record>,
}

fn hickory_record(owner: &[u8], ttl: u32, rec: &Rec) -> Option<Record> {
    Some(Record::from_rdata(
        name::to_name(owner),
        ttl,
        rec.rdata.to_hickory()?,
    ))
}

impl Records {
    fn of(plan: &Plan<'_>) -> Self {
        let entries = (0..plan.len())
            .filter_map(|i| plan.entry(i))
            .filter_map(|(entry, glue)| {
                let record = hickory_record(entry.owner, entry.rec.ttl, entry.rec)?;
                let glue = glue
                    .iter()
                    .flatten()
                    .flat_map(|(owner, set)| {
                        set.iter().filter_map(|r| hickory_record(owner, r.ttl, r))
                    })
                    .collect();
                Some((record, glue))
            })
            .collect();
        let authority = plan
            .authority()
            .and_then(|(owner, ttl, rec)| hickory_record(owner, ttl, rec));
        Self { entries, authority }
    }
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
    records: &Records,
    keep: usize,
    limit: usize,
) -> bool {
    let entries = &records.entries[..keep];
    let response = MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        entries.iter().map(|e| &e.0),
        records.authority.iter(),
        std::iter::empty(),
        entries.iter().flat_map(|e| e.1.iter()),
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
        let udp_limit = self.udp_limit(request.edns.as_ref().map(Edns::max_payload));
        let response_edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_version(EDNS_VERSION);
            edns.set_max_payload(udp_limit);
            edns
        });
        let limit = match request.protocol() {
            Protocol::Udp => usize::from(udp_limit),
            _ => usize::from(u16::MAX),
        };

        let records;
        let (rcode, authoritative) = if !self.policy.allow_query.allows(request.src().ip()) {
            records = Records::of(&Plan::error(ResponseCode::Refused));
            (ResponseCode::Refused, false)
        } else if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            records = Records::of(&Plan::error(ResponseCode::BADVERS));
            (ResponseCode::BADVERS, false)
        } else if request.metadata.op_code != OpCode::Query {
            records = Records::of(&Plan::error(ResponseCode::NotImp));
            (ResponseCode::NotImp, false)
        } else if request.queries.len() != 1 {
            records = Records::of(&Plan::error(ResponseCode::FormErr));
            (ResponseCode::FormErr, false)
        } else {
            let query = &request.queries.queries()[0];
            let qname = name::lower(query.name());
            let (r, rcode, aa) = self.zones.with_zone(&qname, |zone| {
                let plan = answer::plan(
                    zone,
                    &qname,
                    query.query_type(),
                    query.query_class(),
                    request.metadata.id,
                );
                (Records::of(&plan), plan.rcode, plan.authoritative)
            });
            records = r;
            (rcode, aa)
        };

        metadata.response_code = rcode;
        metadata.authoritative = authoritative;
        metadata.message_type = MessageType::Response;

        // Truncation: keep the largest prefix of whole entries (an SRV record together with its
        // target's address) that fits, and set TC if anything was left out.
        let mut keep = records.entries.len();
        let edns = response_edns.as_ref();
        if !fits(request, edns, metadata, &records, keep, limit) {
            let (mut lo, mut hi) = (0usize, keep);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(request, edns, metadata, &records, mid, limit) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            keep = lo;
            metadata.truncation = true;
        }

        let entries = &records.entries[..keep];
        let response = MessageResponseBuilder::new(&request.queries, response_edns.as_ref()).build(
            metadata,
            entries.iter().map(|e| &e.0),
            records.authority.iter(),
            std::iter::empty(),
            entries.iter().flat_map(|e| e.1.iter()),
        );
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "failed to send response");
                return ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                });
            }
        };
        let qtype = match request.queries.queries() {
            [q] => q.query_type(),
            _ => RecordType::Unknown(0),
        };
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        self.counters
            .record(transport, qtype, rcode, None, info.truncation);
        info
    }
}
