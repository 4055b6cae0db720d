//! The embedded store's table: its [`Slot`]s in a dense vector, found by
//! key through a hash index of 4-byte positions into it (hashbrown's
//! `HashTable`, the table under std's map and indexmap's).
//!
//! ```text
//!  index (hash of key -> position)     slots (dense, in order)
//!  [ . 2 . . 0 . 1 . ]  ───────────►  [ a | b | c ]   a Box<[u8]> each
//! ```
//!
//! It does what the store used `IndexMap` for (a position per entry that
//! the sweep's cursor and the eviction clock's hand keep, `swap_remove`
//! in O(1), an order the ordered replicas share) in fewer bytes per entry:
//! indexmap keeps a 64-bit hash, the key and the value beside each
//! position (8 + 24 + 56 bytes in the store before this table) and 8-byte
//! positions; here an entry is the slot's 16-byte pointer, a 32-bit hash
//! in a vector beside it, and a 4-byte position in the index, the key
//! being read from the slot.
//!
//! The hashes are kept so that growing the index reads a dense vector of
//! them, not every slot, scattered over the heap: rehashing from the slots
//! stalled a write for 0.55 s at 1.8M items and 3.8 s at 7.3M (indexmap:
//! 0.16 s and 0.63 s in the same run); with the hashes, 0.09 s and 0.37 s
//! (indexmap 0.14 s and 0.60 s). Each is one write's stall on the event
//! loop, once per doubling.
//!
//! The vectors grow by a quarter at a time past 64k slots, not double, so
//! their spare room is at most a quarter of 20 bytes an item; a large
//! vector's `realloc` moves pages, not bytes.

use hashbrown::HashTable;

use super::slot::Slot;

/// What a [`DenseTable`] holds: anything that carries its key.
pub trait Keyed {
    fn key(&self) -> &[u8];
}

impl Keyed for Slot {
    fn key(&self) -> &[u8] {
        Slot::key(self)
    }
}

/// Past this many slots the vector grows by a quarter.
const GROW_BY_QUARTER_FROM: usize = 1 << 16;

#[derive(Debug)]
pub struct DenseTable<T = Slot> {
    index: HashTable<u32>,
    slots: Vec<T>,
    /// Each slot's hash, in the slots' order: growing the index reads
    /// these, not the slots.
    hashes: Vec<u32>,
    hasher: ahash::RandomState,
}

/// The 64-bit hash the index is given for a 32-bit one: hashbrown picks
/// the bucket from the low bits and the control byte from the top 7, so
/// both come from the 32 bits kept.
fn widen(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

impl<T> Default for DenseTable<T> {
    fn default() -> Self {
        DenseTable {
            index: HashTable::new(),
            slots: Vec::new(),
            hashes: Vec::new(),
            hasher: ahash::RandomState::default(),
        }
    }
}

impl<T: Keyed> DenseTable<T> {
    fn hash(&self, key: &[u8]) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// How many entries the index holds before it grows, and the vectors.
    pub fn capacity(&self) -> (usize, usize) {
        (self.index.capacity(), self.slots.capacity())
    }

    /// Bytes a place in the vectors takes: an entry and its hash.
    pub const ENTRY_BYTES: u64 = (std::mem::size_of::<T>() + 4) as u64;

    /// About the heap bytes of the index and the vectors (not what the
    /// entries point to).
    pub fn heap_bytes(&self) -> u64 {
        let (index, vectors) = self.capacity();
        super::memory::table_slots(index) * 5 + vectors as u64 * Self::ENTRY_BYTES
    }

    pub fn get(&self, key: &[u8]) -> Option<&T> {
        self.position(key).map(|i| &self.slots[i])
    }

    pub fn position(&self, key: &[u8]) -> Option<usize> {
        let hash = widen(self.hash(key));
        let slots = &self.slots;
        let found = self.index.find(hash, |&i| slots[i as usize].key() == key);
        found.map(|&i| i as usize)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut T> {
        let i = self.position(key)?;
        Some(&mut self.slots[i])
    }

    pub fn get_index(&self, i: usize) -> Option<&T> {
        self.slots.get(i)
    }

    pub fn get_index_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter()
    }

    /// Adds `slot`, whose key the table must not hold, at the end.
    pub fn push(&mut self, slot: T) {
        let hash = self.hash(slot.key());
        let position = u32::try_from(self.slots.len()).expect("fewer than 2^32 items");
        if self.slots.len() == self.slots.capacity() && self.slots.len() >= GROW_BY_QUARTER_FROM {
            self.slots.reserve_exact(self.slots.len() / 4);
            self.hashes
                .reserve_exact(self.slots.capacity() - self.hashes.len());
        }
        self.slots.push(slot);
        self.hashes.push(hash);
        let hashes = &self.hashes;
        let rehash = |&i: &u32| widen(hashes[i as usize]);
        self.index.insert_unique(widen(hash), position, rehash);
    }

    /// Puts `slot` in place of the one with its key, or adds it at the
    /// end; the slot it replaced.
    pub fn insert(&mut self, slot: T) -> Option<T> {
        match self.position(slot.key()) {
            Some(i) => Some(std::mem::replace(&mut self.slots[i], slot)),
            None => {
                self.push(slot);
                None
            }
        }
    }

    pub fn swap_remove(&mut self, key: &[u8]) -> Option<T> {
        let i = self.position(key)?;
        self.swap_remove_index(i)
    }

    /// Removes the slot at `i`; the last slot takes its place.
    pub fn swap_remove_index(&mut self, i: usize) -> Option<T> {
        let hash = widen(*self.hashes.get(i)?);
        let found = self.index.find_entry(hash, |&p| p as usize == i);
        found.expect("every slot is indexed").remove();
        let last = self.slots.len() - 1;
        if i != last {
            let hash = widen(self.hashes[last]);
            let moved = self.index.find_mut(hash, |&p| p as usize == last);
            *moved.expect("every slot is indexed") = i as u32;
        }
        self.hashes.swap_remove(i);
        Some(self.slots.swap_remove(i))
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.hashes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::slot::Meta;
    use crate::store::Expiry;

    fn slot(key: &str) -> Slot {
        let meta = Meta {
            flags: 0,
            cas: 1,
            expiry: Expiry::Never,
            stored_at: 0,
        };
        Slot::new(key.as_bytes(), b"v", meta)
    }

    fn keys(t: &DenseTable<Slot>) -> Vec<String> {
        let keys = t
            .iter()
            .map(|s| String::from_utf8_lossy(s.key()).into_owned());
        keys.collect()
    }

    #[test]
    fn swap_remove_moves_the_last_slot_into_the_hole_and_keeps_it_findable() {
        let mut t = DenseTable::<Slot>::default();
        for k in ["a", "b", "c", "d"] {
            assert!(t.insert(slot(k)).is_none());
        }
        assert_eq!(
            t.swap_remove(b"b").map(|s| s.key().to_vec()),
            Some(b"b".to_vec())
        );
        assert_eq!(keys(&t), ["a", "d", "c"]);
        assert_eq!(t.position(b"d"), Some(1));
        assert_eq!(t.position(b"b"), None);
        assert!(t.swap_remove_index(2).is_some(), "the last one");
        assert_eq!(keys(&t), ["a", "d"]);
        assert!(t.swap_remove_index(2).is_none());
        assert!(t.insert(slot("a")).is_some(), "replaced in place");
        assert_eq!(keys(&t), ["a", "d"]);
    }

    #[test]
    fn every_key_stays_findable_at_its_position_through_growth_and_removals() {
        let mut t = DenseTable::<Slot>::default();
        let mut model: Vec<String> = Vec::new();
        for i in 0..100_000u32 {
            let key = format!("key:{i}");
            t.push(slot(&key));
            model.push(key);
            if i % 3 == 0 {
                let victim = (i as usize * 7919) % model.len();
                t.swap_remove_index(victim).expect("in range");
                model.swap_remove(victim);
            }
        }
        assert_eq!(keys(&t), model);
        for (i, key) in model.iter().enumerate() {
            assert_eq!(t.position(key.as_bytes()), Some(i));
        }
        let (_, vector) = t.capacity();
        assert!(
            vector <= model.len() + model.len() / 4,
            "{vector} slots held"
        );
    }
}
