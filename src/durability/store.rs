//! The store a node with a data directory runs on: the embedded store,
//! with every change it makes queued for the log writer as the changed
//! key's new state (read back after the change, so the record is exactly
//! what the store holds, whatever the command computed), and a snapshot
//! written a slice at a time whenever the log has grown by
//! `snapshot_every` bytes.
//!
//! It runs where the store runs (inline on the reactor), so it never
//! touches a file: it counts log positions and hands bytes to the writer
//! thread. While the writer reports the disk failed, writes are refused
//! before they change anything (`SERVER_ERROR ...; not applied`); reads go
//! on.
//!
//! Cas uniques: a restarted node must never hand out a unique it handed
//! out before, even one of a write the crash lost. Before the store takes
//! a write whose unique is above what the log has reserved, it reserves a
//! block ahead ([`RESERVE`]) in a `Clock` record the writer fsyncs at
//! once, and the reactor holds that write's reply until it is durable
//! ([`LogShared::must_sync`]); recovery starts the clock above the highest
//! reservation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::record::Record;
use super::writer::{Job, LogShared};
use crate::protocol::Key;
use crate::store::{
    ArithOutcome, Entry, Expiry, Head, ItemRef, Keys, Listing, Record as StoreRecord, Store,
    StoreError, StoreResult, StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};

/// How far ahead a clock reservation reaches, in cas uniques (a stamp's
/// time is the unique's upper bits: 2^20 writes of one node).
pub const RESERVE: u64 = 1 << 36;

/// A snapshot slice holds about this many bytes of records, or keys (a
/// millisecond or two of the event loop).
const SLICE_BYTES: usize = 1 << 20;
const SLICE_KEYS: usize = 4_096;

/// The writer may fall this many snapshot bytes behind before the next
/// slice waits.
const SNAPSHOT_AHEAD: u64 = 16 << 20;

pub struct DurableStore {
    inner: Box<dyn VersionedStore>,
    jobs: Sender<Job>,
    /// Records of this loop iteration, handed to the writer at its end.
    batch: Vec<u8>,
    shared: Arc<LogShared>,
    /// Uniques up to this are reserved on disk (or being made so).
    reserved: u64,
    snapshot_every: u64,
    /// Log position where the last snapshot began.
    snapshot_from: u64,
    snapshot: Option<Snapshotting>,
}

/// A snapshot being written: the keys listed at its start, how many went.
struct Snapshotting {
    keys: Keys,
    next: usize,
    flush_at: Option<UnixTime>,
}

impl DurableStore {
    /// `inner` as recovered, logging to the writer fed by `jobs`; uniques up
    /// to `reserved` are already on disk.
    pub fn new(
        inner: Box<dyn VersionedStore>,
        jobs: Sender<Job>,
        shared: Arc<LogShared>,
        reserved: u64,
        snapshot_every: u64,
    ) -> DurableStore {
        DurableStore {
            inner,
            jobs,
            batch: Vec::new(),
            shared,
            reserved,
            snapshot_every,
            snapshot_from: 0,
            snapshot: None,
        }
    }

    /// Refuses a write while the disk refuses the log (as the writer said
    /// at the end of the last loop iteration: see `LogShared::refusing`).
    fn writable(&self) -> StoreResult<()> {
        match self.shared.refusal() {
            None => Ok(()),
            Some(why) => Err(StoreError::Disk(why)),
        }
    }

    /// Reserves uniques past `cas` before a write hands it out.
    fn reserve(&mut self, cas: u64) {
        if cas <= self.reserved {
            return;
        }
        self.reserved = cas.saturating_add(RESERVE);
        self.append(&Record::Clock {
            reserved: self.reserved,
        });
        let upto = self.shared.appended.load(Ordering::Relaxed);
        self.shared.must_sync.store(upto, Ordering::Release);
        self.hand_over();
        let _ = self.jobs.send(Job::Sync);
    }

    fn append(&mut self, record: &Record) {
        let start = self.batch.len();
        record.encode(&mut self.batch);
        let len = (self.batch.len() - start) as u64;
        self.shared.appended.fetch_add(len, Ordering::AcqRel);
    }

    /// Hands the records gathered so far to the writer, in one job.
    fn hand_over(&mut self) {
        if !self.batch.is_empty() {
            let bytes = std::mem::take(&mut self.batch);
            // The writer ends only after the store is dropped.
            let _ = self.jobs.send(Job::Append(bytes));
        }
    }

    /// Logs the removal of what the store evicted (or a refused `set`
    /// dropped) for the change it just made, before the change's own
    /// record: replayed in that order, the change finds the room it found
    /// (see `recover`).
    fn log_evictions(&mut self) {
        for key in self.inner.take_evicted() {
            self.append(&Record::Remove { key });
        }
    }

    /// Logs the state `key` is in after a change made at `now`.
    fn log_key(&mut self, key: &[u8], now: UnixTime) -> StoreResult<()> {
        let record = match self.inner.export_record(key, now)? {
            Some(r) => Record::put(now, r),
            None => Record::Remove { key: key.to_vec() },
        };
        self.append(&record);
        Ok(())
    }

    /// Starts a snapshot once the log has grown enough since the last.
    fn maybe_begin_snapshot(&mut self) -> StoreResult<()> {
        let appended = self.shared.appended.load(Ordering::Relaxed);
        if self.snapshot.is_some() || appended - self.snapshot_from < self.snapshot_every {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let listing = self.inner.snapshot_keys()?;
        log::info!(
            "snapshot begins: {} keys listed in {:?}",
            listing.keys.len(),
            started.elapsed()
        );
        self.snapshot_from = appended;
        // The records before the snapshot began go to the log it replaces.
        self.hand_over();
        let _ = self.jobs.send(Job::BeginSnapshot);
        self.snapshot = Some(Snapshotting {
            keys: listing.keys,
            next: 0,
            flush_at: listing.head.flush_at,
        });
        Ok(())
    }

    /// Hands the writer the snapshot's next slice, unless it is behind.
    fn snapshot_slice(&mut self, now: UnixTime) -> StoreResult<()> {
        let shared = &self.shared;
        let behind = shared.snapshot_queued.load(Ordering::Relaxed)
            - shared.snapshot_written.load(Ordering::Acquire);
        let Some(snapshot) = &mut self.snapshot else {
            return Ok(());
        };
        if behind > SNAPSHOT_AHEAD {
            return Ok(());
        }
        let mut out = Vec::new();
        if snapshot.next == 0 {
            // A snapshot replaces the log, and the reservation with it.
            let reserved = self.reserved;
            Record::Clock { reserved }.encode(&mut out);
            let flush_at = snapshot.flush_at;
            Record::SnapshotBegin { flush_at }.encode(&mut out);
        }
        let end = (snapshot.next + SLICE_KEYS).min(snapshot.keys.len());
        while snapshot.next < end && out.len() < SLICE_BYTES {
            let key = snapshot.keys.get(snapshot.next);
            snapshot.next += 1;
            if let Some(r) = self.inner.export_record(key, now)? {
                Record::put(now, r).encode(&mut out);
            }
        }
        let done = snapshot.next == snapshot.keys.len();
        if done {
            Record::SnapshotEnd.encode(&mut out);
        }
        shared
            .snapshot_queued
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        let job = match done {
            true => Job::EndSnapshot(out),
            false => Job::Snapshot(out),
        };
        let _ = self.jobs.send(job);
        if done {
            self.snapshot = None;
        }
        Ok(())
    }
}

impl Store for DurableStore {
    fn retrieve(
        &mut self,
        keys: &[Key],
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        if touch.is_none() {
            return self.inner.retrieve(keys, None, now, found);
        }
        self.writable()?;
        let mut touched = Vec::new();
        self.inner.retrieve(keys, touch, now, &mut |i, item| {
            touched.push(i);
            found(i, item)
        })?;
        touched
            .iter()
            .try_for_each(|&i| self.log_key(&keys[i], now))
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        self.writable()?;
        self.reserve(write.cas);
        let key = write.key;
        // A `set` refused for memory drops the old value, as on memcached:
        // the store reports that with what it evicted.
        let stored = self.inner.store(write, now);
        self.log_evictions();
        if stored == Ok(StoreStatus::Stored) {
            self.log_key(key, now)?;
        }
        stored
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        self.writable()?;
        let existed = self.inner.delete(key, now)?;
        if existed {
            self.append(&Record::Remove { key: key.to_vec() });
        }
        Ok(existed)
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        self.writable()?;
        self.reserve(cas);
        let outcome = self.inner.arith(key, incr, delta, cas, now);
        self.log_evictions();
        let outcome = outcome?;
        if matches!(outcome, ArithOutcome::Value(_)) {
            self.log_key(key, now)?;
        }
        Ok(outcome)
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        self.writable()?;
        let existed = self.inner.touch(key, expiry, now)?;
        if existed {
            self.log_key(key, now)?;
        }
        Ok(existed)
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        self.writable()?;
        self.inner.flush_all(at, now)?;
        self.append(&Record::Flush { now, at });
        Ok(())
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.inner.set_memory_limit(limit_bytes)
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

impl VersionedStore for DurableStore {
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
        self.writable()?;
        self.reserve(cas);
        let imported = self.inner.import(key, entry, cas, now);
        self.log_evictions();
        imported?;
        self.log_key(key, now)
    }

    fn snapshot_keys(&mut self) -> StoreResult<Listing> {
        self.inner.snapshot_keys()
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<StoreRecord>> {
        self.inner.export_record(key, now)
    }

    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        self.writable()?;
        self.inner.reset(head, now)?;
        self.append(&Record::Flush { now, at: None });
        if let Some(at) = head.flush_at.filter(|&at| at > now) {
            self.append(&Record::Flush { now, at: Some(at) });
        }
        Ok(())
    }

    /// A snapshot slice, and the embedded store's expiry sweep slice. The
    /// sweep is not logged: it drops only items already dead by their
    /// absolute expiry (or a logged delayed `flush_all`), which a recovery
    /// replays as just as dead.
    fn maintain(&mut self, now: UnixTime) -> StoreResult<bool> {
        self.maybe_begin_snapshot()?;
        self.snapshot_slice(now)?;
        let sweeping = self.inner.maintain(now)?;
        Ok(self.snapshot.is_some() || sweeping)
    }

    fn end_batch(&mut self) {
        self.hand_over();
        let failed = self.shared.failed.load(Ordering::Acquire);
        self.shared.refusing.store(failed, Ordering::Release);
    }
}

impl Drop for DurableStore {
    /// The last records go to the writer, which ends once they are in.
    fn drop(&mut self) {
        self.hand_over();
    }
}
