//! Where store work runs. A store that can block (the memcached backend) is
//! owned by a worker thread, so no store call, however slow, runs on the
//! reactor; the embedded memory store never blocks and runs inline on the
//! reactor thread, which saves a thread hop and two wake-ups per request.
//!
//! ```text
//!  inline:  reactor ── Job ──► Executor::handle ──► Done (queued, taken at once)
//!  worker:  reactor ── Job (bounded channel, try_send) ──► worker: Executor::handle
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

use crate::cluster::Op;
use crate::protocol::Command;
use crate::store::{self, Store, StoreStats};

/// Where a job's reply goes: a connection (slab token plus a unique id, since
/// tokens are reused) and the reply slot reserved for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplyTo {
    pub token: usize,
    pub conn_id: u64,
    pub slot: u64,
}

pub struct Job {
    pub op: Arc<Op>,
    /// The cas unique anything this op writes will carry.
    pub cas: u64,
    /// The client to answer; `None` for another node's write applied here.
    pub reply_to: Option<ReplyTo>,
}

pub struct Done {
    pub reply_to: ReplyTo,
    /// The whole reply (empty for `noreply`).
    pub reply: Vec<u8>,
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

/// Builds the store where it will run (a memcached store connects there).
pub type StoreFactory = Box<dyn FnOnce() -> Box<dyn Store> + Send>;

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
        jobs: Option<Sender<Job>>,
        done: Receiver<Done>,
        worker: Option<JoinHandle<()>>,
    },
}

impl Backend {
    /// A store that never blocks, run on the calling (reactor) thread.
    pub fn inline(factory: StoreFactory) -> Backend {
        let counters = Arc::new(BackendCounters::default());
        let executor = Executor {
            store: factory(),
            counters: counters.clone(),
        };
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
            .spawn(move || {
                let executor = Executor {
                    store: factory(),
                    counters: executor_counters,
                };
                worker.run(executor)
            })?;
        let kind = Kind::Worker {
            jobs: Some(jobs_tx),
            done: done_rx,
            worker: Some(handle),
        };
        Ok(Backend { kind, counters })
    }

    /// Runs or queues a job without blocking; gives it back when the
    /// worker's queue is full.
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        match &mut self.kind {
            Kind::Inline { executor, done } => {
                let reply = executor.handle(&job);
                if let Some(reply_to) = job.reply_to {
                    done.push(Done { reply_to, reply });
                }
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

/// A store and the counters kept as it works.
struct Executor {
    store: Box<dyn Store>,
    counters: Arc<BackendCounters>,
}

impl Executor {
    fn handle(&mut self, job: &Job) -> Vec<u8> {
        let mut reply = Vec::new();
        let request = &job.op.request;
        let hits = store::execute(
            self.store.as_mut(),
            request,
            job.op.now,
            job.cas,
            &mut reply,
        );
        if let Command::Get(get) = &request.command {
            self.counters.get_hits.fetch_add(hits, Ordering::Relaxed);
            let misses = (get.keys.len() as u64).saturating_sub(hits);
            self.counters
                .get_misses
                .fetch_add(misses, Ordering::Relaxed);
        }
        self.publish();
        reply
    }

    fn publish(&self) {
        let stats = self.store.stats();
        self.counters.items.store(stats.items, Ordering::Relaxed);
        self.counters.bytes.store(stats.bytes, Ordering::Relaxed);
        self.counters
            .limit_bytes
            .store(stats.limit_bytes, Ordering::Relaxed);
    }
}

struct Worker {
    jobs: Receiver<Job>,
    done: Sender<Done>,
    waker: Arc<Waker>,
}

/// Wake the reactor at least this often while a backlog is being worked off.
const WAKE_EVERY: usize = 16;

impl Worker {
    fn run(self, mut executor: Executor) {
        let mut unannounced = 0;
        while let Ok(job) = self.jobs.recv() {
            let reply = executor.handle(&job);
            if let Some(reply_to) = job.reply_to {
                if self.done.send(Done { reply_to, reply }).is_err() {
                    return;
                }
                unannounced += 1;
            }
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
