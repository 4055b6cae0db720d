//! Where store work runs. A store that can block (the memcached backend) is
//! owned by a worker thread, so no store call, however slow, runs on the
//! reactor; the embedded memory store never blocks and runs inline on the
//! reactor thread, which saves a thread hop and two wake-ups per request.
//!
//! ```text
//!  inline:  reactor ── Work ──► Executor::handle ──► Done (queued, taken at once)
//!  worker:  reactor ── Work (bounded channel, try_send) ──► worker: Executor::handle
//!           reactor ◄── Done (channel) ── Waker::wake ◄──┘
//! ```
//!
//! Jobs are applied in the order they are queued, which is the order the
//! engine delivered them, so every replica applies the same sequence. A job
//! is always applied, even if its client already had a timeout from the
//! reactor: skipping it would make this replica differ from the others.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use mio::Waker;

use crate::cluster::eventual::version::Version;
use crate::cluster::eventual::version_log::VersionLog;
use crate::cluster::{ChangeMark, NodeId, Op, Stamp};
use crate::protocol::Command;
use crate::store::{self, StoreStats, VersionedStore};

/// Where a job's reply goes: a connection (slab token plus a unique id, since
/// tokens are reused) and the reply slot reserved for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplyTo {
    pub token: usize,
    pub conn_id: u64,
    pub slot: u64,
}

/// Store work, in the order the engine asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Apply `op` to the local store, in the order given, with `cas` as the
    /// unique of anything it writes; send the reply to `reply_to` if set
    /// (`None` for another node's write applied here).
    Apply {
        op: Arc<Op>,
        cas: u64,
        reply_to: Option<ReplyTo>,
    },
    /// Eventual mode: apply a client's write here with the cas unique of
    /// `stamp`, reply, and publish the versions it leaves.
    Publish {
        op: Arc<Op>,
        stamp: Stamp,
        reply_to: ReplyTo,
    },
    /// Eventual mode: keep each of these versions from peer `from` that is
    /// newer than what is held (last writer wins).
    ApplyVersions {
        from: NodeId,
        versions: Vec<Version>,
        /// The sync answer these versions complete, if they do.
        completes: Option<ChangeMark>,
    },
    /// Eventual mode: every version changed after `since`, for `peer`.
    Collect { peer: NodeId, since: u64 },
    /// Eventual mode: tombstones every peer has synced past can go.
    ForgetTombstones { synced: u64 },
}

/// What finished work gives back.
pub enum Done {
    /// A client's reply (empty for `noreply`).
    Reply { reply_to: ReplyTo, reply: Vec<u8> },
    /// Versions local writes left, to push to peers.
    Published(Vec<Version>),
    /// The answer to `peer`'s sync request since change `since`: versions,
    /// and the change number they bring it up to.
    Collected {
        peer: NodeId,
        versions: Vec<Version>,
        since: u64,
        upto: u64,
    },
    /// A sync answer from `from` is applied up to `mark`; `all_kept`: the
    /// store kept every version of it.
    SyncApplied {
        from: NodeId,
        mark: ChangeMark,
        all_kept: bool,
    },
}

/// Counters the worker keeps and the reactor reads for `stats` without waiting.
#[derive(Debug, Default)]
pub struct BackendCounters {
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub items: AtomicU64,
    pub bytes: AtomicU64,
    pub limit_bytes: AtomicU64,
}

impl BackendCounters {
    pub fn store_stats(&self) -> StoreStats {
        StoreStats {
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            limit_bytes: self.limit_bytes.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.get_hits.store(0, Ordering::Relaxed);
        self.get_misses.store(0, Ordering::Relaxed);
    }
}

/// Reply buffers kept for reuse, and the largest kept (a giant value's
/// buffer is given back to the allocator).
const SPARE_REPLIES: usize = 256;
const SPARE_CAPACITY: usize = 16 * 1024;

/// Builds the store where it will run (a memcached store connects there).
pub type StoreFactory = Box<dyn FnOnce() -> Box<dyn VersionedStore> + Send>;

/// The reactor's handle on its store.
pub struct Backend {
    kind: Kind,
    pub counters: Arc<BackendCounters>,
}

enum Kind {
    Inline {
        executor: Executor,
        done: Vec<Done>,
    },
    Worker {
        jobs: Option<Sender<Work>>,
        done: Receiver<Done>,
        worker: Option<JoinHandle<()>>,
    },
}

impl Backend {
    /// A store that never blocks, run on the calling (reactor) thread.
    pub fn inline(factory: StoreFactory) -> Backend {
        let counters = Arc::new(BackendCounters::default());
        let executor = Executor::new(factory(), counters.clone());
        let kind = Kind::Inline {
            executor,
            done: Vec::new(),
        };
        Backend { kind, counters }
    }

    /// A store on its own worker thread, fed through a channel of `capacity`
    /// jobs; the worker wakes the reactor through `waker` when replies wait.
    pub fn spawn(factory: StoreFactory, waker: Arc<Waker>, capacity: usize) -> io::Result<Backend> {
        let (jobs_tx, jobs_rx) = bounded(capacity);
        let (done_tx, done_rx) = unbounded();
        let counters = Arc::new(BackendCounters::default());
        let worker = Worker {
            jobs: jobs_rx,
            done: done_tx,
            waker,
        };
        let executor_counters = counters.clone();
        let handle = std::thread::Builder::new()
            .name("mckv-backend".into())
            .spawn(move || worker.run(Executor::new(factory(), executor_counters)))?;
        let kind = Kind::Worker {
            jobs: Some(jobs_tx),
            done: done_rx,
            worker: Some(handle),
        };
        Ok(Backend { kind, counters })
    }

    /// Runs or queues work without blocking; gives it back when the
    /// worker's queue is full.
    pub fn submit(&mut self, job: Work) -> Result<(), Work> {
        match &mut self.kind {
            Kind::Inline { executor, done } => {
                executor.handle(job, &mut |d| done.push(d));
                Ok(())
            }
            Kind::Worker { jobs, .. } => {
                let jobs = jobs.as_ref().expect("backend running");
                jobs.try_send(job).map_err(|e| match e {
                    TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
                })
            }
        }
    }

    /// Takes reply buffers whose bytes the reactor has copied out, so the
    /// next replies need no allocation. Only the inline store reuses them: a
    /// worker thread's would need a channel back, and it waits on memcached
    /// anyway.
    pub fn recycle(&mut self, spent: &mut Vec<Vec<u8>>) {
        match &mut self.kind {
            Kind::Inline { executor, .. } => executor.keep_spare(spent),
            Kind::Worker { .. } => spent.clear(),
        }
    }

    /// Moves the completed jobs into `into`, without waiting.
    pub fn completed(&mut self, into: &mut Vec<Done>) {
        match &mut self.kind {
            Kind::Inline { done, .. } => into.append(done),
            Kind::Worker { done, .. } => into.extend(done.try_iter()),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Kind::Worker { jobs, worker, .. } = &mut self.kind {
            // Closing the channel ends the worker's loop once its queue is done.
            *jobs = None;
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}

/// A store, eventual mode's version log beside it, and the counters kept
/// as it works.
struct Executor {
    store: Box<dyn VersionedStore>,
    versions: VersionLog,
    counters: Arc<BackendCounters>,
    /// Empty reply buffers to write the next replies into.
    spare: Vec<Vec<u8>>,
}

impl Executor {
    fn new(store: Box<dyn VersionedStore>, counters: Arc<BackendCounters>) -> Executor {
        Executor {
            store,
            versions: VersionLog::new(),
            counters,
            spare: Vec::new(),
        }
    }

    fn keep_spare(&mut self, spent: &mut Vec<Vec<u8>>) {
        for buffer in spent.drain(..) {
            self.keep(buffer);
        }
    }

    fn keep(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_REPLIES && buffer.capacity() <= SPARE_CAPACITY {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// Does one piece of work, giving what it produced to `emit`.
    fn handle(&mut self, work: Work, emit: &mut impl FnMut(Done)) {
        match work {
            Work::Apply { op, cas, reply_to } => {
                let (reply, _) = self.execute(&op, cas);
                match reply_to {
                    Some(reply_to) => emit(Done::Reply { reply_to, reply }),
                    // Another node's write: its buffer serves the next reply.
                    None => self.keep(reply),
                }
            }
            Work::Publish {
                op,
                stamp,
                reply_to,
            } => {
                let (reply, changed) = self.execute(&op, stamp.cas_unique());
                emit(Done::Reply { reply_to, reply });
                if changed {
                    emit(Done::Published(self.publish(&op, stamp)));
                }
            }
            Work::ApplyVersions {
                from,
                versions,
                completes,
            } => {
                let now = store::unix_now();
                let store = self.store.as_mut();
                let failed = versions
                    .iter()
                    .map(|v| self.versions.apply_remote(store, v, now))
                    .filter_map(Result::err)
                    .last();
                if let Some(e) = &failed {
                    // The next sync from that peer carries them again.
                    log::warn!("cannot keep versions from node {from}: {e:?}");
                }
                if let Some(mark) = completes {
                    let all_kept = failed.is_none();
                    emit(Done::SyncApplied {
                        from,
                        mark,
                        all_kept,
                    });
                }
            }
            Work::Collect { peer, since } => {
                let now = store::unix_now();
                match self.versions.since(self.store.as_mut(), since, now) {
                    Ok((versions, upto)) => emit(Done::Collected {
                        peer,
                        versions,
                        since,
                        upto,
                    }),
                    // Unanswered, node `peer` asks again.
                    Err(e) => log::warn!("cannot answer node {peer}'s sync request: {e:?}"),
                }
            }
            Work::ForgetTombstones { synced } => self.versions.forget_tombstones(synced),
        }
        self.publish_counters();
    }

    /// Executes `op`: its reply, and whether it changed the store.
    fn execute(&mut self, op: &Op, cas: u64) -> (Vec<u8>, bool) {
        let mut reply = self.spare.pop().unwrap_or_default();
        let request = &op.request;
        let executed = store::execute(self.store.as_mut(), request, op.now, cas, &mut reply);
        if let Command::Get(get) = &request.command {
            self.counters
                .get_hits
                .fetch_add(executed.hits, Ordering::Relaxed);
            let misses = (get.keys.len() as u64).saturating_sub(executed.hits);
            self.counters
                .get_misses
                .fetch_add(misses, Ordering::Relaxed);
        }
        (reply, executed.changed)
    }

    /// The versions a write that changed the store left.
    fn publish(&mut self, op: &Op, stamp: Stamp) -> Vec<Version> {
        let store = self.store.as_mut();
        self.versions
            .record_write(store, &op.request.command, stamp, op.now)
    }

    fn publish_counters(&self) {
        let stats = self.store.stats();
        self.counters.items.store(stats.items, Ordering::Relaxed);
        self.counters.bytes.store(stats.bytes, Ordering::Relaxed);
        self.counters
            .limit_bytes
            .store(stats.limit_bytes, Ordering::Relaxed);
    }
}

struct Worker {
    jobs: Receiver<Work>,
    done: Sender<Done>,
    waker: Arc<Waker>,
}

/// Wake the reactor at least this often while a backlog is being worked off.
const WAKE_EVERY: usize = 16;

impl Worker {
    fn run(self, mut executor: Executor) {
        let mut unannounced = 0;
        while let Ok(work) = self.jobs.recv() {
            executor.handle(work, &mut |done| {
                // The reactor is gone only at shutdown: nothing left to tell.
                let _ = self.done.send(done);
                unannounced += 1;
            });
            // Replies are announced in batches, but never left waiting
            // behind an empty queue: the reactor also needs the wake-up to
            // move jobs it could not queue.
            if self.jobs.is_empty() || unannounced >= WAKE_EVERY {
                if let Err(e) = self.waker.wake() {
                    log::error!("cannot wake the reactor: {e}");
                }
                unannounced = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Action, Limits};
    use crate::store::memory::MemoryStore;

    fn apply(backend: &mut Backend, line: &[u8]) -> Vec<u8> {
        let Ok(parsed) = parse(line, &Limits::default()) else {
            panic!("incomplete request");
        };
        let Action::Execute(request) = parsed.action else {
            panic!("not a store command");
        };
        let reply_to = ReplyTo {
            token: 0,
            conn_id: 1,
            slot: 0,
        };
        let op = Arc::new(Op { request, now: 1 });
        let job = Work::Apply {
            op,
            cas: 1,
            reply_to: Some(reply_to),
        };
        assert!(backend.submit(job).is_ok());
        let mut done = Vec::new();
        backend.completed(&mut done);
        match done.pop() {
            Some(Done::Reply { reply, .. }) => reply,
            _ => panic!("no reply"),
        }
    }

    #[test]
    fn the_inline_store_writes_replies_into_recycled_buffers() {
        let factory: StoreFactory =
            Box::new(|| Box::new(MemoryStore::new(1 << 20, Limits::default())));
        let mut backend = Backend::inline(factory);
        let first = apply(&mut backend, b"set k 0 0 1\r\nv\r\n");
        assert_eq!(first, b"STORED\r\n");
        let buffer = first.as_ptr();
        backend.recycle(&mut vec![first]);
        let second = apply(&mut backend, b"delete k\r\n");
        assert_eq!(second, b"DELETED\r\n");
        assert_eq!(second.as_ptr(), buffer, "the spent buffer was reused");

        let mut giant = Vec::with_capacity(SPARE_CAPACITY + 1);
        giant.push(0);
        backend.recycle(&mut vec![giant]);
        let third = apply(&mut backend, b"get k\r\n");
        assert_eq!(third, b"END\r\n");
        assert!(
            third.capacity() <= SPARE_CAPACITY,
            "a giant buffer is not kept"
        );
    }
}
