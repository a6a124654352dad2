//! NOTIFY (RFC 1996): tell each `--notify` secondary that the Marathon zone has a new serial,
//! so that it transfers within a round trip instead of at its next SOA refresh.
//!
//! One task per secondary. Serial changes are coalesced: each attempt announces the serial
//! served at that moment, so a burst of publishes costs one NOTIFY once the secondary answers.
//! An unanswered NOTIFY is sent again with growing delays (1 s up to 60 s) until acknowledged;
//! the failure is logged once when it starts and once when it ends.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::tsig::{self, Key};
use super::unix_now;
use crate::backoff::Backoff;
use crate::dns::encode::Encoder;
use crate::sync::SyncStatus;
use crate::zone::store::ZoneStore;

const OPCODE_NOTIFY: u16 = 4;
/// How long one NOTIFY waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The shortest pause between a failed NOTIFY and the next one.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// NOTIFY counters for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    pub sent: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Attempts that got no answer in time, an error answer, or a send error.
    pub failed: AtomicU64,
}

impl NotifyStats {
    pub fn render(&self, out: &mut String) {
        super::render_counters(
            out,
            "notify_total",
            "NOTIFY messages to secondaries, by outcome.",
            "outcome",
            &[
                ("sent", &self.sent),
                ("acknowledged", &self.acknowledged),
                ("failed", &self.failed),
            ],
        );
    }
}

/// Everything the NOTIFY tasks share.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub zones: Arc<ZoneStore>,
    pub status: Arc<SyncStatus>,
    /// Signs every NOTIFY when set (the secondaries' key).
    pub key: Option<Key>,
    pub stats: Arc<super::service::TransferStats>,
}

impl Notifier {
    /// NOTIFY `target` on every serial change of the Marathon zone until `shutdown`.
    pub async fn run(self, target: SocketAddr, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = self.follow(target) => {}
        }
    }

    async fn follow(&self, target: SocketAddr) {
        let local: SocketAddr = match (target.is_ipv4(), target.ip().is_loopback()) {
            (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = loop {
            match UdpSocket::bind(local).await {
                Ok(s) if s.connect(target).await.is_ok() => break s,
                Ok(_) | Err(_) => {
                    warn!("cannot open a socket to NOTIFY {target}; trying again in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        let mut acknowledged: Option<u32> = None;
        let mut failing = false;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut id: u16 = rand_id();
        loop {
            self.status
                .wait_for(|s| s.is_synced() && Some(self.zones.marathon().serial()) != acknowledged)
                .await;
            let zone = self.zones.marathon();
            let serial = zone.serial();
            id = id.wrapping_add(1);
            let Some((message, mac)) = self.message(&zone, id) else {
                // Cannot happen for a zone with a SOA; never a silent end of NOTIFY.
                warn!("cannot build a NOTIFY for {target}; trying again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            };
            self.stats.notify.sent.fetch_add(1, Ordering::Relaxed);
            match self.attempt(&socket, &message, id, mac.as_deref()).await {
                Ok(()) => {
                    self.stats
                        .notify
                        .acknowledged
                        .fetch_add(1, Ordering::Relaxed);
                    debug!("NOTIFY {target} serial {serial}: acknowledged");
                    if std::mem::take(&mut failing) {
                        info!("NOTIFY to {target} acknowledged again (serial {serial})");
                    }
                    acknowledged = Some(serial);
                    backoff.reset();
                }
                Err(reason) => {
                    self.stats.notify.failed.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(
                            "NOTIFY to {target} for serial {serial} failed: {reason}; retrying with backoff (the secondary still refreshes on its own)"
                        );
                        failing = true;
                    }
                    // Again after the backoff, or at once for a newer serial: a secondary
                    // back from an outage then hears of the change without waiting out the
                    // longest delay (publishes are already coalesced).
                    // At least MIN_RETRY apart, so a secondary that is down costs one
                    // attempt per second at most however often the zone changes.
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = async {
                            self.status.wait_for(|_| self.zones.marathon().serial() != serial).await;
                            tokio::time::sleep(MIN_RETRY).await;
                        } => {}
                    }
                }
            }
        }
    }

    /// The NOTIFY for the zone's current serial, signed if a key is set; with the MAC its
    /// answer must be signed with.
    fn message(
        &self,
        zone: &crate::zone::ZoneSnapshot,
        id: u16,
    ) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let (owner, ttl, soa) = zone.soa_record()?;
        let mut buf = vec![0u8; 1024];
        let len = {
            let mut e = Encoder::new(&mut buf, 1024);
            let flags: u16 = (OPCODE_NOTIFY << 11) | 0x0400;
            let mut header = [0u8; 12];
            header[0..2].copy_from_slice(&id.to_be_bytes());
            header[2..4].copy_from_slice(&flags.to_be_bytes());
            header[5] = 1; // one question
            header[7] = 1; // the new SOA as answer (RFC 1996 §3.7)
            e.write(&header).ok()?;
            e.write(owner).ok()?;
            e.write(&[0, 6, 0, 1]).ok()?;
            e.record_data(owner, ttl, soa, None).ok()?;
            e.len()
        };
        buf.truncate(len);
        let mac = self
            .key
            .as_ref()
            .map(|key| tsig::sign_request(key, &mut buf, unix_now()));
        Some((buf, mac))
    }

    /// Send one NOTIFY and wait for its acknowledgement.
    async fn attempt(
        &self,
        socket: &UdpSocket,
        message: &[u8],
        id: u16,
        mac: Option<&[u8]>,
    ) -> Result<(), String> {
        socket
            .send(message)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| format!("no answer within {ANSWER_WAIT:?}"))?
                .map_err(|e| format!("receive: {e}"))?;
            let answer = &buf[..n];
            // Anything else on the socket (a late answer to an earlier NOTIFY) is skipped.
            if n < 12 || answer[..2] != id.to_be_bytes() || answer[2] & 0x80 == 0 {
                continue;
            }
            let rcode = answer[3] & 0x0F;
            if rcode != 0 {
                return Err(format!("answered with rcode {rcode}"));
            }
            if let (Some(key), Some(mac)) = (&self.key, mac) {
                tsig::verify_response(key, mac, answer, unix_now())
                    .map_err(|e| format!("answer's TSIG: {e}"))?;
            }
            return Ok(());
        }
    }
}

/// A message ID that differs between runs (answers to a previous run's NOTIFYs are ignored).
fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id()) as u16
}
