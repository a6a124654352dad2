//! Agent host names → addresses, through the system resolver, cached. Runs in the sync task,
//! never on the query path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a resolved agent address is trusted.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// How soon a failed lookup is tried again (at the next publish after this).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct HostCache {
    entries: BTreeMap<String, (Vec<IpAddr>, Instant)>,
}

impl HostCache {
    /// Resolve every host in `hosts` that is missing or stale; forget hosts no longer used.
    /// Returns the addresses of `hosts` (failed lookups map to nothing).
    pub async fn resolve(&mut self, hosts: &BTreeSet<String>) -> BTreeMap<String, Vec<IpAddr>> {
        self.entries.retain(|h, _| hosts.contains(h));
        let stale: Vec<&String> = hosts
            .iter()
            .filter(|h| {
                self.entries.get(*h).is_none_or(|(ips, at)| {
                    let ttl = if ips.is_empty() {
                        RETRY_FAILED_AFTER
                    } else {
                        FRESH_FOR
                    };
                    at.elapsed() > ttl
                })
            })
            .collect();
        // Concurrently: a slow resolver costs one timeout, not one per agent.
        let lookups = stale.into_iter().map(|host| async move {
            let found =
                tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await;
            (host, found)
        });
        for (host, found) in futures_util::future::join_all(lookups).await {
            match found {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    self.entries.insert(host.clone(), (ips, Instant::now()));
                }
                // Keep a stale answer rather than dropping the agent on a resolver hiccup.
                _ => {
                    self.entries
                        .entry(host.clone())
                        .or_insert_with(|| (Vec::new(), Instant::now()));
                }
            }
        }
        self.entries
            .iter()
            .map(|(h, (ips, _))| (h.clone(), ips.clone()))
            .collect()
    }
}
