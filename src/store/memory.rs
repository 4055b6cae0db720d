//! The embedded store: a hash map with memcached's semantics (expiry, cas
//! uniques, delayed `flush_all`) and a memory cap. Like memcached started with
//! `-M`, it refuses a write past the cap with `SERVER_ERROR out of memory
//! storing object` instead of evicting, after first reclaiming expired items.

use std::collections::HashMap;

use super::{
    apply_delta, ArithOutcome, Expiry, Item, Store, StoreError, StoreResult, StoreStats,
    StoreStatus, UnixTime, Write,
};
use crate::cluster::version;
use crate::protocol::{Key, Limits, StoreMode};

/// Bookkeeping bytes charged per item on top of key and value, roughly
/// memcached's item header, so the cap means what an operator expects.
const ITEM_OVERHEAD: u64 = 56;

#[derive(Debug, Clone)]
struct Entry {
    flags: u32,
    value: Vec<u8>,
    cas: u64,
    expiry: Expiry,
    stored_at: UnixTime,
}

impl Entry {
    fn cost(key: &[u8], value: &[u8]) -> u64 {
        ITEM_OVERHEAD + key.len() as u64 + value.len() as u64
    }

    fn item(&self) -> Item {
        Item {
            flags: self.flags,
            value: self.value.clone(),
            cas: self.cas,
        }
    }
}

/// The embedded in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    entries: HashMap<Key, Entry>,
    used_bytes: u64,
    limit_bytes: u64,
    limits: Limits,
    /// A pending `flush_all <delay>`: items stored before it die when it comes.
    flush_at: Option<UnixTime>,
    last_reclaim: UnixTime,
}

impl MemoryStore {
    pub fn new(limit_bytes: u64, limits: Limits) -> MemoryStore {
        MemoryStore {
            entries: HashMap::new(),
            used_bytes: 0,
            limit_bytes,
            limits,
            flush_at: None,
            last_reclaim: 0,
        }
    }

    fn is_live(&self, entry: &Entry, now: UnixTime) -> bool {
        let flushed = matches!(self.flush_at, Some(at) if at <= now && entry.stored_at < at);
        !flushed && !entry.expiry.has_passed(now)
    }

    /// The live entry for `key`; a dead one is removed on the way.
    fn live(&mut self, key: &[u8], now: UnixTime) -> Option<&mut Entry> {
        let alive = self.entries.get(key).map(|e| self.is_live(e, now))?;
        if !alive {
            self.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.used_bytes -= Entry::cost(key, &entry.value);
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
        let dead: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| !self.is_live(e, now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            self.remove(&key);
        }
    }

    /// Whether replacing `key`'s value by one of `new_len` bytes fits the cap.
    fn fits(&mut self, key: &[u8], new_len: usize, now: UnixTime) -> bool {
        let old = |s: &MemoryStore| s.entries.get(key).map_or(0, |e| Entry::cost(key, &e.value));
        let new = Entry::cost(key, &[]) + new_len as u64;
        if self.used_bytes - old(self) + new <= self.limit_bytes {
            return true;
        }
        self.reclaim(now);
        self.used_bytes - old(self) + new <= self.limit_bytes
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        key: &[u8],
        flags: u32,
        value: Vec<u8>,
        expiry: Expiry,
        cas: u64,
        now: UnixTime,
    ) {
        self.remove(key);
        self.used_bytes += Entry::cost(key, &value);
        let entry = Entry {
            flags,
            value,
            cas,
            expiry,
            stored_at: now,
        };
        self.entries.insert(key.to_vec(), entry);
    }

    /// The value a write would leave, or the status that refuses it.
    fn resolve(
        &mut self,
        write: &Write<'_>,
        now: UnixTime,
    ) -> Result<(u32, Vec<u8>, Expiry), StoreStatus> {
        let limits = self.limits;
        let existing = self
            .live(write.key, now)
            .map(|e| (e.flags, e.cas, e.expiry, &e.value));
        let fresh = || (write.flags, write.value.to_vec(), write.expiry);
        match (write.mode, existing) {
            (StoreMode::Set, _) => Ok(fresh()),
            (StoreMode::Add, None) | (StoreMode::Replace, Some(_)) => Ok(fresh()),
            (StoreMode::Add, Some(_)) | (StoreMode::Replace, None) => Err(StoreStatus::NotStored),
            (StoreMode::Append | StoreMode::Prepend, None) => Err(StoreStatus::NotStored),
            (StoreMode::Append | StoreMode::Prepend, Some((flags, _, expiry, old))) => {
                if !limits.item_fits(write.key.len(), flags, old.len() + write.value.len()) {
                    return Err(StoreStatus::NotStored);
                }
                let joined = if write.mode == StoreMode::Append {
                    [old.as_slice(), write.value].concat()
                } else {
                    [write.value, old.as_slice()].concat()
                };
                Ok((flags, joined, expiry))
            }
            (StoreMode::Cas(_), None) => Err(StoreStatus::NotFound),
            (StoreMode::Cas(unique), Some((_, cas, ..))) if unique != cas => {
                Err(StoreStatus::Exists)
            }
            (StoreMode::Cas(_), Some(_)) => Ok(fresh()),
        }
    }
}

impl Store for MemoryStore {
    fn get_many(&mut self, keys: &[Key], now: UnixTime) -> StoreResult<Vec<Option<Item>>> {
        Ok(keys
            .iter()
            .map(|key| self.live(key, now).map(|e| e.item()))
            .collect())
    }

    fn get_and_touch(
        &mut self,
        keys: &[Key],
        expiry: Expiry,
        now: UnixTime,
    ) -> StoreResult<Vec<Option<Item>>> {
        Ok(keys
            .iter()
            .map(|key| {
                self.live(key, now).map(|e| {
                    e.expiry = expiry;
                    e.item()
                })
            })
            .collect())
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        let (flags, value, expiry) = match self.resolve(&write, now) {
            Ok(next) => next,
            Err(status) => return Ok(status),
        };
        if !self.fits(write.key, value.len(), now) {
            // memcached drops the old value of a failed `set` so it cannot go stale.
            if write.mode == StoreMode::Set {
                self.remove(write.key);
            }
            return Err(StoreError::OutOfMemory);
        }
        self.put(write.key, flags, value, expiry, write.cas, now);
        Ok(StoreStatus::Stored)
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        Ok(self.live(key, now).is_some() && self.remove(key))
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        let Some(entry) = self.live(key, now) else {
            return Ok(ArithOutcome::NotFound);
        };
        let Some((number, text)) = apply_delta(&entry.value, incr, delta) else {
            return Ok(ArithOutcome::NonNumeric);
        };
        let (flags, expiry) = (entry.flags, entry.expiry);
        if !self.fits(key, text.len(), now) {
            return Err(StoreError::OutOfMemory);
        }
        self.put(key, flags, text, expiry, cas, now);
        Ok(ArithOutcome::Value(number))
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        Ok(self.live(key, now).map(|e| e.expiry = expiry).is_some())
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

    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<version::Item>> {
        Ok(self.live(key, now).map(|e| version::Item {
            flags: e.flags,
            expiry: e.expiry,
            value: e.value.clone(),
        }))
    }

    fn import(
        &mut self,
        key: &[u8],
        item: Option<&version::Item>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        match item {
            None => {
                self.remove(key);
            }
            Some(item) => {
                if !self.fits(key, item.value.len(), now) {
                    return Err(StoreError::OutOfMemory);
                }
                self.put(key, item.flags, item.value.clone(), item.expiry, cas, now);
            }
        }
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            items: self.entries.len() as u64,
            bytes: self.used_bytes,
            limit_bytes: self.limit_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_000_000;

    fn store() -> MemoryStore {
        MemoryStore::new(1 << 20, Limits::default())
    }

    fn write<'a>(mode: StoreMode, key: &'a [u8], value: &'a [u8]) -> Write<'a> {
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
        s.get_many(&[key.to_vec()], now).unwrap().pop().unwrap()
    }

    #[test]
    fn conditional_writes_follow_memcached() {
        let mut s = store();
        assert_eq!(
            s.store(write(StoreMode::Replace, b"k", b"a"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StoreMode::Append, b"k", b"a"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StoreMode::Cas(1), b"k", b"a"), NOW),
            Ok(StoreStatus::NotFound)
        );
        assert_eq!(
            s.store(write(StoreMode::Add, b"k", b"a"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(
            s.store(write(StoreMode::Add, b"k", b"b"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StoreMode::Append, b"k", b"z"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(
            s.store(write(StoreMode::Prepend, b"k", b"<"), NOW),
            Ok(StoreStatus::Stored)
        );
        let item = get(&mut s, b"k", NOW).unwrap();
        assert_eq!(item.value, b"<az");
        assert_eq!(
            s.store(write(StoreMode::Cas(item.cas + 1), b"k", b"c"), NOW),
            Ok(StoreStatus::Exists)
        );
        assert_eq!(
            s.store(write(StoreMode::Cas(item.cas), b"k", b"c"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_ne!(get(&mut s, b"k", NOW).unwrap().cas, item.cas);
    }

    #[test]
    fn expired_items_vanish() {
        let mut s = store();
        let mut w = write(StoreMode::Set, b"k", b"v");
        w.expiry = Expiry::At(NOW + 2);
        s.store(w, NOW).unwrap();
        assert!(get(&mut s, b"k", NOW + 1).is_some());
        assert!(get(&mut s, b"k", NOW + 2).is_none());
        assert_eq!(s.stats().items, 0);
    }

    #[test]
    fn delayed_flush_spares_later_writes() {
        let mut s = store();
        s.store(write(StoreMode::Set, b"old", b"v"), NOW).unwrap();
        s.flush_all(Some(NOW + 5), NOW).unwrap();
        assert!(get(&mut s, b"old", NOW + 4).is_some());
        s.store(write(StoreMode::Set, b"new", b"v"), NOW + 6)
            .unwrap();
        assert!(get(&mut s, b"old", NOW + 6).is_none());
        assert!(get(&mut s, b"new", NOW + 6).is_some());
    }

    #[test]
    fn the_cap_refuses_and_a_failed_set_drops_the_old_value() {
        let mut s = MemoryStore::new(400, Limits::default());
        s.store(write(StoreMode::Set, b"a", &[b'x'; 200]), NOW)
            .unwrap();
        assert_eq!(
            s.store(write(StoreMode::Set, b"b", &[b'x'; 200]), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert_eq!(
            s.store(write(StoreMode::Set, b"a", &[b'x'; 500]), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert!(get(&mut s, b"a", NOW).is_none());
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn arith_keeps_flags_and_pads() {
        let mut s = store();
        s.store(write(StoreMode::Set, b"n", b"100"), NOW).unwrap();
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
