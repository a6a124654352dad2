//! The served zones: the Marathon zone behind an atomic pointer (swapped whole by the sync
//! task) and the static zones loaded at startup. Readers never lock and never wait.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::LowerName;

use super::snapshot::ZoneSnapshot;

#[derive(Debug)]
pub struct ZoneStore {
    marathon: ArcSwap<ZoneSnapshot>,
    statics: Vec<Arc<ZoneSnapshot>>,
}

/// The zone that answers for a name, kept alive for as long as the answer is being built.
pub type ZoneRef = Arc<ZoneSnapshot>;

impl ZoneStore {
    pub fn new(marathon: ZoneSnapshot, statics: Vec<ZoneSnapshot>) -> Self {
        Self {
            marathon: ArcSwap::from_pointee(marathon),
            statics: statics.into_iter().map(Arc::new).collect(),
        }
    }

    /// The current Marathon zone.
    pub fn marathon(&self) -> Arc<ZoneSnapshot> {
        self.marathon.load_full()
    }

    /// Publish a new Marathon zone.
    pub fn publish(&self, zone: ZoneSnapshot) {
        self.marathon.store(Arc::new(zone));
    }

    /// The zone with the longest origin that contains `name`, if any.
    pub fn find(&self, name: &LowerName) -> Option<ZoneRef> {
        let marathon = self.marathon.load_full();
        std::iter::once(&marathon)
            .chain(self.statics.iter())
            .filter(|z| z.contains(name))
            .max_by_key(|z| z.origin().num_labels())
            .cloned()
    }
}
