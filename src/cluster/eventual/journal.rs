//! What a node of an eventual or causal cluster with a `data_dir` logs, and
//! how it comes back: every version it makes or applies (key, stamp, state
//! and cause) and, each heartbeat it changed, the coverage it tells its
//! peers, as records of the node's log (`durability/`), replayed at start
//! before the node serves.
//!
//! ```text
//!  local write / eviction / peer's newer version ──► version record ──► log
//!  heartbeat, coverage changed ──► coverage record (numbered) ──► log
//!  start: snapshot, log.old, log ──► each version applied as a peer's
//!         (newest stamp wins) ──► coverage of the highest number ──► serve
//! ```
//!
//! Why a restart neither loses an acknowledged write, nor brings back a
//! deleted key, nor tells peers it holds what it does not:
//!
//! 1. Every version the replica makes (a client's write, an eviction, a
//!    causal node's delete of what it cannot keep) or applies (a peer's,
//!    newer than what it held) is appended in the work that made it, and
//!    the reactor holds a write's reply until the log has what was
//!    appended before it (`durability::Durable::wait_for`): a write is
//!    acknowledged only once its version is written (fsynced with `fsync =
//!    always`). The store side runs on the reactor (the embedded store), so
//!    nothing is applied that a later record could precede.
//!
//!    A read's reply waits for less: for the end of the last version record
//!    of each key it names, and of the last flush ([`Journal::shown_by`];
//!    `durability/shown.rs` notes them as they are appended). That is all
//!    it shows. A key's state here is the newest version the store took,
//!    and every version taken is logged in the work that took it (so is
//!    the delete an eviction, or a causal node's unkept write, makes of a
//!    key), so the key's last record holds the state the read saw; a key
//!    with no record since the start shows what recovery gave back, which
//!    is on disk. A crash that keeps the log that far replays that record
//!    and the flush, and a later record of the key only if it was made
//!    after the read; replay keeps the newest stamp (point 2), so the key
//!    comes back as read. In causal mode what the read saw depends only on
//!    versions taken before it, in earlier work, logged below it. What the
//!    store drops with no record (an expired item) is dead by times the
//!    log holds. A read that shows this node's stamp (`gets`) waits for its
//!    clock reservation too (point 8). So a `get` of a key no pending
//!    record touches leaves at once, however many writes wait for the disk.
//! 2. Replay applies each version as a peer's (`VersionLog::apply_remote`:
//!    only a newer stamp replaces what is held), so the order the files are
//!    read in, and a version read twice, change nothing: each key ends with
//!    the newest version logged, a tombstone included, which keeps a peer's
//!    older value of a deleted key from coming back through anti-entropy.
//!    A tombstone the node had forgotten (every peer had synced past it)
//!    is gone after a snapshot too, as it was in memory.
//! 3. A coverage record says which origins' writes this node holds, and
//!    comes after the versions it covers (they were appended when applied,
//!    in earlier work): a crash keeps a prefix of the log, so the recovered
//!    coverage claims no write the node lost with the rest. Recovery takes
//!    the record with the highest number, whatever file it is in: a
//!    snapshot begins with the coverage of its start, and the log that
//!    follows it with the same record, so `log.old` (older) read after the
//!    snapshot does not take it back. A coverage claims less than is held
//!    at worst, which costs a peer's answer some versions, never safety.
//! 4. The restarted node is a new run: a new origin with new numbers, and
//!    the engine's clock starts above every recovered stamp and clock
//!    reservation (point 8), so a new write never loses to one the node
//!    made before, nor shares its stamp.
//! 5. A snapshot is a sync answer to nobody, in parts: each key's version
//!    current when its part is taken (as new as at the snapshot's start, or
//!    newer), while everything appended meanwhile goes to the new log; by
//!    (2), replaying the snapshot then the log ends with the newest of each.
//!    Parts taken at different times stand only with the records appended
//!    before the last one: the writer fsyncs those before it installs the
//!    snapshot, under every policy (`JournalLog::snapshot_part`,
//!    `writer.rs`), and installs none after an fsync failed.
//! 6. A node forgets a tombstone once every peer has said it synced past
//!    it, and a peer learns how far from the node's sync answers. Both
//!    words (`Report::SyncApplied`, `Report::Collected`) reach the engine
//!    only once everything appended before them is fsynced, under every
//!    policy (`Replica::report_waits`, held by the server like a reply; the
//!    replica asks the writer for that fsync), and a node whose disk
//!    refuses the log answers no sync request. So no crash, and no power
//!    cut, takes back a tombstone that peers were let forget.
//! 7. A logged version the store refuses at replay leaves a hole in what
//!    the node claims (`Gate::lost`), written into the snapshot recovery
//!    leaves; a causal node refuses to start instead, since it would show
//!    what followed that write without it.
//!
//! 8. A stamp of this node goes out (in a reply's cas unique, or to a
//!    peer) only once the log holds a *clock reservation* at or above its
//!    time, fsynced under every policy: the first stamp past the last
//!    reservation appends one [`RESERVE`] ahead and has the writer fsync it
//!    at once ([`Journal::reserve`]); the reactor holds replies until then
//!    (`JournalLog::must_sync`), and pushes too (`Replica::report_waits`).
//!    A snapshot carries the reservation of its start (after a restart,
//!    before the first stamp, the one recovery left), and the one recovery
//!    leaves the highest time replayed. So a power cut that loses writes
//!    stamped ahead of the wall clock (where the clock starts) keeps a
//!    reservation above them: without it a restarted node could stamp a
//!    new write as one a peer or a client already holds, and a client's
//!    old `cas` would be `STORED`, and two versions of one stamp would never
//!    converge.
//!
//! In causal mode, what replay rebuilds is a prefix of what the node had
//! applied, in the order it applied it, which respected causality; peers'
//! writes that waited here were not applied and are not logged: they come
//! again with the next sync.

use std::io;

use super::message::{put_version, read_version};
use super::origins::{Cause, Coverage, Origin};
use super::version::{State, Version};
use super::version_log::VersionLog;
use crate::cluster::wire::{self, Reader, WireError};
use crate::durability::record::encode_journal;
use crate::durability::shown::Shown;
use crate::durability::JournalLog;
use crate::store::{StoreResult, UnixTime, VersionedStore};

const VERSION: u8 = 1;
const COVERAGE: u8 = 2;
const CLOCK: u8 = 3;

/// How far past a stamp's time a clock reservation reaches, as the one-node
/// log's (`durability::store::RESERVE`, in cas uniques): the clock ticks
/// once per stamp (it starts at the wall time but does not follow it), so
/// one fsync per million stamps, or per jump to a peer's clock far ahead.
pub const RESERVE: u64 = 1 << 20;

/// About the bytes of versions one snapshot part holds.
const PART_BYTES: usize = 1 << 20;

/// A record of the journal, read back.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Version(Version),
    /// The coverage told to peers, numbered: the highest number is the latest.
    Coverage {
        number: u64,
        coverage: Coverage,
    },
    /// No stamp of this node above this time went out before this record
    /// was fsynced (point 8).
    Clock {
        reserved: u64,
    },
}

/// The log of an eventual node's store side.
pub struct Journal {
    log: JournalLog,
    /// The coverage last logged, and the number of the next record of it.
    logged: Coverage,
    next_number: u64,
    /// Stamp times up to this are reserved (on disk, or being fsynced).
    reserved: u64,
    snapshot: Option<Snapshot>,
    /// Where each key's last version record ends, and the last flush's:
    /// what a read waits for (point 1).
    shown: Shown,
}

/// A snapshot under way: how far through the change log its parts are, and
/// where that stood when it began.
struct Snapshot {
    upto: u64,
    end: u64,
}

impl Journal {
    /// Logs through `log`, after a replay that `replayed` describes.
    pub fn new(log: JournalLog, replayed: &Replayed) -> Journal {
        let (number, logged) = replayed.coverage.clone().unwrap_or_default();
        Journal {
            log,
            logged,
            next_number: number + 1,
            // What the snapshot recovery left reserved: a snapshot taken
            // before the first stamp must carry it on.
            reserved: replayed.highest_ts,
            snapshot: None,
            shown: Shown::new(),
        }
    }

    /// Has the log fsynced soon, whatever the policy.
    pub fn sync(&mut self) {
        self.log.sync();
    }

    /// Why no write may be taken now, if the disk refuses the log.
    pub fn refusal(&self) -> Option<String> {
        self.log.refusal()
    }

    /// Reserves stamp times past `ts` before a stamp of this node at `ts`
    /// goes out, if the last reservation does not reach it (point 8).
    pub fn reserve(&mut self, ts: u64) {
        if ts <= self.reserved {
            return;
        }
        self.reserved = ts.saturating_add(RESERVE);
        let reserved = self.reserved;
        self.log.append(|out| encode_clock(out, reserved));
        self.log.must_sync();
    }

    pub fn version(&mut self, version: &Version) {
        let end = self.log.append(|out| encode_version(out, version));
        match version.state {
            State::Flushed => self.shown.wrote_flush(end),
            State::Present(_) | State::Deleted => self.shown.wrote(&version.key, end),
        }
    }

    /// How far into the log a read of `keys` shows it (point 1): the end
    /// of the last version record of each, and of the last flush.
    pub fn shown_by<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) -> u64 {
        keys.into_iter().for_each(|key| self.shown.show(key));
        self.shown.take()
    }

    /// Logs `coverage` if it is not what was logged last.
    pub fn coverage(&mut self, coverage: &Coverage) {
        if *coverage != self.logged {
            self.append_coverage(coverage.clone());
        }
    }

    fn append_coverage(&mut self, coverage: Coverage) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        self.log
            .append(|out| encode_coverage(out, number, &coverage));
        self.logged = coverage;
        number
    }

    /// The loop iteration ends: its records go to the writer.
    pub fn end_batch(&mut self) {
        self.log.end_batch();
    }

    /// Begins a snapshot when the log has grown enough, or writes the next
    /// part of one: whether more is to come, and the causes of versions
    /// the store no longer had (which the replica must not claim).
    pub fn maintain(
        &mut self,
        versions: &VersionLog,
        coverage: &Coverage,
        store: &mut dyn VersionedStore,
        now: UnixTime,
    ) -> StoreResult<(bool, Vec<Cause>)> {
        let snapshot = match self.snapshot.take() {
            Some(snapshot) => snapshot,
            None if self.log.snapshot_due() => self.begin_snapshot(versions, coverage),
            None => return Ok((false, Vec::new())),
        };
        if !self.log.snapshot_has_room() {
            self.snapshot = Some(snapshot);
            return Ok((true, Vec::new()));
        }
        let changes = versions.since(store, snapshot.upto, PART_BYTES, &Coverage::default(), now);
        let changes = match changes {
            Ok(changes) => changes,
            Err(e) => {
                // Tried again at the next tick, from where it stood.
                self.snapshot = Some(snapshot);
                return Err(e);
            }
        };
        let mut part = Vec::new();
        for version in &changes.versions {
            encode_journal(&mut part, |out| encode_version(out, version));
        }
        let last = changes.upto >= snapshot.end;
        self.log.snapshot_part(part, last);
        if !last {
            self.snapshot = Some(Snapshot {
                upto: changes.upto,
                end: snapshot.end,
            });
        }
        Ok((!last, changes.lost))
    }

    /// The log so far goes to `log.old`; the snapshot and the new log both
    /// begin with the coverage of now (see the module doc, point 3), and
    /// the snapshot with the clock reservation it replaces (point 8).
    fn begin_snapshot(&mut self, versions: &VersionLog, coverage: &Coverage) -> Snapshot {
        self.log.begin_snapshot();
        let number = self.append_coverage(coverage.clone());
        let mut part = Vec::new();
        encode_journal(&mut part, |out| encode_coverage(out, number, coverage));
        write_clock(&mut part, self.reserved);
        self.log.snapshot_part(part, false);
        Snapshot {
            upto: 0,
            end: versions.last_seq(),
        }
    }
}

/// What a replay gathered besides the versions it applied.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The coverage record with the highest number, and that number.
    pub coverage: Option<(u64, Coverage)>,
    /// The highest stamp time of a version replayed, or reserved.
    pub highest_ts: u64,
}

impl Replayed {
    /// Reads `record`; returns the version in it, if it holds one.
    pub fn read(&mut self, record: &[u8]) -> io::Result<Option<Version>> {
        let entry = decode(record).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("a version record: {e}"))
        })?;
        match entry {
            Entry::Version(version) => {
                self.highest_ts = self.highest_ts.max(version.stamp.ts);
                Ok(Some(version))
            }
            Entry::Coverage { number, coverage } => {
                if self.coverage.as_ref().is_none_or(|(n, _)| number > *n) {
                    self.coverage = Some((number, coverage));
                }
                Ok(None)
            }
            Entry::Clock { reserved } => {
                self.highest_ts = self.highest_ts.max(reserved);
                Ok(None)
            }
        }
    }
}

/// Appends to `out` the records of every version `versions` holds: the
/// body of the one snapshot recovery leaves. Returns the causes of those
/// the store no longer had (left out, so not to be claimed).
pub fn write_versions(
    versions: &VersionLog,
    store: &mut dyn VersionedStore,
    now: UnixTime,
    out: &mut Vec<u8>,
) -> StoreResult<Vec<Cause>> {
    let (mut upto, mut lost) = (0, Vec::new());
    loop {
        let changes = versions.since(store, upto, PART_BYTES, &Coverage::default(), now)?;
        for version in &changes.versions {
            encode_journal(out, |out| encode_version(out, version));
        }
        lost.extend(changes.lost);
        if changes.upto >= changes.last {
            return Ok(lost);
        }
        upto = changes.upto;
    }
}

/// Appends to `out` the record of `coverage`, numbered `number`. Where in
/// a snapshot it goes does not matter: the highest number wins.
pub fn write_coverage(out: &mut Vec<u8>, number: u64, coverage: &Coverage) {
    encode_journal(out, |out| encode_coverage(out, number, coverage));
}

/// Appends to `out` the record of a clock reservation up to `reserved`.
pub fn write_clock(out: &mut Vec<u8>, reserved: u64) {
    encode_journal(out, |out| encode_clock(out, reserved));
}

fn encode_clock(out: &mut Vec<u8>, reserved: u64) {
    out.push(CLOCK);
    wire::put_u64(out, reserved);
}

fn encode_version(out: &mut Vec<u8>, version: &Version) {
    out.push(VERSION);
    put_version(out, version);
    match &version.cause {
        Some(cause) => {
            out.push(1);
            wire::put_u32(out, cause.origin.node);
            wire::put_u64(out, cause.origin.run);
            wire::put_u64(out, cause.seq);
        }
        None => out.push(0),
    }
}

fn encode_coverage(out: &mut Vec<u8>, number: u64, coverage: &Coverage) {
    out.push(COVERAGE);
    wire::put_u64(out, number);
    coverage.encode(out);
}

pub fn decode(record: &[u8]) -> Result<Entry, WireError> {
    let mut r = Reader::new(record);
    let entry = match r.u8()? {
        VERSION => {
            let mut version = read_version(&mut r)?;
            version.cause = match r.u8()? {
                0 => None,
                1 => Some(Cause {
                    origin: Origin {
                        node: r.u32()?,
                        run: r.u64()?,
                    },
                    seq: r.u64()?,
                    deps: None,
                }),
                _ => return Err(WireError::Malformed("version cause")),
            };
            Entry::Version(version)
        }
        COVERAGE => Entry::Coverage {
            number: r.u64()?,
            coverage: Coverage::decode(&mut r)?,
        },
        CLOCK => Entry::Clock { reserved: r.u64()? },
        _ => return Err(WireError::Malformed("journal record kind")),
    };
    match r.is_empty() {
        true => Ok(entry),
        false => Err(WireError::Malformed("bytes after a journal record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::version::State;
    use crate::cluster::Stamp;
    use crate::store::{Entry as Item, Expiry};

    #[test]
    fn records_read_back_as_written() {
        let origin = Origin { node: 2, run: 77 };
        let versions = [
            Version {
                key: b"k".to_vec(),
                stamp: Stamp { ts: 9, node: 2 },
                state: State::Present(Item {
                    flags: 5,
                    expiry: Expiry::At(1_700_000_000),
                    value: b"value".to_vec(),
                }),
                cause: Some(Cause {
                    origin,
                    seq: 3,
                    deps: None,
                }),
            },
            Version {
                key: b"gone".to_vec(),
                stamp: Stamp { ts: 10, node: 1 },
                state: State::Deleted,
                cause: None,
            },
        ];
        for version in versions {
            let mut out = Vec::new();
            encode_version(&mut out, &version);
            assert_eq!(decode(&out), Ok(Entry::Version(version)));
        }
        let coverage = Coverage::from_entries(vec![(origin, 3)]);
        let mut out = Vec::new();
        encode_coverage(&mut out, 4, &coverage);
        assert_eq!(
            decode(&out),
            Ok(Entry::Coverage {
                number: 4,
                coverage
            })
        );
        out.push(0);
        assert!(decode(&out).is_err(), "a byte too many is not a record");
        let mut out = Vec::new();
        encode_clock(&mut out, 1 << 50);
        assert_eq!(decode(&out), Ok(Entry::Clock { reserved: 1 << 50 }));
    }

    #[test]
    fn the_highest_numbered_coverage_wins_in_any_order() {
        let origin = Origin { node: 2, run: 77 };
        let mut replayed = Replayed::default();
        for (number, seq) in [(5, 50), (3, 30), (4, 40)] {
            let mut out = Vec::new();
            let coverage = Coverage::from_entries(vec![(origin, seq)]);
            encode_coverage(&mut out, number, &coverage);
            assert_eq!(replayed.read(&out).unwrap(), None);
        }
        let (number, coverage) = replayed.coverage.expect("read");
        assert_eq!((number, coverage.get(origin)), (5, 50));
    }
}
