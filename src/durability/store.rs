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
//!
//! **Snapshots without a pause.** A snapshot is never a copy of the store
//! made at one moment: the reactor lists the store's table a slice at a
//! time ([`VersionedStore::export_below`], at most [`SLICE_ENTRIES`]
//! entries, about a millisecond), from its end down, between the commands
//! it serves. At its start it only notes the log position; the records
//! after that go to the new `log`, which recovery replays after the
//! snapshot (see `recover.rs`).
//!
//! ```text
//!  table: [ a | b | c | d | e | f ]      listed so far: e f (the cursor is 4)
//!  remove b: the last, f, moves to 1     f is listed again: harmless
//!  add g: it goes at the end, 6          not listed; its write is logged
//! ```
//!
//! Why the snapshot and the log after it give back every key:
//! - A key some record after the start writes (a command's new state, a
//!   removal, an eviction, a `flush_all`) ends as the log's last record
//!   for it leaves it, whatever state (or none) the snapshot caught: each
//!   record is a key's whole state and the log replays after the snapshot.
//! - A key no record after the start writes keeps its value all along. It
//!   may die (expire, or be flushed by a delayed `flush_all` whose record
//!   is in the snapshot's head or the log) and be removed unlogged by a
//!   lookup, the sweep or the eviction clock: then the snapshot holds it
//!   alive, stored at the time it was listed (before it died), or not at
//!   all, and a replay finds it just as dead. Else it is still in the table
//!   and must be listed; it is, because it stays below the cursor until
//!   listed. It was in the table at the start, below the cursor (its
//!   length). The table's order changes only by a removal, which moves the
//!   last entry into the hole, down (`MemoryStore::remove_at`); a key
//!   below the cursor that moves is the last, so it moves from below the
//!   cursor to lower still. An added key goes at the end; the vectors
//!   growing and the index rehashing keep every place. The cursor goes
//!   down only past the entry it lists, and a table shorter than the
//!   cursor (removals, an immediate `flush_all` clearing it) only lowers
//!   where the next slice starts.
//!
//! **Marks** (a node of a strong cluster of several, on an ordered store).
//! It logs the calls it is given rather than key states (`call.rs`, which
//! says why their replay gives back the very store), and each delivered
//! write's calls are followed by a [`Record::Delivered`] mark; a recovery
//! drops what follows the last one (see `recover.rs`). Such a store never
//! refuses a write while the disk refuses the log: the write was
//! delivered, and its peers apply it; its records wait in the writer and
//! its reply for the disk (the node refuses new writes before they are
//! ordered instead: `Durable::intake_refusal`), up to a limit past which,
//! or after a failed fsync, the node stops (`Durable::must_stop`).
//! What a call changed (the keys it names, the keys the store evicted for
//! it, or every key) counts for replies from the end of the mark after it
//! (`shown.rs`), which a recovery keeps with it.
//!
//! Its snapshot is an exact image taken at a mark: right after one it
//! freezes the ordered store's image ([`VersionedStore::freeze_in_order`],
//! copy on write, as a snapshot for a peer is taken) and lists it from
//! its first place up, a slice at a time while writes go on, as the reset
//! and installs that rebuild it, ending with that mark. The new `log`
//! begins there, with the next [`Record::Generation`], so a recovery
//! replays exactly the calls after the image. The store holds one image
//! at a time: a peer's snapshot that wants it takes it (this snapshot is
//! given up, its log kept, and the next begins once the peer's ends), and
//! none begins while a peer's holds it. While it lasts, every entry a
//! write changes is copied once for the image, as for a peer's snapshot.
//!
//! An ascending cursor would need the store to report every entry moved
//! from above it to below (the test
//! `a_snapshot_listed_in_slices_while_entries_move_recovers_the_store`
//! loses keys without that); listing down needs nothing of the store but
//! its order. Recovery replays a snapshot's items last first, so they go
//! back in their order, the one the eviction clock goes round in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::call::Call;
use super::record::{Record, Under};
use super::recover::{self, Marked};
use super::shown::Shown;
use super::writer::{Job, LogQueue, LogShared};
use crate::protocol::KeysRef;
use crate::store::{
    ArithOutcome, Entry, Expiry, Head, ItemRef, Listing, OrderListing, Policy,
    Record as StoreRecord, RecordRef, Store, StoreError, StoreEvents, StoreResult, StoreStats,
    StoreStatus, UnixTime, VersionedStore, Write,
};

/// How far ahead a clock reservation reaches, in cas uniques (a stamp's
/// time is the unique's upper bits: 2^20 writes of one node).
pub const RESERVE: u64 = 1 << 36;

/// A snapshot slice holds about this many bytes of records, or visits
/// this many entries (a millisecond or two of the event loop).
const SLICE_BYTES: usize = 1 << 20;
const SLICE_ENTRIES: usize = 4_096;

/// The writer may fall this many snapshot bytes behind before the next
/// slice waits.
const SNAPSHOT_AHEAD: u64 = 16 << 20;

pub struct DurableStore {
    inner: Box<dyn VersionedStore>,
    jobs: LogQueue,
    /// Records of this loop iteration, handed to the writer at its end.
    batch: Vec<u8>,
    shared: Arc<LogShared>,
    /// Uniques up to this are reserved on disk (or being made so).
    reserved: u64,
    snapshot_every: u64,
    /// Log position where the last snapshot began.
    snapshot_from: u64,
    snapshot: Option<Snapshotting>,
    /// Entries a snapshot slice visits at most.
    slice_entries: usize,
    /// A marked log: the last mark, and whether records followed it.
    marks: Option<Marks>,
    /// Where each key's last record ends (a marked log's: its mark), and
    /// what the replies show.
    shown: Shown,
}

/// Where a marked log stands (module doc, "Marks"): what a snapshot
/// begun now would say (the last mark, the log the records go to now,
/// whether the store is a replica's exact image: recovered as one, or a
/// peer's snapshot installed since), and whether records followed the
/// last mark.
#[derive(Debug, Clone, Copy)]
struct Marks {
    at: Marked,
    unmarked: bool,
}

/// A snapshot being written: where its listing stands, and what its
/// slices took, for the log.
struct Snapshotting {
    cursor: Cursor,
    records: u64,
    slices: u64,
    longest: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// The entries below this place are still to be visited (key states,
    /// listed from the table's end down while writes go on).
    Below(usize),
    /// A marked log's: the ordered store's image frozen at a mark, listed
    /// from place `next` up (`None`: listed), to end as `marked` says.
    Image {
        image: OrderListing,
        next: Option<usize>,
        marked: Marked,
    },
}

impl DurableStore {
    /// `inner` as recovered, logging to the writer fed by `jobs`; uniques up
    /// to `reserved` are already on disk.
    pub fn new(
        inner: Box<dyn VersionedStore>,
        jobs: LogQueue,
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
            slice_entries: SLICE_ENTRIES,
            marks: None,
            shown: Shown::new(),
        }
    }

    /// The same, for a node of a strong cluster of several, whose ordered
    /// store recovery left as `marked` says (module doc, "Marks"): its log
    /// starts with its generation.
    pub fn marked(mut self, marked: Marked) -> DurableStore {
        self.marks = Some(Marks {
            at: marked,
            unmarked: false,
        });
        // What the replay evicted (under the cap its calls were made
        // under) is recovered already: only later calls' evictions count.
        self.inner.take_evicted();
        let under = self.under();
        self.append_unmarked(&Record::Generation {
            n: marked.generation,
            under,
        });
        self
    }

    /// What the store's calls run under now, as a marked log's generation
    /// records it.
    fn under(&self) -> Under {
        Under {
            cap: self.inner.stats().limit_bytes,
            policy: self.inner.policy(),
        }
    }

    /// Logs a call a marked log records instead of key states; what it
    /// changed counts from the next mark: the keys `changed` names, and
    /// those the store evicted for it.
    fn log_call<'k>(&mut self, call: &Call<'_>, changed: impl IntoIterator<Item = &'k [u8]>) {
        let start = self.batch.len();
        call.encode(&mut self.batch);
        self.appended(start);
        changed.into_iter().for_each(|key| self.shown.changed(key));
        for key in self.inner.take_evicted() {
            self.shown.changed(&key);
        }
    }

    /// A record of `key` ends at `end` (for a marked log, at its next mark).
    fn note(&mut self, key: &[u8], end: u64) {
        match self.marks {
            Some(_) => self.shown.changed(key),
            None => self.shown.wrote(key, end),
        }
    }

    /// A record that sets every key's state ends at `end` (for a marked
    /// log, at its next mark); its reply shows it.
    fn note_all(&mut self, end: u64) {
        match self.marks {
            Some(_) => self.shown.changed_all(),
            None => self.shown.flushed(end),
        }
    }

    /// Records follow the last mark (a write or an install under way).
    fn unmarked(&self) -> bool {
        self.marks.is_some_and(|m| m.unmarked)
    }

    /// The same, with snapshot slices of at most `entries` entries, so a
    /// test can interleave many slices with writes in a small store.
    #[cfg(test)]
    pub fn with_slices_of(mut self, entries: usize) -> DurableStore {
        self.slice_entries = entries;
        self
    }

    /// Refuses a write while the disk refuses the log (as the writer said
    /// at the end of the last loop iteration: see `LogShared::refusing`).
    fn writable(&self) -> StoreResult<()> {
        if self.marks.is_some() {
            return Ok(()); // a delivered write (module doc, "Marks")
        }
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
        self.shared.hold_replies_for_appended();
        self.hand_over();
        self.jobs.send(Job::Sync);
    }

    /// Appends `record`; the log position where it ends.
    fn append(&mut self, record: &Record) -> u64 {
        let start = self.batch.len();
        record.encode(&mut self.batch);
        self.appended(start)
    }

    /// Counts the records the batch holds past `start` as appended: a
    /// change, which a marked log's next mark must follow. The log
    /// position where they end.
    fn appended(&mut self, start: usize) -> u64 {
        if let Some(marks) = &mut self.marks {
            marks.unmarked = true;
        }
        self.count_appended(start)
    }

    fn count_appended(&self, start: usize) -> u64 {
        let len = (self.batch.len() - start) as u64;
        self.shared.appended.fetch_add(len, Ordering::AcqRel) + len
    }

    /// Appends a record that changes nothing in the store (a log's
    /// generation), which needs no mark after it.
    fn append_unmarked(&mut self, record: &Record) {
        let start = self.batch.len();
        record.encode(&mut self.batch);
        self.count_appended(start);
    }

    /// Hands the records gathered so far to the writer, in one job.
    fn hand_over(&mut self) {
        self.jobs.append(&mut self.batch);
    }

    /// Logs the removal of what the store evicted (or a refused `set`
    /// dropped) for the change it just made, before the change's own
    /// record: replayed in that order, the change finds the room it found
    /// (see `recover`).
    fn log_evictions(&mut self) {
        for key in self.inner.take_evicted() {
            self.log_removal(&key);
        }
    }

    /// Logs that `key` is gone.
    fn log_removal(&mut self, key: &[u8]) {
        let start = self.batch.len();
        Record::encode_remove(&mut self.batch, key);
        let end = self.appended(start);
        self.note(key, end);
    }

    /// Logs the state `key` is in after a change made at `now`, encoded
    /// from the store's own copy.
    fn log_key(&mut self, key: &[u8], now: UnixTime) -> StoreResult<()> {
        let start = self.batch.len();
        let batch = &mut self.batch;
        self.inner
            .lend_record(key, now, &mut |record| match record {
                Some(record) => Record::encode_put(batch, now, record),
                None => Record::encode_remove(batch, key),
            })?;
        let end = self.appended(start);
        self.note(key, end);
        Ok(())
    }

    /// Starts a snapshot once the log has grown enough since the last:
    /// its head (the clock reservation, which it replaces with the log, and
    /// the pending delayed `flush_all`) as the store is now.
    fn maybe_begin_snapshot(&mut self, now: UnixTime) {
        let appended = self.shared.appended.load(Ordering::Relaxed);
        let due = appended - self.snapshot_from >= self.snapshot_every;
        // A peer's snapshot holds the image until it is handed.
        let imaged = self.marks.is_some() && self.inner.frozen_listing().is_some();
        if self.snapshot.is_some() || !due || self.unmarked() || imaged {
            return;
        }
        self.snapshot_from = appended;
        // A marked log's snapshot is the image frozen at this mark.
        let image = match self.marks {
            Some(_) => match self.inner.freeze_in_order() {
                Some(image) => Some(image),
                None => return log::error!("this store lists no image in order: no snapshot"),
            },
            None => None,
        };
        let items = self.inner.stats().items;
        log::info!("snapshot begins: {items} items to list");
        // The records before the snapshot began go to the log it replaces.
        self.hand_over();
        self.jobs.send(Job::BeginSnapshot);
        if let (Some(marks), Some(image)) = (self.marks, image) {
            return self.begin_image(marks, image, now);
        }
        let mut head = Vec::new();
        let reserved = self.reserved;
        Record::Clock { reserved }.encode(&mut head);
        let flush_at = self.inner.head().flush_at;
        Record::SnapshotBegin { flush_at }.encode(&mut head);
        self.send_snapshot(Job::Snapshot(head));
        self.snapshot = Some(Snapshotting::from(Cursor::Below(usize::MAX)));
    }

    /// Begins a marked log's snapshot of `image`, frozen at its last mark:
    /// the new log's generation, then the snapshot's head.
    fn begin_image(&mut self, marks: Marks, image: OrderListing, now: UnixTime) {
        let generation = marks.at.generation + 1;
        let marked = Marked {
            generation,
            ..marks.at
        };
        self.marks = Some(Marks {
            at: marked,
            ..marks
        });
        let under = self.under();
        self.append_unmarked(&Record::Generation {
            n: generation,
            under,
        });
        let mut head = Vec::new();
        let reserved = self.reserved;
        recover::marked_snapshot_head(&mut head, (marked, under), reserved, image.head, now);
        self.send_snapshot(Job::Snapshot(head));
        let next = Some(0);
        self.snapshot = Some(Snapshotting::from(Cursor::Image {
            image,
            next,
            marked,
        }));
    }

    /// Gives up the snapshot under way (its image is wanted for a peer's):
    /// the next one begins after it, appending to the `log.old` it left
    /// (`writer.rs`), and is due at once.
    fn give_up_image(&mut self) {
        if self.holds_image() {
            self.snapshot = None;
            let copied = self.inner.thaw();
            self.snapshot_from = 0;
            log::info!("snapshot given up for a peer's ({copied} items copied meanwhile)");
        }
    }

    /// Whether this store's own snapshot holds the frozen image.
    pub fn holds_image(&self) -> bool {
        matches!(
            self.snapshot,
            Some(Snapshotting {
                cursor: Cursor::Image { .. },
                ..
            })
        )
    }

    fn send_snapshot(&mut self, job: Job) {
        if let Job::Snapshot(bytes) | Job::EndSnapshot(bytes) = &job {
            let len = bytes.len() as u64;
            self.shared
                .snapshot_queued
                .fetch_add(len, Ordering::Relaxed);
        }
        self.jobs.send(job);
    }

    /// Hands the writer the snapshot's next slice, unless it is behind.
    fn snapshot_slice(&mut self, now: UnixTime) -> StoreResult<()> {
        let shared = &self.shared;
        let behind = shared.snapshot_queued.load(Ordering::Relaxed)
            - shared.snapshot_written.load(Ordering::Acquire);
        let Some(snapshot) = &self.snapshot else {
            return Ok(());
        };
        if behind > SNAPSHOT_AHEAD {
            return Ok(());
        }
        let started = Instant::now();
        let (out, records, done) = match snapshot.cursor {
            Cursor::Below(below) => self.key_states_below(below, now)?,
            Cursor::Image {
                image,
                next,
                marked,
            } => self.image_slice(image, next, marked, now)?,
        };
        let Some(snapshot) = &mut self.snapshot else {
            return Ok(()); // given up
        };
        snapshot.records += records;
        snapshot.slices += 1;
        snapshot.longest = snapshot.longest.max(started.elapsed());
        if done {
            log::info!(
                "snapshot listed: {} records in {} slices, the longest {:?}",
                snapshot.records,
                snapshot.slices,
                snapshot.longest
            );
            self.snapshot = None;
            // The writer puts every record appended so far on disk before
            // it installs the snapshot (see `Job::EndSnapshot`).
            self.hand_over();
        }
        self.send_snapshot(match done {
            true => Job::EndSnapshot(out),
            false => Job::Snapshot(out),
        });
        Ok(())
    }

    /// The next slice of key states, listed from `below` down: its bytes,
    /// records and whether it ends the snapshot.
    fn key_states_below(
        &mut self,
        below: usize,
        now: UnixTime,
    ) -> StoreResult<(Vec<u8>, u64, bool)> {
        let (mut out, mut records) = (Vec::new(), 0);
        let below = self
            .inner
            .export_below(below, self.slice_entries, now, &mut |record| {
                Record::put(now, record).encode(&mut out);
                records += 1;
                out.len() < SLICE_BYTES
            })?;
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.cursor = Cursor::Below(below);
        }
        let done = below == 0;
        if done {
            Record::SnapshotEnd.encode(&mut out);
        }
        Ok((out, records, done))
    }

    /// The next slice of the frozen image, from place `next` up, each
    /// entry as the call that installs it; the last ends with the mark the
    /// image was frozen at, and thaws it.
    fn image_slice(
        &mut self,
        image: OrderListing,
        next: Option<usize>,
        marked: Marked,
        now: UnixTime,
    ) -> StoreResult<(Vec<u8>, u64, bool)> {
        let (mut out, mut records) = (Vec::new(), 0);
        if self.inner.frozen_listing() != Some(image) {
            // Not this snapshot's image (nothing thaws it but the snapshot
            // itself: `thaw` below): give up rather than list another.
            log::error!("snapshot given up: its image was dropped");
            self.snapshot = None;
            return Ok((out, 0, false));
        }
        let next = match next {
            Some(from) => self
                .inner
                .export_in_order(from, self.slice_entries, &mut |r| {
                    let record = r.lend();
                    Call::Install { now, record }.encode(&mut out);
                    records += 1;
                    out.len() < SLICE_BYTES
                })?,
            None => None,
        };
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.cursor = Cursor::Image {
                image,
                next,
                marked,
            };
        }
        if next.is_none() {
            recover::marked_snapshot_end(&mut out, marked);
            let copied = self.inner.thaw();
            log::info!("snapshot image thawed: {copied} items written meanwhile were copied");
        }
        Ok((out, records, next.is_none()))
    }
}

impl From<Cursor> for Snapshotting {
    fn from(cursor: Cursor) -> Snapshotting {
        Snapshotting {
            cursor,
            records: 0,
            slices: 0,
            longest: Duration::ZERO,
        }
    }
}

/// The commands as logged; the `Store` impl notes the keys their replies
/// show.
impl DurableStore {
    fn retrieve_logged(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        let Some(expiry) = touch else {
            return self.inner.retrieve(keys, None, now, found);
        };
        if self.marks.is_some() {
            let retrieved = self.inner.retrieve(keys, touch, now, found);
            self.log_call(&Call::gat(now, keys, expiry), keys.iter());
            return retrieved;
        }
        self.writable()?;
        let mut touched = Vec::new();
        self.inner.retrieve(keys, touch, now, &mut |i, item| {
            touched.push(i);
            found(i, item)
        })?;
        touched
            .iter()
            .try_for_each(|&i| self.log_key(keys.get(i), now))
    }

    fn store_logged(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        self.writable()?;
        self.reserve(write.cas);
        if self.marks.is_some() {
            let stored = self.inner.store(write, now);
            self.log_call(&Call::Store { now, write }, [write.key]);
            return stored;
        }
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

    fn delete_logged(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        self.writable()?;
        if self.marks.is_some() {
            let existed = self.inner.delete(key, now);
            self.log_call(&Call::Delete { now, key }, [key]);
            return existed;
        }
        let existed = self.inner.delete(key, now)?;
        if existed {
            self.log_removal(key);
        }
        Ok(existed)
    }

    fn arith_logged(
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
        if self.marks.is_some() {
            let call = Call::Arith {
                now,
                key,
                incr,
                delta,
                cas,
            };
            self.log_call(&call, [key]);
            return outcome;
        }
        self.log_evictions();
        let outcome = outcome?;
        if matches!(outcome, ArithOutcome::Value(_)) {
            self.log_key(key, now)?;
        }
        Ok(outcome)
    }

    fn touch_logged(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        self.writable()?;
        if self.marks.is_some() {
            let existed = self.inner.touch(key, expiry, now);
            self.log_call(&Call::Touch { now, key, expiry }, [key]);
            return existed;
        }
        let existed = self.inner.touch(key, expiry, now)?;
        if existed {
            self.log_key(key, now)?;
        }
        Ok(existed)
    }
}

impl Store for DurableStore {
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        let retrieved = self.retrieve_logged(keys, touch, now, found);
        keys.iter().for_each(|key| self.shown.show(key));
        retrieved
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        let stored = self.store_logged(write, now);
        self.shown.show(write.key);
        stored
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        let existed = self.delete_logged(key, now);
        self.shown.show(key);
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
        let outcome = self.arith_logged(key, incr, delta, cas, now);
        self.shown.show(key);
        outcome
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        let existed = self.touch_logged(key, expiry, now);
        self.shown.show(key);
        existed
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        self.writable()?;
        self.inner.flush_all(at, now)?;
        let end = self.append(&Record::Flush { now, at });
        self.note_all(end);
        Ok(())
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.inner.set_memory_limit(limit_bytes)
    }

    fn events(&self) -> StoreEvents {
        self.inner.events()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

impl VersionedStore for DurableStore {
    fn policy(&self) -> Option<Policy> {
        self.inner.policy()
    }

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

    fn head(&self) -> Head {
        self.inner.head()
    }

    fn export_below(
        &mut self,
        below: usize,
        max: usize,
        now: UnixTime,
        out: &mut dyn FnMut(StoreRecord) -> bool,
    ) -> StoreResult<usize> {
        self.inner.export_below(below, max, now, out)
    }

    /// A peer's snapshot: it takes the image from this store's own
    /// snapshot, if that one holds it, which starts over later.
    fn freeze_in_order(&mut self) -> Option<OrderListing> {
        self.give_up_image();
        self.inner.freeze_in_order()
    }

    fn frozen_listing(&self) -> Option<OrderListing> {
        self.inner.frozen_listing()
    }

    /// Peers' snapshots are handed: their image goes, unless it is this
    /// store's own snapshot's (begun after theirs).
    fn thaw(&mut self) -> usize {
        match self.holds_image() {
            true => 0,
            false => self.inner.thaw(),
        }
    }

    fn export_in_order(
        &mut self,
        from: usize,
        max: usize,
        out: &mut dyn FnMut(StoreRecord) -> bool,
    ) -> StoreResult<Option<usize>> {
        self.inner.export_in_order(from, max, out)
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<StoreRecord>> {
        self.inner.export_record(key, now)
    }

    fn lend_record(
        &mut self,
        key: &[u8],
        now: UnixTime,
        out: &mut dyn FnMut(Option<RecordRef<'_>>),
    ) -> StoreResult<()> {
        self.inner.lend_record(key, now, out)
    }

    /// An ordered store takes the record where the source held it (see
    /// [`VersionedStore::install`]); its state is logged as a write's.
    fn install(&mut self, record: &StoreRecord, now: UnixTime) -> StoreResult<()> {
        self.writable()?;
        self.reserve(record.cas);
        let installed = self.inner.install(record, now);
        if self.marks.is_some() {
            let key = &record.key[..];
            self.log_call(
                &Call::Install {
                    now,
                    record: record.lend(),
                },
                [key],
            );
            return installed;
        }
        self.log_evictions();
        installed?;
        self.log_key(&record.key, now)
    }

    fn mark_delivered(&mut self, upto: u64) {
        if let Some(marks) = self.marks {
            let end = self.append(&Record::Delivered { upto });
            self.shown.marked(end);
            let at = Marked {
                delivered: upto,
                ..marks.at
            };
            self.marks = Some(Marks {
                at,
                unmarked: false,
            });
        }
    }

    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        self.writable()?;
        if let Some(marks) = self.marks.filter(|m| !m.unmarked) {
            // The store at the last mark was a prefix the cluster chose to
            // replace (a view's source may hold the same writes in another
            // order): a crash before the install's mark gives it back, and
            // it must not claim to be exact (`TotalOrder::with_data_dir`).
            // Marked again, as it is. An install already under way did so.
            self.append(&Record::Inexact);
            self.mark_delivered(marks.at.delivered);
        }
        if self.marks.is_some() {
            let reset = self.inner.reset(head, now);
            self.log_call(&Call::Reset { now, head: *head }, []);
            self.shown.changed_all();
            // A peer's snapshot follows: the store becomes its image (and
            // the call logged above leaves it unmarked until its end).
            if let Some(marks) = &mut self.marks {
                marks.at.exact = true;
            }
            return reset;
        }
        self.inner.reset(head, now)?;
        let mut end = self.append(&Record::Flush { now, at: None });
        if let Some(at) = head.flush_at.filter(|&at| at > now) {
            end = self.append(&Record::Flush { now, at: Some(at) });
        }
        // Every key's state follows from it, as from a `flush_all`.
        self.note_all(end);
        Ok(())
    }

    /// A snapshot slice, and the embedded store's expiry sweep slice. The
    /// sweep is not logged: it drops only items already dead by their
    /// absolute expiry (or a logged delayed `flush_all`), which a recovery
    /// replays as just as dead.
    fn maintain(&mut self, now: UnixTime) -> StoreResult<bool> {
        self.maybe_begin_snapshot(now);
        self.snapshot_slice(now)?;
        let sweeping = self.inner.maintain(now)?;
        Ok(self.snapshot.is_some() || sweeping)
    }

    /// A marked log's records since its last mark are dropped by a
    /// recovery: a reply made before the mark that keeps them (a peer's
    /// snapshot half installed) waits for the whole log, as before marks
    /// told positions.
    fn take_shown(&mut self) -> Option<u64> {
        let shown = self.shown.take();
        (!self.unmarked()).then_some(shown)
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
