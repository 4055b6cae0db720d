//! Where store work runs. A store that can block (the memcached backend) is
//! owned by a worker thread, so no store call, however slow, runs on the
//! reactor; the embedded memory store never blocks and runs inline on the
//! reactor thread, which saves a thread hop and two wake-ups per request.
//!
//! ```text
//!  inline:  reactor ── Work ──► Replica::perform ──► Done (queued, taken at once)
//!  worker:  reactor ── Work (bounded channel, try_send) ──► worker: Replica::perform
//!           reactor ◄── Done (channel) ── Waker::wake ◄──┘
//! ```
//!
//! The work is the engine's own ([`Replica::Work`]); the backend only moves
//! it to where the store is and hands the results back. Jobs are performed
//! in the order they are queued, which is the order the engine asked for
//! them, so every replica applies the same sequence. A job is always
//! performed, even if its client already had a timeout from the reactor:
//! skipping it would make this replica differ from the others.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use mio::Waker;

use crate::cluster::{Done, Replica};
use crate::store::{Executor, StoreCounters, VersionedStore};

/// Builds the store where it will run (a memcached store connects there).
pub type StoreFactory = Box<dyn FnOnce() -> Box<dyn VersionedStore> + Send>;

/// The reactor's handle on its store, which runs replica `R`'s work.
pub struct Backend<R: Replica> {
    kind: Kind<R>,
    pub counters: Arc<StoreCounters>,
}

enum Kind<R: Replica> {
    Inline {
        replica: R,
        executor: Executor,
        done: Vec<Done<R::Done>>,
    },
    Worker {
        jobs: Option<Sender<R::Work>>,
        done: Receiver<Done<R::Done>>,
        worker: Option<JoinHandle<()>>,
    },
}

impl<R: Replica> Backend<R> {
    /// A store that never blocks, run on the calling (reactor) thread.
    pub fn inline(factory: StoreFactory, replica: R) -> Backend<R> {
        let counters = Arc::new(StoreCounters::default());
        let mut executor = Executor::new(factory(), counters.clone());
        executor.publish_counters();
        let kind = Kind::Inline {
            replica,
            executor,
            done: Vec::new(),
        };
        Backend { kind, counters }
    }

    /// A store on its own worker thread, fed through a channel of `capacity`
    /// jobs; the worker wakes the reactor through `waker` when replies wait.
    pub fn spawn(
        factory: StoreFactory,
        replica: R,
        waker: Arc<Waker>,
        capacity: usize,
    ) -> io::Result<Backend<R>> {
        let (jobs_tx, jobs_rx) = bounded(capacity);
        let (done_tx, done_rx) = unbounded();
        let counters = Arc::new(StoreCounters::default());
        let worker = Worker {
            jobs: jobs_rx,
            done: done_tx,
            waker,
        };
        let executor_counters = counters.clone();
        let handle = std::thread::Builder::new()
            .name("mckv-backend".into())
            .spawn(move || {
                let mut executor = Executor::new(factory(), executor_counters);
                executor.publish_counters();
                worker.run(replica, executor)
            })?;
        let kind = Kind::Worker {
            jobs: Some(jobs_tx),
            done: done_rx,
            worker: Some(handle),
        };
        Ok(Backend { kind, counters })
    }

    /// Runs or queues work without blocking; gives it back when the
    /// worker's queue is full.
    pub fn submit(&mut self, job: R::Work) -> Result<(), R::Work> {
        match &mut self.kind {
            Kind::Inline {
                replica,
                executor,
                done,
            } => {
                replica.perform(job, executor, &mut |d| done.push(d));
                executor.publish_counters();
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

    /// `cache_memlimit`: gives the store a new memory limit; whether it
    /// took it. Only the embedded store has a limit of the node's: a
    /// memcached backend's is its own, and is not asked.
    pub fn set_memory_limit(&mut self, limit_bytes: u64) -> bool {
        match &mut self.kind {
            Kind::Inline { executor, .. } => executor.set_memory_limit(limit_bytes),
            Kind::Worker { .. } => false,
        }
    }

    /// Whether the store runs on the reactor thread (and so needs the
    /// reactor to drive its housekeeping).
    pub fn is_inline(&self) -> bool {
        matches!(self.kind, Kind::Inline { .. })
    }

    /// The store's periodic housekeeping (see `VersionedStore::maintain`),
    /// published for `stats`; whether more is waiting. A store on a worker
    /// does its own (a memcached backend has its own LRU crawler).
    pub fn maintain(&mut self) -> bool {
        let Kind::Inline {
            executor, replica, ..
        } = &mut self.kind
        else {
            return false;
        };
        let now = executor.now();
        let busy = executor.store().maintain(now).unwrap_or_else(|e| {
            log::error!("store housekeeping failed: {e:?}");
            false
        });
        let replica_busy = replica.maintain(executor);
        executor.publish_counters();
        busy || replica_busy
    }

    /// The reactor's loop iteration ends (see `VersionedStore::end_batch`
    /// and `Replica::end_batch`).
    pub fn end_batch(&mut self) {
        if let Kind::Inline {
            executor, replica, ..
        } = &mut self.kind
        {
            executor.store().end_batch();
            replica.end_batch();
        }
    }

    /// Takes reply buffers whose bytes the reactor has copied out, so the
    /// next replies need no allocation. Only the inline store reuses them: a
    /// worker thread's would need a channel back, and it waits on memcached
    /// anyway.
    pub fn recycle(&mut self, spent: &mut Vec<Vec<u8>>) {
        match &mut self.kind {
            Kind::Inline { executor, .. } => spent.drain(..).for_each(|b| executor.keep(b)),
            Kind::Worker { .. } => spent.clear(),
        }
    }

    /// Moves the completed jobs into `into`, without waiting.
    pub fn completed(&mut self, into: &mut Vec<Done<R::Done>>) {
        match &mut self.kind {
            Kind::Inline { done, .. } => into.append(done),
            Kind::Worker { done, .. } => into.extend(done.try_iter()),
        }
    }
}

impl<R: Replica> Drop for Backend<R> {
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

struct Worker<R: Replica> {
    jobs: Receiver<R::Work>,
    done: Sender<Done<R::Done>>,
    waker: Arc<Waker>,
}

/// Wake the reactor at least this often while a backlog is being worked off.
const WAKE_EVERY: usize = 16;

impl<R: Replica> Worker<R> {
    fn run(self, mut replica: R, mut executor: Executor) {
        let mut unannounced = 0;
        while let Ok(work) = self.jobs.recv() {
            replica.perform(work, &mut executor, &mut |done| {
                // The reactor is gone only at shutdown: nothing left to tell.
                let _ = self.done.send(done);
                unannounced += 1;
            });
            executor.publish_counters();
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
    use crate::cluster::message::Op;
    use crate::cluster::total_order::{Apply, TotalOrderReplica, Work};
    use crate::cluster::ReplyTo;
    use crate::protocol::{parse, Action, Limits};
    use crate::store::executor::SPARE_CAPACITY;
    use crate::store::memory::MemoryStore;

    fn apply(backend: &mut Backend<TotalOrderReplica>, line: &[u8]) -> Vec<u8> {
        let Ok(parsed) = parse(line, &Limits::default()) else {
            panic!("incomplete request");
        };
        let Action::Execute(request) = parsed.action else {
            panic!("not a store command");
        };
        let to = ReplyTo {
            session: 1,
            slot: 0,
        };
        let op = Arc::new(Op { request, now: 1 });
        let job = Work::Apply(Apply {
            op,
            cas: 1,
            reply_to: Some(to),
            mark_delivered: false,
        });
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
        let mut backend = Backend::inline(factory, TotalOrderReplica::default());
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
