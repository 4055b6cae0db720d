//! Durability for a node with a `data_dir` on the embedded store: a
//! write-ahead log of every change, snapshots that keep the log short, and
//! recovery before the node serves. A one-node cluster logs its store's
//! changes as key states ([`DurableStore`]), a node of a strong cluster of
//! several the calls to its ordered store; a node of an eventual or
//! causal cluster logs its versions instead, through a [`JournalLog`], in
//! records of its own that only it reads back ([`Journaled`]: see
//! `cluster/eventual/journal.rs`). Both share the writer thread, the file
//! layout, the record framing and the replies held until the log is far
//! enough.
//!
//! ```text
//!  start:   lock LOCK ─► IDENTITY: ours? ─► recover: snapshot, log.old, log ─► store ─► compact ─► serve
//!  serving: reactor: DurableStore (changes as key states) ── Job ──► writer thread
//!           reactor ◄── written buffers, to be filled again ◄───────────┤
//!           reactor ◄── Waker ◄── durable position / failure ◄──────────┘
//!           a reply waits in `held` until the log is durable far enough
//! ```
//!
//! - `identity.rs`: whose the directory is (cluster, node, kind of log),
//!   checked at every start; another's is refused.
//! - `record.rs`: the checksummed record format; a torn tail reads as a prefix.
//! - `call.rs`: the calls a strong cluster's node logs, and why their
//!   replay gives back its ordered store exactly.
//! - `writer.rs`: the log thread: group commit, fsync policy, snapshot files.
//! - `store.rs`: the store wrapper on the reactor that queues the records.
//! - `shown.rs`: how far into the log a reply of that store shows it.
//! - `journal.rs`: the log as a store side with records of its own sees it.
//! - `recover.rs`: replay at start, and why its order is right.
//!
//! Every failure at start (opening, checking, replaying the directory,
//! starting its log) is a [`DataDirError`] naming the directory, which the
//! command line tells from a failure to serve.
//!
//! What each `fsync` policy promises is what the reactor holds replies
//! for ([`Durable::wait_for`]): no reply leaves before every change it
//! shows (reads included, so nobody sees a value a crash could take back)
//! is on disk with `always`, or handed to the kernel with `everysec` and
//! `no` (so a crash of the process loses nothing acknowledged; one of the
//! machine loses up to about a second of writes with `everysec`, or what
//! the kernel had not written back with `no`). That is the last change of
//! each key the reply names and the last flush (`shown.rs`; on a strong
//! cluster's node, the mark after it), so a read of a key no pending write
//! touched is answered at once. A write's reply on a cluster's node waits
//! for every change made before it.

mod call;
pub mod identity;
mod journal;
pub mod record;
mod recover;
pub mod shown;
mod stall;
mod store;
mod writer;

pub use identity::{Identity, LogKind};
pub use journal::JournalLog;
pub use recover::{Marked, Recovered};
pub use store::DurableStore;
pub use writer::LogShared;

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use mio::Waker;

use crate::config::{ClusterConfig, Fsync};
use crate::store::{unix_now, UnixTime, VersionedStore};
use record::Under;
use stall::Stall;
use writer::{LogIntake, LogQueue, Writer};

/// A failure of the data directory at start (opening, checking,
/// replaying it, or starting its log), naming it: "data directory
/// `path`: what failed". Carried inside an `io::Error`, so that the
/// command line can tell it from a failure to serve.
#[derive(Debug)]
pub struct DataDirError {
    pub dir: PathBuf,
    pub error: io::Error,
}

impl DataDirError {
    /// `error` of the directory `dir`, as an `io::Error` of its kind.
    fn at(dir: &Path, error: io::Error) -> io::Error {
        let kind = error.kind();
        let dir = dir.to_path_buf();
        io::Error::new(kind, DataDirError { dir, error })
    }

    /// The `DataDirError` inside `error`, if it is one.
    pub fn of(error: &io::Error) -> Option<&DataDirError> {
        error.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data directory {}: {}", self.dir.display(), self.error)
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A data directory recovered into its store, not yet logging.
pub struct Recovering {
    dir: PathBuf,
    lock: File,
    store: Box<dyn VersionedStore>,
    recovered: Recovered,
    fsync: Fsync,
    snapshot_every: u64,
    shared: Arc<LogShared>,
    jobs: LogQueue,
    queue: LogIntake,
    /// A store side logs its own records: the store is not wrapped.
    journaled: bool,
    /// A strong cluster's marked log, and how recovery left it.
    marked: Option<Marked>,
}

/// A store side that logs records of its own rather than the store's key
/// states (eventual mode's versions, with their stamps and tombstones),
/// through a [`JournalLog`]: it replays them at start, and then says its
/// whole state, which recovery leaves as the one snapshot.
pub trait Journaled {
    /// Applies `record`, one of its own read back at start, with `store`.
    fn replay(
        &mut self,
        store: &mut dyn VersionedStore,
        record: &[u8],
        now: UnixTime,
    ) -> io::Result<()>;

    /// Every record is replayed: appends its whole state to `out`, as
    /// records ([`record::encode_journal`]).
    fn recovered(
        &mut self,
        store: &mut dyn VersionedStore,
        now: UnixTime,
        out: &mut Vec<u8>,
    ) -> io::Result<()>;
}

impl Recovering {
    /// Takes `dir`'s lock, checks it is node `node`'s of a one-node
    /// `cluster` ([`identity`]) and replays it into `store` (empty).
    pub fn open(
        dir: &Path,
        node: u32,
        cluster: &ClusterConfig,
        store: Box<dyn VersionedStore>,
    ) -> io::Result<Recovering> {
        Recovering::open_at(dir, node, cluster, store, unix_now())
    }

    /// [`Recovering::open`] with the store's clock at `now`.
    fn open_at(
        dir: &Path,
        node: u32,
        cluster: &ClusterConfig,
        store: Box<dyn VersionedStore>,
        now: UnixTime,
    ) -> io::Result<Recovering> {
        let me = Identity::of(cluster, node, LogKind::OneNode);
        Recovering::replay(dir, &me, cluster, store, |dir, store| {
            recover::recover(dir, store, now)
        })
    }

    /// Takes `dir`'s lock and replays the marked log of a node of a strong
    /// cluster of several into `store` (empty), up to its last mark
    /// ([`Recovered::delivered`]); its store will mark its log too.
    pub fn open_marked(
        dir: &Path,
        node: u32,
        cluster: &ClusterConfig,
        store: Box<dyn VersionedStore>,
    ) -> io::Result<Recovering> {
        let me = Identity::of(cluster, node, LogKind::Marked);
        let mut recovering = Recovering::replay(dir, &me, cluster, store, |dir, store| {
            let configured = Under {
                cap: cluster.memory_limit_bytes,
                policy: store.policy(),
            };
            recover::recover_marked(dir, store, configured, unix_now())
        })?;
        let recovered = &recovering.recovered;
        recovering.marked = Some(Marked {
            delivered: recovered.delivered.unwrap_or(0),
            generation: recovered.generation,
            exact: recovered.exact,
        });
        Ok(recovering)
    }

    /// What recovery found.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Takes `dir`'s lock and replays it into `journaled`, a store side
    /// that logs its own records, and its `store` (empty).
    pub fn open_journaled(
        dir: &Path,
        node: u32,
        cluster: &ClusterConfig,
        store: Box<dyn VersionedStore>,
        journaled: &mut dyn Journaled,
    ) -> io::Result<Recovering> {
        let me = Identity::of(cluster, node, LogKind::Journaled);
        Recovering::replay(dir, &me, cluster, store, |dir, store| {
            recover::recover_journaled(dir, store, journaled, unix_now())
        })
    }

    /// Takes `dir`'s lock, checks it is `me`'s, and replays it into
    /// `store` with `recover`; an error names the directory
    /// ([`DataDirError`]).
    fn replay(
        dir: &Path,
        me: &Identity,
        cluster: &ClusterConfig,
        store: Box<dyn VersionedStore>,
        recover: impl FnOnce(&Path, &mut dyn VersionedStore) -> io::Result<Recovered>,
    ) -> io::Result<Recovering> {
        Recovering::replay_in(dir, me, cluster, store, recover)
            .map_err(|e| DataDirError::at(dir, e))
    }

    fn replay_in(
        dir: &Path,
        me: &Identity,
        cluster: &ClusterConfig,
        mut store: Box<dyn VersionedStore>,
        recover: impl FnOnce(&Path, &mut dyn VersionedStore) -> io::Result<Recovered>,
    ) -> io::Result<Recovering> {
        if dir.exists() && !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "not a directory",
            ));
        }
        std::fs::create_dir_all(dir)?;
        let lock = File::create(dir.join("LOCK"))?;
        lock.try_lock()
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "in use by another node"))?;
        let claimed = identity::check(dir, me)?;
        let earlier = ["snapshot", "log.old", "log"]
            .iter()
            .any(|name| dir.join(name).exists());
        if !claimed && !earlier {
            identity::write(dir, me)?;
            log::info!("data directory {}: new, for {me}", dir.display());
        }
        // A replay of key states may hold, for a moment, more than the cap
        // (a key a later record removes), and must not evict: the log holds
        // what the store evicted, where it did (a removal ahead of the write
        // that made room). (A marked log's calls do evict: their replay
        // sets the cap each log was made under, `recover_marked`.) Above the
        // cap afterwards (a lowered one), the store drains the surplus a
        // little with each write.
        let unlimited = store.set_memory_limit(u64::MAX);
        let recovered = recover(dir, store.as_mut())?;
        if !claimed && earlier {
            identity::write(dir, me)?;
            log::info!(
                "data directory {}: written by an earlier build, without an {}; adopted for {me}",
                dir.display(),
                identity::FILE
            );
        }
        unlimited
            .and_then(|()| store.set_memory_limit(cluster.memory_limit_bytes))
            .map_err(|e| io::Error::other(format!("memory limit: {e:?}")))?;
        log::info!(
            "data directory {}: replayed {} bytes, dropped {}",
            dir.display(),
            recovered.replayed,
            recovered.dropped
        );
        let held = store.stats();
        if held.bytes > held.limit_bytes {
            log::warn!(
                "data directory {}: it holds {} bytes, above memory_limit_mb ({} bytes): \
                 with eviction = lru writes evict the surplus a little at a time; with \
                 eviction = none new writes are refused until enough is deleted",
                dir.display(),
                held.bytes,
                held.limit_bytes
            );
        }
        let (jobs, queue) = writer::log_queue();
        Ok(Recovering {
            dir: dir.to_path_buf(),
            lock,
            store,
            recovered,
            fsync: cluster.fsync,
            snapshot_every: cluster.snapshot_every,
            shared: Arc::new(LogShared::after_start(dir)),
            jobs,
            queue,
            journaled: false,
            marked: None,
        })
    }

    /// The log the store side that [`Recovering::open_journaled`] replayed
    /// logs through, from the start.
    pub fn journal_log(&mut self) -> JournalLog {
        self.journaled = true;
        JournalLog::new(self.jobs.clone(), self.shared.clone(), self.snapshot_every)
    }

    /// The highest cas unique the node has handed out or reserved.
    pub fn highest_cas(&self) -> u64 {
        self.recovered.highest_cas
    }

    /// Starts the log writer (waking the reactor through `waker`); returns
    /// the reactor's handle and the store to run: one that logs its
    /// changes, unless a store side logs its own records.
    pub fn start(self, waker: Arc<Waker>) -> io::Result<(Durable, Box<dyn VersionedStore>)> {
        if !self.journaled {
            let (durable, store) = self.start_logging(waker)?;
            return Ok((durable, Box::new(store)));
        }
        let log = (self.fsync, self.shared);
        let durable = Durable::start(
            &self.dir,
            self.lock,
            log,
            self.recovered,
            (waker, self.queue),
        );
        let durable = durable.map_err(|e| DataDirError::at(&self.dir, e))?;
        Ok((durable, self.store))
    }

    /// [`Recovering::start`] for a cluster whose store logs its changes
    /// (one node, or a strong cluster's marked log): the store wrapped.
    fn start_logging(self, waker: Arc<Waker>) -> io::Result<(Durable, DurableStore)> {
        let store = DurableStore::new(
            self.store,
            self.jobs,
            self.shared.clone(),
            self.recovered.highest_cas,
            self.snapshot_every,
        );
        let (store, marked) = match self.marked {
            Some(marked) => (store.marked(marked), true),
            None => (store, false),
        };
        let log = (self.fsync, self.shared);
        let durable = Durable::start(
            &self.dir,
            self.lock,
            log,
            self.recovered,
            (waker, self.queue),
        );
        let mut durable = durable.map_err(|e| DataDirError::at(&self.dir, e))?;
        durable.marked = marked;
        Ok((durable, store))
    }
}

/// Bytes of records a strong cluster's node keeps for a disk that refuses
/// its log before it stops ([`Durable::must_stop`]); the same as
/// the engine's queue limit, the memory a slow member may cost its peers.
pub const BACKLOG_LIMIT: u64 = 64 << 20;

/// What a store side's report waits for in the log before the engine hears
/// it (`cluster::Replica::report_waits`; [`Durable::report_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportWait {
    Nothing,
    /// The clock reservation above the stamps it shows peers (versions
    /// this node made, to push), fsynced.
    Reservation,
    /// Everything appended before it, fsynced, and every report held
    /// before it: it tells peers what this node holds, so that they may
    /// forget what it covers.
    Everything,
    /// Everything appended before it, as a write's reply waits for it (on
    /// disk with `fsync = always`, handed to the kernel otherwise), and
    /// every report held before it: it hands a peer this node's store in
    /// place of the peer's own, whose log held what the peer answered.
    Logged,
}

/// The log's numbers, for `stats` and the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogNumbers {
    /// Bytes in the current `log` file.
    pub bytes: u64,
    pub fsyncs: u64,
    /// The disk refuses the log, or an fsync failed.
    pub failed: bool,
    /// The disk has taken none of the log for a while, as last checked
    /// ([`Durable::log_stuck`]).
    pub stalled: bool,
    /// The last whole snapshot: how many were written (the start's own
    /// included), its size, and when (unix time).
    pub snapshots_written: u64,
    pub snapshot_bytes: u64,
    pub snapshot_time: u64,
    /// What the start replayed, and dropped (a torn tail).
    pub recovered_bytes: u64,
    pub recovered_dropped_bytes: u64,
}

/// Log positions a reply waits for: handed to the kernel, and fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub written: u64,
    pub durable: u64,
}

/// The reactor's handle on the log: how far it is durable, what it holds
/// replies for, and its numbers for `stats`.
pub struct Durable {
    pub shared: Arc<LogShared>,
    pub fsync: Fsync,
    pub recovered: Recovered,
    writer: Option<JoinHandle<()>>,
    /// A strong cluster's marked log: its store never refuses a delivered
    /// write, so every reply waits for the log, and new writes are refused
    /// before they are ordered while the disk refuses it.
    marked: bool,
    /// Whether the log has stopped moving ([`Durable::log_stuck`]).
    stall: Stall,
    /// Held until the node exits: another node on the same directory
    /// would corrupt it.
    _lock: File,
}

impl Durable {
    /// Starts the writer of the log in `dir` (locked by `lock`) on the
    /// queue `jobs`, waking the reactor through `waker`.
    fn start(
        dir: &Path,
        lock: File,
        (fsync, shared): (Fsync, Arc<LogShared>),
        recovered: Recovered,
        (waker, jobs): (Arc<Waker>, LogIntake),
    ) -> io::Result<Durable> {
        let writer = Writer::spawn(dir, fsync, shared.clone(), waker, jobs)?;
        Ok(Durable {
            shared,
            fsync,
            recovered,
            writer: Some(writer),
            marked: false,
            stall: Stall::default(),
            _lock: lock,
        })
    }

    /// What a reply made now must wait for, if the log is not there yet:
    /// the log up to `shown`, how far the state it shows reaches
    /// (`shown.rs`), also while the disk refuses the log (a read of a key
    /// whose write was taken before goes on once that write is written,
    /// or times out). A store that does not tell (`None`) has its reply
    /// wait for everything appended so far; while its store side refuses
    /// writes (no write of this loop iteration was taken), only for a clock
    /// reservation, so reads go on, and a write taken before holds its
    /// reply until it is written, or times out.
    pub fn wait_for(&self, shown: Option<u64>) -> Option<Wait> {
        let wait = self.reply_wait(shown);
        (!self.reached(wait)).then_some(wait)
    }

    /// What a reply made now waits for ([`Durable::wait_for`]), reached or not.
    fn reply_wait(&self, shown: Option<u64>) -> Wait {
        let shared = &self.shared;
        if shared.fsync_failed.load(Ordering::Acquire) {
            // Nothing counts as durable any more (`must_stop`): no reply
            // leaves, reads included, until the node stops.
            return Wait {
                written: u64::MAX,
                durable: u64::MAX,
            };
        }
        let reserved = shared.must_sync.load(Ordering::Acquire);
        let refusing = shared.refusing.load(Ordering::Acquire) && !self.marked;
        let upto = match (shown, refusing) {
            (Some(shown), _) => shown,
            (None, false) => shared.appended.load(Ordering::Acquire),
            (None, true) => 0,
        };
        match self.fsync {
            Fsync::Always => Wait {
                written: upto,
                durable: upto.max(reserved),
            },
            Fsync::EverySec | Fsync::No => Wait {
                written: upto,
                durable: reserved,
            },
        }
    }

    /// Why a new write must be refused before it is ordered: a strong
    /// cluster's marked log that the disk refuses (its peers would apply
    /// the write; this node could not log it).
    pub fn intake_refusal(&self) -> Option<String> {
        self.shared
            .refusal()
            .filter(|_| self.marked)
            .map(|why| format!("data directory: {why}; not applied"))
    }

    /// Whether a strong cluster's marked log is stuck at `now`: the disk
    /// refuses it, or is stalled (`stall.rs`: it has taken none of what a
    /// reply made now waits for, so of what a snapshot's first part would
    /// wait for, [`ReportWait::Logged`], for a while). Any log's stall is
    /// noted for `stats` and logged when it begins and ends.
    pub fn log_stuck(&mut self, now: Instant) -> bool {
        let shared = &self.shared;
        let behind = !self.reached(self.reply_wait(None));
        let positions = (
            shared.written.load(Ordering::Acquire),
            shared.durable.load(Ordering::Acquire),
        );
        let was = self.stall.is_stalled();
        let stalled = self.stall.stalled(behind, positions, now);
        match (was, stalled) {
            (false, true) => log::warn!(
                "data directory: the disk has taken none of the log for {} s (stalled?); \
                 replies that wait for it wait{}",
                stall::STALL.as_secs(),
                match self.marked {
                    true => ", and a peer that needs this node's store is handed another's",
                    false => "",
                }
            ),
            (true, false) => log::info!("data directory: the log moves again"),
            _ => {}
        }
        self.marked && (stalled || shared.refusing.load(Ordering::Acquire))
    }

    /// The log's numbers now.
    pub fn numbers(&self) -> LogNumbers {
        let shared = &self.shared;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        LogNumbers {
            bytes: load(&shared.log_bytes),
            fsyncs: load(&shared.fsyncs),
            failed: shared.failure().is_some(),
            stalled: self.stall.is_stalled(),
            snapshots_written: load(&shared.snapshots),
            snapshot_bytes: load(&shared.snapshot_bytes),
            snapshot_time: load(&shared.snapshot_at),
            recovered_bytes: self.recovered.replayed,
            recovered_dropped_bytes: self.recovered.dropped,
        }
    }

    /// Why the node must stop, if it must. After a failed fsync, any node:
    /// the kernel may have dropped what it could not write, so nothing
    /// past the last good fsync can be promised on disk again, nor served
    /// (a read would show what a restart may not have); a restart replays
    /// what the disk holds (etcd and PostgreSQL stop for the same reason).
    /// A strong cluster's node also stops when its log can no longer
    /// catch up: it cannot refuse what the cluster delivers (its peers
    /// apply it), and the disk has refused the log so long that the
    /// delivered writes waiting for it pass [`BACKLOG_LIMIT`] bytes. Its
    /// log on disk holds a prefix up to a mark, and nothing it did not log
    /// was answered (replies wait for the log), so its peers, a majority,
    /// hold all that counts.
    pub fn must_stop(&self) -> Option<String> {
        let shared = &self.shared;
        let restart = match self.marked {
            true => "restart the node once the disk takes writes, and it is handed what it missed",
            false => "restart the node once the disk works, and it recovers what the disk holds",
        };
        if shared.fsync_failed.load(Ordering::Acquire) {
            return Some(format!(
                "data directory: an fsync failed (the kernel may have dropped what it held): \
                 stopping; {restart}"
            ));
        }
        if !self.marked {
            return None;
        }
        let backlog = (shared.appended.load(Ordering::Acquire))
            .saturating_sub(shared.written.load(Ordering::Acquire));
        let why = shared.refusal().filter(|_| backlog > BACKLOG_LIMIT)?;
        Some(format!(
            "data directory: {why}; {} MiB of delivered writes wait for the log (at most {} MiB \
             are kept): stopping; {restart}",
            backlog >> 20,
            BACKLOG_LIMIT >> 20
        ))
    }

    /// What a report that tells peers what this node holds must wait for:
    /// everything appended so far on disk, under every policy (the store
    /// side asked the writer to fsync it: `JournalLog::sync`), also while
    /// the disk refuses the log. A power cut must not take back what peers
    /// were told, or they forget tombstones this node comes back without.
    pub fn wait_for_everything(&self) -> Wait {
        let appended = self.shared.appended.load(Ordering::Acquire);
        Wait {
            written: appended,
            durable: appended,
        }
    }

    /// What a report that shows peers this node's stamps waits for: the
    /// last clock reservation, fsynced.
    pub fn wait_for_reservation(&self) -> Wait {
        Wait {
            written: 0,
            durable: self.shared.must_sync.load(Ordering::Acquire),
        }
    }

    /// What a store side's report that `waits` as said must wait for now,
    /// if the log is not there yet; `held`: reports are held before it (a
    /// claim goes after them; a push may overtake them, needing no order).
    pub fn report_wait(&self, waits: ReportWait, held: bool) -> Option<Wait> {
        let wait = match waits {
            ReportWait::Nothing => return None,
            ReportWait::Reservation => {
                let wait = self.wait_for_reservation();
                return (!self.reached(wait)).then_some(wait);
            }
            ReportWait::Everything => self.wait_for_everything(),
            ReportWait::Logged => self.reply_wait(None),
        };
        (held || !self.reached(wait)).then_some(wait)
    }

    /// Whether the log is where `wait` asks.
    pub fn reached(&self, wait: Wait) -> bool {
        let shared = &self.shared;
        shared.written.load(Ordering::Acquire) >= wait.written
            && shared.durable.load(Ordering::Acquire) >= wait.durable
    }
}

impl Drop for Durable {
    /// Waits for the writer's last commit; the store (its queue's sender)
    /// must be gone first.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Limits, StorageMode};
    use crate::store::memory::MemoryStore;
    use crate::store::{Entry, Eviction, Expiry, Head, KeysRef, Store, Write};

    const NOW: UnixTime = 1_700_000_000;
    const KEYS: u64 = 40;

    fn memory() -> Box<dyn VersionedStore> {
        Box::new(MemoryStore::new(64 << 20, Limits::default()))
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mckv-durability-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A xorshift generator, for the random commands of this module's tests.
    pub(super) struct Rng(pub(super) u64);

    impl Rng {
        pub(super) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One random command on one of the first `keys` keys, applied alike
    /// to `store` (at `now`, writing unique `cas`).
    fn random_op(rng: &mut Rng, keys: u64, store: &mut dyn Store, now: UnixTime, cas: u64) {
        let key = format!("k{}", rng.below(keys)).into_bytes();
        let expiry = match rng.below(4) {
            0 => Expiry::At(now + rng.below(20)),
            _ => Expiry::Never,
        };
        let value = vec![b'0' + rng.below(10) as u8; rng.below(3_000) as usize];
        let mode = match rng.below(6) {
            0 => StorageMode::Add,
            1 => StorageMode::Append,
            2 => StorageMode::Cas(cas - (1 << 16)),
            _ => StorageMode::Set,
        };
        let _ = match rng.below(20) {
            0..=9 => store
                .store(
                    Write {
                        mode,
                        key: &key,
                        flags: rng.below(5) as u32,
                        expiry,
                        value: &value,
                        cas,
                    },
                    now,
                )
                .map(drop),
            10 | 11 => store.delete(&key, now).map(drop),
            12 | 13 => store.arith(&key, true, 3, cas, now).map(drop),
            14 => store.touch(&key, expiry, now).map(drop),
            15 => {
                let touch = Some(Expiry::At(now + 5));
                store
                    .retrieve(KeysRef::One(&key), touch, now, &mut |_, _| {})
                    .map(drop)
            }
            16 => store.flush_all(Some(now + rng.below(10)), now).map(drop),
            17 if rng.below(10) == 0 => store.flush_all(None, now).map(drop),
            _ => {
                let number = b"7";
                let set = Write {
                    mode: StorageMode::Set,
                    key: &key,
                    flags: 0,
                    expiry: Expiry::Never,
                    value: number,
                    cas,
                };
                store.store(set, now).map(drop)
            }
        };
    }

    /// The item of each of the first `keys` keys in `store` at `now`
    /// (entry and cas unique), in key order. When each was stored and its
    /// eviction bit are left out: a replay stores at its own time and
    /// uses neither.
    fn contents(
        store: &mut dyn VersionedStore,
        keys: u64,
        now: UnixTime,
    ) -> Vec<(Vec<u8>, Entry, u64)> {
        let mut keys: Vec<Vec<u8>> = (0..keys).map(|k| format!("k{k}").into_bytes()).collect();
        keys.sort();
        keys.iter()
            .filter_map(|k| store.export_record(k, now).unwrap())
            .map(|r| (r.key, r.entry, r.cas))
            .collect()
    }

    /// Random commands on a durable store, with snapshots written while
    /// they go on, recover to the same items as the same commands applied
    /// to a plain store; and again after a second run on the recovered
    /// directory.
    #[test]
    fn a_log_and_snapshots_replay_to_the_state_the_commands_left() {
        for seed in 1..=6u64 {
            let dir = temp_dir(&format!("replay-{seed}"));
            let mut reference = memory();
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut now, mut cas) = (NOW, 1u64 << 16);
            for run in 0..2 {
                let cluster = ClusterConfig {
                    fsync: [Fsync::Always, Fsync::EverySec, Fsync::No][seed as usize % 3],
                    snapshot_every: 30_000,
                    ..ClusterConfig::default()
                };
                let recovering = Recovering::open_at(&dir, 0, &cluster, memory(), now).unwrap();
                if run > 0 {
                    let reserved = recovering.highest_cas();
                    assert!(reserved >= cas, "every unique handed out is reserved");
                }
                let poll = mio::Poll::new().unwrap();
                let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
                let (durable, mut store) = recovering.start_logging(waker).unwrap();
                for step in 0..3_000 {
                    now += u64::from(step % 50 == 0);
                    cas += 1 << 16;
                    let mut twin = Rng(rng.0);
                    random_op(&mut rng, KEYS, &mut store, now, cas);
                    random_op(&mut twin, KEYS, reference.as_mut(), now, cas);
                    if step % 20 == 0 {
                        store.maintain(now).unwrap();
                    }
                }
                let shared = durable.shared.clone();
                drop(store);
                drop(durable);
                // The start's own snapshot counts as one.
                assert!(shared.snapshots.load(Ordering::Relaxed) > 1, "seed {seed}");
                let reopened = Recovering::open_at(&dir, 0, &cluster, memory(), now);
                let mut recovered = reopened.unwrap().store;
                let got = contents(recovered.as_mut(), KEYS, now);
                let want = contents(reference.as_mut(), KEYS, now);
                assert_eq!(got.len(), want.len(), "seed {seed}");
                assert!(got == want, "seed {seed}: the recovered store differs");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A `set` of one of the first `keys` keys, of a random size, a
    /// quarter of them expiring soon.
    fn random_set(rng: &mut Rng, keys: u64, store: &mut dyn Store, now: UnixTime, cas: u64) {
        let key = format!("k{}", rng.below(keys)).into_bytes();
        let expiry = match rng.below(4) {
            0 => Expiry::At(now + rng.below(20)),
            _ => Expiry::Never,
        };
        let value = vec![b'v'; rng.below(3_000) as usize];
        let set = Write {
            mode: StorageMode::Set,
            key: &key,
            flags: 0,
            expiry,
            value: &value,
            cas,
        };
        store.store(set, now).unwrap();
    }

    /// A snapshot is listed a few entries at a time while commands go on
    /// between its slices, and those commands move entries in the store's
    /// table: every removal (a delete, an eviction under a cap that goes
    /// up and down, an expired or flushed item met by a command or the
    /// sweep) moves the last entry into the hole. Whenever the node stops,
    /// its directory (the last whole snapshot, the logs after it) recovers
    /// every item the store held, exactly: no entry that moved while a
    /// snapshot was listed is missed by it. Each run ends with a few
    /// deletes alone while the snapshot under way ends, so that it is the
    /// last whole one and most keys it lists are written by no later
    /// record.
    #[test]
    fn a_snapshot_listed_in_slices_while_entries_move_recovers_the_store() {
        const MANY: u64 = 300;
        let small = |limit: u64| -> Box<dyn VersionedStore> {
            Box::new(MemoryStore::new(limit, Limits::default()).keeping_evicted())
        };
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: 20_000,
            memory_limit_bytes: 120_000,
            ..ClusterConfig::default()
        };
        for seed in 1..=40u64 {
            let dir = temp_dir(&format!("slices-{seed}"));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut now, mut cas) = (NOW, 1u64 << 16);
            let recovering = Recovering::open_at(&dir, 0, &cluster, small(u64::MAX), now).unwrap();
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (durable, store) = recovering.start_logging(waker).unwrap();
            let mut store = store.with_slices_of(1 + rng.below(8) as usize);
            for _ in 0..2_000 + rng.below(2_000) {
                now += u64::from(rng.below(30) == 0);
                cas += 1 << 16;
                // Mostly sets, so that the store fills between flushes.
                match rng.below(4) {
                    0 => random_op(&mut rng, MANY, &mut store, now, cas),
                    _ => random_set(&mut rng, MANY, &mut store, now, cas),
                }
                if rng.below(3) == 0 {
                    store.maintain(now).unwrap();
                }
                if rng.below(200) == 0 {
                    let limit = 60_000 + rng.below(120_000);
                    store.set_memory_limit(limit).unwrap();
                }
                store.end_batch();
            }
            for _ in 0..150 {
                if rng.below(5) == 0 {
                    let key = format!("k{}", rng.below(MANY)).into_bytes();
                    store.delete(&key, now).unwrap();
                }
                store.maintain(now).unwrap();
                store.end_batch();
            }
            let want = contents(&mut store, MANY, now);
            let evicted = store.stats().events.evicted;
            let shared = durable.shared.clone();
            drop(store);
            drop(durable);
            let snapshots = shared.snapshots.load(Ordering::Relaxed);
            assert!(
                snapshots > 4,
                "seed {seed}: {snapshots} snapshots (the start's included)"
            );
            assert!(evicted > 0, "seed {seed}: nothing was evicted");
            let reopened = Recovering::open_at(&dir, 0, &cluster, small(u64::MAX), now);
            let got = contents(reopened.unwrap().store.as_mut(), MANY, now);
            let missing = want.iter().filter(|w| !got.contains(w));
            let missing: Vec<_> = missing.map(|(k, ..)| String::from_utf8_lossy(k)).collect();
            assert!(
                missing.is_empty(),
                "seed {seed}: lost or changed {missing:?}"
            );
            assert!(got == want, "seed {seed}: the recovered store differs");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A node of a strong cluster: sets and deletes each followed by its
    /// mark, and now and then a snapshot install (a reset, then parts over
    /// several loop iterations, marked once whole), while the store writes
    /// its own snapshots in slices of a few entries. Stopped anywhere,
    /// mid-install included, the directory recovers the store exactly as
    /// its last mark left it, and says which mark.
    #[test]
    fn a_marked_store_recovers_as_its_last_mark_left_it() {
        const MANY: u64 = 200;
        let ordered = || -> Box<dyn VersionedStore> {
            let store = MemoryStore::new(64 << 20, Limits::default());
            Box::new(store.ordered().keeping_evicted())
        };
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: 10_000,
            ..ClusterConfig::default()
        };
        let now = unix_now();
        for seed in 1..=20u64 {
            let dir = temp_dir(&format!("marked-{seed}"));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let recovering = Recovering::open_marked(&dir, 0, &cluster, ordered()).unwrap();
            assert_eq!(recovering.recovered().delivered, None, "a new directory");
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (durable, store) = recovering.start_logging(waker).unwrap();
            let mut store = store.with_slices_of(1 + rng.below(8) as usize);
            let (mut cas, mut last_mark) = (1u64 << 16, 0);
            let mut at_mark = Vec::new();
            let mut installing = 0;
            for _ in 0..1_000 + rng.below(2_000) {
                cas += 1 << 16;
                if installing == 0 && rng.below(60) == 0 {
                    store.reset(&Head::default(), now).unwrap();
                    installing = 1 + rng.below(10);
                }
                let key = format!("k{}", rng.below(MANY)).into_bytes();
                let value = vec![b'a' + rng.below(26) as u8; rng.below(500) as usize];
                let entry = Entry {
                    flags: 0,
                    expiry: Expiry::Never,
                    value,
                };
                if installing > 0 {
                    let record = crate::store::Record {
                        key,
                        entry,
                        cas,
                        stored_at: now,
                        referenced: false,
                    };
                    store.install(&record, now).unwrap();
                    installing -= 1;
                } else if rng.below(4) == 0 {
                    store.delete(&key, now).unwrap();
                } else {
                    store.import(&key, Some(&entry), cas, now).unwrap();
                }
                if installing == 0 {
                    store.mark_delivered(cas);
                    last_mark = cas;
                    at_mark = contents(&mut store, MANY, now);
                }
                if rng.below(2) == 0 {
                    store.maintain(now).unwrap();
                }
                store.end_batch();
            }
            let shared = durable.shared.clone();
            drop(store);
            drop(durable);
            let snapshots = shared.snapshots.load(Ordering::Relaxed);
            assert!(snapshots > 1, "seed {seed}: no snapshot but the start's");
            let mut reopened = Recovering::open_marked(&dir, 0, &cluster, ordered()).unwrap();
            assert_eq!(
                reopened.recovered().delivered,
                Some(last_mark),
                "seed {seed}"
            );
            let got = contents(reopened.store.as_mut(), MANY, now);
            assert!(got == at_mark, "seed {seed}: the recovered store differs");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A peer's snapshot install begins with a reset that leaves the store
    /// half way (empty, until its items come): a snapshot due then does not
    /// begin, since it would take that for the store at the last mark.
    #[test]
    fn no_snapshot_begins_between_a_reset_and_its_mark() {
        let dir = temp_dir("reset-unmarked");
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: 1,
            ..ClusterConfig::default()
        };
        let ordered = Box::new(MemoryStore::new(64 << 20, Limits::default()).ordered());
        let recovering = Recovering::open_marked(&dir, 0, &cluster, ordered).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (durable, mut store) = recovering.start_logging(waker).unwrap();
        let now = unix_now();
        random_set(&mut Rng(7), 10, &mut store, now, 1 << 16);
        store.mark_delivered(1 << 16);
        let queued = || durable.shared.snapshot_queued.load(Ordering::Relaxed);
        let before = queued();
        store.reset(&Head::default(), now).unwrap();
        store.maintain(now).unwrap();
        assert_eq!(
            queued(),
            before,
            "a snapshot began half way through an install"
        );
        store.mark_delivered(2 << 16);
        store.maintain(now).unwrap();
        assert!(queued() > before, "the install's mark lets it begin");
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An ordered store as a peer's snapshot would carry it: its head, and
    /// every entry (dead ones too) in its table's order, with the time it
    /// was stored and its eviction bit.
    fn image(store: &mut dyn VersionedStore) -> (Head, Vec<crate::store::Record>) {
        let frozen = store.freeze_in_order().expect("an ordered store");
        let mut records = Vec::new();
        let listed = store.export_in_order(0, usize::MAX, &mut |r| {
            records.push(r);
            true
        });
        listed.unwrap();
        store.thaw();
        (frozen.head, records)
    }

    /// A node of a strong cluster under a small cap (its writes evict):
    /// every call a replica makes (random commands, delayed and immediate
    /// flushes, expiries, now and then a peer's snapshot installed, and a
    /// peer's snapshot of this store holding its image a while), each
    /// followed by its mark, while the store writes its own snapshots a few
    /// entries a slice. Stopped anywhere, mid-snapshot included, its
    /// directory recovers the exact image of a twin store that took the
    /// same calls: the same entries in the same places, dead ones, times
    /// and bits included, and the same clock hand and sweep, and says it
    /// is exact, unless it stopped half way through installing a peer's
    /// snapshot (its store at the last mark was being replaced).
    #[test]
    fn a_marked_store_recovers_the_exact_image_of_its_last_mark() {
        const KEYS: u64 = 60;
        const CAP: u64 = 15_000;
        let small = || MemoryStore::new(CAP, Limits::default()).ordered();
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: 30_000,
            memory_limit_bytes: CAP,
            ..ClusterConfig::default()
        };
        let (mut installs, mut given_up, mut evicted) = (0, 0, 0);
        let mut evicted_after_restarts = 0;
        for seed in 1..=30u64 {
            let dir = temp_dir(&format!("exact-{seed}"));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let recovering = Recovering::open_marked(&dir, 0, &cluster, Box::new(small())).unwrap();
            assert!(recovering.recovered().exact, "a new directory is empty");
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (durable, store) = recovering.start_logging(waker).unwrap();
            let mut store = store.with_slices_of(1 + rng.below(8) as usize);
            let (mut twin, mut peer) = (small(), small());
            let (mut now, mut cas) = (unix_now(), 1u64 << 16);
            let (mut at_mark, mut last_mark) = (image(&mut twin), 0);
            let mut peer_holds_image = false;
            for _ in 0..800 + rng.below(1_500) {
                cas += 1 << 16;
                now += rng.below(3) / 2;
                match rng.below(100) {
                    0 => {
                        let (head, records) = image(&mut peer);
                        for replica in [&mut store as &mut dyn VersionedStore, &mut twin] {
                            replica.reset(&head, now).unwrap();
                            records
                                .iter()
                                .for_each(|r| replica.install(r, now).unwrap());
                        }
                        installs += 1;
                    }
                    1..=3 => {
                        peer_holds_image = !peer_holds_image;
                        match peer_holds_image {
                            true => given_up += u64::from(store.holds_image()),
                            false => drop(store.thaw()),
                        }
                        if peer_holds_image {
                            store.freeze_in_order().expect("an ordered store");
                        }
                    }
                    4..=9 => random_op(&mut rng, KEYS, &mut peer, now, cas),
                    _ => {
                        let mut same = Rng(rng.0);
                        random_op(&mut rng, KEYS, &mut store, now, cas);
                        random_op(&mut same, KEYS, &mut twin, now, cas);
                    }
                }
                store.mark_delivered(cas);
                (at_mark, last_mark) = (image(&mut twin), cas);
                if rng.below(2) == 0 {
                    store.maintain(now).unwrap();
                }
                store.end_batch();
            }
            // Every other seed stops half way through a peer's snapshot:
            // the store at the last mark comes back, but not as exact.
            let half_installed = seed % 2 == 0;
            if half_installed {
                let (head, records) = image(&mut peer);
                store.reset(&head, now).unwrap();
                let half = &records[..records.len() / 2];
                half.iter().for_each(|r| store.install(r, now).unwrap());
                store.end_batch();
            }
            evicted += store.stats().events.evicted;
            let shared = durable.shared.clone();
            drop(store);
            drop(durable);
            assert!(shared.snapshots.load(Ordering::Relaxed) > 1, "seed {seed}");
            // Restarted with a raised limit, and on odd seeds with the
            // other eviction policy, on even ones without the sweep: the
            // calls replay under what they were made under.
            let raised = ClusterConfig {
                memory_limit_bytes: 2 * CAP,
                ..cluster.clone()
            };
            let other = match seed % 2 {
                1 => small().with_eviction(Eviction::None),
                _ => small().with_sweep(false),
            };
            let configured = other.policy();
            let reopened = Recovering::open_marked(&dir, 0, &raised, Box::new(other));
            let mut reopened = reopened.unwrap();
            // It runs under the new policy from there on.
            assert_eq!(reopened.store.policy(), configured, "seed {seed}");
            let recovered = reopened.recovered().clone();
            assert_eq!(recovered.delivered, Some(last_mark), "seed {seed}");
            assert_eq!(recovered.exact, !half_installed, "seed {seed}");
            let got = image(reopened.store.as_mut());
            assert_eq!(got.0, at_mark.0, "seed {seed}: the head differs");
            assert!(got.1 == at_mark.1, "seed {seed}: the entries differ");
            // It runs on under the new settings, beside a twin that installs
            // its image and takes the same calls under them, then restarts
            // with the first settings: its calls since replay under the new
            // ones, onto the image of the restart's snapshot.
            let mut twin = small();
            twin.set_memory_limit(2 * CAP).unwrap();
            twin.set_policy(configured.unwrap()).unwrap();
            twin.reset(&at_mark.0, now).unwrap();
            at_mark.1.iter().for_each(|r| twin.install(r, now).unwrap());
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (durable, mut store) = reopened.start_logging(waker).unwrap();
            let twin_before = twin.stats().events;
            for _ in 0..300 {
                cas += 1 << 16;
                let mut same = Rng(rng.0);
                random_op(&mut rng, KEYS, &mut store, now, cas);
                random_op(&mut same, KEYS, &mut twin, now, cas);
                store.mark_delivered(cas);
                store.maintain(now).unwrap();
                store.end_batch();
            }
            evicted_after_restarts += twin.stats().events.evicted - twin_before.evicted;
            drop(store);
            drop(durable);
            let again = Recovering::open_marked(&dir, 0, &cluster, Box::new(small()));
            let mut again = again.unwrap();
            assert_eq!(again.recovered().delivered, Some(cas), "seed {seed}");
            assert_eq!(again.recovered().exact, !half_installed, "seed {seed}");
            let got = image(again.store.as_mut());
            let want = image(&mut twin);
            assert_eq!(got.0, want.0, "seed {seed}: after a second restart");
            assert!(got.1 == want.1, "seed {seed}: after a second restart");
            let _ = std::fs::remove_dir_all(&dir);
        }
        eprintln!(
            "{installs} installs, {given_up} snapshots given up, {evicted} evictions, \
             {evicted_after_restarts} after a restart under lru"
        );
        assert!(installs > 10 && given_up > 0 && evicted > 1_000);
        assert!(evicted_after_restarts > 100);
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = temp_dir("lock");
        let cluster = ClusterConfig::default();
        let first = Recovering::open(&dir, 0, &cluster, memory()).unwrap();
        let second = Recovering::open(&dir, 0, &cluster, memory());
        let err = second.err().expect("refused");
        assert!(err.to_string().contains("in use by another node"), "{err}");
        drop(first);
        assert!(Recovering::open(&dir, 0, &cluster, memory()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod crash_cases {
    use super::*;
    use crate::protocol::{Limits, StorageMode};
    use crate::store::memory::MemoryStore;
    use crate::store::{Expiry, Store, Write};

    const NOW: UnixTime = 1_700_000_000;

    fn memory() -> Box<dyn VersionedStore> {
        Box::new(MemoryStore::new(64 << 20, Limits::default()))
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mckv-crash-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn start(dir: &Path, cluster: &ClusterConfig, now: UnixTime) -> (u64, Durable, DurableStore) {
        let r = Recovering::open_at(dir, 0, cluster, memory(), now).unwrap();
        let high = r.highest_cas();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (d, s) = r.start_logging(waker).unwrap();
        (high, d, s)
    }

    /// [`start`] for a strong cluster's node: its log marked.
    fn start_marked(dir: &Path, cluster: &ClusterConfig) -> (Durable, DurableStore) {
        let r = Recovering::open_marked(dir, 0, cluster, memory()).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        r.start_logging(waker).unwrap()
    }

    fn set(store: &mut dyn Store, key: &[u8], cas: u64, now: UnixTime) {
        let w = Write {
            mode: StorageMode::Set,
            key,
            flags: 0,
            expiry: Expiry::Never,
            value: b"v",
            cas,
        };
        store.store(w, now).unwrap();
    }

    /// A delayed flush_all whose time has passed stays in the store as a
    /// past flush_at, which the snapshots carry: replaying it must not
    /// flush what was stored after it, however many restarts follow.
    #[test]
    fn two_restarts_after_a_passed_delayed_flush_keep_the_data() {
        let d = dir("flush");
        let cluster = ClusterConfig::default();
        let (_, durable, mut store) = start(&d, &cluster, NOW);
        store.flush_all(Some(NOW + 2), NOW).unwrap();
        set(&mut store, b"k", 1 << 16, NOW + 5); // after the flush time: live
        drop(store);
        drop(durable);
        // Restart 1 (recovers, compacts).
        let r1 = Recovering::open_at(&d, 0, &cluster, memory(), NOW + 6).unwrap();
        let mut s1 = r1.store;
        assert!(
            s1.export_record(b"k", NOW + 6).unwrap().is_some(),
            "after restart 1"
        );
        drop(r1.lock);
        // Restart 2.
        let mut r2 = Recovering::open_at(&d, 0, &cluster, memory(), NOW + 7).unwrap();
        assert!(
            r2.store.export_record(b"k", NOW + 7).unwrap().is_some(),
            "after restart 2: k was wiped"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A snapshot replaces the log and the clock reservation in it: it
    /// must carry the reservation, or a unique handed out before is handed
    /// out again after a restart.
    #[test]
    fn a_runtime_snapshot_keeps_the_clock_reservation() {
        let d = dir("clock");
        let cluster = ClusterConfig {
            snapshot_every: 1,
            ..ClusterConfig::default()
        };
        let (_, durable, mut store) = start(&d, &cluster, NOW);
        let handed = 5u64 << 16;
        set(&mut store, b"a", handed, NOW);
        store.delete(b"a", NOW).unwrap();
        store.end_batch();
        // Snapshot begins and ends (empty store).
        while store.maintain(NOW).unwrap() {}
        let shared = durable.shared.clone();
        drop(store);
        drop(durable);
        assert_eq!(
            shared.snapshots.load(Ordering::Relaxed),
            2,
            "the start's and this one"
        );
        let r = Recovering::open_at(&d, 0, &cluster, memory(), NOW).unwrap();
        assert!(
            r.highest_cas() >= handed,
            "highest_cas {} < handed-out {}",
            r.highest_cas(),
            handed
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A snapshot whose slices straddle a pending delayed flush_all must
    /// keep the flush, or the keys exported before it come back.
    #[test]
    fn a_snapshot_straddling_a_delayed_flush_does_not_resurrect() {
        let d = dir("straddle");
        let cluster = ClusterConfig {
            snapshot_every: 1,
            ..ClusterConfig::default()
        };
        let (_, durable, mut store) = start(&d, &cluster, NOW);
        for i in 0..5000u64 {
            set(&mut store, format!("k{i}").as_bytes(), (i + 1) << 16, NOW);
        }
        store.flush_all(Some(NOW + 10), NOW).unwrap();
        store.end_batch();
        // Restart: compaction puts the pending flush in the snapshot, log empty.
        drop(store);
        drop(durable);
        let (_, durable, mut store) = start(&d, &cluster, NOW + 1);
        set(&mut store, b"trigger", 1 << 40, NOW + 1);
        store.end_batch();
        // First slice (4096 keys) before the flush time, the rest after.
        assert!(store.maintain(NOW + 9).unwrap());
        while store.maintain(NOW + 11).unwrap() {}
        drop(store);
        drop(durable);
        let mut r = Recovering::open_at(&d, 0, &cluster, memory(), NOW + 12).unwrap();
        let live = (0..5000u64)
            .filter(|i| {
                r.store
                    .export_record(format!("k{i}").as_bytes(), NOW + 12)
                    .unwrap()
                    .is_some()
            })
            .count();
        assert_eq!(live, 0, "flushed keys came back");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A push waits only for the clock reservation, and may overtake held
    /// reports; a claim waits for everything appended and for every
    /// report held before it.
    #[test]
    fn reports_wait_for_what_they_show() {
        let d = dir("report-wait");
        let (_, durable, store) = start(&d, &ClusterConfig::default(), NOW);
        let shared = &durable.shared;
        let durable_at = shared.durable.load(Ordering::Acquire);
        shared.must_sync.store(durable_at + 1, Ordering::Release);
        shared.appended.store(durable_at + 2, Ordering::Release);
        let reserved = Wait {
            written: 0,
            durable: durable_at + 1,
        };
        assert_eq!(
            durable.report_wait(ReportWait::Reservation, false),
            Some(reserved)
        );
        let everything = durable.report_wait(ReportWait::Everything, false);
        assert_eq!(everything.map(|w| w.durable), Some(durable_at + 2));
        // A reply's wait: everything written, fsynced as the policy says.
        let logged = durable.report_wait(ReportWait::Logged, false);
        assert_eq!(logged, durable.wait_for(None));
        assert_eq!(logged.map(|w| w.written), Some(durable_at + 2));
        assert_eq!(durable.report_wait(ReportWait::Nothing, true), None);
        // The log is there: only a claim behind held reports waits.
        shared.written.store(durable_at + 2, Ordering::Release);
        shared.durable.store(durable_at + 2, Ordering::Release);
        assert_eq!(durable.report_wait(ReportWait::Reservation, true), None);
        assert_eq!(durable.report_wait(ReportWait::Everything, false), None);
        assert!(durable.report_wait(ReportWait::Everything, true).is_some());
        assert_eq!(durable.report_wait(ReportWait::Logged, false), None);
        assert!(durable.report_wait(ReportWait::Logged, true).is_some());
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// While the disk refuses the log, a reply that shows a write not yet
    /// written waits for it (a restart before the disk recovers would not
    /// have it), and one that shows only what was written goes on (found
    /// by review: every reply went on, as none could say what it showed).
    #[test]
    fn while_the_disk_refuses_a_reply_waits_for_what_it_shows() {
        let cluster = ClusterConfig::default();
        let d = dir("refusing-shows");
        let (_, durable, store) = start(&d, &cluster, NOW);
        let shared = &durable.shared;
        let written = shared.written.load(Ordering::Acquire);
        shared.appended.store(written + 100, Ordering::Release);
        shared.refusing.store(true, Ordering::Release);
        assert_eq!(
            durable.wait_for(Some(written)),
            None,
            "shows what is written"
        );
        let held = durable.wait_for(Some(written + 40));
        assert_eq!(held.map(|w| w.written), Some(written + 40));
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// After a failed fsync no reply leaves, also while the disk refuses
    /// the log (when reads otherwise go on): the writer says the fsync
    /// failed before it says the log failed, and either way nothing counts
    /// as durable (found by review: a one-node or eventual log let replies
    /// out meanwhile, until the node stopped).
    #[test]
    fn after_a_failed_fsync_no_reply_leaves() {
        let cluster = ClusterConfig::default();
        let d = dir("fsync-failed-holds");
        let (_, durable, store) = start(&d, &cluster, NOW);
        let shared = &durable.shared;
        shared.refusing.store(true, Ordering::Release);
        assert_eq!(
            durable.wait_for(None),
            None,
            "reads go on while the disk refuses"
        );
        shared.fsync_failed.store(true, Ordering::Release);
        let held = durable.wait_for(None).expect("held");
        assert!(!durable.reached(held));
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A strong cluster's node stops once its log cannot catch up: past
    /// the backlog limit while the disk refuses it, or after a failed
    /// fsync; a node of any other cluster stops after a failed fsync only
    /// (while its disk refuses the log, it refuses writes).
    #[test]
    fn a_log_that_cannot_be_trusted_or_catch_up_stops_the_node() {
        let d = dir("must-stop");
        let cluster = ClusterConfig::default();
        let (durable, store) = start_marked(&d, &cluster);
        let shared = &durable.shared;
        assert_eq!(durable.must_stop(), None);
        *shared.failure.lock().unwrap() = Some("No space left on device".into());
        shared.failed.store(true, Ordering::Release);
        shared.refusing.store(true, Ordering::Release);
        let written = shared.written.load(Ordering::Acquire);
        shared
            .appended
            .store(written + BACKLOG_LIMIT, Ordering::Release);
        assert_eq!(durable.must_stop(), None, "at the limit");
        shared
            .appended
            .store(written + BACKLOG_LIMIT + 1, Ordering::Release);
        let why = durable.must_stop().expect("past the limit");
        assert!(why.contains("No space left on device; 64 MiB"), "{why}");
        shared.appended.store(written, Ordering::Release);
        shared.fsync_failed.store(true, Ordering::Release);
        let why = durable.must_stop().expect("after a failed fsync");
        assert!(why.contains("an fsync failed"), "{why}");
        drop(store);
        drop(durable);
        // An unmarked log (a one-node cluster's) stops after a failed
        // fsync, and refuses writes while its disk refuses the log.
        let (_, durable, store) = start(&dir("must-stop-one"), &cluster, NOW);
        let shared = &durable.shared;
        *shared.failure.lock().unwrap() = Some("No space left on device".into());
        shared.failed.store(true, Ordering::Release);
        shared.refusing.store(true, Ordering::Release);
        let written = shared.written.load(Ordering::Acquire);
        shared
            .appended
            .store(written + BACKLOG_LIMIT + 1, Ordering::Release);
        assert_eq!(durable.must_stop(), None, "refuses writes instead");
        shared.fsync_failed.store(true, Ordering::Release);
        let why = durable.must_stop().expect("after a failed fsync");
        assert!(why.contains("it recovers what the disk holds"), "{why}");
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(dir("must-stop-one"));
    }

    /// A strong node's log is stuck once what a snapshot's first part
    /// would wait for has not moved for a while: here a clock reservation
    /// whose fsync does not come (records are all on disk, so only the
    /// reservation waits). An idle log never is.
    #[test]
    fn a_marked_log_whose_reservation_waits_for_its_fsync_is_stuck_after_a_while() {
        let d = dir("stuck");
        let cluster = ClusterConfig {
            fsync: Fsync::Always,
            ..ClusterConfig::default()
        };
        let (mut durable, mut store) = start_marked(&d, &cluster);
        store.end_batch(); // what the start appended goes to the writer
        while durable.wait_for(None).is_some() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let start = Instant::now();
        assert!(!durable.log_stuck(start));
        assert!(!durable.log_stuck(start + 2 * stall::STALL), "idle");
        let shared = durable.shared.clone();
        let on_disk = shared.durable.load(Ordering::Acquire);
        shared.must_sync.store(on_disk + 1, Ordering::Release);
        assert!(!durable.log_stuck(start + 3 * stall::STALL));
        assert!(durable.log_stuck(start + 4 * stall::STALL));
        shared.must_sync.store(on_disk, Ordering::Release);
        assert!(!durable.log_stuck(start + 5 * stall::STALL), "moving again");
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The writer fails a commit (sets `failed`) after the reactor took a
    /// write but before it computed that write's wait: the STORED must not
    /// leave before the record reached the kernel.
    #[test]
    fn a_write_taken_just_before_a_failure_is_not_acknowledged() {
        let d = dir("race");
        let cluster = ClusterConfig {
            fsync: Fsync::Always,
            ..ClusterConfig::default()
        };
        let (_, durable, mut store) = start(&d, &cluster, NOW);
        set(&mut store, b"k", 1 << 16, NOW); // reserves a block of uniques
        store.end_batch();
        while durable.wait_for(None).is_some() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        set(&mut store, b"k", 2 << 16, NOW); // taken: appended > written, no reservation
        durable.shared.failed.store(true, Ordering::Release); // the writer's note(Err)
        assert!(
            durable.wait_for(None).is_some(),
            "the reply would leave at once"
        );
        durable.shared.failed.store(false, Ordering::Release);
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[cfg(test)]
mod identity_cases {
    use super::*;
    use crate::protocol::{Limits, StorageMode};
    use crate::store::memory::MemoryStore;
    use crate::store::{Expiry, Store, Write};

    fn memory() -> Box<dyn VersionedStore> {
        Box::new(MemoryStore::new(64 << 20, Limits::default()))
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mckv-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn named(name: &str) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            fsync: Fsync::No,
            ..ClusterConfig::default()
        }
    }

    /// Opens `dir` as node `node` of a one-node `cluster`, stores a key
    /// and stops.
    fn write_one(dir: &Path, node: u32, cluster: &ClusterConfig) {
        let recovering = Recovering::open(dir, node, cluster, memory()).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (durable, mut store) = recovering.start_logging(waker).unwrap();
        let write = Write {
            mode: StorageMode::Set,
            key: b"mine",
            flags: 0,
            expiry: Expiry::Never,
            value: b"v",
            cas: 1 << 16,
        };
        store.store(write, unix_now()).unwrap();
        store.end_batch();
        drop(store);
        drop(durable);
    }

    fn refusal(result: io::Result<Recovering>) -> String {
        let err = result.err().expect("refused");
        assert!(DataDirError::of(&err).is_some(), "{err}");
        err.to_string()
    }

    #[test]
    fn a_directory_is_taken_back_by_its_own_node() {
        let d = dir("same");
        write_one(&d, 1, &named("alpha"));
        let text = std::fs::read_to_string(d.join(identity::FILE)).unwrap();
        assert!(
            text.contains("cluster = alpha\nnode = 1\nkind = one-node"),
            "{text}"
        );
        let mut again = Recovering::open(&d, 1, &named("alpha"), memory()).unwrap();
        assert!(again
            .store
            .export_record(b"mine", unix_now())
            .unwrap()
            .is_some());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn another_clusters_directory_is_refused() {
        let d = dir("cluster");
        write_one(&d, 2, &named("beta"));
        let why = refusal(Recovering::open(&d, 2, &named("alpha"), memory()));
        let expected = format!(
            "data directory {}: belongs to node 2 of cluster 'beta' (one node); this is node 2 \
             of cluster 'alpha' (one node): if the cluster was renamed, write its new name in \
             IDENTITY (`cluster = alpha`); else move it away to start without it",
            d.display()
        );
        assert_eq!(why, expected);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn another_nodes_directory_is_refused() {
        let d = dir("node");
        write_one(&d, 1, &named("alpha"));
        let why = refusal(Recovering::open(&d, 2, &named("alpha"), memory()));
        assert!(
            why.contains("belongs to node 1 of cluster 'alpha'"),
            "{why}"
        );
        assert!(why.contains("this is node 2 of cluster 'alpha'"), "{why}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Another kind is refused by the identity, whatever the log holds
    /// (here an empty marked log, which replay alone would take).
    #[test]
    fn another_kinds_directory_is_refused() {
        let d = dir("kind");
        let cluster = ClusterConfig {
            consistency: crate::config::Consistency::Sequential,
            ..named("alpha")
        };
        drop(Recovering::open_marked(&d, 0, &cluster, memory()).unwrap());
        let why = refusal(Recovering::open(&d, 0, &cluster, memory()));
        assert!(
            why.contains("belongs to node 0 of cluster 'alpha' (sequential)"),
            "{why}"
        );
        assert!(
            why.contains("this is node 0 of cluster 'alpha' (one node)"),
            "{why}"
        );
        // The other mode of the same kind is the same cluster's.
        let linearizable = named("alpha");
        assert!(Recovering::open_marked(&d, 0, &linearizable, memory()).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A directory an earlier build wrote (data, no identity) is adopted
    /// and its identity written; one of another kind is still refused by
    /// its records.
    #[test]
    fn an_earlier_builds_directory_is_adopted_unless_of_another_kind() {
        let d = dir("adopt");
        write_one(&d, 0, &named("mckv"));
        std::fs::remove_file(d.join(identity::FILE)).unwrap();
        let mut adopted = Recovering::open(&d, 3, &named("alpha"), memory()).unwrap();
        assert!(adopted
            .store
            .export_record(b"mine", unix_now())
            .unwrap()
            .is_some());
        drop(adopted);
        let text = std::fs::read_to_string(d.join(identity::FILE)).unwrap();
        assert!(text.contains("cluster = alpha\nnode = 3\n"), "{text}");
        std::fs::remove_file(d.join(identity::FILE)).unwrap();
        let why = refusal(Recovering::open_marked(&d, 3, &named("alpha"), memory()));
        let expected = format!(
            "data directory {}: it was written by a one-node cluster; move it away to start \
             without it",
            d.display()
        );
        assert_eq!(why, expected);
        assert!(!d.join(identity::FILE).exists(), "not claimed");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_regular_file_is_no_data_directory() {
        let d = dir("file");
        std::fs::write(&d, b"").unwrap();
        let why = refusal(Recovering::open(&d, 0, &named("alpha"), memory()));
        assert_eq!(
            why,
            format!("data directory {}: not a directory", d.display())
        );
        let _ = std::fs::remove_file(&d);
    }
}
