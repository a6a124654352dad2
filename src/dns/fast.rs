//! The UDP fast path: one `SO_REUSEPORT` socket and one OS thread per worker, so the kernel
//! spreads queries over cores and no async machinery sits between a datagram and its answer.
//! A plain standard query (one question, at most an OPT record) is answered straight from the
//! current snapshot into a per-thread buffer: no heap allocation, no lock. Anything else —
//! other opcodes, malformed packets, EDNS versions or options we do not vouch for, record
//! types the encoder does not know — goes to the same [`DnsHandler`] hickory's server uses
//! for TCP, with hickory's parser and encoder.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Header, Metadata, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::debug;

use super::answer;
use super::encode::{self, Query};
use super::handler::DnsHandler;
use super::metrics::{Counters, Transport};
use super::policy::{self, Verdict};
use crate::zone::name::MAX_WIRE;

/// Largest datagram read or written.
#[cfg(any(not(target_os = "linux"), test))]
const BUF: usize = 65535;
/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What the fast path sent, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub len: usize,
    pub qtype: RecordType,
    pub rcode: ResponseCode,
    pub truncated: bool,
    /// Where the question section ends (a slipped answer keeps only what is before).
    pub question_end: usize,
    /// The response's identity for rate limiting (0 when RRL is off).
    pub rrl_key: u64,
}

impl Answered {
    fn count(&self, counters: &Counters) {
        counters.record(
            Transport::Udp,
            self.qtype,
            self.rcode,
            Some(self.len),
            self.truncated,
        );
    }
}

/// Answer `packet` on the fast path into `out`; `None` if it is not a plain query we answer
/// here (the caller then hands it to hickory).
pub fn answer(handler: &DnsHandler, packet: &[u8], out: &mut [u8]) -> Option<Answered> {
    let header = packet.get(..12)?;
    let be = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (id, flags) = (be(0), be(2));
    // A query (QR clear), opcode QUERY, one question, no answer/authority, at most an OPT.
    if flags & 0xF800 != 0 || be(4) != 1 || be(6) != 0 || be(8) != 0 || be(10) > 1 {
        return None;
    }
    let mut qname = [0u8; MAX_WIRE];
    let mut at = 12;
    let mut len = 0;
    loop {
        let l = usize::from(*packet.get(at)?);
        if l > 63 || len + l + 1 > MAX_WIRE {
            return None;
        }
        let label = packet.get(at..at + 1 + l)?;
        qname[len..len + 1 + l].copy_from_slice(label);
        len += 1 + l;
        at += 1 + l;
        if l == 0 {
            break;
        }
    }
    let qname = &mut qname[..len];
    qname.make_ascii_lowercase();
    let fixed = packet.get(at..at + 4)?;
    let qtype = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
    let qclass = DNSClass::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) && handler.policy().transfers.is_some()
    {
        return None;
    }
    let question = &packet[12..at + 4];
    let rest = &packet[at + 4..];
    let edns = if be(10) == 1 {
        Some(opt_payload(rest)?)
    } else if rest.is_empty() {
        None
    } else {
        return None;
    };
    let limit = handler.udp_limit(edns);
    let query = Query {
        id,
        flags,
        question,
        // The OPT record advertises the size this answer was cut to.
        edns: edns.map(|_| limit),
    };
    handler.zones().with_zone(qname, |zone| {
        let plan = answer::plan(zone, qname, qtype, qclass, id);
        if !encode::plain_rcode(plan.rcode) || !encode::supported(&plan) {
            return None;
        }
        let len = encode::response(out, usize::from(limit), &query, &plan)?;
        let rrl_key = match handler.policy().rrl {
            Some(_) => policy::response_key(
                qname,
                u16::from(qtype),
                u16::from(plan.rcode),
                zone.map(|z| z.origin_wire()),
            ),
            None => 0,
        };
        Some(Answered {
            len,
            qtype,
            rcode: plan.rcode,
            truncated: out.get(2).is_some_and(|flags| flags & 0x02 != 0),
            question_end: at + 4,
            rrl_key,
        })
    })
}

/// The client's UDP size from an OPT record that is the whole rest of the packet: version 0,
/// and only options hickory reads without complaint (NSID, cookies, padding).
fn opt_payload(rest: &[u8]) -> Option<u16> {
    let fixed = rest.get(..11)?;
    let be = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
    if fixed[0] != 0 || be(1) != u16::from(RecordType::OPT) || fixed[6] != 0 {
        return None;
    }
    let payload = be(3);
    let rdlen = usize::from(be(9));
    let mut options = rest.get(11..)?;
    if options.len() != rdlen {
        return None;
    }
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let olen = usize::from(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
        let ok = match code {
            3 | 12 => true,
            10 => olen == 8 || (16..=40).contains(&olen),
            _ => false,
        };
        if !ok {
            return None;
        }
        options = options.get(4 + olen..)?;
    }
    Some(payload)
}

/// Running UDP workers; dropping them does not stop them, [`UdpWorkers::stop`] does.
pub struct UdpWorkers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpWorkers {
    /// Bind `workers` sockets to `addr` (port already chosen) and start one thread each.
    pub fn start(
        addr: SocketAddr,
        workers: usize,
        handler: Arc<DnsHandler>,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let wildcard = addr.ip().is_unspecified();
        for i in 0..workers.max(1) {
            let socket = Arc::new(bind(addr)?);
            let handler = handler.clone();
            let stop = stop.clone();
            let runtime = runtime.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || serve(&socket, wildcard, &handler, &runtime, &stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stop the workers and wait for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as Proto, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Proto::UDP))?;
    socket.set_reuse_port(true)?;
    // `[::]` stays dual-stack like the TCP listener beside it (the system's default).
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(POLL))?;
    // A wildcard socket learns each query's destination, to answer from it.
    #[cfg(target_os = "linux")]
    if addr.ip().is_unspecified() {
        super::batch::want_destination(&socket, addr.is_ipv6())?;
    }
    Ok(socket)
}

/// Receive in batches (`recvmmsg`), answer each datagram, send the answers in batches
/// (`sendmmsg`); datagrams for the slow path are answered one by one as they come.
#[cfg(target_os = "linux")]
fn serve(
    socket: &Arc<UdpSocket>,
    wildcard: bool,
    handler: &Arc<DnsHandler>,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
) {
    let mut batch = super::batch::Batch::new(wildcard);
    let counters = handler.metrics().block();
    let mut limited = 0u32;
    while !stop.load(Ordering::Acquire) {
        let n = match batch.receive(socket) {
            Ok(n) => n,
            Err(e) => {
                receive_error(&e);
                continue;
            }
        };
        for i in 0..n {
            let Some(src) = batch.source(i) else {
                continue;
            };
            // Clients outside --allow-query get hickory's REFUSED from the handler.
            let allowed = handler.policy().allow_query.allows(src.ip());
            let Some((query, room)) = batch.packet_and_room(i) else {
                continue;
            };
            match answer(handler, query, room).filter(|_| allowed) {
                Some(sent) => {
                    if let Some(len) = rate_limit(handler, src, sent, room, &counters, &mut limited)
                    {
                        batch.stage(i, len);
                    }
                }
                None => {
                    if let (Some(query), Some(src)) = (batch.packet(i), batch.source(i)) {
                        let from = batch.local(i);
                        slow(socket, handler, runtime, query, src, from);
                    }
                }
            }
        }
        batch.send(socket);
    }
}

/// One datagram at a time (platforms without `recvmmsg`).
#[cfg(not(target_os = "linux"))]
fn serve(
    socket: &Arc<UdpSocket>,
    _wildcard: bool,
    handler: &Arc<DnsHandler>,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
) {
    let mut packet = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let counters = handler.metrics().block();
    let mut limited = 0u32;
    while !stop.load(Ordering::Acquire) {
        let (n, src) = match socket.recv_from(&mut packet) {
            Ok(got) => got,
            Err(e) => {
                receive_error(&e);
                continue;
            }
        };
        let query = &packet[..n];
        let allowed = handler.policy().allow_query.allows(src.ip());
        match answer(handler, query, &mut out).filter(|_| allowed) {
            Some(sent) => {
                if let Some(len) = rate_limit(handler, src, sent, &mut out, &counters, &mut limited)
                    && let Err(e) = socket.send_to(&out[..len], src)
                {
                    debug!("UDP send to {src} failed: {e}");
                }
            }
            None => slow(socket, handler, runtime, query, src, None),
        }
    }
}

/// Count a fast-path answer and put it through response rate limiting: the length to send
/// (the answer, or a slipped TC=1 answer rewritten in `out`), or `None` to drop it.
fn rate_limit(
    handler: &DnsHandler,
    src: SocketAddr,
    sent: Answered,
    out: &mut [u8],
    counters: &Counters,
    limited: &mut u32,
) -> Option<usize> {
    let verdict = match &handler.policy().rrl {
        Some(rrl) => rrl.check(src.ip(), sent.rrl_key, sent.len, limited),
        None => Verdict::Send,
    };
    match verdict {
        Verdict::Send => {
            sent.count(counters);
            Some(sent.len)
        }
        Verdict::Slip => {
            counters.rate_limited(true);
            let len = policy::slip(out, sent.question_end);
            Answered {
                len,
                truncated: true,
                ..sent
            }
            .count(counters);
            Some(len)
        }
        Verdict::Drop => {
            counters.rate_limited(false);
            None
        }
    }
}

/// A receive that returned no datagram: the poll timeout (to look at the stop flag), a
/// signal, or an error the socket survives (ICMP errors from earlier sends and the like).
fn receive_error(e: &io::Error) {
    if !matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) {
        debug!("UDP receive error: {e}");
    }
}

/// Where a wildcard socket's datagram was sent (its reply must come from there).
#[cfg(target_os = "linux")]
use super::batch::Local;
#[cfg(not(target_os = "linux"))]
type Local = std::convert::Infallible;

#[cfg(target_os = "linux")]
fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr, from: Option<Local>) -> io::Result<()> {
    super::batch::send_one(socket, bytes, dst, from)
}

#[cfg(not(target_os = "linux"))]
fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr, _from: Option<Local>) -> io::Result<()> {
    socket.send_to(bytes, dst).map(|_| ())
}

/// hickory's way with a datagram, as its own UDP server would: drop anything shorter than a
/// header or any response, FORMERR for a header with an undecodable body, else the handler.
fn slow(
    socket: &Arc<UdpSocket>,
    handler: &Arc<DnsHandler>,
    runtime: &tokio::runtime::Handle,
    query: &[u8],
    src: SocketAddr,
    from: Option<Local>,
) {
    let reply = UdpReply {
        socket: socket.clone(),
        dst: src,
        from,
        handler: handler.clone(),
    };
    if let Some(transfers) = &handler.policy().transfers
        && crate::transfer::Transfers::wants(query)
    {
        if let Some(answer) = transfers.serve_udp(query, src.ip())
            && let Err(e) = send(&reply.socket, &answer, src, from)
        {
            debug!("UDP send to {src} failed: {e}");
        }
        return;
    }
    let mut decoder = BinDecoder::new(query);
    let Ok(header) = Header::read(&mut decoder) else {
        return;
    };
    match Request::from_bytes(query.to_vec(), src, Protocol::Udp) {
        Ok(request) => {
            if request.metadata.message_type == hickory_proto::op::MessageType::Response {
                return;
            }
            runtime.block_on(handler.handle_request::<_, TokioTime>(&request, reply));
        }
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let mut reply = reply;
            let _ = runtime.block_on(reply.send_response(response));
        }
    }
}

/// Sends hickory's encoded responses on a worker's socket.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    /// The address the query was sent to, for a wildcard socket's reply.
    from: Option<Local>,
    /// For response rate limiting.
    handler: Arc<DnsHandler>,
}

thread_local! {
    /// Rate-limited hand-off answers on this thread (every `slip`-th is slipped).
    static LIMITED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The lower-cased question name, type and end offset of a message's first question.
fn first_question(bytes: &[u8]) -> Option<(Vec<u8>, u16, usize)> {
    if bytes.get(4..6)? == [0, 0] {
        return None;
    }
    let mut at = 12;
    let mut name = Vec::with_capacity(64);
    loop {
        let l = usize::from(*bytes.get(at)?);
        if l > 63 {
            return None;
        }
        name.extend_from_slice(bytes.get(at..at + 1 + l)?);
        at += 1 + l;
        if l == 0 {
            break;
        }
    }
    let qtype = u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]);
    name.make_ascii_lowercase();
    Some((name, qtype, at + 4))
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // As hickory's own UDP path: the client's size (or 512), SERVFAIL if encoding fails.
        let max = response.edns().map_or(512, |e| e.max_payload());
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(_) => {
                bytes.clear();
                let mut metadata = Metadata::new(
                    id,
                    hickory_proto::op::MessageType::Response,
                    hickory_proto::op::OpCode::Query,
                );
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                let mut encoder = BinEncoder::new(&mut bytes);
                hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder)
                    .map_err(NetError::from)?;
                ResponseInfo::from(header)
            }
        };
        if let (Some(rrl), Some((qname, qtype, question_end))) =
            (&self.handler.policy().rrl, first_question(&bytes))
        {
            let rcode = u16::from(bytes.get(3).map_or(0, |b| b & 0x0F));
            let key = policy::response_key(&qname, qtype, rcode, None);
            let mut limited = LIMITED.with(std::cell::Cell::get);
            let verdict = rrl.check(self.dst.ip(), key, bytes.len(), &mut limited);
            LIMITED.with(|c| c.set(limited));
            match verdict {
                Verdict::Send => {}
                Verdict::Slip => {
                    self.handler.counters().rate_limited(true);
                    let len = policy::slip(&mut bytes, question_end);
                    bytes.truncate(len);
                }
                Verdict::Drop => {
                    self.handler.counters().rate_limited(false);
                    return Ok(info);
                }
            }
        }
        send(&self.socket, &bytes, self.dst, self.from).map_err(NetError::from)?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::snapshot::ZoneSnapshot;
    use crate::zone::store::ZoneStore;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery};
    use hickory_proto::rr::rdata::{A, SOA, SRV, TXT};
    use hickory_proto::rr::{Name, RData};
    use std::str::FromStr;

    fn handler() -> DnsHandler {
        let n = |s: &str| Name::from_str(s).expect("name");
        let soa = Record::from_rdata(
            n("marathon.local."),
            60,
            RData::SOA(SOA::new(
                n("ns1.marathon.local."),
                n("h.marathon.local."),
                1,
                60,
                30,
                3600,
                5,
            )),
        );
        let zone = ZoneSnapshot::new(
            soa,
            [
                Record::from_rdata(
                    n("t1.web.marathon.local."),
                    5,
                    RData::A(A::new(10, 0, 0, 1)),
                ),
                Record::from_rdata(
                    n("_web._tcp.marathon.local."),
                    5,
                    RData::SRV(SRV::new(0, 1, 31000, n("t1.web.marathon.local."))),
                ),
                Record::from_rdata(
                    n("txt.marathon.local."),
                    5,
                    RData::TXT(TXT::new(vec!["x".into()])),
                ),
            ],
        );
        DnsHandler::new(
            Arc::new(ZoneStore::new(zone, Vec::new())),
            crate::dns::handler::AnswerOptions::default(),
        )
    }

    fn packet(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(9, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(Name::from_str(name).expect("name"), rtype));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().expect("encode")
    }

    #[test]
    fn plain_queries_take_the_fast_path_and_decode() {
        let h = handler();
        let mut out = vec![0u8; BUF];
        for (name, rtype) in [
            ("_WEB._tcp.marathon.local.", RecordType::SRV),
            ("t1.web.marathon.local.", RecordType::A),
            ("nope.marathon.local.", RecordType::A),
            ("web.marathon.local.", RecordType::AAAA),
            ("txt.marathon.local.", RecordType::TXT),
            ("example.com.", RecordType::A),
        ] {
            for edns in [false, true] {
                let len = answer(&h, &packet(name, rtype, edns), &mut out)
                    .unwrap_or_else(|| panic!("{name} {rtype} went to the slow path"))
                    .len;
                let reply = Message::from_vec(&out[..len]).expect("decodes");
                assert_eq!(reply.metadata.id, 9);
                assert_eq!(reply.edns.is_some(), edns);
            }
        }
        // Other opcodes and garbage are left to hickory.
        let mut notify = packet("marathon.local.", RecordType::SOA, false);
        notify[2] |= 0x20;
        assert_eq!(answer(&h, &notify, &mut out), None);
        assert_eq!(answer(&h, &[1, 2, 3], &mut out), None);
    }
}
