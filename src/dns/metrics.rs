//! Query counters for `/metrics`: queries by protocol, type and rcode, UDP response sizes,
//! truncations. Each UDP worker counts into its own cache-line-aligned block (no line shared
//! between answering threads); hickory's path shares one. The admin listener sums them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Query types with their own series; the rest count as `other`.
const TYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::SOA,
    RecordType::NS,
    RecordType::ANY,
];
const RCODES: [ResponseCode; 6] = [
    ResponseCode::NoError,
    ResponseCode::NXDomain,
    ResponseCode::Refused,
    ResponseCode::FormErr,
    ResponseCode::NotImp,
    ResponseCode::ServFail,
];
const RCODE_NAMES: [&str; 6] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL",
];
/// Upper bounds (bytes) of the response-size histogram; the last bucket is +Inf.
const SIZE_BUCKETS: [usize; 7] = [128, 256, 512, 1232, 4096, 8192, 65535];
const PROTOCOLS: [&str; 2] = ["udp", "tcp"];

/// How a query came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One block of counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    queries: [[[AtomicU64; 7]; 7]; 2],
    sizes: [[AtomicU64; 8]; 2],
    size_sum: [AtomicU64; 2],
    truncated: [AtomicU64; 2],
    /// Responses response rate limiting dropped or slipped (sent as TC=1 without records).
    rrl_dropped: AtomicU64,
    rrl_slipped: AtomicU64,
}

fn type_index(t: RecordType) -> usize {
    TYPES.iter().position(|x| *x == t).unwrap_or(TYPES.len())
}

fn rcode_index(r: ResponseCode) -> usize {
    RCODES.iter().position(|x| *x == r).unwrap_or(RCODES.len())
}

impl Counters {
    /// Count one answered query; `size` of the response when known (UDP).
    pub fn record(
        &self,
        transport: Transport,
        qtype: RecordType,
        rcode: ResponseCode,
        size: Option<usize>,
        truncated: bool,
    ) {
        let p = transport as usize;
        self.queries[p][type_index(qtype)][rcode_index(rcode)].fetch_add(1, Ordering::Relaxed);
        if let Some(size) = size {
            let b = SIZE_BUCKETS
                .iter()
                .position(|limit| size <= *limit)
                .unwrap_or(SIZE_BUCKETS.len());
            self.sizes[p][b].fetch_add(1, Ordering::Relaxed);
            self.size_sum[p].fetch_add(size as u64, Ordering::Relaxed);
        }
        if truncated {
            self.truncated[p].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Counters {
    /// Count one response that RRL held back: dropped, or slipped when `slipped`.
    pub fn rate_limited(&self, slipped: bool) {
        let c = if slipped {
            &self.rrl_slipped
        } else {
            &self.rrl_dropped
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every block, for the exposition.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    blocks: Mutex<Vec<Arc<Counters>>>,
    /// The TCP listener's connection counters.
    pub tcp: Arc<super::tcp::TcpStats>,
}

impl DnsMetrics {
    /// A new block for one answering thread (or one shared path).
    pub fn block(&self) -> Arc<Counters> {
        let b = Arc::new(Counters::default());
        self.blocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(b.clone());
        b
    }

    fn sum(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        self.blocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|b| f(b))
            .sum()
    }

    /// Prometheus text for the query counters.
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str(
            "# HELP marathon_dns_queries_total DNS queries answered, by protocol, type and rcode.\n\
             # TYPE marathon_dns_queries_total counter\n",
        );
        for (p, proto) in PROTOCOLS.iter().enumerate() {
            for t in 0..=TYPES.len() {
                let tname = TYPES.get(t).map_or("other".to_string(), |x| x.to_string());
                for r in 0..=RCODES.len() {
                    let n = self.sum(|b| load(&b.queries[p][t][r]));
                    if n == 0 {
                        continue;
                    }
                    let rname = RCODE_NAMES.get(r).copied().unwrap_or("other");
                    let _ = writeln!(
                        out,
                        "marathon_dns_queries_total{{protocol=\"{proto}\",type=\"{tname}\",rcode=\"{rname}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP marathon_dns_response_size_bytes Sizes of UDP responses.\n\
             # TYPE marathon_dns_response_size_bytes histogram\n",
        );
        let p = Transport::Udp as usize;
        let mut cumulative = 0;
        for (b, limit) in SIZE_BUCKETS.iter().enumerate() {
            cumulative += self.sum(|x| load(&x.sizes[p][b]));
            let _ = writeln!(
                out,
                "marathon_dns_response_size_bytes_bucket{{protocol=\"udp\",le=\"{limit}\"}} {cumulative}"
            );
        }
        cumulative += self.sum(|x| load(&x.sizes[p][SIZE_BUCKETS.len()]));
        let _ = writeln!(
            out,
            "marathon_dns_response_size_bytes_bucket{{protocol=\"udp\",le=\"+Inf\"}} {cumulative}\n\
             marathon_dns_response_size_bytes_sum{{protocol=\"udp\"}} {}\n\
             marathon_dns_response_size_bytes_count{{protocol=\"udp\"}} {cumulative}",
            self.sum(|x| load(&x.size_sum[p]))
        );
        out.push_str(
            "# HELP marathon_dns_truncated_total UDP responses sent with TC set.\n\
             # TYPE marathon_dns_truncated_total counter\n",
        );
        let _ = writeln!(
            out,
            "marathon_dns_truncated_total{{protocol=\"udp\"}} {}",
            self.sum(|x| load(&x.truncated[Transport::Udp as usize]))
        );
        let _ = writeln!(
            out,
            "# HELP marathon_dns_rrl_dropped_total UDP responses response rate limiting dropped.\n\
             # TYPE marathon_dns_rrl_dropped_total counter\n\
             marathon_dns_rrl_dropped_total {}\n\
             # HELP marathon_dns_rrl_slipped_total UDP responses rate limiting sent as TC=1 without records.\n\
             # TYPE marathon_dns_rrl_slipped_total counter\n\
             marathon_dns_rrl_slipped_total {}",
            self.sum(|x| load(&x.rrl_dropped)),
            self.sum(|x| load(&x.rrl_slipped))
        );
        self.tcp.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_add_up_by_labels() {
        let m = DnsMetrics::default();
        let (a, b) = (m.block(), m.block());
        a.record(
            Transport::Udp,
            RecordType::SRV,
            ResponseCode::NoError,
            Some(300),
            true,
        );
        b.record(
            Transport::Udp,
            RecordType::SRV,
            ResponseCode::NoError,
            Some(100),
            false,
        );
        b.record(
            Transport::Tcp,
            RecordType::TXT,
            ResponseCode::NXDomain,
            None,
            false,
        );
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "marathon_dns_queries_total{protocol=\"udp\",type=\"SRV\",rcode=\"NOERROR\"} 2"
        ));
        assert!(out.contains(
            "marathon_dns_queries_total{protocol=\"tcp\",type=\"other\",rcode=\"NXDOMAIN\"} 1"
        ));
        assert!(out.contains("le=\"128\"} 1\n"));
        assert!(out.contains("le=\"512\"} 2\n"));
        assert!(out.contains("marathon_dns_response_size_bytes_sum{protocol=\"udp\"} 400"));
        assert!(out.contains("marathon_dns_truncated_total{protocol=\"udp\"} 1"));
    }
}
