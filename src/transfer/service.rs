//! Serving transfers and signed queries: who may transfer (`--allow-transfer`, TSIG), AXFR
//! (RFC 5936) and IXFR (RFC 1995) streamed from one snapshot, and answers to TSIG-signed
//! queries (the SOA checks secondaries make before transferring).
//!
//! A transfer holds one snapshot (an `Arc`) for its whole length and builds one message at a
//! time, awaiting each write: memory stays at one message whatever the zone's size, and a
//! slow secondary slows only its own transfer.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::{DNSClass, RecordType};
use tracing::{debug, warn};

use super::journal::Journal;
use super::message::{Item, Messages, TYPE_AXFR, TYPE_IXFR, TransferQuery};
use super::tsig::{self, Key, ResponseSigner, Verified};
use super::unix_now;
use crate::dns::answer;
use crate::dns::encode;
use crate::dns::policy::NetList;
use crate::sync::SyncStatus;
use crate::zone::data::Rdata;
use crate::zone::serial;
use crate::zone::snapshot::ZoneSnapshot;
use crate::zone::store::ZoneStore;

// Response codes sent from raw bytes (RFC 1035 §4.1.1, RFC 2136 §2.2).
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;
const NOTAUTH: u8 = 9;

/// Who may transfer, and with which keys.
#[derive(Debug, Clone, Default)]
pub struct TransferPolicy {
    /// `--allow-transfer`: clients that may transfer (empty: nobody).
    pub allow: NetList,
    /// `--allow-query`, for signed queries (transfers answer to `allow` alone).
    pub allow_query: NetList,
    /// `--tsig-key`: when any is given, transfers must be signed with one of them.
    pub keys: Vec<Key>,
}

/// Transfer counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TransferStats {
    pub axfr: AtomicU64,
    pub ixfr: AtomicU64,
    /// IXFRs answered with the whole zone (the client's serial was not in the history).
    pub ixfr_full: AtomicU64,
    /// IXFRs from a client already up to date (one SOA).
    pub ixfr_current: AtomicU64,
    pub refused: AtomicU64,
    /// Requests whose TSIG failed (BADKEY, BADSIG, BADTIME, malformed).
    pub tsig_failed: AtomicU64,
    /// Transfers that ended early: the client went away, or a write timed out.
    pub aborted: AtomicU64,
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub notify: super::notify::NotifyStats,
}

impl TransferStats {
    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        super::render_counters(
            out,
            "transfers_total",
            "Zone transfers answered, by kind.",
            "result",
            &[
                ("axfr", &self.axfr),
                ("ixfr", &self.ixfr),
                ("ixfr_full_zone", &self.ixfr_full),
                ("ixfr_up_to_date", &self.ixfr_current),
                ("refused", &self.refused),
                ("tsig_failed", &self.tsig_failed),
                ("aborted", &self.aborted),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP marathon_dns_transfer_messages_total Messages sent in zone transfers.\n# TYPE marathon_dns_transfer_messages_total counter\nmarathon_dns_transfer_messages_total {}",
            get(&self.messages)
        );
        let _ = writeln!(
            out,
            "# HELP marathon_dns_transfer_bytes_total Bytes sent in zone transfers.\n# TYPE marathon_dns_transfer_bytes_total counter\nmarathon_dns_transfer_bytes_total {}",
            get(&self.bytes)
        );
        self.notify.render(out);
    }
}

/// Where a TCP transfer writes its messages (a frame each, with the write timeout).
pub trait FrameSink: Send {
    fn send(&mut self, message: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

/// The transfer service, shared by the TCP connections and the UDP hand-off.
#[derive(Debug)]
pub struct Transfers {
    policy: TransferPolicy,
    zones: Arc<ZoneStore>,
    journal: Arc<Journal>,
    status: Arc<SyncStatus>,
    pub stats: Arc<TransferStats>,
}

/// The last additional record is a TSIG (type 250): the message must be verified and its
/// answer signed.
pub fn has_tsig(msg: &[u8]) -> bool {
    super::message::last_additional_type(msg) == Some(super::message::TYPE_TSIG)
}

/// The question type of a message, if it is AXFR or IXFR (read without allocating: every TCP
/// query is asked).
pub fn transfer_type(msg: &[u8]) -> Option<u16> {
    let qtype = super::message::question_type(msg)?;
    matches!(qtype, TYPE_AXFR | TYPE_IXFR).then_some(qtype)
}

/// The verdict on a request's signature.
enum Auth<'k> {
    /// Go on; sign the answer with this key (and the request's MAC) if any.
    Ok(Option<(&'k Key, Vec<u8>)>),
    /// Send this error response and stop.
    Reject(Vec<u8>),
}

impl Transfers {
    pub fn new(
        policy: TransferPolicy,
        zones: Arc<ZoneStore>,
        journal: Arc<Journal>,
        status: Arc<SyncStatus>,
    ) -> Self {
        Self {
            policy,
            zones,
            journal,
            status,
            stats: Arc::default(),
        }
    }

    /// Whether this message is for the transfer service: AXFR, IXFR, or anything signed.
    pub fn wants(msg: &[u8]) -> bool {
        // Responses are never answered (two servers must not bounce replies forever).
        let is_query = msg.get(2).is_some_and(|b| b & 0x80 == 0);
        is_query && (transfer_type(msg).is_some() || has_tsig(msg))
    }

    /// Check the request's TSIG. Unsigned requests pass only while no key is configured
    /// (signed ones are always checked: a client that signs expects a signed answer).
    fn authenticate<'k>(&'k self, raw: &[u8], query: &TransferQuery, require: bool) -> Auth<'k> {
        let now = unix_now();
        match tsig::verify_request(raw, &self.policy.keys, now) {
            Verified::Unsigned if require && !self.policy.keys.is_empty() => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                debug!("unsigned transfer request refused (TSIG keys are configured)");
                Auth::Reject(query.error(REFUSED))
            }
            Verified::Unsigned => Auth::Ok(None),
            Verified::Signed { key, mac, .. } => Auth::Ok(Some((key, mac))),
            failed @ Verified::Failed { .. } => {
                self.stats.tsig_failed.fetch_add(1, Ordering::Relaxed);
                let error = match &failed {
                    Verified::Failed { error, .. } => *error,
                    _ => tsig::TsigError::FormErr,
                };
                // Debug only: anyone can send bad signatures; the counter shows them.
                debug!("TSIG check failed: {error}");
                if error == tsig::TsigError::FormErr {
                    // A malformed TSIG record is a malformed message (RFC 8945 §5.2).
                    return Auth::Reject(query.error(FORMERR));
                }
                let mut out = query.error(NOTAUTH);
                tsig::append_error(&mut out, &failed, now);
                Auth::Reject(out)
            }
        }
    }

    /// Serve one TCP request the transfer service wants (see [`Self::wants`]): a transfer, or
    /// a signed query. An error means the connection is unusable.
    pub async fn serve_tcp<S: FrameSink>(
        &self,
        raw: &[u8],
        peer: IpAddr,
        sink: &mut S,
    ) -> io::Result<()> {
        let Some(query) = TransferQuery::parse(raw) else {
            return sink.send(&format_error(raw)).await;
        };
        if query.opcode() != 0 {
            return match self.not_implemented(raw, &query) {
                Some(answer) => sink.send(&answer).await,
                None => Ok(()),
            };
        }
        if !matches!(query.qtype, TYPE_AXFR | TYPE_IXFR) {
            if !self.policy.allow_query.allows(peer) {
                return sink.send(&query.error(REFUSED)).await;
            }
            return match self.signed_query(raw, &query, u16::MAX) {
                Some(answer) => sink.send(&answer).await,
                None => Ok(()),
            };
        }
        // Unlike --allow-query, an empty --allow-transfer means nobody: `contains`, not
        // `allows`.
        if !self.policy.allow.contains(peer) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            debug!("transfer from {peer} refused: not in --allow-transfer");
            return sink.send(&query.error(REFUSED)).await;
        }
        let signer = match self.authenticate(raw, &query, true) {
            Auth::Reject(answer) => return sink.send(&answer).await,
            Auth::Ok(key) => key.map(|(key, mac)| ResponseSigner::new(key, &mac)),
        };
        let mut out = Out {
            sink,
            signer,
            stats: &self.stats,
        };
        let Some((zone, is_marathon)) = self.zones.zone_at(&query.qname) else {
            // Not a zone apex we serve (RFC 5936 §2.2.1).
            return out.send(query.error(NOTAUTH)).await;
        };
        if is_marathon && !self.status.is_synced() {
            // Before the first sync the zone is empty: a secondary must keep what it has.
            debug!("transfer from {peer} answered SERVFAIL: Marathon not synced yet");
            return out.send(query.error(SERVFAIL)).await;
        }
        let soa = zone.soa_record();
        let result = match (query.qtype, query.client_serial) {
            (TYPE_IXFR, Some(client)) if !serial::lt(client, zone.serial()) => {
                // Up to date (or ahead: RFC 1995 §2 answers the same).
                self.stats.ixfr_current.fetch_add(1, Ordering::Relaxed);
                out.stream(&query, Box::new(soa.into_iter())).await
            }
            (TYPE_IXFR, Some(client)) => {
                // A difference larger than the zone is worse than the zone (RFC 1995 §4 lets
                // the server send it whole instead).
                let changes = is_marathon
                    .then(|| self.journal.between(client, zone.serial()))
                    .flatten()
                    .filter(|c| c.removed.len() + c.added.len() <= zone.record_count());
                match changes {
                    Some(changes) => {
                        self.stats.ixfr.fetch_add(1, Ordering::Relaxed);
                        let Some(&(owner, ttl, new_soa)) = soa.as_ref() else {
                            return out.send(query.error(SERVFAIL)).await;
                        };
                        let old_soa = with_serial(new_soa, client);
                        fn own(c: &(crate::zone::name::WireName, u32, Rdata)) -> Item<'_> {
                            (&c.0[..], c.1, &c.2)
                        }
                        // RFC 1995 §4: new SOA, old SOA, deletions, new SOA, additions, new SOA.
                        let items = std::iter::once((owner, ttl, new_soa))
                            .chain(std::iter::once((owner, ttl, &old_soa)))
                            .chain(changes.removed.iter().map(own))
                            .chain(std::iter::once((owner, ttl, new_soa)))
                            .chain(changes.added.iter().map(own))
                            .chain(std::iter::once((owner, ttl, new_soa)));
                        debug!(
                            "IXFR to {peer}: {client} → {}, -{} +{}",
                            zone.serial(),
                            changes.removed.len(),
                            changes.added.len()
                        );
                        out.stream(&query, Box::new(items)).await
                    }
                    None => {
                        self.stats.ixfr_full.fetch_add(1, Ordering::Relaxed);
                        debug!(
                            "IXFR from {client} to {peer}: not in the history, or larger than the zone: whole zone"
                        );
                        out.stream(&query, Box::new(full_zone(&zone, soa.as_ref())))
                            .await
                    }
                }
            }
            _ => {
                self.stats.axfr.fetch_add(1, Ordering::Relaxed);
                out.stream(&query, Box::new(full_zone(&zone, soa.as_ref())))
                    .await
            }
        };
        if let Err(e) = &result {
            self.stats.aborted.fetch_add(1, Ordering::Relaxed);
            debug!("transfer to {peer} ended early: {e}");
        }
        result
    }

    /// A UDP request the transfer service wants: AXFR → NOTIMP (a transfer needs TCP, as
    /// Knot answers); IXFR → the current SOA, which sends the client to TCP (RFC 1995 §2);
    /// a signed query → its signed answer. `None`: nothing to send.
    pub fn serve_udp(&self, raw: &[u8], peer: IpAddr) -> Option<Vec<u8>> {
        let Some(query) = TransferQuery::parse(raw) else {
            return Some(format_error(raw));
        };
        if query.opcode() != 0 {
            return self.not_implemented(raw, &query);
        }
        match query.qtype {
            TYPE_AXFR | TYPE_IXFR if !self.policy.allow.contains(peer) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Some(query.error(REFUSED))
            }
            _ if !self.policy.allow_query.allows(peer) => Some(query.error(REFUSED)),
            TYPE_AXFR => Some(query.error(NOTIMP)),
            // The answer to an IXFR over UDP is the SOA: what a SOA query answers.
            _ => {
                let limit = udp_limit(raw);
                self.signed_query(raw, &query, limit)
            }
        }
    }

    /// NOTIMP for an opcode other than QUERY (UPDATE, NOTIFY to us …), signed if the request
    /// was: a signed UPDATE must not look like it succeeded.
    fn not_implemented(&self, raw: &[u8], query: &TransferQuery) -> Option<Vec<u8>> {
        match self.authenticate(raw, query, false) {
            Auth::Reject(answer) => Some(answer),
            Auth::Ok(signed) => {
                let mut out = query.error(NOTIMP);
                if let Some((key, mac)) = signed {
                    ResponseSigner::new(key, &mac).sign(&mut out, unix_now());
                }
                Some(out)
            }
        }
    }

    /// Answer a (possibly signed) standard query as the query path would, signed with the
    /// request's key. IXFR is answered as a SOA query.
    fn signed_query(&self, raw: &[u8], query: &TransferQuery, limit: u16) -> Option<Vec<u8>> {
        let signed = match self.authenticate(raw, query, false) {
            Auth::Reject(answer) => return Some(answer),
            Auth::Ok(key) => key,
        };
        let qtype = match query.qtype {
            TYPE_IXFR => RecordType::SOA,
            t => RecordType::from(t),
        };
        let qclass = DNSClass::from(query.qclass);
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        // Room for the TSIG record.
        let limit =
            usize::from(limit.max(512)).saturating_sub(if signed.is_some() { 300 } else { 0 });
        let len = self.zones.with_zone(&query.qname, |zone| {
            // `--allow-query` was checked by the listener before the hand-off.
            let plan = answer::plan(zone, &query.qname, qtype, qclass, query.id);
            let q = encode::Query {
                id: query.id,
                flags: query.flags,
                question: &query.question,
                edns: query.edns.map(|p| p.max(512).min(limit as u16)),
            };
            encode::response(&mut buf, limit, &q, &plan)
        });
        let mut out = match len {
            Some(len) => buf[..len].to_vec(),
            None => query.error(SERVFAIL),
        };
        if let Some((key, mac)) = signed {
            ResponseSigner::new(key, &mac).sign(&mut out, unix_now());
        }
        Some(out)
    }
}

/// The client's advertised UDP size from its OPT record, or 512.
fn udp_limit(raw: &[u8]) -> u16 {
    super::message::edns_payload(raw).map_or(512, |p| p.max(512))
}

/// FORMERR with whatever header the message had.
fn format_error(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    if let Some(id) = raw.get(..2) {
        out[..2].copy_from_slice(id);
    }
    out[2] = 0x80 | raw.get(2).map_or(0, |b| b & 0x78);
    out[3] = 1;
    out
}

/// The SOA's data at another serial (the old SOA of an IXFR's deletions).
fn with_serial(soa: &Rdata, serial: u32) -> Rdata {
    match soa {
        Rdata::Soa(s) => {
            let mut s = s.clone();
            s.serial = serial;
            Rdata::Soa(s)
        }
        other => other.clone(),
    }
}

/// SOA, every other record, SOA (RFC 5936 §2.2).
fn full_zone<'z>(
    zone: &'z ZoneSnapshot,
    soa: Option<&Item<'z>>,
) -> impl Iterator<Item = Item<'z>> + Send + 'z {
    let soa = soa.copied();
    soa.into_iter()
        .chain(
            zone.iter_records()
                .filter(|(_, r)| r.rdata.record_type() != RecordType::SOA)
                .map(|(o, r)| (&o[..], r.ttl, &r.rdata)),
        )
        .chain(soa)
}

type Records<'z> = Box<dyn Iterator<Item = Item<'z>> + Send + 'z>;

/// A transfer's output: messages signed in sequence, counted.
struct Out<'a, S> {
    sink: &'a mut S,
    signer: Option<ResponseSigner>,
    stats: &'a TransferStats,
}

impl<S: FrameSink> Out<'_, S> {
    async fn send(&mut self, mut message: Vec<u8>) -> io::Result<()> {
        if let Some(signer) = self.signer.as_mut() {
            signer.sign(&mut message, unix_now());
        }
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(message.len() as u64, Ordering::Relaxed);
        self.sink.send(&message).await
    }

    async fn stream<'z>(
        &mut self,
        query: &'z TransferQuery,
        // Boxed: a future holding the iterator's closure types is not provably `Send` for
        // every lifetime (rust-lang/rust#102211), and the connection task must be.
        items: Records<'z>,
    ) -> io::Result<()> {
        let mut messages = Messages::new(query, items);
        while let Some(message) = messages.next_message() {
            match message {
                Ok(m) => self.send(m).await?,
                Err(e) => {
                    warn!("zone transfer failed: {e}");
                    // Never a short zone: end with SERVFAIL instead of the rest.
                    self.send(query.error(SERVFAIL)).await?;
                    return Err(io::Error::other(e));
                }
            }
        }
        Ok(())
    }
}
