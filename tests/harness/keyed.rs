//! A store listed by key that keeps a key image while it hands snapshots,
//! as a memcached backend does (`src/store/key_image.rs`), for the
//! simulation: an unordered memory store whose `freeze_keys` lists its keys
//! and, until it thaws, saves the record of each key a write reaches first
//! before that write, so a source goes on delivering while it hands a
//! snapshot read by key.

use mckv::protocol::{Key, KeysRef};
use mckv::store::key_image::KeyImage;
use mckv::store::memory::MemoryStore;
use mckv::store::{
    ArithOutcome, Entry, Expiry, Head, ItemRef, Listing, OrderListing, Policy, Record, Store,
    StoreEvents, StoreResult, StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};

pub struct KeyedStore {
    inner: MemoryStore,
    image: Option<KeyImage>,
}

impl KeyedStore {
    /// `inner` must be unordered (listed by key).
    pub fn new(inner: MemoryStore) -> KeyedStore {
        KeyedStore { inner, image: None }
    }

    fn keep(&mut self, key: &[u8], now: UnixTime) -> StoreResult<()> {
        if !self.image.as_ref().is_some_and(|i| i.unsaved(key)) {
            return Ok(());
        }
        let record = self.inner.export_record(key, now)?;
        if let Some(image) = &mut self.image {
            image.save(key, record);
        }
        Ok(())
    }
}

impl Store for KeyedStore {
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        if touch.is_some() {
            for key in keys.iter() {
                self.keep(key, now)?;
            }
        }
        self.inner.retrieve(keys, touch, now, found)
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        self.keep(write.key, now)?;
        self.inner.store(write, now)
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        self.keep(key, now)?;
        self.inner.delete(key, now)
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        self.keep(key, now)?;
        self.inner.arith(key, incr, delta, cas, now)
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        self.keep(key, now)?;
        self.inner.touch(key, expiry, now)
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        if let Some(image) = &mut self.image {
            image.lose();
        }
        self.inner.flush_all(at, now)
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.inner.set_memory_limit(limit_bytes)
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn events(&self) -> StoreEvents {
        self.inner.events()
    }
}

impl VersionedStore for KeyedStore {
    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Entry>> {
        self.inner.export(key, now)
    }

    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.keep(key, now)?;
        self.inner.import(key, entry, cas, now)
    }

    fn snapshot_keys(&mut self) -> StoreResult<Listing> {
        self.inner.snapshot_keys()
    }

    fn head(&self) -> Head {
        self.inner.head()
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Record>> {
        self.inner.export_record(key, now)
    }

    fn freeze_in_order(&mut self) -> Option<OrderListing> {
        None
    }

    fn freeze_keys(&mut self) -> StoreResult<Option<Listing>> {
        if self.image.is_none() {
            self.image = Some(KeyImage::new(self.inner.snapshot_keys()?));
        }
        self.image.as_ref().map(KeyImage::listing).transpose()
    }

    fn export_listed(&mut self, keys: &[&[u8]], now: UnixTime) -> StoreResult<Vec<Option<Record>>> {
        self.image.as_ref().map(KeyImage::readable).transpose()?;
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            let saved = self.image.as_ref().and_then(|image| image.saved(key));
            records.push(match saved {
                Some(record) => record.clone(),
                None => self.inner.export_record(key, now)?,
            });
        }
        Ok(records)
    }

    fn thaw(&mut self) -> usize {
        let copied = self.image.take().map_or(0, |image| image.copied());
        copied + self.inner.thaw()
    }

    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        self.inner.reset(head, now)
    }

    fn install(&mut self, record: &Record, now: UnixTime) -> StoreResult<()> {
        self.keep(&record.key, now)?;
        self.inner.install(record, now)
    }

    fn policy(&self) -> Option<Policy> {
        self.inner.policy()
    }

    fn set_policy(&mut self, policy: Policy) -> StoreResult<()> {
        self.inner.set_policy(policy)
    }

    fn take_evicted(&mut self) -> Vec<Key> {
        self.inner.take_evicted()
    }

    fn maintain(&mut self, now: UnixTime) -> StoreResult<bool> {
        self.inner.maintain(now)
    }
}
