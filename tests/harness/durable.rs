//! Simulated data directories (`SimConfig::data_dirs`): what a node's
//! directory would give back after a crash, without a disk.
//!
//! A real node logs its store's changes and, after each delivered write, a
//! *mark* (`VersionedStore::mark_delivered`); recovery replays the log up
//! to its last mark. So what a directory can give back is the store as it
//! was at some mark: an [`Image`]. [`ImagingStore`] wraps a node's store
//! and takes an image at every mark into the node's [`Journal`], which the
//! harness owns. A reply waits for the log (and so does a report that says
//! it must: a snapshot's first chunk), so a crash loses at most the marks
//! after the last reply or such report the node released: the journal
//! keeps the image current at that one and every later one, and a restart
//! picks one of them (tail loss). A real node's log gives back the very store
//! it marked (`durability/call.rs`), but one written by an earlier build
//! only its keys, which a replay may place otherwise than they were
//! (`SimConfig::reordering_recovery` restores some images in reverse, and
//! the engine is told which are `exact`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use mckv::cluster::{NodeId, Stamp};
use mckv::protocol::{Key, KeysRef};
use mckv::store::memory::MemoryStore;
use mckv::store::{
    ArithOutcome, Entry, Expiry, Head, ItemRef, Listing, OrderListing, Record, Store, StoreResult,
    StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};

use super::{Rng, SIM_NOW};

/// A store as a directory's recovery rebuilds it: exactly the writes up to
/// `upto`, its items in the store's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub head: Head,
    pub records: Vec<Record>,
    pub upto: Stamp,
    /// The store is in the order of the cluster's replicas: it started
    /// from an exact recovery, a new directory, or a peer's snapshot (a
    /// real node's log says so: `durability::Marked::exact`).
    pub exact: bool,
}

impl Image {
    /// `store`'s full content, in its order, as of the mark `upto`.
    pub fn of(store: &mut dyn VersionedStore, upto: u64, exact: bool) -> Image {
        let listing = store.snapshot_keys().expect("the store lists its keys");
        let records = listing.keys.iter().filter_map(|key| {
            let record = store.export_record(key, SIM_NOW);
            record.expect("the store exports its records")
        });
        Image {
            head: listing.head,
            records: records.collect(),
            upto: stamp_of(upto),
            exact,
        }
    }

    /// The same items, in reverse order (`SimConfig::reordering_recovery`).
    pub fn reversed(&self) -> Image {
        let mut image = self.clone();
        image.records.reverse();
        image
    }

    /// Rebuilds the image on `store`, a fresh one: the head, then every
    /// record in order, as a peer's snapshot is installed (an ordered
    /// store then places them as they were, which is checked).
    pub fn restore(&self, store: &mut MemoryStore) {
        store.reset(&self.head, SIM_NOW).expect("reset");
        for record in &self.records {
            store.install(record, SIM_NOW).expect("install");
        }
        let restored = Image::of(store, self.upto.cas_unique(), self.exact);
        assert_eq!(
            restored, *self,
            "a restored image differs from the listed one"
        );
    }
}

/// The stamp a cas unique was derived from (`Stamp::cas_unique` backwards).
pub fn stamp_of(unique: u64) -> Stamp {
    Stamp {
        ts: unique >> 16,
        node: (unique & 0xffff) as NodeId,
    }
}

/// One run of a node's images: the one the replies it released last
/// needed (the floor no crash goes below), then every later one.
#[derive(Debug)]
pub struct Journal {
    images: VecDeque<Image>,
    /// The position of the first of `images`: the run's images are
    /// numbered from 0 as they are recorded.
    first: u64,
    /// Every image before the floor too, oldest first (only kept for the
    /// negative control that restarts below the floor).
    older: Vec<Image>,
    keep_older: bool,
}

impl Journal {
    /// A run that starts holding `first`.
    pub fn new(first: Image, keep_older: bool) -> Journal {
        Journal {
            images: VecDeque::from([first]),
            first: 0,
            older: Vec::new(),
            keep_older,
        }
    }

    /// Records `image`; its position.
    fn record(&mut self, image: Image) -> u64 {
        self.images.push_back(image);
        self.latest()
    }

    /// The position of the latest image: what a report that waits for
    /// the log waits for ([`Journal::answered`] once it is released).
    pub fn latest(&self) -> u64 {
        self.first + self.images.len() as u64 - 1
    }

    /// The node released a reply that shows its store up to the image at
    /// `shows` (`None`: everything marked so far, the latest), as a real
    /// log holds the records of what a reply shows (`durability/shown.rs`):
    /// no crash goes below that image.
    pub fn answered(&mut self, shows: Option<u64>) {
        let floor = shows.unwrap_or(self.latest()).min(self.latest());
        while self.first < floor {
            let old = self.images.pop_front().expect("an image");
            self.first += 1;
            if self.keep_older {
                self.older.push(old);
            }
        }
    }

    /// What the directory gives back after the process ends: after a clean
    /// exit the latest image; after a crash any image from the floor on
    /// (the log's tail may not have reached the disk); with `below_floor`
    /// (a broken disk, for a negative control) any image of the run.
    /// Whether it lost marks: an older image than the latest.
    pub fn pick(&self, rng: &mut Rng, clean: bool, below_floor: bool) -> (Image, bool) {
        let all: Vec<&Image> = match below_floor {
            true => self.older.iter().chain(&self.images).collect(),
            false => self.images.iter().collect(),
        };
        let index = match clean {
            true => all.len() - 1,
            false => rng.below(all.len() as u64) as usize,
        };
        (all[index].clone(), index + 1 < all.len())
    }
}

pub type SharedJournal = Arc<Mutex<Journal>>;

/// A node's store that records an [`Image`] in its journal at every mark,
/// and otherwise is the memory store it wraps. It tells what a reply shows
/// as a real node's log does (`durability/shown.rs`): the image of the
/// mark after the last change of each key the reply names (its write, a
/// write that evicted it, a flush or a peer's snapshot), so a crash may
/// lose the marks after it, the ones a read of other keys showed included.
pub struct ImagingStore {
    inner: MemoryStore,
    journal: SharedJournal,
    /// Per key, the image of the mark after its last change, and of the
    /// last change of every key; the keys changed since the last mark, and
    /// whether every key was; the image the replies since the last take
    /// show.
    ends: std::collections::HashMap<Key, u64>,
    flushed: u64,
    pending: Vec<Key>,
    pending_all: bool,
    shown: u64,
    /// The evictions its store reports, kept for the replica only if it
    /// asked for them (else noted here and dropped).
    evicted: Option<Vec<Key>>,
    /// Negative control: reads show nothing (`SimConfig::blind_reads`).
    blind: bool,
    /// Its images are [`Image::exact`]: until a peer's snapshot resets it,
    /// as the run started.
    exact: bool,
    /// The last mark, and whether a peer's snapshot is being installed
    /// since (reset, its mark not yet come).
    last_mark: u64,
    installing: bool,
    /// Negative control: the image frozen for a snapshot is not kept, each
    /// chunk is listed from the store as it is then (`SimConfig::
    /// thawing_images`); the listing it says is frozen.
    thawing: Option<Option<OrderListing>>,
}

impl ImagingStore {
    /// `inner` holding the writes up to `held`, `exact`ly or not;
    /// `report_evicted`: the replica takes what it evicts.
    pub fn new(
        inner: MemoryStore,
        journal: SharedJournal,
        (held, exact): (u64, bool),
        report_evicted: bool,
    ) -> ImagingStore {
        ImagingStore {
            inner: inner.keeping_evicted(),
            journal,
            ends: Default::default(),
            flushed: 0,
            pending: Vec::new(),
            pending_all: false,
            shown: 0,
            evicted: report_evicted.then(Vec::new),
            blind: false,
            exact,
            last_mark: held,
            installing: false,
            thawing: None,
        }
    }

    /// The negative control `SimConfig::blind_reads`.
    pub fn blind(mut self) -> ImagingStore {
        self.blind = true;
        self
    }

    /// The negative control above.
    pub fn thawing(mut self) -> ImagingStore {
        self.thawing = Some(None);
        self
    }
}

impl ImagingStore {
    /// `keys` changed (and what the store evicted for it): they count from
    /// the next mark.
    fn changed<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.pending.extend(keys.into_iter().map(<[u8]>::to_vec));
        let evicted = self.inner.take_evicted();
        if let Some(kept) = &mut self.evicted {
            kept.extend(evicted.iter().cloned());
        }
        self.pending.extend(evicted);
    }

    /// A reply shows `keys`.
    fn show<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) {
        if self.blind {
            return;
        }
        for key in keys {
            let end = self.ends.get(key).copied().unwrap_or(0);
            self.shown = self.shown.max(end.max(self.flushed));
        }
    }
}

impl Store for ImagingStore {
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        let retrieved = self.inner.retrieve(keys, touch, now, found);
        if touch.is_some() {
            self.changed(keys.iter());
        }
        self.show(keys.iter());
        retrieved
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        let stored = self.inner.store(write, now);
        self.changed([write.key]);
        stored
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        let existed = self.inner.delete(key, now);
        self.changed([key]);
        existed
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        let outcome = self.inner.arith(key, incr, delta, cas, now);
        self.changed([key]);
        outcome
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        let existed = self.inner.touch(key, expiry, now);
        self.changed([key]);
        existed
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        self.pending_all = true;
        self.inner.flush_all(at, now)
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.inner.set_memory_limit(limit_bytes)
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

impl VersionedStore for ImagingStore {
    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Entry>> {
        self.inner.export(key, now)
    }

    fn export_many(&mut self, keys: &[&[u8]], now: UnixTime) -> StoreResult<Vec<Option<Entry>>> {
        self.inner.export_many(keys, now)
    }

    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        let imported = self.inner.import(key, entry, cas, now);
        self.changed([key]);
        imported
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

    fn export_below(
        &mut self,
        below: usize,
        max: usize,
        now: UnixTime,
        out: &mut dyn FnMut(Record) -> bool,
    ) -> StoreResult<usize> {
        self.inner.export_below(below, max, now, out)
    }

    fn freeze_in_order(&mut self) -> Option<OrderListing> {
        let listing = self.inner.freeze_in_order()?;
        match &mut self.thawing {
            Some(said) => Some(*said.get_or_insert(listing)),
            None => Some(listing),
        }
    }

    fn frozen_listing(&self) -> Option<OrderListing> {
        match self.thawing {
            Some(said) => said,
            None => self.inner.frozen_listing(),
        }
    }

    fn thaw(&mut self) -> usize {
        if let Some(said) = &mut self.thawing {
            *said = None;
        }
        self.inner.thaw()
    }

    fn export_in_order(
        &mut self,
        from: usize,
        max: usize,
        out: &mut dyn FnMut(Record) -> bool,
    ) -> StoreResult<Option<usize>> {
        if self.thawing.is_some() {
            self.inner.thaw();
            self.inner.freeze_in_order();
        }
        self.inner.export_in_order(from, max, out)
    }

    /// A peer's snapshot begins: the store becomes a copy of its image.
    /// A real log marks the store it replaces again first, as inexact
    /// (`durability/store.rs`): a crash before the install's mark gives
    /// that back.
    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        if !self.installing {
            let replaced = Image::of(&mut self.inner, self.last_mark, false);
            self.journal.lock().expect("journal").record(replaced);
        }
        (self.exact, self.installing) = (true, true);
        self.pending_all = true;
        self.inner.reset(head, now)
    }

    fn install(&mut self, record: &Record, now: UnixTime) -> StoreResult<()> {
        let installed = self.inner.install(record, now);
        self.changed([&record.key[..]]);
        installed
    }

    /// The mark comes right after the write it covers is applied: the
    /// store now is exactly what recovery would rebuild up to it.
    fn mark_delivered(&mut self, upto: u64) {
        (self.last_mark, self.installing) = (upto, false);
        let image = Image::of(&mut self.inner, upto, self.exact);
        let at = self.journal.lock().expect("journal").record(image);
        if self.pending.is_empty() && !self.pending_all {
            return;
        }
        for key in self.pending.drain(..) {
            self.ends.insert(key, at);
        }
        if std::mem::take(&mut self.pending_all) {
            self.flushed = at;
        }
        self.shown = self.shown.max(at);
    }

    /// As a real log's: a reply made while a peer's snapshot is half
    /// installed waits for everything.
    fn take_shown(&mut self) -> Option<u64> {
        let shown = std::mem::take(&mut self.shown);
        (!self.installing).then_some(shown)
    }

    fn take_evicted(&mut self) -> Vec<Key> {
        self.evicted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn maintain(&mut self, now: UnixTime) -> StoreResult<bool> {
        self.inner.maintain(now)
    }

    fn end_batch(&mut self) {
        self.inner.end_batch()
    }
}
