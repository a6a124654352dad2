//! Agent host names → addresses, through the system resolver, cached. Runs in the sync task,
//! never on the query path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a resolved agent address is trusted.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// How soon a failed lookup is tried again.
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct HostCache {
    /// Addresses (possibly stale, possibly none) and when to look the name up again.
    entries: BTreeMap<String, (Vec<IpAddr>, Instant)>,
}

impl HostCache {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forget hosts no longer used (after a full resync, with every host in use).
    pub fn retain(&mut self, hosts: &BTreeSet<String>) {
        self.entries.retain(|h, _| hosts.contains(h));
    }

    /// The known addresses of `host` (none if it never resolved).
    pub fn addresses(&self, host: &str) -> Vec<IpAddr> {
        self.entries
            .get(host)
            .map(|(ips, _)| ips.clone())
            .unwrap_or_default()
    }

    /// Every known host and its addresses, for a build that runs on another thread.
    pub fn known(&self) -> BTreeMap<String, Vec<IpAddr>> {
        self.entries
            .iter()
            .map(|(h, (ips, _))| (h.clone(), ips.clone()))
            .collect()
    }

    /// Resolve every host in `hosts` that is missing or due.
    pub async fn resolve(&mut self, hosts: &BTreeSet<String>) {
        let now = Instant::now();
        let due: Vec<&String> = hosts
            .iter()
            .filter(|h| self.entries.get(*h).is_none_or(|(_, at)| *at <= now))
            .collect();
        // Concurrently: a slow resolver costs one timeout, not one per agent.
        let lookups = due.into_iter().map(|host| async move {
            let found =
                tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await;
            (host, found)
        });
        for (host, found) in futures_util::future::join_all(lookups).await {
            let now = Instant::now();
            match found {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    let again = if ips.is_empty() {
                        RETRY_FAILED_AFTER
                    } else {
                        FRESH_FOR
                    };
                    self.entries.insert(host.clone(), (ips, now + again));
                }
                // Keep a stale answer rather than dropping the agent on a resolver hiccup, and
                // do not wait for the resolver again on every publish.
                _ => {
                    let entry = self
                        .entries
                        .entry(host.clone())
                        .or_insert_with(|| (Vec::new(), now));
                    entry.1 = now + RETRY_FAILED_AFTER;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_localhost_and_failures() {
        let mut cache = HostCache::default();
        let hosts: BTreeSet<String> =
            ["localhost".to_string(), "no-such-host.invalid".to_string()].into();
        cache.resolve(&hosts).await;
        assert!(
            cache
                .addresses("localhost")
                .iter()
                .any(|ip| ip.is_loopback())
        );
        assert!(cache.addresses("no-such-host.invalid").is_empty());
        // The failure is not looked up again at once (no second resolver wait per publish).
        let (_, at) = &cache.entries["no-such-host.invalid"];
        assert!(*at > Instant::now());
    }
}
