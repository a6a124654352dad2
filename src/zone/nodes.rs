//! The node map: owner names → nodes, persistent and compact.
//!
//! 16,384 shards in two levels of 128, each shard a vector sorted by hash. Cloning the map (a
//! snapshot) is one reference count; changing a name copies the two 128-slot directories on its path and
//! its shard (tens of entries), nothing else, so successive snapshots share all but what
//! changed. Entries sit inline in their shard's vector — no per-entry allocation besides the
//! name and the node's records — and a lookup is a hash, two indexed loads and a binary search
//! over the inline hashes of contiguous entries, which touches a single stored name. Which shard a name lands in depends only on the name; query names
//! pick a shard but cannot make one grow.

use std::sync::Arc;

use super::data::Node;
use super::name::WireName;

const FANOUT: usize = 128;
const BITS: u32 = FANOUT.trailing_zeros();

/// Entries sorted by (hash, name): the search compares inline hashes and touches one name.
type Shard = Vec<(u64, WireName, Node)>;
type Dir = [Option<Arc<Shard>>; FANOUT];

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

/// FNV-1a over the name, then mixed: only the top bits are used.
fn hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

fn slots(h: u64) -> (usize, usize) {
    (
        (h >> (64 - BITS)) as usize,
        ((h >> (64 - 2 * BITS)) as usize) & (FANOUT - 1),
    )
}

fn find(shard: &Shard, h: u64, name: &[u8]) -> Result<usize, usize> {
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

    /// The shard for hash `h`, made unique (copied if a snapshot shares it).
    fn shard_mut(&mut self, h: u64) -> &mut Shard {
        let (d, s) = slots(h);
        let dirs = Arc::make_mut(&mut self.dirs);
        let dir =
            Arc::make_mut(dirs[d].get_or_insert_with(|| Arc::new(std::array::from_fn(|_| None))));
        Arc::make_mut(dir[s].get_or_insert_with(|| Arc::new(Vec::new())))
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut Node> {
        self.get(name)?;
        let h = hash(name);
        let shard = self.shard_mut(h);
        let i = find(shard, h, name).ok()?;
        Some(&mut shard[i].2)
    }

    /// The node for `name`, created empty if missing.
    pub fn entry(&mut self, name: &WireName) -> &mut Node {
        let h = hash(name);
        let mut added = false;
        let shard = self.shard_mut(h);
        let i = match find(shard, h, name) {
            Ok(i) => i,
            Err(i) => {
                shard.reserve_exact(1);
                shard.insert(i, (h, name.clone(), Node::default()));
                added = true;
                i
            }
        };
        if added {
            self.len += 1;
        }
        &mut self.shard_mut(h)[i].2
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Node> {
        self.get(name)?;
        let h = hash(name);
        let shard = self.shard_mut(h);
        let i = find(shard, h, name).ok()?;
        let (_, _, node) = shard.remove(i);
        self.len -= 1;
        Some(node)
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
            a.entry(&w(i)).refs = i as u32;
        }
        assert_eq!(a.len(), 10_000);
        let snapshot = a.clone();
        a.get_mut(&w(7)).expect("present").refs = 99;
        assert!(a.remove(&w(8)).is_some());
        a.entry(&w(20_000));
        assert_eq!(snapshot.get(&w(7)).map(|n| n.refs), Some(7));
        assert!(snapshot.get(&w(8)).is_some());
        assert!(snapshot.get(&w(20_000)).is_none());
        assert_eq!(a.get(&w(7)).map(|n| n.refs), Some(99));
        assert!(a.get(&w(8)).is_none());
        assert_eq!((a.len(), snapshot.len()), (10_000, 10_000));
        assert_eq!(a.iter().count(), 10_000);
        assert!(a.get(b"\x01x\x00").is_none());
    }
}
