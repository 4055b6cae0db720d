//! The log as a store side that logs records of its own sees it (eventual
//! mode's versions: see [`super::Journaled`]): it appends records, hands
//! them to the writer once per loop iteration, says when the disk refuses
//! the log, and carries a snapshot the store side writes a part at a time.
//!
//! Like [`super::DurableStore`], it runs on the reactor and never touches a
//! file: it counts log positions and hands bytes to the writer thread. The
//! reactor holds a write's reply until the log has what came before it
//! ([`super::Durable::wait_for`]), and a read's until it has the records of
//! the keys it names (the store side notes them: [`super::shown`]), so a
//! write is acknowledged only once its record is written (or fsynced, with
//! `fsync = always`), and no read shows a record that is not.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::{self, Record};
use super::writer::{Job, LogQueue, LogShared};

/// The writer may fall this many snapshot bytes behind before the store
/// side holds its next part.
const SNAPSHOT_AHEAD: u64 = 16 << 20;

pub struct JournalLog {
    jobs: LogQueue,
    shared: Arc<LogShared>,
    /// Records of this loop iteration, handed to the writer at its end.
    batch: Vec<u8>,
    snapshot_every: u64,
    /// Log position where the last snapshot began.
    snapshot_from: u64,
    snapshotting: bool,
    /// A claim was made in this loop iteration: its end asks for an fsync.
    sync_asked: bool,
}

impl JournalLog {
    pub(super) fn new(jobs: LogQueue, shared: Arc<LogShared>, snapshot_every: u64) -> Self {
        JournalLog {
            jobs,
            shared,
            batch: Vec::new(),
            snapshot_every,
            snapshot_from: 0,
            snapshotting: false,
            sync_asked: false,
        }
    }

    /// Appends a record whose payload `payload` writes; returns the log
    /// position where it ends.
    pub fn append(&mut self, payload: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let start = self.batch.len();
        record::encode_journal(&mut self.batch, payload);
        let len = (self.batch.len() - start) as u64;
        self.shared.appended.fetch_add(len, Ordering::AcqRel) + len
    }

    /// Why no write may be taken now (the disk refused the log, as the
    /// writer said at the end of the last loop iteration), if so.
    pub fn refusal(&self) -> Option<String> {
        self.shared.refusal()
    }

    /// The loop iteration ends: its records go to the writer, in one job,
    /// and the next iteration refuses writes if the disk refuses the log.
    pub fn end_batch(&mut self) {
        self.hand_over();
        if std::mem::take(&mut self.sync_asked) {
            self.jobs.send(Job::Sync);
        }
        let failed = self.shared.failed.load(Ordering::Acquire);
        self.shared.refusing.store(failed, Ordering::Release);
    }

    /// Has the writer fsync, whatever the policy, everything appended up to
    /// the end of this loop iteration: what a claim made in it waits for
    /// ([`super::Durable::wait_for_everything`] reads the position when the
    /// reactor takes the claim, later in the iteration).
    pub fn sync(&mut self) {
        self.sync_asked = true;
    }

    /// Has the writer fsync at once, whatever the policy, everything
    /// appended so far, and holds every reply made from now on until it
    /// has (a clock reservation: see [`super::Durable::wait_for`]).
    pub fn must_sync(&mut self) {
        self.shared.hold_replies_for_appended();
        self.sync_asked = true;
    }

    fn hand_over(&mut self) {
        self.jobs.append(&mut self.batch);
    }

    /// Whether a snapshot should begin: none is under way and the log grew
    /// by `snapshot_every` since the last began.
    pub fn snapshot_due(&self) -> bool {
        let appended = self.shared.appended.load(Ordering::Relaxed);
        !self.snapshotting && appended - self.snapshot_from >= self.snapshot_every
    }

    /// A snapshot begins: the records so far go to the log it replaces,
    /// and what is appended from now on to the log that follows it.
    pub fn begin_snapshot(&mut self) {
        self.snapshot_from = self.shared.appended.load(Ordering::Relaxed);
        self.hand_over();
        self.jobs.send(Job::BeginSnapshot);
        let mut begin = Vec::new();
        Record::SnapshotBegin { flush_at: None }.encode(&mut begin);
        self.snapshot_part(begin, false);
        self.snapshotting = true;
    }

    /// Whether the writer keeps up with the snapshot's parts.
    pub fn snapshot_has_room(&self) -> bool {
        let shared = &self.shared;
        let behind = shared.snapshot_queued.load(Ordering::Relaxed)
            - shared.snapshot_written.load(Ordering::Acquire);
        behind <= SNAPSHOT_AHEAD
    }

    /// Hands the writer a part of the snapshot: records encoded with
    /// [`Record::encode`] or [`record::encode_journal`]. With `last`, the
    /// snapshot ends with it, and replaces the last one once durable.
    pub fn snapshot_part(&mut self, mut part: Vec<u8>, last: bool) {
        if last {
            Record::SnapshotEnd.encode(&mut part);
            self.snapshotting = false;
            // The snapshot's parts were taken at different times: they
            // stand only with every record appended before the last one,
            // which the writer puts on disk before it installs it.
            self.hand_over();
        }
        self.shared
            .snapshot_queued
            .fetch_add(part.len() as u64, Ordering::Relaxed);
        self.jobs.send(match last {
            true => Job::EndSnapshot(part),
            false => Job::Snapshot(part),
        });
    }
}

impl Drop for JournalLog {
    /// The last records go to the writer, which ends once they are in.
    fn drop(&mut self) {
        self.hand_over();
    }
}
