//! Zone transfers to standard secondaries (Knot, NSD, BIND, CoreDNS): marathon-dns as a
//! hidden primary (docs/scale-out.md).
//!
//! - `journal` — the IXFR history of the Marathon zone, filled by the sync task per publish.
//! - `message` — transfer requests read from their bytes, responses cut into messages.
//! - `service` — who may transfer, AXFR (RFC 5936) and IXFR (RFC 1995) streams, signed
//!   answers to signed queries.
//! - `notify` — NOTIFY (RFC 1996) on each new serial, coalesced and retried.
//! - `tsig` — TSIG (RFC 8945) over raw messages.

pub mod journal;
pub mod message;
pub mod notify;
pub mod service;
pub mod tsig;

pub use journal::Journal;
pub use service::{FrameSink, TransferPolicy, TransferStats, Transfers};

/// Seconds since the Unix epoch: TSIG's clock (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One Prometheus counter family, `marathon_dns_<name>{<label>="…"}`, in the given order.
fn render_counters(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, &std::sync::atomic::AtomicU64)],
) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP marathon_dns_{name} {help}\n# TYPE marathon_dns_{name} counter"
    );
    for (value, counter) in series {
        let _ = writeln!(
            out,
            "marathon_dns_{name}{{{label}=\"{value}\"}} {}",
            counter.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
