//! Eventual mode's store side: applies a client's write and records the
//! versions it leaves, keeps a peer's versions that are newer than what is
//! held, and collects the changes a peer's sync request asks for (as many
//! as fit the engine's budget), through the [`VersionLog`] beside the store.

use std::sync::Arc;

use super::message::SyncDone;
use super::version::Version;
use super::version_log::{Changes, VersionLog};
use crate::cluster::engine::{Done, Replica, ReplyTo};
use crate::cluster::message::Op;
use crate::cluster::{NodeId, Stamp};
use crate::store::Executor;

/// Store work eventual mode asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Serve a read from the local replica.
    Read { op: Arc<Op>, reply_to: ReplyTo },
    /// Apply a client's write here with the cas unique of `stamp`, reply,
    /// and publish the versions it leaves.
    Publish {
        op: Arc<Op>,
        stamp: Stamp,
        reply_to: ReplyTo,
    },
    /// Keep each of these versions from peer `from` that is newer than
    /// what is held (last writer wins); what the store evicts for them is
    /// deleted everywhere with `stamp`.
    ApplyVersions {
        from: NodeId,
        versions: Vec<Version>,
        stamp: Stamp,
        /// The sync answer these versions complete, if they do.
        completes: Option<SyncDone>,
    },
    /// The versions changed after `since`, for `peer`: as many, in change
    /// order, as fit in about `budget` bytes.
    Collect {
        peer: NodeId,
        since: u64,
        budget: usize,
    },
    /// Tombstones every peer has synced past can go.
    ForgetTombstones { synced: u64 },
}

/// What eventual mode's store work reports back to the engine.
#[derive(Debug)]
pub enum Report {
    /// Versions local writes left, to push to peers.
    Published(Vec<Version>),
    /// The answer to `peer`'s sync request since change `since`.
    Collected {
        peer: NodeId,
        since: u64,
        changes: Changes,
    },
    /// The sync answer from `from` that `done` completes is applied;
    /// `all_kept`: the store kept every version of it. `last`: the version
    /// log's last change number after it.
    SyncApplied {
        from: NodeId,
        done: SyncDone,
        all_kept: bool,
        last: u64,
    },
}

#[derive(Debug, Default)]
pub struct EventualReplica {
    log: VersionLog,
}

impl EventualReplica {
    pub fn log(&self) -> &VersionLog {
        &self.log
    }

    /// Makes what the store evicted for the work stamped `stamp` a delete
    /// of that stamp, pushed with `versions`.
    fn record_evictions(
        &mut self,
        executor: &mut Executor,
        stamp: Stamp,
        versions: &mut Vec<Version>,
    ) {
        let now = executor.now();
        let store = executor.store();
        for key in store.take_evicted() {
            match self.log.record_eviction(store, &key, stamp, now) {
                Ok(deleted) => versions.extend(deleted),
                // The key is gone here and its value may live on elsewhere:
                // the log still says it is held, as for a lost item.
                Err(e) => log::warn!("cannot record an eviction: {e:?}"),
            }
        }
    }
}

impl Replica for EventualReplica {
    type Work = Work;
    type Done = Report;

    fn perform(
        &mut self,
        work: Work,
        executor: &mut Executor,
        emit: &mut impl FnMut(Done<Report>),
    ) {
        match work {
            Work::Read { op, reply_to } => {
                let (reply, _) = executor.execute(&op.request, op.now, 0);
                emit(Done::Reply {
                    to: reply_to,
                    reply,
                });
                // A read changes no version: the log's size stands.
                return;
            }
            Work::Publish {
                op,
                stamp,
                reply_to,
            } => {
                let (reply, changed) = executor.execute(&op.request, op.now, stamp.cas_unique());
                emit(Done::Reply {
                    to: reply_to,
                    reply,
                });
                let mut versions = Vec::new();
                if changed {
                    versions =
                        self.log
                            .record_write(executor.store(), &op.request.command, stamp, op.now);
                }
                self.record_evictions(executor, stamp, &mut versions);
                if !versions.is_empty() {
                    emit(Done::Engine(Report::Published(versions)));
                }
            }
            Work::ApplyVersions {
                from,
                versions,
                stamp,
                completes,
            } => {
                let now = executor.now();
                let store = executor.store();
                let failed = versions
                    .iter()
                    .map(|v| self.log.apply_remote(store, v, now))
                    .filter_map(Result::err)
                    .last();
                if let Some(e) = &failed {
                    // The next sync from that peer carries them again.
                    log::warn!("cannot keep versions from node {from}: {e:?}");
                }
                let mut evictions = Vec::new();
                self.record_evictions(executor, stamp, &mut evictions);
                if !evictions.is_empty() {
                    emit(Done::Engine(Report::Published(evictions)));
                }
                if let Some(done) = completes {
                    let all_kept = failed.is_none();
                    emit(Done::Engine(Report::SyncApplied {
                        from,
                        done,
                        all_kept,
                        last: self.log.last_seq(),
                    }));
                }
            }
            Work::Collect {
                peer,
                since,
                budget,
            } => {
                let now = executor.now();
                match self.log.since(executor.store(), since, budget, now) {
                    Ok(changes) => emit(Done::Engine(Report::Collected {
                        peer,
                        since,
                        changes,
                    })),
                    // Unanswered, node `peer` asks again.
                    Err(e) => log::warn!("cannot answer node {peer}'s sync request: {e:?}"),
                }
            }
            Work::ForgetTombstones { synced } => self.log.forget_tombstones(synced),
        }
        executor.publish_version_log_bytes(self.log.heap_bytes());
    }
}
