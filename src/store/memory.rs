//! The embedded store: a hash map with memcached's semantics (expiry, cas
//! uniques, delayed `flush_all`) and a memory cap. Like memcached started with
//! `-M`, it refuses a write past the cap with `SERVER_ERROR out of memory
//! storing object` instead of evicting, after first reclaiming expired items.
//!
//! It counts what memcached counts of the same events ([`StoreEvents`]):
//! lookups that find an item expired or flushed, and the dead items a full
//! store drops to make room.
//!
//! It runs on the reactor thread for every request, so the common paths look
//! a key up once (a `get`) or twice (a `set` of a key that exists: read, then
//! write in place), and a value overwritten by one of similar size reuses the
//! old value's buffer.

use std::collections::HashMap;

use super::{
    apply_delta, ArithOutcome, Expiry, Item, Keys, Listing, Record, Store, StoreError, StoreEvents,
    StoreResult, StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};
use crate::protocol::{Key, Limits, StorageMode};

/// Bookkeeping bytes charged per item on top of key and value, roughly
/// memcached's item header, so the cap means what an operator expects.
const ITEM_OVERHEAD: u64 = 56;

#[derive(Debug, Clone)]
struct Entry {
    /// The value, flags, cas unique and expiry.
    item: Item,
    stored_at: UnixTime,
    /// A `get`, `gat` or `touch` found it (memcached's `ITEM_FETCHED`).
    fetched: bool,
}

/// Why an entry is no longer visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// A delayed `flush_all` came after it was stored.
    Flushed,
    Expired,
}

impl Entry {
    fn cost(key: &[u8], value_len: usize) -> u64 {
        ITEM_OVERHEAD + key.len() as u64 + value_len as u64
    }

    /// Why the entry is dead at `now`, if it is; flushed first, as memcached
    /// checks.
    fn death(&self, flush_at: Option<UnixTime>, now: UnixTime) -> Option<Death> {
        if matches!(flush_at, Some(at) if at <= now && self.stored_at < at) {
            Some(Death::Flushed)
        } else if self.item.expiry.has_passed(now) {
            Some(Death::Expired)
        } else {
            None
        }
    }

    fn is_live(&self, flush_at: Option<UnixTime>, now: UnixTime) -> bool {
        self.death(flush_at, now).is_none()
    }

    /// Takes a new value, in the old buffer when the value fits it snugly
    /// (within a quarter, as memcached's slab classes do), so the memory
    /// cap, which counts value bytes, stays close to what is allocated.
    fn overwrite(&mut self, item: Fresh<'_>, now: UnixTime) {
        let (value, len) = (&mut self.item.value, item.value.len());
        if (len..=len + len / 4).contains(&value.capacity()) {
            value.clear();
            value.extend_from_slice(item.value);
        } else {
            *value = item.value.to_vec();
        }
        self.item.flags = item.flags;
        self.item.cas = item.cas;
        self.item.expiry = item.expiry;
        self.stored_at = now;
        self.fetched = false;
    }
}

/// A value about to be stored.
struct Fresh<'a> {
    flags: u32,
    value: &'a [u8],
    expiry: Expiry,
    cas: u64,
}

/// What a storage command will write, worked out from the live entry.
struct Resolved<'a> {
    flags: u32,
    expiry: Expiry,
    value: NewValue<'a>,
    /// Length of the live value it replaces, if any.
    old_len: Option<usize>,
}

enum NewValue<'a> {
    /// The client's bytes as they are (`set`, `add`, `replace`, `cas`).
    Given(&'a [u8]),
    /// `append`/`prepend`: the old value joined with the client's bytes.
    Joined(Vec<u8>),
}

impl NewValue<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            NewValue::Given(bytes) => bytes,
            NewValue::Joined(bytes) => bytes,
        }
    }
}

/// The embedded in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    entries: HashMap<Key, Entry, ahash::RandomState>,
    used_bytes: u64,
    limit_bytes: u64,
    limits: Limits,
    /// A pending `flush_all <delay>`: items stored before it die when it comes.
    flush_at: Option<UnixTime>,
    last_reclaim: UnixTime,
    events: StoreEvents,
}

impl MemoryStore {
    pub fn new(limit_bytes: u64, limits: Limits) -> MemoryStore {
        MemoryStore {
            entries: HashMap::default(),
            used_bytes: 0,
            limit_bytes,
            limits,
            flush_at: None,
            last_reclaim: 0,
            events: StoreEvents::default(),
        }
    }

    /// Runs `f` on the live entry for `key` (one lookup); a dead one is
    /// removed on the way and gives `None`.
    fn with_live<R>(
        &mut self,
        key: &[u8],
        now: UnixTime,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        let flush_at = self.flush_at;
        let death = match self.entries.get_mut(key) {
            Some(entry) => match entry.death(flush_at, now) {
                None => return Some(f(entry)),
                death => death,
            },
            None => None,
        };
        if let Some(death) = death {
            match death {
                Death::Flushed => self.events.flushed_found += 1,
                Death::Expired => self.events.expired_found += 1,
            }
            self.remove(key);
        }
        None
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.used_bytes -= Entry::cost(key, entry.item.value.len());
                true
            }
            None => false,
        }
    }

    /// Drops every dead item, at most once a second (it walks the whole map).
    fn reclaim(&mut self, now: UnixTime) {
        if self.last_reclaim == now {
            return;
        }
        self.last_reclaim = now;
        self.events.reclaim_walks += 1;
        let flush_at = self.flush_at;
        let dead: Vec<(Key, bool)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.is_live(flush_at, now))
            .map(|(k, e)| (k.clone(), e.fetched))
            .collect();
        for (key, fetched) in dead {
            self.remove(&key);
            self.events.reclaimed += 1;
            self.events.reclaimed_unfetched += u64::from(!fetched);
        }
    }

    /// Whether replacing the live value of `old_len` bytes under `key` (if
    /// any) by one of `new_len` bytes fits the cap.
    fn fits(&mut self, key: &[u8], old_len: Option<usize>, new_len: usize, now: UnixTime) -> bool {
        let old = old_len.map_or(0, |len| Entry::cost(key, len));
        let new = Entry::cost(key, new_len);
        if self.used_bytes - old + new <= self.limit_bytes {
            return true;
        }
        // Reclaiming leaves a live entry where it is, so `old` still holds.
        self.reclaim(now);
        self.used_bytes - old + new <= self.limit_bytes
    }

    /// Stores `item` under `key` in place of the live value of `old_len`
    /// bytes (if any), in the entry already there; refused if it would pass
    /// the cap.
    fn put(
        &mut self,
        key: &[u8],
        old_len: Option<usize>,
        item: Fresh<'_>,
        now: UnixTime,
    ) -> StoreResult<()> {
        if !self.fits(key, old_len, item.value.len(), now) {
            return Err(StoreError::OutOfMemory);
        }
        let cost = Entry::cost(key, item.value.len());
        match self.entries.get_mut(key) {
            Some(entry) => {
                self.used_bytes -= Entry::cost(key, entry.item.value.len());
                self.used_bytes += cost;
                entry.overwrite(item, now);
            }
            None => {
                self.used_bytes += cost;
                let entry = Entry {
                    item: Item {
                        flags: item.flags,
                        value: item.value.to_vec(),
                        cas: item.cas,
                        expiry: item.expiry,
                    },
                    stored_at: now,
                    fetched: false,
                };
                self.entries.insert(key.to_vec(), entry);
            }
        }
        Ok(())
    }

    /// What a write would leave, or the status that refuses it.
    fn resolve<'w>(
        &mut self,
        write: &Write<'w>,
        now: UnixTime,
    ) -> Result<Resolved<'w>, StoreStatus> {
        let limits = self.limits;
        let fresh = |old_len| Resolved {
            flags: write.flags,
            expiry: write.expiry,
            value: NewValue::Given(write.value),
            old_len,
        };
        let live = self.with_live(write.key, now, |e| {
            let old = &e.item;
            let old_len = Some(old.value.len());
            match write.mode {
                StorageMode::Set | StorageMode::Replace => Ok(fresh(old_len)),
                StorageMode::Add => Err(StoreStatus::NotStored),
                StorageMode::Cas(unique) if unique != old.cas => Err(StoreStatus::Exists),
                StorageMode::Cas(_) => Ok(fresh(old_len)),
                StorageMode::Append | StorageMode::Prepend => {
                    let joined_len = old.value.len() + write.value.len();
                    if !limits.item_fits(write.key.len(), old.flags, joined_len) {
                        return Err(StoreStatus::NotStored);
                    }
                    let joined = if write.mode == StorageMode::Append {
                        [old.value.as_slice(), write.value].concat()
                    } else {
                        [write.value, old.value.as_slice()].concat()
                    };
                    Ok(Resolved {
                        flags: old.flags,
                        expiry: e.item.expiry,
                        value: NewValue::Joined(joined),
                        old_len,
                    })
                }
            }
        });
        match (live, write.mode) {
            (Some(resolved), _) => resolved,
            (None, StorageMode::Set | StorageMode::Add) => Ok(fresh(None)),
            (None, StorageMode::Cas(_)) => Err(StoreStatus::NotFound),
            (None, _) => Err(StoreStatus::NotStored),
        }
    }
}

impl Store for MemoryStore {
    fn retrieve(
        &mut self,
        keys: &[Key],
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, &Item),
    ) -> StoreResult<()> {
        for (index, key) in keys.iter().enumerate() {
            self.with_live(key, now, |entry| {
                if let Some(expiry) = touch {
                    entry.item.expiry = expiry;
                }
                entry.fetched = true;
                found(index, &entry.item);
            });
        }
        Ok(())
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        let resolved = match self.resolve(&write, now) {
            Ok(resolved) => resolved,
            Err(status) => return Ok(status),
        };
        let item = Fresh {
            flags: resolved.flags,
            value: resolved.value.bytes(),
            expiry: resolved.expiry,
            cas: write.cas,
        };
        if let Err(e) = self.put(write.key, resolved.old_len, item, now) {
            // memcached drops the old value of a failed `set` so it cannot go stale.
            if write.mode == StorageMode::Set {
                self.remove(write.key);
            }
            return Err(e);
        }
        Ok(StoreStatus::Stored)
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        Ok(self.with_live(key, now, |_| ()).is_some() && self.remove(key))
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        let computed = self.with_live(key, now, |e| {
            let (flags, expiry, old_len) = (e.item.flags, e.item.expiry, Some(e.item.value.len()));
            apply_delta(&e.item.value, incr, delta).map(|next| (next, flags, expiry, old_len))
        });
        let Some(computed) = computed else {
            return Ok(ArithOutcome::NotFound);
        };
        let Some(((number, text), flags, expiry, old_len)) = computed else {
            return Ok(ArithOutcome::NonNumeric);
        };
        let item = Fresh {
            flags,
            value: &text,
            expiry,
            cas,
        };
        self.put(key, old_len, item, now)?;
        Ok(ArithOutcome::Value(number))
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        let touched = self.with_live(key, now, |e| {
            e.item.expiry = expiry;
            e.fetched = true;
        });
        Ok(touched.is_some())
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        match at {
            Some(at) if at > now => self.flush_at = Some(at),
            _ => {
                self.entries.clear();
                self.used_bytes = 0;
                self.flush_at = None;
            }
        }
        Ok(())
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.limit_bytes = limit_bytes;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        let slots = table_slots(self.entries.capacity());
        StoreStats {
            items: self.entries.len() as u64,
            bytes: self.used_bytes,
            limit_bytes: self.limit_bytes,
            table_slots: slots,
            // Each slot holds a key and an entry, and one control byte.
            table_bytes: slots * (std::mem::size_of::<(Key, Entry)>() as u64 + 1),
            events: self.events,
        }
    }
}

/// The slots of a hash table that holds `capacity` entries: hashbrown
/// (std's map) keeps a power of two of them, at most 7/8 full (below 8
/// slots, one is kept free).
fn table_slots(capacity: usize) -> u64 {
    match capacity {
        0 => 0,
        c if c < 7 => (c as u64 + 1).next_power_of_two(),
        c => (c as u64 * 8 / 7).next_power_of_two(),
    }
}

/// Entries leave and arrive as [`super::Entry`]; this file's own `Entry` is
/// how the map holds an item.
impl VersionedStore for MemoryStore {
    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<super::Entry>> {
        Ok(self.with_live(key, now, |e| super::Entry {
            flags: e.item.flags,
            expiry: e.item.expiry,
            value: e.item.value.clone(),
        }))
    }

    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&super::Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        let Some(entry) = entry else {
            self.remove(key);
            return Ok(());
        };
        let old_len = self.with_live(key, now, |e| e.item.value.len());
        let fresh = Fresh {
            flags: entry.flags,
            value: &entry.value,
            expiry: entry.expiry,
            cas,
        };
        self.put(key, old_len, fresh, now)
    }

    fn snapshot_keys(&mut self) -> StoreResult<Listing> {
        let bytes = self.entries.iter();
        let bytes = bytes.map(|(key, e)| (key.len() + e.item.value.len()) as u64);
        Ok(Listing {
            keys: {
                let mut keys = Keys::with_capacity(self.entries.len());
                self.entries.keys().for_each(|k| keys.push(k));
                keys
            },
            bytes: bytes.sum(),
            flush_at: self.flush_at,
        })
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Record>> {
        Ok(self.with_live(key, now, |e| Record {
            key: key.to_vec(),
            entry: super::Entry {
                flags: e.item.flags,
                expiry: e.item.expiry,
                value: e.item.value.clone(),
            },
            cas: e.item.cas,
        }))
    }

    fn reset(&mut self, flush_at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        self.flush_all(None, now)?;
        // Exactly, even passed: whether an imported item outlived it is up
        // to the time it is imported with.
        self.flush_at = flush_at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_000_000;

    fn store() -> MemoryStore {
        MemoryStore::new(1 << 20, Limits::default())
    }

    fn write<'a>(mode: StorageMode, key: &'a [u8], value: &'a [u8]) -> Write<'a> {
        let cas = NEXT_CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Write {
            mode,
            key,
            flags: 7,
            expiry: Expiry::Never,
            value,
            cas,
        }
    }

    static NEXT_CAS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    fn get(s: &mut MemoryStore, key: &[u8], now: UnixTime) -> Option<Item> {
        let mut hit = None;
        s.retrieve(&[key.to_vec()], None, now, &mut |_, item| {
            hit = Some(item.clone())
        })
        .unwrap();
        hit
    }

    #[test]
    fn conditional_writes_follow_memcached() {
        let mut s = store();
        assert_eq!(
            s.store(write(StorageMode::Replace, b"k", b"a"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StorageMode::Append, b"k", b"a"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StorageMode::Cas(1), b"k", b"a"), NOW),
            Ok(StoreStatus::NotFound)
        );
        assert_eq!(
            s.store(write(StorageMode::Add, b"k", b"a"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(
            s.store(write(StorageMode::Add, b"k", b"b"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StorageMode::Append, b"k", b"z"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(
            s.store(write(StorageMode::Prepend, b"k", b"<"), NOW),
            Ok(StoreStatus::Stored)
        );
        let item = get(&mut s, b"k", NOW).unwrap();
        assert_eq!(item.value, b"<az");
        assert_eq!(
            s.store(write(StorageMode::Cas(item.cas + 1), b"k", b"c"), NOW),
            Ok(StoreStatus::Exists)
        );
        assert_eq!(
            s.store(write(StorageMode::Cas(item.cas), b"k", b"c"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_ne!(get(&mut s, b"k", NOW).unwrap().cas, item.cas);
    }

    #[test]
    fn expired_items_vanish() {
        let mut s = store();
        let mut w = write(StorageMode::Set, b"k", b"v");
        w.expiry = Expiry::At(NOW + 2);
        s.store(w, NOW).unwrap();
        assert!(get(&mut s, b"k", NOW + 1).is_some());
        assert!(get(&mut s, b"k", NOW + 2).is_none());
        assert_eq!(s.stats().items, 0);
    }

    #[test]
    fn delayed_flush_spares_later_writes() {
        let mut s = store();
        s.store(write(StorageMode::Set, b"old", b"v"), NOW).unwrap();
        s.flush_all(Some(NOW + 5), NOW).unwrap();
        assert!(get(&mut s, b"old", NOW + 4).is_some());
        s.store(write(StorageMode::Set, b"new", b"v"), NOW + 6)
            .unwrap();
        assert!(get(&mut s, b"old", NOW + 6).is_none());
        assert!(get(&mut s, b"new", NOW + 6).is_some());
    }

    #[test]
    fn the_cap_refuses_and_a_failed_set_drops_the_old_value() {
        let mut s = MemoryStore::new(400, Limits::default());
        s.store(write(StorageMode::Set, b"a", &[b'x'; 200]), NOW)
            .unwrap();
        assert_eq!(
            s.store(write(StorageMode::Set, b"b", &[b'x'; 200]), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert_eq!(
            s.store(write(StorageMode::Set, b"a", &[b'x'; 500]), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert!(get(&mut s, b"a", NOW).is_none());
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn overwrites_keep_the_byte_count_exact() {
        let mut s = store();
        let cost = |key: &[u8], len: usize| ITEM_OVERHEAD + (key.len() + len) as u64;
        for len in [10_000, 3, 0, 200, 199] {
            s.store(write(StorageMode::Set, b"k", &vec![b'v'; len]), NOW)
                .unwrap();
            assert_eq!(s.stats().bytes, cost(b"k", len));
            assert_eq!(get(&mut s, b"k", NOW).unwrap().value.len(), len);
            let held = s.entries[&b"k"[..]].item.value.capacity();
            assert!(held <= len + len / 4, "{held} bytes held for {len}");
        }
        s.store(write(StorageMode::Append, b"k", b"xy"), NOW)
            .unwrap();
        s.arith(b"k", true, 1, 5, NOW).unwrap();
        s.store(write(StorageMode::Set, b"n", b"9"), NOW).unwrap();
        s.arith(b"n", true, 1, 6, NOW).unwrap();
        assert_eq!(get(&mut s, b"n", NOW).unwrap().value, b"10");
        assert_eq!(s.stats().bytes, cost(b"k", 201) + cost(b"n", 2));
        s.touch(b"k", Expiry::At(NOW + 1), NOW).unwrap();
        s.store(write(StorageMode::Set, b"n", b"1"), NOW + 1)
            .unwrap();
        assert!(get(&mut s, b"k", NOW + 1).is_none());
        assert_eq!(s.stats().bytes, cost(b"n", 1));
        assert_eq!(s.stats().items, 1);
    }

    #[test]
    fn lookups_count_what_they_find_dead_like_memcached() {
        let mut s = store();
        let mut w = write(StorageMode::Set, b"e", b"v");
        w.expiry = Expiry::At(NOW);
        s.store(w, NOW).unwrap();
        // A write over an expired item finds it too, as memcached's does.
        s.store(write(StorageMode::Add, b"e", b"v"), NOW).unwrap();
        s.store(write(StorageMode::Set, b"f", b"v"), NOW).unwrap();
        s.flush_all(Some(NOW + 1), NOW).unwrap();
        assert!(get(&mut s, b"f", NOW + 1).is_none());
        assert!(!s.delete(b"missing", NOW).unwrap());
        let events = s.stats().events;
        assert_eq!((events.expired_found, events.flushed_found), (1, 1));
    }

    #[test]
    fn a_full_store_reclaims_dead_items_and_counts_the_unfetched() {
        let mut s = MemoryStore::new(600, Limits::default());
        for (key, expiry) in [(&b"a"[..], NOW + 1), (b"b", NOW + 1), (b"c", NOW + 100)] {
            let mut w = write(StorageMode::Set, key, &[b'x'; 100]);
            w.expiry = Expiry::At(expiry);
            s.store(w, NOW).unwrap();
        }
        assert!(get(&mut s, b"a", NOW).is_some());
        // At NOW + 1 "a" and "b" are dead; the big write takes their room.
        s.store(write(StorageMode::Set, b"d", &[b'x'; 250]), NOW + 1)
            .unwrap();
        let events = s.stats().events;
        assert_eq!(
            (
                events.reclaim_walks,
                events.reclaimed,
                events.reclaimed_unfetched
            ),
            (1, 2, 1)
        );
        assert_eq!(events.expired_found, 0, "a walk is not a lookup");
    }

    #[test]
    fn a_new_memory_limit_refuses_writes_past_it_and_keeps_what_is_stored() {
        let mut s = store();
        s.store(write(StorageMode::Set, b"a", &[b'x'; 500]), NOW)
            .unwrap();
        s.set_memory_limit(300).unwrap();
        assert_eq!(s.stats().limit_bytes, 300);
        assert!(get(&mut s, b"a", NOW).is_some());
        assert_eq!(
            s.store(write(StorageMode::Set, b"b", b"v"), NOW),
            Err(StoreError::OutOfMemory)
        );
        s.set_memory_limit(1 << 20).unwrap();
        assert_eq!(
            s.store(write(StorageMode::Set, b"b", b"v"), NOW),
            Ok(StoreStatus::Stored)
        );
    }

    #[test]
    fn table_slots_are_what_the_map_allocates() {
        assert_eq!(table_slots(0), 0);
        assert_eq!(table_slots(3), 4);
        assert_eq!(table_slots(7), 8);
        assert_eq!(table_slots(14), 16);
        assert_eq!(table_slots(896), 1024);
    }

    #[test]
    fn arith_keeps_flags_and_pads() {
        let mut s = store();
        s.store(write(StorageMode::Set, b"n", b"100"), NOW).unwrap();
        assert_eq!(
            s.arith(b"n", false, 1, 77, NOW),
            Ok(ArithOutcome::Value(99))
        );
        let item = get(&mut s, b"n", NOW).unwrap();
        assert_eq!(
            (item.flags, item.value.as_slice(), item.cas),
            (7, &b"99 "[..], 77)
        );
        assert_eq!(
            s.arith(b"missing", true, 1, 78, NOW),
            Ok(ArithOutcome::NotFound)
        );
    }
}
