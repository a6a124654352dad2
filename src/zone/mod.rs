//! Zones: the pure core that turns the cluster model into immutable, servable snapshots.

pub mod build;
pub mod builder;
pub mod data;
pub mod export;
pub mod name;
pub mod nodes;
pub mod serial;
pub mod snapshot;
pub mod store;
pub mod zonefile;

pub use snapshot::{Lookup, Outcome, ZoneSnapshot};
