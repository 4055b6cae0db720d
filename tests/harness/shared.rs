//! Broken on purpose, for a negative control of causal mode's staged
//! answers (`src/cluster/eventual/staging.rs`): a memory store whose
//! `empty_like` hands back the store itself, so an answer "staged" out of
//! sight is applied, a part at a time, where every read sees it.

use std::sync::{Arc, Mutex, MutexGuard};

use mckv::protocol::{Key, KeysRef};
use mckv::store::memory::MemoryStore;
use mckv::store::{
    ArithOutcome, Entry, Expiry, Head, ItemRef, Listing, Policy, Record, Store, StoreEvents,
    StoreResult, StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};

pub struct SharedStore(Arc<Mutex<MemoryStore>>);

impl SharedStore {
    pub fn new(inner: MemoryStore) -> SharedStore {
        SharedStore(Arc::new(Mutex::new(inner)))
    }

    fn inner(&self) -> MutexGuard<'_, MemoryStore> {
        self.0.lock().expect("one thread")
    }
}

impl Store for SharedStore {
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        self.inner().retrieve(keys, touch, now, found)
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        self.inner().store(write, now)
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        self.inner().delete(key, now)
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        self.inner().arith(key, incr, delta, cas, now)
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        self.inner().touch(key, expiry, now)
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        self.inner().flush_all(at, now)
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.inner().set_memory_limit(limit_bytes)
    }

    fn stats(&self) -> StoreStats {
        self.inner().stats()
    }

    fn events(&self) -> StoreEvents {
        self.inner().events()
    }
}

impl VersionedStore for SharedStore {
    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Entry>> {
        self.inner().export(key, now)
    }

    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.inner().import(key, entry, cas, now)
    }

    fn snapshot_keys(&mut self) -> StoreResult<Listing> {
        self.inner().snapshot_keys()
    }

    fn head(&self) -> Head {
        self.inner().head()
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Record>> {
        self.inner().export_record(key, now)
    }

    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        self.inner().reset(head, now)
    }

    fn install(&mut self, record: &Record, now: UnixTime) -> StoreResult<()> {
        self.inner().install(record, now)
    }

    fn policy(&self) -> Option<Policy> {
        self.inner().policy()
    }

    fn take_evicted(&mut self) -> Vec<Key> {
        self.inner().take_evicted()
    }

    fn maintain(&mut self, now: UnixTime) -> StoreResult<bool> {
        self.inner().maintain(now)
    }

    /// The store itself: what is staged is in sight.
    fn empty_like(&self) -> Option<Box<dyn VersionedStore>> {
        Some(Box::new(SharedStore(self.0.clone())))
    }
}
