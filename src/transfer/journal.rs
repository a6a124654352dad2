//! The IXFR history: the differences between the last published versions of the Marathon
//! zone, bounded in versions and in records.
//!
//! The sync task pushes one [`Delta`] per publish, before the snapshot is served, so any serial
//! a secondary can have seen is either in the history or older than it. Transfers read it
//! under a short lock (never the DNS query path).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use crate::zone::builder::{Change, Changes};
use crate::zone::serial;

/// Records held across all deltas at most: past this the oldest go (a secondary that far
/// behind is better served by an AXFR anyway).
pub const MAX_RECORDS: usize = 500_000;

/// One publish: the records it removed and added, between two serials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub from: u32,
    pub to: u32,
    pub changes: Changes,
}

impl Delta {
    fn records(&self) -> usize {
        self.changes.removed.len() + self.changes.added.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    deltas: VecDeque<Arc<Delta>>,
    records: usize,
}

/// The history of the Marathon zone (see the module documentation).
#[derive(Debug)]
pub struct Journal {
    max_deltas: usize,
    max_records: usize,
    inner: Mutex<Inner>,
}

impl Journal {
    /// A history of at most `max_deltas` versions (`--ixfr-history`; 0 keeps none: every
    /// IXFR is answered with the whole zone).
    pub fn new(max_deltas: usize) -> Self {
        Self::with_limits(max_deltas, MAX_RECORDS)
    }

    pub fn with_limits(max_deltas: usize, max_records: usize) -> Self {
        Self {
            max_deltas,
            max_records,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record one publish. A delta that does not continue the last one (the zone was rebuilt)
    /// starts the history afresh.
    pub fn push(&self, delta: Delta) {
        let mut inner = self.lock();
        if inner
            .deltas
            .back()
            .is_some_and(|last| last.to != delta.from)
        {
            *inner = Inner::default();
        }
        if self.max_deltas == 0 || delta.records() > self.max_records {
            *inner = Inner::default();
            return;
        }
        inner.records += delta.records();
        inner.deltas.push_back(Arc::new(delta));
        while inner.deltas.len() > self.max_deltas || inner.records > self.max_records {
            let Some(old) = inner.deltas.pop_front() else {
                break;
            };
            inner.records -= old.records();
        }
    }

    /// Forget everything (the zone was rebuilt from scratch).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    /// Versions held.
    pub fn len(&self) -> usize {
        self.lock().deltas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest serial an IXFR can start from, if any.
    pub fn oldest(&self) -> Option<u32> {
        self.lock().deltas.front().map(|d| d.from)
    }

    /// The condensed difference from serial `from` to serial `to`: `None` when `from` is not a
    /// version in the history (too old, never published here, or from another run).
    pub fn between(&self, from: u32, to: u32) -> Option<Changes> {
        let chain: Vec<Arc<Delta>> = {
            let inner = self.lock();
            let start = inner.deltas.iter().position(|d| d.from == from)?;
            let mut chain = Vec::new();
            for d in inner.deltas.iter().skip(start) {
                chain.push(d.clone());
                if d.to == to {
                    break;
                }
            }
            chain
        };
        // The history may already hold versions newer than the snapshot being served.
        if chain.last().is_none_or(|d| d.to != to) || serial::gt(from, to) {
            return None;
        }
        Some(condense(&chain))
    }
}

/// Several consecutive deltas as one: a record's presence alternates, so its net count over
/// the chain says whether it was removed (-1), added (+1) or is as it was (0).
pub fn condense(chain: &[Arc<Delta>]) -> Changes {
    if let [only] = chain {
        return only.changes.clone();
    }
    let mut net: BTreeMap<&Change, i32> = BTreeMap::new();
    for d in chain {
        for c in &d.changes.removed {
            *net.entry(c).or_insert(0) -= 1;
        }
        for c in &d.changes.added {
            *net.entry(c).or_insert(0) += 1;
        }
    }
    let mut out = Changes::default();
    for (c, n) in net {
        match n {
            1.. => out.added.push(c.clone()),
            ..=-1 => out.removed.push(c.clone()),
            0 => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::data::Rdata;
    use crate::zone::name;
    use std::net::Ipv4Addr;

    fn a(owner: &str, last: u8) -> Change {
        (
            name::parse_ascii(owner).expect("name"),
            5,
            Rdata::A(Ipv4Addr::new(10, 0, 0, last)),
        )
    }

    fn delta(from: u32, to: u32, removed: Vec<Change>, added: Vec<Change>) -> Delta {
        Delta {
            from,
            to,
            changes: Changes { removed, added },
        }
    }

    #[test]
    fn a_chain_condenses_to_its_net_difference() {
        let j = Journal::new(10);
        j.push(delta(1, 2, vec![], vec![a("web.z", 1), a("web.z", 2)]));
        j.push(delta(2, 3, vec![a("web.z", 1)], vec![a("api.z", 3)]));
        j.push(delta(3, 4, vec![a("api.z", 3)], vec![a("web.z", 1)]));
        // From 1: web .1 and .2 added (web .1 went and came back; api came and went).
        let c = j.between(1, 4).expect("in history");
        assert_eq!(c.added, vec![a("web.z", 1), a("web.z", 2)]);
        assert!(c.removed.is_empty());
        // From 2: nothing removed for good, nothing added for good... except nothing at all.
        let c = j.between(2, 4).expect("in history");
        assert!(c.added.is_empty() && c.removed.is_empty(), "{c:?}");
        // From 3 to 4 exactly the last delta, with its exact deletions.
        let c = j.between(3, 4).expect("in history");
        assert_eq!(c.removed, vec![a("api.z", 3)]);
        assert_eq!(c.added, vec![a("web.z", 1)]);
        // Up to a serial in the middle (the snapshot being served lags the history).
        let c = j.between(1, 2).expect("in history");
        assert_eq!(c.added.len(), 2);
    }

    #[test]
    fn unknown_or_forgotten_serials_are_not_answered() {
        let j = Journal::new(2);
        j.push(delta(1, 2, vec![], vec![a("a.z", 1)]));
        j.push(delta(2, 3, vec![], vec![a("b.z", 1)]));
        j.push(delta(3, 4, vec![], vec![a("c.z", 1)]));
        assert_eq!(j.len(), 2, "bounded in versions");
        assert_eq!(j.oldest(), Some(2));
        assert!(j.between(1, 4).is_none(), "forgotten");
        assert!(j.between(7, 4).is_none(), "never published");
        assert!(j.between(2, 9).is_none(), "not reached yet");
        assert!(j.between(2, 4).is_some());
    }

    #[test]
    fn the_history_is_bounded_in_records_and_restarts_after_a_rebuild() {
        let j = Journal::with_limits(100, 3);
        j.push(delta(1, 2, vec![], vec![a("a.z", 1), a("a.z", 2)]));
        j.push(delta(2, 3, vec![], vec![a("b.z", 1), a("b.z", 2)]));
        assert_eq!(
            j.oldest(),
            Some(2),
            "the oldest went to stay within 3 records"
        );
        // A delta that does not continue the last one: the zone was rebuilt.
        j.push(delta(10, 11, vec![], vec![a("c.z", 1)]));
        assert_eq!(j.oldest(), Some(10));
        assert!(j.between(2, 3).is_none());
        // A delta larger than the whole budget empties the history.
        j.push(delta(
            11,
            12,
            vec![],
            vec![a("d.z", 1), a("d.z", 2), a("d.z", 3), a("d.z", 4)],
        ));
        assert!(j.is_empty());
        let none = Journal::new(0);
        none.push(delta(1, 2, vec![], vec![a("a.z", 1)]));
        assert!(none.is_empty(), "--ixfr-history 0 keeps nothing");
    }
}
