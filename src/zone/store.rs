//! The served zones: the Marathon zone behind an atomic pointer (swapped whole by the sync
//! task) and the static zones from `zones/` (swapped whole by a reload). Readers never lock
//! and never wait.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::snapshot::ZoneSnapshot;

#[derive(Debug)]
pub struct ZoneStore {
    marathon: ArcSwap<ZoneSnapshot>,
    statics: ArcSwap<Vec<ZoneSnapshot>>,
}

impl ZoneStore {
    pub fn new(marathon: ZoneSnapshot, statics: Vec<ZoneSnapshot>) -> Self {
        Self {
            marathon: ArcSwap::from_pointee(marathon),
            statics: ArcSwap::from_pointee(statics),
        }
    }

    /// Number of static zones served beside the Marathon zone.
    pub fn static_zones(&self) -> usize {
        self.statics.load().len()
    }

    /// Serve these static zones instead of the current ones (a reload of `zones/`).
    pub fn replace_statics(&self, statics: Vec<ZoneSnapshot>) {
        self.statics.store(Arc::new(statics));
    }

    /// The current Marathon zone.
    pub fn marathon(&self) -> Arc<ZoneSnapshot> {
        self.marathon.load_full()
    }

    /// Publish a new Marathon zone.
    pub fn publish(&self, zone: Arc<ZoneSnapshot>) {
        self.marathon.store(zone);
    }

    /// The zone whose origin is `apex` (lower-cased wire form), and whether it is the
    /// Marathon zone; for zone transfers, which hold it for their whole length.
    pub fn zone_at(&self, apex: &[u8]) -> Option<(Arc<ZoneSnapshot>, bool)> {
        let marathon = self.marathon.load_full();
        if marathon.origin_wire() == apex {
            return Some((marathon, true));
        }
        self.statics
            .load()
            .iter()
            .find(|z| z.origin_wire() == apex)
            .map(|z| (Arc::new(z.clone()), false))
    }

    /// Run `f` with the zone with the longest origin that contains `name` (lower-cased wire
    /// form), if any. No reference count is taken: the query path only borrows.
    pub fn with_zone<R>(&self, name: &[u8], f: impl FnOnce(Option<&ZoneSnapshot>) -> R) -> R {
        let marathon = self.marathon.load();
        let statics = self.statics.load();
        let best = std::iter::once(&**marathon)
            .chain(statics.iter())
            .filter(|z| z.contains(name))
            .max_by_key(|z| z.origin_wire().len());
        f(best)
    }
}
