//! Eventual mode's store side: applies a client's write and records the
//! versions it leaves, keeps a peer's versions that are newer than what is
//! held, and collects the changes a peer's sync request asks for (as many
//! as fit the engine's budget), through the [`VersionLog`] beside the store.
//! In causal mode its [`CausalGate`] numbers local writes and holds back a
//! peer's until their causes are applied (`causal.rs`).

use std::sync::Arc;

use super::causal::{CausalGate, Coverage, Origin};
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
    /// deleted everywhere with `stamp`. In causal mode, pushed versions
    /// (those with a cause) go through the gate, and the others are a whole
    /// sync answer, applied together with its `coverage`.
    ApplyVersions {
        from: NodeId,
        versions: Vec<Version>,
        stamp: Stamp,
        /// The sync answer these versions complete, if they do.
        completes: Option<SyncDone>,
        /// Causal mode: the answering node's coverage that goes with it.
        coverage: Option<Coverage>,
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
    /// The answer to `peer`'s sync request since change `since`, and in
    /// causal mode the coverage of what was applied when it was collected.
    Collected {
        peer: NodeId,
        since: u64,
        changes: Changes,
        coverage: Option<Coverage>,
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
    /// Causal mode: per node, how many of its writes wait here for their
    /// causes (after work that changed it), and pushes dropped so far for
    /// want of room to wait.
    Waiting {
        per_node: Vec<(NodeId, usize)>,
        dropped: u64,
    },
}

#[derive(Debug, Default)]
pub struct EventualReplica {
    log: VersionLog,
    /// Causal mode's gate; none in eventual mode.
    gate: Option<CausalGate>,
}

impl EventualReplica {
    /// A causal node's store side, writing as `origin`.
    pub fn causal(origin: Origin) -> EventualReplica {
        EventualReplica {
            log: VersionLog::new(),
            gate: Some(CausalGate::new(origin)),
        }
    }

    pub fn log(&self) -> &VersionLog {
        &self.log
    }

    /// Numbers local writes' versions in causal mode.
    fn number_local(&mut self, versions: &mut [Version]) {
        if let Some(gate) = &mut self.gate {
            gate.number_local(versions);
        }
    }

    /// Applies what a peer sent; whether the store kept every version of
    /// a sync answer among them (pushes the store could not keep come again
    /// with the next sync). In causal mode pushes wait for their causes, and
    /// an answer's coverage is taken only if the store kept all of it.
    fn apply_versions(
        &mut self,
        executor: &mut Executor,
        from: NodeId,
        versions: Vec<Version>,
        coverage: Option<Coverage>,
    ) -> bool {
        let now = executor.now();
        let store = executor.store();
        let log = &mut self.log;
        let mut kept = true;
        let mut apply = |version: &Version| match log.apply_remote(store, version, now) {
            Ok(_) => true,
            Err(e) => {
                log::warn!("cannot keep a version from node {from}: {e:?}");
                false
            }
        };
        let Some(gate) = &mut self.gate else {
            for version in &versions {
                kept &= apply(version);
            }
            return kept;
        };
        let (pushes, answer): (Vec<Version>, Vec<Version>) =
            versions.into_iter().partition(|v| v.cause.is_some());
        for version in &answer {
            kept &= apply(version);
        }
        if let (Some(coverage), true) = (&coverage, kept) {
            gate.merge(coverage, &mut apply);
        }
        for push in pushes {
            gate.offer(push, &mut apply);
        }
        kept
    }

    /// Causal mode: how many writes wait per node, if any waited before or
    /// wait now.
    fn waiting_report(&self, waited: bool) -> Option<Report> {
        let gate = self.gate.as_ref()?;
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
                versions,
                stamp,
                completes,
                coverage,
            } => {
                let waited = self.gate.as_ref().is_some_and(CausalGate::is_waiting);
                let all_kept = self.apply_versions(executor, from, versions, coverage);
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
            } => {
                let now = executor.now();
                match self.log.since(executor.store(), since, budget, now) {
                    Ok(changes) => emit(Done::Engine(Report::Collected {
                        peer,
                        since,
                        changes,
                        coverage: self.gate.as_ref().map(CausalGate::coverage),
                    })),
                    // Unanswered, node `peer` asks again.
                    Err(e) => log::warn!("cannot answer node {peer}'s sync request: {e:?}"),
                }
            }
            Work::ForgetTombstones { synced } => {
                let waiting = self.gate.as_ref().map(CausalGate::waiting_keys);
                let keep = |key: &[u8]| waiting.as_ref().is_some_and(|w| w.contains(key));
                self.log.forget_tombstones(synced, keep);
            }
        }
        executor.publish_version_log_bytes(self.log.heap_bytes());
    }
}
