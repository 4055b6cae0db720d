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
//!
//! **A frozen image.** [`DenseTable::freeze`] keeps the table as it is
//! now, place by place, while it goes on changing: the first change that
//! reaches a place below the frozen length (a slot lent to be changed,
//! replaced, removed, or moved there from the end) first saves a copy of
//! the slot there, and [`DenseTable::frozen_at`] reads a place's saved
//! slot if it has one, else the slot there now, which no change has
//! reached. A place the table shrank past was saved when its slot was
//! removed or moved down, so a slot pushed there later is never read as
//! the image's. It costs a copy of each slot changed while frozen (none
//! before the first change, nothing when not frozen but one branch), so
//! a strong mode's source hands a snapshot of the store as it was while
//! it goes on applying writes, where it used to stop delivering for the
//! whole transfer. Only changes through `&mut` need it: a slot's bits that
//! no image carries (`fetched`) are set through [`DenseTable::get_mut_unimaged`].

use std::collections::hash_map::{self, HashMap};

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
    frozen: Option<Frozen<T>>,
}

/// The table as it was when frozen: its length then, and the slot of
/// then of each place a change has reached since.
#[derive(Debug)]
struct Frozen<T> {
    len: usize,
    saved: HashMap<usize, T, ahash::RandomState>,
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
            frozen: None,
        }
    }
}

impl<T: Keyed + Clone> DenseTable<T> {
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
        self.save(i);
        Some(&mut self.slots[i])
    }

    /// [`DenseTable::get_mut`] for a change a frozen image does not carry
    /// (see the module doc): the place is not saved.
    pub fn get_mut_unimaged(&mut self, key: &[u8]) -> Option<&mut T> {
        let i = self.position(key)?;
        Some(&mut self.slots[i])
    }

    pub fn get_index(&self, i: usize) -> Option<&T> {
        self.slots.get(i)
    }

    pub fn get_index_mut(&mut self, i: usize) -> Option<&mut T> {
        self.save(i);
        self.slots.get_mut(i)
    }

    /// [`DenseTable::get_index_mut`] for a change the caller keeps for the
    /// image itself (see [`DenseTable::keeps`]): the place is not saved.
    pub fn get_index_mut_unimaged(&mut self, i: usize) -> Option<&mut T> {
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
            Some(i) => {
                self.save(i);
                Some(std::mem::replace(&mut self.slots[i], slot))
            }
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
        self.save(i);
        self.save(last);
        if i != last {
            let hash = widen(self.hashes[last]);
            let moved = self.index.find_mut(hash, |&p| p as usize == last);
            *moved.expect("every slot is indexed") = i as u32;
        }
        self.hashes.swap_remove(i);
        Some(self.slots.swap_remove(i))
    }

    /// Gives back the room of a table at most half full, past 64k places:
    /// the vectors and the index shrink to what it holds, the places stay.
    /// Past 64k the vectors grow by a quarter, so a table shrinks again
    /// only after losing half of what it holds, and each shrink or growth
    /// (a copy of the table) follows that many changes.
    pub fn shrink_if_sparse(&mut self) {
        let room = self.slots.capacity();
        if room < GROW_BY_QUARTER_FROM || self.slots.len() > room / 2 {
            return;
        }
        self.slots.shrink_to_fit();
        self.hashes.shrink_to_fit();
        let hashes = &self.hashes;
        self.index
            .shrink_to_fit(|&i: &u32| widen(hashes[i as usize]));
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.hashes.clear();
        match &mut self.frozen {
            Some(frozen) => {
                for (i, slot) in self.slots.drain(..).enumerate().take(frozen.len) {
                    frozen.saved.entry(i).or_insert(slot);
                }
            }
            None => self.slots.clear(),
        }
    }

    /// Keeps the table as it is now for [`DenseTable::frozen_at`] while it
    /// changes (module doc), until [`DenseTable::thaw`]; the image already
    /// kept, if frozen.
    pub fn freeze(&mut self) {
        if self.frozen.is_none() {
            self.frozen = Some(Frozen {
                len: self.slots.len(),
                saved: HashMap::default(),
            });
        }
    }

    /// Drops the frozen image; how many slots it had saved.
    pub fn thaw(&mut self) -> usize {
        self.frozen.take().map_or(0, |frozen| frozen.saved.len())
    }

    /// How many places the frozen image holds, if frozen.
    pub fn frozen_len(&self) -> Option<usize> {
        self.frozen.as_ref().map(|frozen| frozen.len)
    }

    /// Whether the frozen image keeps place `i` whatever its slot does now:
    /// nothing is frozen, the place is past the image, or its slot of then
    /// is saved.
    pub fn keeps(&self, i: usize) -> bool {
        self.frozen
            .as_ref()
            .is_none_or(|frozen| i >= frozen.len || frozen.saved.contains_key(&i))
    }

    /// The slot at place `i` when the table was frozen.
    pub fn frozen_at(&self, i: usize) -> Option<&T> {
        let frozen = self.frozen.as_ref().filter(|frozen| i < frozen.len)?;
        frozen.saved.get(&i).or_else(|| self.slots.get(i))
    }

    /// Before place `i` changes: its slot, if the frozen image needs it.
    fn save(&mut self, i: usize) {
        if let Some(frozen) = &mut self.frozen {
            if i < frozen.len {
                if let (Some(slot), hash_map::Entry::Vacant(place)) =
                    (self.slots.get(i), frozen.saved.entry(i))
                {
                    place.insert(slot.clone());
                }
            }
        }
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

    /// Whatever the table does after a freeze (slots added at places
    /// others left, replaced, changed in place, removed from anywhere,
    /// everything cleared), the frozen image reads as the table was.
    #[test]
    fn a_frozen_image_reads_as_the_table_was_whatever_it_does_next() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |below: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % below as u64) as usize
        };
        for round in 0..200 {
            let mut t = DenseTable::<Slot>::default();
            for i in 0..next(40) {
                t.push(slot(&format!("k{i}")));
            }
            let before: Vec<_> = (0..t.len()).map(|i| t.get_index(i).cloned()).collect();
            t.freeze();
            for step in 0..next(60) {
                let key = format!("k{}", next(50));
                let meta = Meta {
                    flags: 0,
                    cas: 2 + step as u64,
                    expiry: Expiry::Never,
                    stored_at: 0,
                };
                match next(6) {
                    0 => drop(t.insert(Slot::new(key.as_bytes(), b"new", meta))),
                    1 => {
                        if let Some(s) = t.get_mut(key.as_bytes()) {
                            s.overwrite(b"changed", meta);
                        }
                    }
                    2 if !t.is_empty() => {
                        let i = next(t.len());
                        t.get_index_mut(i).expect("in range").set_referenced(true);
                        t.swap_remove_index(next(t.len()));
                    }
                    3 => drop(t.swap_remove(key.as_bytes())),
                    4 if round % 10 == 0 && step % 20 == 19 => t.clear(),
                    _ => {}
                }
            }
            assert_eq!(t.frozen_len(), Some(before.len()));
            for (i, was) in before.iter().enumerate() {
                assert_eq!(t.frozen_at(i), was.as_ref(), "round {round}, place {i}");
            }
            assert!(t.frozen_at(before.len()).is_none());
            t.thaw();
            assert!(t.frozen_at(0).is_none(), "thawed");
        }
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
