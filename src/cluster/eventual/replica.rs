//! Eventual mode's store side: applies a client's write and records the
//! versions it leaves, keeps a peer's versions that are newer than what is
//! held, and collects the changes a peer's sync request asks for (as many
//! as fit the engine's budget), through the [`VersionLog`] beside the store.
//! Its [`Gate`] numbers local writes and keeps the coverage of what is
//! applied, and in causal mode holds back a peer's writes until their
//! causes are applied (`origins.rs`).

use std::sync::Arc;

use super::message::SyncDone;
use super::origins::{Coverage, Gate};
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
    /// Keep each version peer `from` pushed or answered with that is newer
    /// than what is held (last writer wins; pushes through the gate, which
    /// in causal mode holds them until their causes are applied); what the
    /// store evicts for them is deleted everywhere with `stamp`.
    ApplyVersions {
        from: NodeId,
        pushes: Vec<Version>,
        /// Versions of a sync answer (in causal mode, a whole one).
        answer: Vec<Version>,
        stamp: Stamp,
        /// The sync answer these versions complete, if they do.
        completes: Option<SyncDone>,
        /// With an answer's last part: the answering node's coverage then,
        /// held here too once the store kept the answer.
        coverage: Option<Coverage>,
    },
    /// The versions changed after `since`, for `peer`, but for those it
    /// covers: as many, in change order, as fit in about `budget` bytes.
    Collect {
        peer: NodeId,
        since: u64,
        budget: usize,
        covered: Coverage,
    },
    /// Report the coverage of what is applied here, for sync requests.
    Summarize,
    /// Tombstones every peer has synced past can go.
    ForgetTombstones { synced: u64 },
}

/// What eventual mode's store work reports back to the engine.
#[derive(Debug)]
pub enum Report {
    /// Versions local writes left, to push to peers.
    Published(Vec<Version>),
    /// The answer to `peer`'s sync request since change `since`, and the
    /// coverage of what was applied when it was collected.
    Collected {
        peer: NodeId,
        since: u64,
        changes: Changes,
        coverage: Coverage,
    },
    /// The coverage of what is applied here.
    Summary(Coverage),
    /// The sync answer from `from` that `done` completes is applied;
    /// `all_kept`: the store kept every version of it. `last`: the version
    /// log's last change number after it.
    SyncApplied {
        from: NodeId,
        done: SyncDone,
        all_kept: bool,
        last: u64,
    },
    /// Causal mode: per node, how many of its writes wait here for their
    /// causes (after work that changed it), and pushes dropped so far for
    /// want of room to wait.
    Waiting {
        per_node: Vec<(NodeId, usize)>,
        dropped: u64,
    },
}

#[derive(Debug)]
pub struct EventualReplica {
    log: VersionLog,
    gate: Gate,
}

impl EventualReplica {
    pub fn new(gate: Gate) -> EventualReplica {
        EventualReplica {
            log: VersionLog::new(),
            gate,
        }
    }

    pub fn log(&self) -> &VersionLog {
        &self.log
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Numbers local writes' versions, and notes who made them.
    fn number_local(&mut self, versions: &mut [Version]) {
        self.gate.number_local(versions);
        self.log.note_causes(versions);
    }

    /// Applies what a peer sent; whether the store kept every version of
    /// the answer among them (pushes the store could not keep come again
    /// with the next sync). An answer's coverage is taken only if the store
    /// kept all of it.
    fn apply_versions(
        &mut self,
        executor: &mut Executor,
        from: NodeId,
        pushes: Vec<Version>,
        answer: Vec<Version>,
        coverage: Option<Coverage>,
    ) -> bool {
        let now = executor.now();
        let store = executor.store();
        let log = &mut self.log;
        let mut apply = |version: &Version| match log.apply_remote(store, version, now) {
            Ok(_) => true,
            Err(e) => {
                log::warn!("cannot keep a version from node {from}: {e:?}");
                false
            }
        };
        let mut kept = true;
        for version in &answer {
            kept &= apply(version);
        }
        if let (Some(coverage), true) = (&coverage, kept) {
            self.gate.merge(coverage, &mut apply);
        }
        for push in pushes {
            self.gate.offer(push, &mut apply);
        }
        kept
    }

    /// Causal mode: how many writes wait per node, if any waited before or
    /// wait now.
    fn waiting_report(&self, waited: bool) -> Option<Report> {
        let gate = &self.gate;
        let waiting = gate.waiting();
        if waiting.is_empty() && !waited {
            return None;
        }
        let mut per_node: Vec<(NodeId, usize)> = Vec::new();
        for (origin, count) in waiting {
            match per_node.last_mut() {
                Some((node, n)) if *node == origin.node => *n += count,
                _ => per_node.push((origin.node, count)),
            }
        }
        Some(Report::Waiting {
            per_node,
            dropped: gate.dropped(),
        })
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
                self.number_local(&mut versions);
                if !versions.is_empty() {
                    emit(Done::Engine(Report::Published(versions)));
                }
            }
            Work::ApplyVersions {
                from,
                pushes,
                answer,
                stamp,
                completes,
                coverage,
            } => {
                let waited = self.gate.is_waiting();
                let all_kept = self.apply_versions(executor, from, pushes, answer, coverage);
                let mut evictions = Vec::new();
                self.record_evictions(executor, stamp, &mut evictions);
                self.number_local(&mut evictions);
                if !evictions.is_empty() {
                    emit(Done::Engine(Report::Published(evictions)));
                }
                if let Some(report) = self.waiting_report(waited) {
                    emit(Done::Engine(report));
                }
                if let Some(done) = completes {
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
                covered,
            } => {
                let now = executor.now();
                match self
                    .log
                    .since(executor.store(), since, budget, &covered, now)
                {
                    Ok(changes) => emit(Done::Engine(Report::Collected {
                        peer,
                        since,
                        changes,
                        coverage: self.gate.coverage(),
                    })),
                    // Unanswered, node `peer` asks again.
                    Err(e) => log::warn!("cannot answer node {peer}'s sync request: {e:?}"),
                }
            }
            Work::ForgetTombstones { synced } => {
                let waiting = self.gate.waiting_keys();
                self.log
                    .forget_tombstones(synced, |key| waiting.contains(key));
            }
            Work::Summarize => emit(Done::Engine(Report::Summary(self.gate.coverage()))),
        }
        executor.publish_version_log_bytes(self.log.heap_bytes());
    }
}
