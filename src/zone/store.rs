//! The served zones: the Marathon zone behind an atomic pointer (swapped whole by the sync
//! task) and the static zones loaded at startup. Readers never lock and never wait.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::snapshot::ZoneSnapshot;

#[derive(Debug)]
pub struct ZoneStore {
    marathon: ArcSwap<ZoneSnapshot>,
    statics: Vec<Arc<ZoneSnapshot>>,
}

impl ZoneStore {
    pub fn new(marathon: ZoneSnapshot, statics: Vec<ZoneSnapshot>) -> Self {
        Self {
            marathon: ArcSwap::from_pointee(marathon),
            statics: statics.into_iter().map(Arc::new).collect(),
        }
    }

    /// Number of static zones served beside the Marathon zone.
    pub fn static_zones(&self) -> usize {
        self.statics.len()
    }

    /// The current Marathon zone.
    pub fn marathon(&self) -> Arc<ZoneSnapshot> {
        self.marathon.load_full()
    }

    /// Publish a new Marathon zone.
    pub fn publish(&self, zone: Arc<ZoneSnapshot>) {
        self.marathon.store(zone);
    }

    /// Run `f` with the zone with the longest origin that contains `name` (lower-cased wire
    /// form), if any. No reference count is taken: the query path only borrows.
    pub fn with_zone<R>(&self, name: &[u8], f: impl FnOnce(Option<&ZoneSnapshot>) -> R) -> R {
        let marathon = self.marathon.load();
        let best = std::iter::once(&**marathon)
            .chain(self.statics.iter().map(|z| &**z))
            .filter(|z| z.contains(name))
            .max_by_key(|z| z.origin_wire().len());
        f(best)
    }
}
