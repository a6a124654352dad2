//! The node map: owner names → nodes, persistent and compact.
//!
//! 65,536 shards in two levels of 256, each shard one allocation of entries sorted by hash
//! (a few entries even at 100,000 tasks). Cloning the map — a snapshot — is one reference
//! count; changing a name copies the two 256-slot directories on its path and its shard,
//! nothing else, so successive snapshots share all but what changed. Entries sit inline: no
//! allocation per entry besides the name and the node's records. A lookup is a hash, two
//! indexed loads into the directories, and a search of one small contiguous shard that
//! touches a single stored name: few cache misses, however large the zone. Which shard a
//! name lands in depends only on the name; a query picks a shard but cannot make one grow.

use std::sync::Arc;

use super::data::Node;
use super::name::WireName;

const FANOUT: usize = 256;
const BITS: u32 = FANOUT.trailing_zeros();

/// (hash, name, node), sorted by hash then name.
type Entry = (u64, WireName, Node);
type Shard = Arc<[Entry]>;
type Dir = [Option<Shard>; FANOUT];

#[derive(Debug, Clone)]
pub struct Nodes {
    dirs: Arc<[Option<Arc<Dir>>; FANOUT]>,
    len: usize,
}

impl Default for Nodes {
    fn default() -> Self {
        Self::new()
    }
}

/// A fast hash of a name, eight bytes at a time, with a final mix (only the top bits pick
/// shards; the whole value orders entries).
fn hash(name: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = name.len() as u64;
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^= h >> 31;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 29)
}

fn slots(h: u64) -> (usize, usize) {
    (
        (h >> (64 - BITS)) as usize,
        ((h >> (64 - 2 * BITS)) as usize) & (FANOUT - 1),
    )
}

fn find(shard: &[Entry], h: u64, name: &[u8]) -> Result<usize, usize> {
    shard.binary_search_by(|(kh, k, _)| kh.cmp(&h).then_with(|| (**k).cmp(name)))
}

impl Nodes {
    pub fn new() -> Self {
        Self {
            dirs: Arc::new(std::array::from_fn(|_| None)),
            len: 0,
        }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stored name and node for `name`.
    pub fn get_key_value(&self, name: &[u8]) -> Option<(&WireName, &Node)> {
        let h = hash(name);
        let (d, s) = slots(h);
        let shard = self.dirs[d].as_ref()?[s].as_deref()?;
        let i = find(shard, h, name).ok()?;
        let (_, k, v) = &shard[i];
        Some((k, v))
    }

    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.get_key_value(name).map(|(_, v)| v)
    }

    /// Change the node for `name` with `f`, creating it empty if missing; a node left unused
    /// (no records, no references) is removed. A new entry keeps `name` itself as its key
    /// (an SRV record's target shares it).
    pub fn update<R>(&mut self, name: &WireName, f: impl FnOnce(&mut Node) -> R) -> R {
        self.update_with(name, Some(name), f)
    }

    /// Like [`Self::update`], for a name given as bytes (copied if an entry is created).
    pub fn update_bytes<R>(&mut self, name: &[u8], f: impl FnOnce(&mut Node) -> R) -> R {
        self.update_with(name, None, f)
    }

    fn update_with<R>(
        &mut self,
        name: &[u8],
        owned: Option<&WireName>,
        f: impl FnOnce(&mut Node) -> R,
    ) -> R {
        let h = hash(name);
        let (d, s) = slots(h);
        // Copy what a snapshot shares on the path: the two directories.
        let dirs = Arc::make_mut(&mut self.dirs);
        let dir =
            Arc::make_mut(dirs[d].get_or_insert_with(|| Arc::new(std::array::from_fn(|_| None))));
        let slot = &mut dir[s];
        // In place when nobody shares the shard and the name stays.
        let mut f = Some(f);
        if let Some(entries) = slot.as_mut().and_then(Arc::get_mut)
            && let Ok(i) = find(entries, h, name)
            && let Some(f) = f.take()
        {
            let out = f(&mut entries[i].2);
            if !entries[i].2.is_unused() {
                return out;
            }
            let rest: Vec<Entry> = entries
                .iter_mut()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, e)| std::mem::take(e))
                .collect();
            *slot = (!rest.is_empty()).then(|| Shard::from(rest));
            self.len -= 1;
            return out;
        }
        // Otherwise rebuild the shard: moved out if unique, copied if a snapshot shares it.
        let mut entries: Vec<Entry> = match slot.take() {
            None => Vec::new(),
            Some(mut shard) => match Arc::get_mut(&mut shard) {
                Some(unique) => unique.iter_mut().map(std::mem::take).collect(),
                None => shard.to_vec(),
            },
        };
        let (out, delta) = match find(&entries, h, name) {
            Ok(i) => {
                let out = f.map(|f| f(&mut entries[i].2));
                if entries[i].2.is_unused() {
                    entries.remove(i);
                    (out, -1)
                } else {
                    (out, 0)
                }
            }
            Err(i) => {
                let mut node = Node::default();
                let out = f.map(|f| f(&mut node));
                if node.is_unused() {
                    (out, 0)
                } else {
                    let key = owned.cloned().unwrap_or_else(|| WireName::from(name));
                    entries.insert(i, (h, key, node));
                    (out, 1)
                }
            }
        };
        *slot = (!entries.is_empty()).then(|| Shard::from(entries));
        self.len = self.len.saturating_add_signed(delta);
        match out {
            Some(out) => out,
            // `f` is taken only on the in-place path, which always returns.
            None => unreachable!("update closure already used"),
        }
    }

    /// Every name and node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&WireName, &Node)> {
        self.dirs
            .iter()
            .flatten()
            .flat_map(|dir| dir.iter().flatten())
            .flat_map(|shard| shard.iter().map(|(_, k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(i: usize) -> WireName {
        crate::zone::name::parse_ascii(&format!("n{i}.marathon.local")).expect("name")
    }

    #[test]
    fn snapshots_share_and_do_not_see_later_changes() {
        let mut a = Nodes::new();
        for i in 0..10_000 {
            a.update(&w(i), |n| n.refs = i as u32 + 1);
        }
        assert_eq!(a.len(), 10_000);
        let snapshot = a.clone();
        a.update(&w(7), |n| n.refs = 99);
        a.update(&w(8), |n| n.refs = 0);
        a.update(&w(20_000), |n| n.refs = 1);
        assert_eq!(snapshot.get(&w(7)).map(|n| n.refs), Some(8));
        assert!(snapshot.get(&w(8)).is_some());
        assert!(snapshot.get(&w(20_000)).is_none());
        assert_eq!(a.get(&w(7)).map(|n| n.refs), Some(99));
        assert!(a.get(&w(8)).is_none(), "unused nodes leave");
        assert_eq!((a.len(), snapshot.len()), (10_000, 10_000));
        assert_eq!(a.iter().count(), 10_000);
        assert!(a.get(b"\x01x\x00").is_none());
        // Touching a missing name without giving it anything leaves no trace.
        a.update(&w(30_000), |_| ());
        assert_eq!(a.len(), 10_000);
    }
}
