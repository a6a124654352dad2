//! Who gets answers, and how many: the query access list (`--allow-query`) and response rate
//! limiting (`--rrl-rate`, `--rrl-slip`, `--rrl-exempt`) in the manner of Knot's `rrl` module
//! and BIND's `rate-limit`.
//!
//! RRL counts *identical responses* per client network (/24 for IPv4, /56 for IPv6): the same
//! name, type and kind of answer (NXDOMAIN answers count per zone, so a flood of random names
//! is one stream). Over the rate, responses are dropped, and every `slip`-th one is replaced by
//! an empty truncated answer (TC=1) so that a real client behind a spoofed-upon network retries
//! over TCP, where the source address is proven. Amplification is about bytes, so a response
//! counts once per 1,232 bytes (the DNS Flag Day 2020 payload size): a 22 kB answer to a
//! 60-byte query uses 19 of the rate's units. Only UDP is limited.
//!
//! The table is a fixed array of atomic words shared by every UDP worker (a client spreading
//! its queries over source ports lands on several workers): one compare-and-swap per answer,
//! no lock, no allocation, bounded memory whatever the number of clients.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipnet::IpNet;

/// Bytes a response may have before it counts twice (DNS Flag Day 2020).
const UNIT_BYTES: usize = 1232;
/// Buckets in the rate table (8 bytes each: 512 KiB).
const TABLE: usize = 1 << 16;

/// A list of networks; empty means everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList(pub Vec<IpNet>);

impl NetList {
    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address, as a dual-stack
    /// socket reports IPv4 clients, counts as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Everyone when empty, else the listed networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.contains(ip)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parse `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("invalid network {s:?}: expected e.g. 10.0.0.0/8 or 2001:db8::/32"))
}

/// RRL settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Identical responses per second and client network; 0 turns RRL off.
    pub rate: u32,
    /// Every `slip`-th limited response is sent as an empty TC=1 answer; 0 drops them all.
    pub slip: u32,
    /// Networks never limited.
    pub exempt: NetList,
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send an empty truncated answer instead (the client should retry over TCP).
    Slip,
    Drop,
}

/// The shared rate table.
#[derive(Debug)]
pub struct Rrl {
    rate: u64,
    slip: u32,
    exempt: NetList,
    start: Instant,
    /// Per bucket: tag (32 bits) | second (16 bits) | units used in that second (16 bits).
    table: Box<[AtomicU64]>,
    /// When the last "rate limiting" line was logged (seconds since `start`), to log at most
    /// one line per 10 s whatever the flood.
    logged: AtomicU64,
}

impl Rrl {
    /// `None` when the rate is 0 (off).
    pub fn new(cfg: &RrlConfig) -> Option<Self> {
        (cfg.rate > 0).then(|| Self {
            rate: u64::from(cfg.rate.min(u32::from(u16::MAX) - 1)),
            slip: cfg.slip,
            exempt: cfg.exempt.clone(),
            start: Instant::now(),
            table: (0..TABLE).map(|_| AtomicU64::new(0)).collect(),
            logged: AtomicU64::new(u64::MAX),
        })
    }

    /// Account a response of `len` bytes with identity `key` (see [`response_key`]) to
    /// `client`; `limited` counts this thread's limited responses (for slipping).
    pub fn check(&self, client: IpAddr, key: u64, len: usize, limited: &mut u32) -> Verdict {
        let now = self.start.elapsed().as_secs();
        self.check_at(client, key, len, limited, now)
    }

    fn check_at(
        &self,
        client: IpAddr,
        key: u64,
        len: usize,
        limited: &mut u32,
        now: u64,
    ) -> Verdict {
        if self.exempt.contains(client) {
            return Verdict::Send;
        }
        let h = mix(prefix(client) ^ key.rotate_left(17));
        let bucket = &self.table[(h as usize) % TABLE];
        let tag = h >> 32;
        let second = now & 0xFFFF;
        let cost = len.div_ceil(UNIT_BYTES).clamp(1, 0xFFFF) as u64;
        let mut current = bucket.load(Ordering::Relaxed);
        let used = loop {
            let same = current >> 32 == tag && (current >> 16) & 0xFFFF == second;
            let used = if same {
                (current & 0xFFFF) + cost
            } else {
                cost
            }
            .min(0xFFFF);
            let next = (tag << 32) | (second << 16) | used;
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break used,
                Err(seen) => current = seen,
            }
        };
        if used <= self.rate {
            return Verdict::Send;
        }
        self.log_once(client, now);
        *limited = limited.wrapping_add(1);
        if self.slip > 0 && (*limited).is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    fn log_once(&self, client: IpAddr, now: u64) {
        let last = self.logged.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last + 10)
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "rate limiting identical UDP responses to {} (over {} per second; logged at most every 10 s, counted in marathon_dns_rrl_*)",
                network(client),
                self.rate
            );
        }
    }
}

/// The client's network as RRL groups clients: /24 or /56.
fn network(ip: IpAddr) -> IpNet {
    match canonical(ip) {
        IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 24).map_or(IpNet::from(ip), |n| n.trunc()),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 56).map_or(IpNet::from(ip), |n| n.trunc()),
    }
}

fn prefix(ip: IpAddr) -> u64 {
    match canonical(ip) {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8) | (4 << 56),
        IpAddr::V6(v6) => ((u128::from(v6) >> 72) as u64) | (6 << 56),
    }
}

/// A 64-bit finaliser (splitmix64): spreads similar inputs over the table.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The identity of a response for RRL: what was asked (lower-cased wire name, type) and the
/// kind of answer. NXDOMAIN answers are keyed by the zone (`zone_origin`) rather than the
/// name, as Knot and BIND do, so random-name floods share one budget.
pub fn response_key(qname: &[u8], qtype: u16, rcode: u16, zone_origin: Option<&[u8]>) -> u64 {
    const NXDOMAIN: u16 = 3;
    let name = match (rcode, zone_origin) {
        (NXDOMAIN, Some(origin)) => origin,
        _ => qname,
    };
    // FNV-1a over the name, then type and rcode.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h ^ (u64::from(qtype) << 16) ^ u64::from(rcode))
}

/// Turn the response in `out[..len]` into an empty truncated answer (header and question,
/// TC=1, no records); the new length. `question_end` is where the question section ends.
pub fn slip(out: &mut [u8], question_end: usize) -> usize {
    if out.len() < 12 || question_end > out.len() {
        return 0;
    }
    out[2] |= 0x02;
    // ANCOUNT, NSCOUNT, ARCOUNT = 0.
    out[6..12].fill(0);
    question_end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(rate: u32, slip: u32, exempt: &[&str]) -> Rrl {
        Rrl::new(&RrlConfig {
            rate,
            slip,
            exempt: NetList(exempt.iter().map(|s| parse_net(s).expect("net")).collect()),
        })
        .expect("on")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn identical_responses_are_limited_per_network_and_second() {
        let r = rrl(5, 0, &[]);
        let key = response_key(b"\x03web\x00", 1, 0, None);
        let mut limited = 0;
        let sent = (0..20)
            .filter(|i| {
                r.check_at(ip(&format!("192.0.2.{i}")), key, 100, &mut limited, 7) == Verdict::Send
            })
            .count();
        assert_eq!(sent, 5, "the /24 shares one budget");
        assert_eq!(
            r.check_at(ip("198.51.100.1"), key, 100, &mut limited, 7),
            Verdict::Send,
            "another network is not affected"
        );
        let other = response_key(b"\x03api\x00", 1, 0, None);
        assert_eq!(
            r.check_at(ip("192.0.2.1"), other, 100, &mut limited, 7),
            Verdict::Send,
            "another answer is not affected"
        );
        assert_eq!(
            r.check_at(ip("192.0.2.1"), key, 100, &mut limited, 8),
            Verdict::Send,
            "the next second starts afresh"
        );
    }

    #[test]
    fn big_responses_cost_more_and_slips_alternate() {
        let r = rrl(38, 2, &[]);
        let key = response_key(b"\x03web\x00", 33, 0, None);
        let mut limited = 0;
        let verdicts: Vec<Verdict> = (0..6)
            .map(|_| r.check_at(ip("10.1.2.3"), key, 22_861, &mut limited, 1))
            .collect();
        // 22,861 bytes = 19 units: two fit in 38.
        assert_eq!(
            verdicts,
            [
                Verdict::Send,
                Verdict::Send,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip
            ]
        );
    }

    #[test]
    fn exempt_networks_and_ipv6_prefixes() {
        let r = rrl(1, 1, &["10.0.0.0/8", "2001:db8:1::/48"]);
        let key = response_key(b"\x00", 6, 0, None);
        let mut limited = 0;
        for _ in 0..5 {
            assert_eq!(
                r.check_at(ip("10.9.9.9"), key, 50, &mut limited, 0),
                Verdict::Send
            );
            assert_eq!(
                r.check_at(ip("::ffff:10.9.9.9"), key, 50, &mut limited, 0),
                Verdict::Send,
                "a mapped address is the IPv4 address"
            );
            assert_eq!(
                r.check_at(ip("2001:db8:1::5"), key, 50, &mut limited, 0),
                Verdict::Send
            );
        }
        // One /56 shares a budget; the next /56 has its own.
        assert_eq!(
            r.check_at(ip("2001:db8:2:100::1"), key, 50, &mut limited, 0),
            Verdict::Send
        );
        assert_eq!(
            r.check_at(ip("2001:db8:2:1ff::2"), key, 50, &mut limited, 0),
            Verdict::Slip
        );
        assert_eq!(
            r.check_at(ip("2001:db8:2:200::1"), key, 50, &mut limited, 0),
            Verdict::Send
        );
    }

    #[test]
    fn nxdomain_floods_share_the_zones_budget() {
        let zone = b"\x08marathon\x05local\x00";
        let a = response_key(b"\x01a\x08marathon\x05local\x00", 1, 3, Some(zone));
        let b = response_key(b"\x01b\x08marathon\x05local\x00", 1, 3, Some(zone));
        assert_eq!(a, b);
        let c = response_key(b"\x01a\x08marathon\x05local\x00", 1, 0, Some(zone));
        let d = response_key(b"\x01b\x08marathon\x05local\x00", 1, 0, Some(zone));
        assert_ne!(c, d);
    }

    #[test]
    fn access_lists() {
        let any = NetList::default();
        assert!(any.allows(ip("203.0.113.1")));
        let list = NetList(vec![
            parse_net("10.0.0.0/8").expect("net"),
            parse_net("::1").expect("net"),
        ]);
        assert!(list.allows(ip("10.1.1.1")) && list.allows(ip("::ffff:10.1.1.1")));
        assert!(list.allows(ip("::1")) && !list.allows(ip("11.0.0.1")));
        assert_eq!(
            parse_net("10.1.2.3/8").expect("net").to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_net("10.0.0.0/33").is_err() && parse_net("web").is_err());
    }
}
