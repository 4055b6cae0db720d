//! Eventual mode's store side: applies a client's write and records the
//! versions it leaves, keeps a peer's versions that are newer than what is
//! held, and collects the changes a peer's sync request asks for (as many
//! as fit the engine's budget), through the [`VersionLog`] beside the store.
//! Its [`Gate`] numbers local writes and keeps the coverage of what is
//! applied, and in causal mode holds back a peer's writes until their
//! causes are applied (`origins.rs`); its [`Asides`] hold a causal sync
//! answer's parts until the last (`staging.rs`). With a data directory, its
//! [`Journal`] logs every version it makes or applies, and it is replayed
//! from it at start (`journal.rs`).

use std::io;
use std::sync::Arc;

use super::journal::{self, Journal, Replayed};
use super::message::SyncDone;
use super::origins::{Coverage, Gate, Origin};
use super::staging::{AnswerPart, Asides, Staged, Whole, STAGED_BESIDE};
use super::version::Version;
use super::version_log::{Changes, VersionLog};
use crate::cluster::engine::{Done, Replica, ReplyTo};
use crate::cluster::message::Op;
use crate::cluster::{NodeId, Stamp};
use crate::durability::{JournalLog, Journaled, ReportWait};
use crate::protocol::{reply, Command};
use crate::store::{Executor, StoreError, UnixTime, VersionedStore};

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
        /// Versions of a sync answer, or in causal mode of the `part` of
        /// one, kept aside until the last (`staging.rs`).
        answer: Vec<Version>,
        part: Option<AnswerPart>,
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
        /// The run of `peer` that asked.
        asked_by: u64,
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
        asked_by: u64,
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
    /// Causal mode: per origin (a node's run), how many of its writes wait
    /// here for their causes (after work that changed it), sorted by
    /// origin, and pushes dropped so far for want of room to wait.
    Waiting {
        per_origin: Vec<(Origin, usize)>,
        dropped: u64,
    },
}

pub struct EventualReplica {
    log: VersionLog,
    gate: Gate,
    /// Causal mode: answers in parts, until their last.
    asides: Asides,
    /// Causal mode: the writes waiting per origin, and those dropped,
    /// when last reported.
    reported_waiting: (Vec<(Origin, usize)>, u64),
    /// With a data directory: where versions are logged, and what the
    /// replay at start found.
    journal: Option<Journal>,
    replayed: Replayed,
}

impl std::fmt::Debug for EventualReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventualReplica")
            .field("log", &self.log)
            .field("gate", &self.gate)
            .field("journaled", &self.journal.is_some())
            .finish()
    }
}

impl EventualReplica {
    pub fn new(gate: Gate) -> EventualReplica {
        EventualReplica {
            log: VersionLog::new(),
            gate,
            asides: Asides::default(),
            reported_waiting: (Vec::new(), 0),
            journal: None,
            replayed: Replayed::default(),
        }
    }

    /// This replica, replayed from a data directory, logging its versions
    /// through `log` from now on.
    pub fn with_journal(mut self, log: JournalLog) -> EventualReplica {
        self.journal = Some(Journal::new(log, &self.replayed));
        self
    }

    /// The highest stamp time the replay at start found: the engine's
    /// clock starts above it.
    pub fn highest_replayed_ts(&self) -> u64 {
        self.replayed.highest_ts
    }

    pub fn log(&self) -> &VersionLog {
        &self.log
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// A claim of what is held goes out: the log is fsynced soon, whatever
    /// the policy, since the claim waits for it (`Replica::report_waits`).
    fn sync_journal(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.sync();
        }
    }

    /// Makes `stamp` (this node's) safe to show: see `journal.rs`, point 8.
    fn reserve(&mut self, stamp: Stamp) {
        if let Some(journal) = &mut self.journal {
            journal.reserve(stamp.ts);
        }
    }

    /// Numbers local writes' versions, notes who made them, and logs them.
    fn number_local(&mut self, versions: &mut [Version]) {
        self.gate.number_local(versions);
        self.log.note_causes(versions);
        if let Some(journal) = &mut self.journal {
            versions.iter().for_each(|v| journal.version(v));
        }
    }

    /// Applies what a peer sent; whether the store kept every version of
    /// the answer among them (pushes the store could not keep come again
    /// with the next sync). An answer's coverage is taken only if the store
    /// kept all of it. In causal mode a version the store can never keep
    /// (or, full, not now) becomes a delete of its key, stamped `stamp`
    /// and pushed (`origins.rs`); eventual mode takes it as held, as asking
    /// again would only be refused again.
    fn apply_versions(
        &mut self,
        executor: &mut Executor,
        from: NodeId,
        (pushes, answer): (Vec<Version>, Vec<Version>),
        (coverage, staged_kept): (Option<Coverage>, bool),
        stamp: Stamp,
    ) -> (bool, Vec<Version>) {
        let now = executor.now();
        let store = executor.store();
        let causal = self.gate.is_causal();
        let log = &mut self.log;
        let mut journal = self.journal.as_mut();
        let mut deletes = Vec::new();
        let mut refused = Vec::new();
        let mut failed: (usize, Option<StoreError>) = (0, None);
        let mut apply = |version: &Version| match log.apply_remote(store, version, now) {
            Ok(applied) => {
                if let (true, Some(journal)) = (applied, journal.as_mut()) {
                    journal.version(version);
                }
                true
            }
            Err(StoreError::Refused(_) | StoreError::OutOfMemory) if causal => {
                match log.record_unkept(store, version, stamp, now) {
                    Ok(deleted) => {
                        // Logged now, before what this batch applies next
                        // (and again once numbered, with its cause).
                        if let (Some(delete), Some(journal)) = (&deleted, journal.as_mut()) {
                            journal.version(delete);
                        }
                        deletes.extend(deleted);
                        true
                    }
                    Err(e) => {
                        failed = (failed.0 + 1, Some(e));
                        false
                    }
                }
            }
            Err(StoreError::Refused(_)) => {
                refused.extend(version.cause.clone());
                true
            }
            Err(e) => {
                failed = (failed.0 + 1, Some(e));
                false
            }
        };
        let mut kept = staged_kept;
        for version in &answer {
            kept &= apply(version);
        }
        if let (Some(coverage), true) = (&coverage, kept) {
            self.gate.merge(coverage, &mut apply);
        }
        for push in pushes {
            self.gate.offer(push, &mut apply);
        }
        if let (n, Some(e)) = failed {
            log::warn!("cannot keep {n} versions from node {from}: {e:?}");
        }
        for cause in &refused {
            self.gate.lost(cause);
        }
        (kept, deletes)
    }

    /// Causal mode: takes a part of `from`'s answer aside (`staging.rs`;
    /// `None`: one that could not be taken). Returns the versions to apply
    /// now: none until the last part, then the whole answer; or, staged
    /// (or lost), none, with whether the answer was kept whole and the
    /// deletes the staging made, once its store has taken the place of
    /// the replica's.
    fn take_part(
        &mut self,
        executor: &mut Executor,
        from: NodeId,
        part: AnswerPart,
        versions: Option<Vec<Version>>,
        stamp: Stamp,
    ) -> (Vec<Version>, Option<(bool, Vec<Version>)>) {
        let now = executor.now();
        // Staged only from a peer's first change on (what a node that
        // restarted empty asks for), where the swap's catch-up is small, and
        // nothing of it is logged on the way (a data directory logs every
        // version kept). Not an answer to a later request: the swap numbers
        // every change anew, news to every peer, and an answer of theirs in
        // parts would then be staged and numbered anew in turn, for ever.
        let stage = part.since == 0 && self.journal.is_none() && self.log.len() <= STAGED_BESIDE;
        let store = || stage.then(|| executor.store().empty_like()).flatten();
        match self.asides.take(from, part, versions, store, (stamp, now)) {
            None => (Vec::new(), None),
            Some(Whole::Kept(answer)) => (answer, None),
            Some(Whole::Lost) => (Vec::new(), Some((false, Vec::new()))),
            Some(Whole::Staged(staged)) => {
                let made = self.swap_in(executor, *staged, stamp, now);
                (Vec::new(), Some(made))
            }
        }
    }

    /// Puts a staged answer's store and log in the place of the replica's,
    /// once it holds what the replica held too (`staging.rs`); whether it
    /// kept every version, and the deletes it made, to publish.
    fn swap_in(
        &mut self,
        executor: &mut Executor,
        mut staged: Staged,
        stamp: Stamp,
        now: UnixTime,
    ) -> (bool, Vec<Version>) {
        let everything = Coverage::default();
        match self
            .log
            .since(executor.store(), 0, usize::MAX, &everything, now)
        {
            Ok(held) => {
                for cause in &held.lost {
                    self.gate.lost(cause);
                }
                staged.apply(&held.versions, stamp, now);
            }
            // A store that fails to be read is not one that stages.
            Err(e) => {
                log::warn!("cannot read the store to swap a staged answer in: {e:?}");
                return (false, Vec::new());
            }
        }
        staged.log.renumber_after(self.log.last_seq());
        executor.swap_store(staged.store);
        self.log = staged.log;
        (staged.all_kept, staged.deletes)
    }

    /// Causal mode: how many writes wait per origin, if that or the count
    /// of dropped ones changed since the last report. Compared per origin,
    /// not in all: one work can release a write of one origin and hold
    /// one of another, which leaves the total as it was. A walk of the
    /// origins with writes waiting, once per work, not per write.
    fn waiting_report(&mut self) -> Option<Report> {
        let now = (self.gate.waiting(), self.gate.dropped());
        if now == self.reported_waiting {
            return None;
        }
        self.reported_waiting = now.clone();
        let (per_origin, dropped) = now;
        Some(Report::Waiting {
            per_origin,
            dropped,
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

/// The keys a read names, whose state its reply shows (`journal.rs`,
/// point 1); `None` for a command that is no read (its reply waits for
/// the whole log).
fn read_keys(command: &Command) -> Option<impl Iterator<Item = &[u8]>> {
    let (many, one) = match command {
        Command::Get(get) => (Some(get.keys.iter()), None),
        Command::Meta(meta) => (None, Some(&meta.key[..])),
        _ => return None,
    };
    Some(many.into_iter().flatten().chain(one))
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
                let shows = match (&mut self.journal, read_keys(&op.request.command)) {
                    (Some(journal), Some(keys)) => Some(journal.shown_by(keys)),
                    _ => None,
                };
                emit(Done::Reply {
                    to: reply_to,
                    reply,
                    shows,
                });
                // A read changes no version: the log's size stands.
                return;
            }
            Work::Publish {
                op,
                stamp,
                reply_to,
            } => {
                if let Some(why) = self.journal.as_ref().and_then(Journal::refusal) {
                    let mut refusal = Vec::new();
                    if !op.request.noreply {
                        let why = format!("data directory: {why}; not applied");
                        reply::server_error(&mut refusal, &why);
                    }
                    emit(Done::Reply {
                        to: reply_to,
                        reply: refusal,
                        shows: None,
                    });
                    return;
                }
                self.reserve(stamp);
                let (reply, changed) = executor.execute(&op.request, op.now, stamp.cas_unique());
                emit(Done::Reply {
                    to: reply_to,
                    reply,
                    shows: None,
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
                part,
                stamp,
                completes,
                coverage,
            } => {
                // While the disk refuses the log, nothing is applied that it
                // could not keep: what was pushed comes with the next sync.
                let refusing = self.journal.as_ref().and_then(Journal::refusal).is_some();
                let (answer, staged) = match part {
                    // A part that cannot be applied now cannot be taken
                    // either: its answer is asked for again.
                    Some(part) => {
                        let versions = (!refusing).then_some(answer);
                        self.take_part(executor, from, part, versions, stamp)
                    }
                    None => (answer, None),
                };
                let (all_kept, mut deletes) = match refusing {
                    true => (false, Vec::new()),
                    false => {
                        let staged_kept = staged.as_ref().is_none_or(|s| s.0);
                        let applied = (pushes, answer);
                        self.apply_versions(executor, from, applied, (coverage, staged_kept), stamp)
                    }
                };
                if let Some((_, staged_deletes)) = staged {
                    deletes.splice(0..0, staged_deletes);
                }
                self.record_evictions(executor, stamp, &mut deletes);
                self.number_local(&mut deletes);
                if !deletes.is_empty() {
                    self.reserve(stamp);
                    emit(Done::Engine(Report::Published(deletes)));
                }
                if let Some(report) = self.waiting_report() {
                    emit(Done::Engine(report));
                }
                if let Some(done) = completes {
                    self.sync_journal();
                    emit(Done::Engine(Report::SyncApplied {
                        from,
                        done,
                        all_kept,
                        last: self.log.last_seq(),
                    }));
                }
            }
            // While the disk refuses the log, nothing is answered: an answer
            // tells the asker how far it has synced, and so which tombstones
            // this node may forget, and the log may not hold them. Node
            // `peer` asks again.
            Work::Collect { .. } if self.journal.as_ref().and_then(Journal::refusal).is_some() => {}
            Work::Collect {
                peer,
                since,
                budget,
                covered,
                asked_by,
            } => {
                let now = executor.now();
                match self
                    .log
                    .since(executor.store(), since, budget, &covered, now)
                {
                    Ok(changes) => {
                        // Left out of the answer: claimed by no coverage.
                        for cause in &changes.lost {
                            self.gate.lost(cause);
                        }
                        self.sync_journal();
                        emit(Done::Engine(Report::Collected {
                            peer,
                            since,
                            changes,
                            coverage: self.gate.coverage(),
                            asked_by,
                        }))
                    }
                    // Unanswered, node `peer` asks again.
                    Err(e) => log::warn!("cannot answer node {peer}'s sync request: {e:?}"),
                }
            }
            Work::ForgetTombstones { synced } => {
                // A sync round began: writes that waited too long go.
                self.gate.next_round();
                let waiting = self.gate.waiting_keys();
                self.log
                    .forget_tombstones(synced, |key| waiting.contains(key));
                if let Some(report) = self.waiting_report() {
                    emit(Done::Engine(report));
                }
            }
            Work::Summarize => {
                let coverage = self.gate.coverage();
                if let Some(journal) = &mut self.journal {
                    journal.coverage(&coverage);
                }
                emit(Done::Engine(Report::Summary(coverage)))
            }
        }
        let staged = self.asides.heap_bytes();
        executor.publish_version_log_bytes(self.log.heap_bytes() + staged);
    }

    fn maintain(&mut self, executor: &mut Executor) -> bool {
        let Some(journal) = &mut self.journal else {
            return false;
        };
        let now = executor.now();
        let coverage = self.gate.coverage();
        match journal.maintain(&self.log, &coverage, executor.store(), now) {
            Ok((busy, lost)) => {
                // Left out of the snapshot: claimed by no coverage.
                lost.iter().for_each(|cause| self.gate.lost(cause));
                busy
            }
            Err(e) => {
                log::error!("cannot write a snapshot part: {e:?}");
                false
            }
        }
    }

    fn end_batch(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.end_batch();
        }
    }

    /// A sync answer applied whole moves what the next request says this
    /// node holds, and an answer of its own tells the asker how far it has
    /// synced: both decide which tombstones are forgotten, so a crash must
    /// not take back what they claim (`journal.rs`, point 6). Versions
    /// this node made show peers its stamps (point 8).
    fn report_waits(report: &Report) -> ReportWait {
        match report {
            // Every acknowledgement, kept or not, so none overtakes a held one.
            Report::SyncApplied { .. } | Report::Collected { .. } => ReportWait::Everything,
            Report::Published(_) => ReportWait::Reservation,
            Report::Summary(_) | Report::Waiting { .. } => ReportWait::Nothing,
        }
    }
}

impl Journaled for EventualReplica {
    fn replay(
        &mut self,
        store: &mut dyn VersionedStore,
        record: &[u8],
        now: UnixTime,
    ) -> io::Result<()> {
        let Some(version) = self.replayed.read(record)? else {
            return Ok(());
        };
        match self.log.apply_remote(store, &version, now) {
            Ok(true) => Ok(()),
            // Held already, at this stamp or a newer one; a version logged
            // twice (a causal delete, first when made, then numbered) gets
            // its cause from the second record.
            Ok(false) => {
                if version.cause.is_some() {
                    self.log.note_causes(std::slice::from_ref(&version));
                }
                Ok(())
            }
            // Over this node's limits now (they were lowered). A causal
            // node would show what followed that write without it.
            Err(StoreError::Refused(why)) if self.gate.is_causal() => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a logged write of key {} is refused now ({why}): a causal node would \
                     show what followed it without it; restore the limits it was written \
                     under, or move the data directory away",
                    String::from_utf8_lossy(&version.key)
                ),
            )),
            // Eventual mode: as from a peer, held by no coverage told.
            Err(StoreError::Refused(why)) => {
                log::warn!("a logged version is refused now: {why}");
                if let Some(cause) = &version.cause {
                    self.gate.lost(cause);
                }
                Ok(())
            }
            Err(e) => Err(io::Error::other(format!("replaying a version: {e:?}"))),
        }
    }

    fn recovered(
        &mut self,
        store: &mut dyn VersionedStore,
        now: UnixTime,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let (number, coverage) = self.replayed.coverage.clone().unwrap_or_default();
        // Nothing waits yet: the merge releases nothing.
        self.gate.merge(&coverage, &mut |_| true);
        let lost = journal::write_versions(&self.log, store, now, out)
            .map_err(|e| io::Error::other(format!("reading the store back: {e:?}")))?;
        lost.iter().for_each(|cause| self.gate.lost(cause));
        // Below what replay refused or the store lost, as told to peers.
        journal::write_coverage(out, number, &self.gate.coverage());
        // The engine's clock starts above it (`journal.rs`, point 8).
        journal::write_clock(out, self.replayed.highest_ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::journal::RESERVE;
    use crate::cluster::eventual::origins::{Cause, Origin};
    use crate::cluster::eventual::version::State;
    use crate::cluster::message::Op;
    use crate::protocol::Limits;
    use crate::store::memory::MemoryStore;
    use crate::store::{Entry, Expiry, StoreCounters, UnixTime};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    const ME: Origin = Origin { node: 1, run: 10 };
    const PEER: Origin = Origin { node: 2, run: 20 };

    fn executor() -> Executor {
        fn now() -> UnixTime {
            1_700_000_000
        }
        let store = Box::new(MemoryStore::new(1 << 20, Limits::default()).keeping_evicted());
        Executor::new(store, Arc::new(StoreCounters::default())).with_clock(now)
    }

    fn put(key: &[u8], ts: u64, seq: u64) -> Version {
        Version {
            key: key.to_vec(),
            stamp: Stamp { ts, node: 2 },
            state: State::Present(Entry {
                flags: 0,
                expiry: Expiry::Never,
                value: b"v".to_vec(),
            }),
            cause: Some(Cause {
                origin: PEER,
                seq,
                deps: None,
            }),
        }
    }

    fn perform(replica: &mut EventualReplica, executor: &mut Executor, work: Work) -> Vec<Report> {
        let mut reports = Vec::new();
        replica.perform(work, executor, &mut |done| {
            if let Done::Engine(report) = done {
                reports.push(report);
            }
        });
        reports
    }

    /// A whole answer from node 2 whose second version is for a key this
    /// store refuses (over 250 bytes), with node 2's coverage of both; its
    /// stamp for a delete is `ts`.
    fn answer_with_an_unkeepable_key(ts: u64) -> Work {
        let long = vec![b'k'; 300];
        Work::ApplyVersions {
            from: 2,
            pushes: Vec::new(),
            answer: vec![put(b"first", 5, 1), put(&long, 6, 2)],
            part: None,
            stamp: Stamp { ts, node: 1 },
            completes: None,
            coverage: Some(Coverage::from_entries(vec![(PEER, 2)])),
        }
    }

    /// A pushed write `seq` of `origin`, depending on `deps`.
    fn pushed(key: &[u8], origin: Origin, seq: u64, deps: &[(Origin, u64)]) -> Version {
        let mut version = put(key, seq, seq);
        version.cause = Some(Cause {
            origin,
            seq,
            deps: Some(Arc::new(Coverage::from_entries(deps.to_vec()))),
        });
        version
    }

    fn push(pushes: Vec<Version>) -> Work {
        Work::ApplyVersions {
            from: 2,
            pushes,
            answer: Vec::new(),
            part: None,
            stamp: Stamp { ts: 100, node: 1 },
            completes: None,
            coverage: None,
        }
    }

    fn waiting(reports: &[Report]) -> Option<Vec<(Origin, usize)>> {
        reports.iter().find_map(|r| match r {
            Report::Waiting { per_origin, .. } => Some(per_origin.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_writes_waiting_are_reported_per_origin_whenever_one_origins_count_moves() {
        const THIRD: Origin = Origin { node: 3, run: 30 };
        let (mut replica, mut executor) = (EventualReplica::new(Gate::causal(ME)), executor());
        let t = pushed(b"t", THIRD, 1, &[(PEER, 1)]);
        let reports = perform(&mut replica, &mut executor, push(vec![t]));
        assert_eq!(waiting(&reports), Some(vec![(THIRD, 1)]));
        // Node 2's 1 releases node 3's write, and its 2 waits for a write
        // of node 3 not here yet: one write waits, as before, of another
        // origin.
        let a = pushed(b"a", PEER, 1, &[]);
        let b = pushed(b"b", PEER, 2, &[(THIRD, 2)]);
        let reports = perform(&mut replica, &mut executor, push(vec![a, b.clone()]));
        assert_eq!(waiting(&reports), Some(vec![(PEER, 1)]));
        let reports = perform(&mut replica, &mut executor, push(vec![b]));
        assert_eq!(waiting(&reports), None, "nothing moved: no report");
    }

    #[test]
    fn a_causal_replica_deletes_everywhere_what_it_cannot_keep_and_covers_the_answer() {
        let (mut replica, mut executor) = (EventualReplica::new(Gate::causal(ME)), executor());
        let reports = perform(
            &mut replica,
            &mut executor,
            answer_with_an_unkeepable_key(100),
        );
        let [Report::Published(deletes)] = &reports[..] else {
            panic!("one delete to push: {reports:?}");
        };
        let [delete] = &deletes[..] else {
            panic!("{deletes:?}");
        };
        assert_eq!((delete.key.len(), &delete.state), (300, &State::Deleted));
        assert_eq!(delete.stamp, Stamp { ts: 100, node: 1 });
        let cause = delete.cause.as_ref().expect("numbered as our write");
        let deps = cause
            .deps
            .as_deref()
            .expect("a causal write has dependencies");
        assert_eq!(deps.get(PEER), 2, "it follows the answer it stands in for");
        assert_eq!(replica.gate().coverage().get(PEER), 2);
    }

    /// A part of node `from`'s answer (of its run 20) since 0, from peer
    /// origin `PEER`'s writes, the last one with what it completes.
    fn answer_part(from: NodeId, versions: Vec<Version>, last: Option<u64>) -> Work {
        use crate::cluster::eventual::ChangeMark;
        let part = AnswerPart {
            run: 20,
            since: 0,
            last: last.is_some(),
        };
        let completes = last.map(|seq| SyncDone {
            asked_by: ME.run,
            since: 0,
            upto: ChangeMark {
                incarnation: 20,
                seq,
            },
            last: seq,
        });
        Work::ApplyVersions {
            from,
            pushes: Vec::new(),
            answer: versions,
            part: Some(part),
            stamp: Stamp { ts: 100, node: 1 },
            completes,
            coverage: last.map(|seq| Coverage::from_entries(vec![(PEER, seq)])),
        }
    }

    /// The keys the store holds, of `keys`.
    fn in_sight<'k>(executor: &mut Executor, keys: &[&'k str]) -> Vec<&'k str> {
        let now = executor.now();
        let store = executor.store();
        let found = |k: &&str| store.export(k.as_bytes(), now).unwrap().is_some();
        keys.iter().copied().filter(found).collect()
    }

    fn stamp_of(replica: &EventualReplica, key: &str) -> Option<u64> {
        replica.log().stamp(key.as_bytes()).map(|s| s.ts)
    }

    /// An answer in parts since 0 is applied out of sight, then takes the
    /// store's place with its last part, after what the store took
    /// meanwhile (a push here), each key at its highest stamp; its changes
    /// are numbered after the old log's, and its coverage is taken.
    #[test]
    fn an_answer_in_parts_is_staged_out_of_sight_and_swapped_in_with_what_came_meanwhile() {
        let (mut replica, mut executor) = (EventualReplica::new(Gate::causal(ME)), executor());
        // Pushes of a third node's writes, at stamps above the answer's.
        const THIRD: Origin = Origin { node: 3, run: 30 };
        let pushed_at = |key: &[u8], seq, ts| {
            let mut version = pushed(key, THIRD, seq, &[]);
            version.stamp.ts = ts;
            version
        };
        perform(
            &mut replica,
            &mut executor,
            push(vec![pushed_at(b"k", 1, 50)]),
        );
        let first = vec![put(b"a", 5, 1), put(b"k", 10, 2)];
        perform(&mut replica, &mut executor, answer_part(2, first, None));
        let keys = ["a", "b", "c", "k"];
        assert_eq!(
            in_sight(&mut executor, &keys),
            ["k"],
            "the part is out of sight"
        );
        perform(
            &mut replica,
            &mut executor,
            push(vec![pushed_at(b"b", 2, 60)]),
        );
        let last_before = replica.log().last_seq();
        let rest = vec![put(b"b", 7, 3), put(b"c", 8, 4)];
        let reports = perform(&mut replica, &mut executor, answer_part(2, rest, Some(4)));
        assert_eq!(in_sight(&mut executor, &keys), keys, "all in sight at once");
        let stamps: Vec<_> = keys.iter().map(|k| stamp_of(&replica, k)).collect();
        assert_eq!(stamps, [Some(5), Some(60), Some(8), Some(50)]);
        let now = executor.now();
        let everything = Coverage::default();
        let news = replica
            .log()
            .since(executor.store(), last_before, usize::MAX, &everything, now)
            .unwrap();
        assert_eq!(
            news.versions.len(),
            4,
            "every change numbered after the old log's"
        );
        assert_eq!(replica.gate().coverage().get(PEER), 4);
        let applied = reports.iter().find_map(|r| match r {
            Report::SyncApplied { all_kept, .. } => Some(*all_kept),
            _ => None,
        });
        assert_eq!(applied, Some(true));
    }

    /// While one answer is staged, another peer's is kept as its parts came
    /// and applied whole with its last, each key at its highest stamp
    /// whichever part brought it; neither is in sight before.
    #[test]
    fn a_second_answer_in_parts_is_kept_and_applied_whole() {
        let (mut replica, mut executor) = (EventualReplica::new(Gate::causal(ME)), executor());
        perform(
            &mut replica,
            &mut executor,
            answer_part(2, vec![put(b"a", 5, 1)], None),
        );
        let first = vec![put(b"x", 9, 1), put(b"y", 3, 2)];
        perform(&mut replica, &mut executor, answer_part(3, first, None));
        let rest = vec![put(b"x", 2, 3)];
        perform(&mut replica, &mut executor, answer_part(3, rest, Some(3)));
        assert_eq!(in_sight(&mut executor, &["a", "x", "y"]), ["x", "y"]);
        assert_eq!(stamp_of(&replica, "x"), Some(9));
        perform(
            &mut replica,
            &mut executor,
            answer_part(2, Vec::new(), Some(1)),
        );
        assert_eq!(in_sight(&mut executor, &["a", "x", "y"]), ["a", "x", "y"]);
        assert_eq!(stamp_of(&replica, "x"), Some(9));
    }

    #[test]
    fn an_answer_claims_no_write_whose_value_the_store_lost() {
        let (mut replica, mut executor) = (EventualReplica::new(Gate::eventual(ME)), executor());
        let push = Work::ApplyVersions {
            from: 2,
            pushes: vec![put(b"k", 5, 1)],
            answer: Vec::new(),
            part: None,
            stamp: Stamp { ts: 100, node: 1 },
            completes: None,
            coverage: None,
        };
        perform(&mut replica, &mut executor, push);
        assert_eq!(replica.gate().coverage().get(PEER), 1);
        // As a memcached evicting on its own: gone without a word.
        executor.store().delete(b"k", 1_700_000_000).unwrap();
        let collect = Work::Collect {
            peer: 2,
            since: 0,
            budget: usize::MAX,
            covered: Coverage::default(),
            asked_by: 7,
        };
        let reports = perform(&mut replica, &mut executor, collect);
        let [Report::Collected {
            changes, coverage, ..
        }] = &reports[..]
        else {
            panic!("{reports:?}");
        };
        assert!(changes.versions.is_empty());
        assert_eq!(coverage.get(PEER), 0, "the lost write is not claimed");
        assert_eq!(replica.gate().coverage().get(PEER), 0);
    }

    /// Every key's version (with its cause) and the coverage `replica`
    /// holds, keys in order.
    fn held(replica: &EventualReplica, executor: &mut Executor) -> (Vec<Version>, Coverage) {
        let now = executor.now();
        let all = replica
            .log
            .since(executor.store(), 0, usize::MAX, &Coverage::default(), now);
        let mut versions = all.unwrap().versions;
        versions.sort_by(|a, b| a.key.cmp(&b.key));
        (versions, replica.gate.coverage())
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A replica replayed from its data directory, started. The fields
    /// drop in order: the log's writer ends once the replica's handle on it
    /// is gone, and the reactor's handle waits for it.
    struct Journaled {
        replica: EventualReplica,
        executor: Executor,
        durable: crate::durability::Durable,
    }

    fn journaled(
        dir: &std::path::Path,
        cluster: &crate::config::ClusterConfig,
        gate: Gate,
    ) -> Journaled {
        journaled_within(dir, cluster, gate, Limits::default()).unwrap()
    }

    /// [`journaled`] with a store of `limits`, if the replay takes it.
    fn journaled_within(
        dir: &std::path::Path,
        cluster: &crate::config::ClusterConfig,
        gate: Gate,
        limits: Limits,
    ) -> io::Result<Journaled> {
        let store = MemoryStore::new(64 << 20, limits).keeping_evicted();
        journaled_on(dir, cluster, gate, store)
    }

    /// [`journaled`] on `store`, if the replay takes it.
    fn journaled_on(
        dir: &std::path::Path,
        cluster: &crate::config::ClusterConfig,
        gate: Gate,
        store: MemoryStore,
    ) -> io::Result<Journaled> {
        let store = Box::new(store);
        let mut replica = EventualReplica::new(gate);
        let mut recovering =
            crate::durability::Recovering::open_journaled(dir, 0, cluster, store, &mut replica)?;
        let replica = replica.with_journal(recovering.journal_log());
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let (durable, store) = recovering.start(Arc::new(waker)).unwrap();
        let executor =
            Executor::new(store, Arc::new(StoreCounters::default())).with_clock(|| 1_700_000_000);
        Ok(Journaled {
            replica,
            executor,
            durable,
        })
    }

    /// A logged write the store refuses at replay (here a key over 250
    /// bytes: a record only another build could have written): an eventual
    /// node claims it to no peer, also after a second restart, which reads
    /// the coverage the first one wrote; a causal node refuses to start
    /// rather than show what followed it.
    #[test]
    fn a_write_refused_at_replay_is_claimed_by_no_coverage() {
        let cluster = crate::config::ClusterConfig::default();
        let limits = Limits::default();
        for causal in [false, true] {
            let dir =
                std::env::temp_dir().join(format!("mckv-refused-{causal}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let gate = |run| match causal {
                true => Gate::causal(Origin { node: 1, run }),
                false => Gate::eventual(Origin { node: 1, run }),
            };
            let mut node = journaled_within(&dir, &cluster, gate(10), limits).unwrap();
            let pushes = vec![put(b"a", 5, 1), put(b"b", 6, 2), put(b"c", 7, 3)];
            perform(&mut node.replica, &mut node.executor, push(pushes));
            // Write 3 as the log holds it, over the key length limit.
            let journal = node.replica.journal.as_mut().unwrap();
            journal.version(&put(&[b'k'; 300], 8, 3));
            perform(&mut node.replica, &mut node.executor, Work::Summarize);
            assert_eq!(node.replica.gate.coverage().get(PEER), 3);
            drop(node);
            let reopened = journaled_within(&dir, &cluster, gate(11), limits);
            if causal {
                let refused = reopened.err().expect("a causal node refuses to start");
                assert!(refused.to_string().contains("refused now"), "{refused}");
            } else {
                let node = reopened.unwrap();
                assert_eq!(node.replica.gate.coverage().get(PEER), 2, "below the hole");
                drop(node);
                let mut node = journaled_within(&dir, &cluster, gate(12), limits).unwrap();
                let claimed = node.replica.gate.coverage().get(PEER);
                assert_eq!(
                    claimed, 2,
                    "the compacted snapshot claims the refused write"
                );
                let (versions, _) = held(&node.replica, &mut node.executor);
                let keys: Vec<&[u8]> = versions.iter().map(|v| &v.key[..]).collect();
                assert_eq!(keys, [&b"a"[..], b"b", b"c"]);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A causal node's delete of what its store cannot keep is logged when
    /// made and again once numbered: a restart keeps its cause (it would be
    /// sent to every asker for good otherwise).
    #[test]
    fn a_causal_delete_of_what_cannot_be_kept_keeps_its_cause_across_a_restart() {
        let cluster = crate::config::ClusterConfig::default();
        let dir = std::env::temp_dir().join(format!("mckv-unkept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut node = journaled(&dir, &cluster, Gate::causal(ME));
        perform(
            &mut node.replica,
            &mut node.executor,
            answer_with_an_unkeepable_key(100),
        );
        let before = held(&node.replica, &mut node.executor).0;
        drop(node);
        let again = Origin { node: 1, run: 11 };
        let mut node = journaled(&dir, &cluster, Gate::causal(again));
        let after = held(&node.replica, &mut node.executor).0;
        drop(node);
        let _ = std::fs::remove_dir_all(&dir);
        let cause = |versions: &[Version]| {
            let long = versions
                .iter()
                .find(|v| v.key.len() == 300)
                .expect("the delete");
            long.cause.as_ref().map(|c| (c.origin, c.seq))
        };
        assert_eq!(cause(&before), Some((ME, 1)));
        assert_eq!(cause(&after), cause(&before));
    }

    /// Local writes and deletes, a peer's newer and older versions, and
    /// snapshots in parts between them: what a restart replays from the
    /// snapshot and the log is what the replica held, every key's version
    /// with its cause, and the coverage it last told its peers.
    #[test]
    fn a_journal_replays_to_what_the_replica_held_through_snapshots() {
        use crate::config::{ClusterConfig, Fsync};
        for seed in 1..=12u64 {
            let dir =
                std::env::temp_dir().join(format!("mckv-journal-{seed}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let cluster = ClusterConfig {
                fsync: [Fsync::Always, Fsync::EverySec, Fsync::No][seed as usize % 3],
                snapshot_every: 6_000,
                ..ClusterConfig::default()
            };
            let gate = |me| match seed % 2 {
                0 => Gate::eventual(me),
                _ => Gate::causal(me),
            };
            let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
            let mut node = journaled(&dir, &cluster, gate(ME));
            let (replica, executor) = (&mut node.replica, &mut node.executor);
            let mut peer_seq = 0;
            for step in 1..=1_500u64 {
                let key = format!("k{}", rng.below(60));
                let stamp = Stamp {
                    ts: step * 10,
                    node: 1,
                };
                let work = match rng.below(4) {
                    0 | 1 => {
                        let line = match rng.below(3) {
                            0 => format!("delete {key}\r\n"),
                            _ => format!("set {key} 0 0 3\r\nv{:02}\r\n", step % 100),
                        };
                        publish(&line, stamp.ts, step)
                    }
                    2 => {
                        // A peer's write, often older than what is held.
                        peer_seq += 1;
                        let mut version = put(key.as_bytes(), step * 10 - rng.below(200), peer_seq);
                        if rng.below(4) == 0 {
                            version.state = State::Deleted;
                        }
                        Work::ApplyVersions {
                            from: 2,
                            pushes: vec![version],
                            answer: Vec::new(),
                            part: None,
                            stamp,
                            completes: None,
                            coverage: None,
                        }
                    }
                    _ => Work::Summarize,
                };
                perform(replica, executor, work);
                if step % 7 == 0 {
                    replica.maintain(executor);
                }
                if step % 3 == 0 {
                    replica.end_batch();
                }
            }
            perform(replica, executor, Work::Summarize);
            let want = held(replica, executor);
            let log = node.durable.shared.clone();
            drop(node);
            let written = log.snapshots.load(std::sync::atomic::Ordering::Relaxed);
            assert!(written >= 2, "seed {seed}: {written} snapshots");
            let again = Origin { node: 1, run: 11 };
            let mut node = journaled(&dir, &cluster, gate(again));
            let got = held(&node.replica, &mut node.executor);
            drop(node);
            let _ = std::fs::remove_dir_all(&dir);
            assert_eq!(got.0.len(), want.0.len(), "seed {seed}");
            assert!(got.0 == want.0, "seed {seed}: the versions differ");
            assert_eq!(got.1, want.1, "seed {seed}: the coverage differs");
        }
    }

    /// The work of a client's `line`, stamped `ts` by node 1.
    fn publish(line: &str, ts: u64, slot: u64) -> Work {
        use crate::protocol::{parse, Action};
        let Ok(Action::Execute(request)) =
            parse(line.as_bytes(), &Limits::default()).map(|p| p.action)
        else {
            panic!("{line}");
        };
        Work::Publish {
            op: Arc::new(Op {
                request,
                now: 1_700_000_000,
            }),
            stamp: Stamp { ts, node: 1 },
            reply_to: ReplyTo { session: 1, slot },
        }
    }

    /// A power cut keeps, at worst, what the log had fsynced. Every stamp
    /// of this node that a reply or a push showed must stay below where
    /// the restarted node's clock starts, under every policy and also when
    /// the stamps ran ahead of the wall clock (a peer's clock ahead): else
    /// a new write gets a unique a client already holds (its old `cas`
    /// would be `STORED`), and two versions of one stamp never converge.
    #[test]
    fn a_power_cut_keeps_the_clock_above_every_stamp_a_reply_or_push_showed() {
        use crate::config::{ClusterConfig, Fsync};
        for fsync in [Fsync::EverySec, Fsync::No] {
            let dir = std::env::temp_dir()
                .join(format!("mckv-power-cut-{fsync:?}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let cluster = ClusterConfig {
                fsync,
                ..ClusterConfig::default()
            };
            let ahead = 1 << 60; // microseconds: far past the wall clock
            let mut node = journaled(&dir, &cluster, Gate::causal(ME));
            let works = [
                publish("set a 0 0 1\r\nv\r\n", ahead, 1),
                publish("set b 0 0 1\r\nv\r\n", ahead + 1, 2),
                // No reply: a push of the delete of what cannot be kept.
                answer_with_an_unkeepable_key(ahead + 2 + RESERVE),
            ];
            for work in works {
                let mut waits = Vec::new();
                node.replica.perform(work, &mut node.executor, &mut |done| {
                    let wait = match done {
                        Done::Reply { shows, .. } => node.durable.wait_for(shows),
                        Done::Engine(report) => {
                            let waits = EventualReplica::report_waits(&report);
                            node.durable.report_wait(waits, false)
                        }
                    };
                    waits.extend(wait);
                });
                node.replica.end_batch();
                // What the server does: a reply or report leaves once the
                // log is where it asks.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !waits.iter().all(|&wait| node.durable.reached(wait)) {
                    assert!(
                        Instant::now() < deadline,
                        "{fsync:?}: the log never got there"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let fsynced = node.durable.shared.durable.load(Ordering::Acquire);
            drop(node);
            let log = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("log"))
                .unwrap();
            log.set_len(fsynced).unwrap(); // the power cut
            drop(log);
            let again = Origin { node: 1, run: 11 };
            let node = journaled(&dir, &cluster, Gate::causal(again));
            let starts_above = node.replica.highest_replayed_ts();
            drop(node);
            let _ = std::fs::remove_dir_all(&dir);
            assert!(
                starts_above >= ahead + 2 + RESERVE,
                "{fsync:?}: the clock starts at {starts_above}, below stamps shown"
            );
        }
    }

    /// Writes a snapshot of `node` (its log must be due for one) and waits
    /// until the writer installed it.
    fn snapshot(node: &mut Journaled) {
        let (replica, executor) = (&mut node.replica, &mut node.executor);
        replica.end_batch();
        while replica.maintain(executor) {}
        replica.end_batch();
        let shared = &node.durable.shared;
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.snapshots.load(Ordering::Acquire) == 0 {
            assert!(
                Instant::now() < deadline,
                "the snapshot was never installed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A snapshot replaces the log, and the clock reservation in it: the
    /// snapshot, and the one recovery leaves, carry it. Here nothing else
    /// would keep the clock up: the only key was deleted and its tombstone
    /// forgotten, so a new write could take the unique a client holds.
    #[test]
    fn snapshots_carry_the_clock_reservation() {
        use crate::config::{ClusterConfig, Fsync};
        let dir = std::env::temp_dir().join(format!("mckv-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: 1,
            ..ClusterConfig::default()
        };
        let ahead = 1 << 60;
        let mut node = journaled(&dir, &cluster, Gate::eventual(ME));
        let (replica, executor) = (&mut node.replica, &mut node.executor);
        perform(replica, executor, publish("set a 0 0 1\r\nv\r\n", ahead, 1));
        perform(replica, executor, publish("delete a\r\n", ahead + 1, 2));
        perform(replica, executor, Work::ForgetTombstones { synced: 2 });
        assert_eq!(held(replica, executor).0, [], "the tombstone is forgotten");
        snapshot(&mut node);
        drop(node);
        assert!(
            !dir.join("log.old").exists(),
            "the snapshot replaced the log"
        );
        for run in [11, 12, 13] {
            // The second start reads the snapshot the first one left; the
            // third, one the second took before it stamped anything (a
            // peer's write made the log grow).
            let again = Origin { node: 1, run };
            let mut node = journaled(&dir, &cluster, Gate::eventual(again));
            let starts_above = node.replica.highest_replayed_ts();
            if run == 12 {
                let (replica, executor) = (&mut node.replica, &mut node.executor);
                perform(replica, executor, push(vec![put(b"b", 5, 1)]));
                snapshot(&mut node);
            }
            drop(node);
            assert!(
                starts_above > ahead + 1,
                "start {run}: the clock starts at {starts_above}, below a unique handed out"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_eventual_replica_takes_what_it_can_never_keep_as_held_but_claims_it_to_no_peer() {
        let (mut replica, mut executor) = (EventualReplica::new(Gate::eventual(ME)), executor());
        let reports = perform(
            &mut replica,
            &mut executor,
            answer_with_an_unkeepable_key(100),
        );
        assert!(reports.is_empty(), "{reports:?}");
        assert_eq!(
            replica.gate().coverage().get(PEER),
            1,
            "the refused write 2 is not held here"
        );
    }

    /// The work of a client's read `line`.
    fn read(line: &str, slot: u64) -> Work {
        let Work::Publish { op, reply_to, .. } = publish(line, 0, slot) else {
            unreachable!()
        };
        Work::Read { op, reply_to }
    }

    /// One random work of a client of node 1 (stamped `ts`) or of a push
    /// from node 2 (its write `seq`, stamped `ts`), on keys `k0`..`k29`;
    /// the keys a read names, for a read.
    fn random_work(rng: &mut Rng, ts: u64, seq: &mut u64) -> (Work, Option<Vec<String>>) {
        let key = |rng: &mut Rng| format!("k{}", rng.below(30));
        let line = match rng.below(17) {
            0..=5 => {
                let keys: Vec<String> = (0..1 + rng.below(3)).map(|_| key(rng)).collect();
                let verb = ["get", "gets"][rng.below(2) as usize];
                let work = read(&format!("{verb} {}\r\n", keys.join(" ")), ts);
                return (work, Some(keys));
            }
            6..=8 => {
                let value = "v".repeat(rng.below(400) as usize);
                let verb = ["set", "add", "append"][rng.below(3) as usize];
                format!("{verb} {} 0 0 {}\r\n{value}\r\n", key(rng), value.len())
            }
            9 => format!("delete {}\r\n", key(rng)),
            10 => format!("set {} 0 0 2\r\n41\r\n", key(rng)),
            11 => format!("incr {} 1\r\n", key(rng)),
            12 if rng.below(8) == 0 => "flush_all\r\n".to_string(),
            // An absolute time: recovery counts from the wall clock.
            12 => format!("touch {} 2000000000\r\n", key(rng)),
            _ => {
                *seq += 1;
                let mut version = put(key(rng).as_bytes(), ts, *seq);
                version.state = match rng.below(10) {
                    0 => State::Deleted,
                    1 => State::Flushed,
                    _ => version.state,
                };
                if version.state == State::Flushed {
                    version.key.clear();
                }
                // The engine stamps the work above every version it saw
                // (what evicts a key makes a tombstone newer than it).
                let Work::ApplyVersions { pushes, from, .. } = push(vec![version]) else {
                    unreachable!()
                };
                let stamp = Stamp {
                    ts: ts + 1,
                    node: 1,
                };
                let work = Work::ApplyVersions {
                    from,
                    pushes,
                    answer: Vec::new(),
                    part: None,
                    stamp,
                    completes: None,
                    coverage: None,
                };
                return (work, None);
            }
        };
        (publish(&line, ts, ts), None)
    }

    /// What `store` holds of each of `keys`. Not the cas unique: after a
    /// `touch` the node keeps the item's, and takes the touch's stamp (as
    /// its peers do) only when it replays it (README, eventual mode).
    fn states(store: &mut dyn VersionedStore, keys: &[String]) -> Vec<Option<Entry>> {
        let state = |key: &String| store.export_record(key.as_bytes(), 1_700_000_000).unwrap();
        keys.iter().map(state).map(|r| r.map(|r| r.entry)).collect()
    }

    /// Random clients' writes and reads and a peer's pushes (deletes and
    /// flushes among them) on a replica with a data directory, its store
    /// small enough to evict: the log cut where any read's reply waits (the
    /// end of the last version record of each key it names, and of the
    /// last flush) recovers each of those keys as the reply showed it, in
    /// eventual and causal mode; and most reads need not wait for every
    /// record appended before them.
    #[test]
    fn the_log_cut_where_a_read_waits_gives_back_what_it_showed() {
        use crate::config::{ClusterConfig, Fsync};
        // About 10 items of 200 bytes: writes evict other keys.
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: u64::MAX,
            memory_limit_bytes: 1_500,
            ..ClusterConfig::default()
        };
        for (seed, causal) in [(1u64, false), (2, true), (3, false), (4, true)] {
            let dir =
                std::env::temp_dir().join(format!("mckv-read-shows-{seed}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let gate = |run| match causal {
                true => Gate::causal(Origin { node: 1, run }),
                false => Gate::eventual(Origin { node: 1, run }),
            };
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let store = MemoryStore::new(u64::MAX, Limits::default()).keeping_evicted();
            let mut node = journaled_on(&dir, &cluster, gate(10), store).unwrap();
            let (mut reads, mut early, mut seq, steps) = (Vec::new(), 0, 0, 3_000);
            for step in 0..steps {
                let (work, keys) = random_work(&mut rng, 1_000 + 2 * step, &mut seq);
                let mut shown = None;
                let (replica, executor) = (&mut node.replica, &mut node.executor);
                replica.perform(work, executor, &mut |done| {
                    if let Done::Reply { shows, .. } = done {
                        shown = shows;
                    }
                });
                if let Some(keys) = keys {
                    let shown = shown.expect("a read of a journaled replica tells");
                    let appended = node.durable.shared.appended.load(Ordering::Acquire);
                    assert!(shown <= appended, "seed {seed}, step {step}");
                    early += usize::from(shown < appended);
                    let store = node.executor.store();
                    let held = states(store, &keys);
                    reads.push((step, shown, keys, held));
                }
                if rng.below(4) == 0 {
                    node.replica.end_batch();
                }
            }
            let evicted = node.executor.store().stats().events.evicted;
            assert!(evicted > 100, "seed {seed}: {evicted} evicted");
            let appended = node.durable.shared.appended.load(Ordering::Acquire);
            drop(node);
            let log = std::fs::read(dir.join("log")).unwrap();
            assert_eq!(log.len() as u64, appended, "the log holds every record");
            let count = reads.len();
            assert!(early > count / 2, "seed {seed}: {early} of {count} reads");
            for (step, shown, keys, held) in reads.into_iter().step_by(3) {
                let cut = dir.with_extension("cut");
                let _ = std::fs::remove_dir_all(&cut);
                std::fs::create_dir_all(&cut).unwrap();
                for file in ["IDENTITY", "snapshot"] {
                    std::fs::copy(dir.join(file), cut.join(file)).unwrap();
                }
                std::fs::write(cut.join("log"), &log[..shown as usize]).unwrap();
                let store = MemoryStore::new(u64::MAX, Limits::default()).keeping_evicted();
                let mut node = journaled_on(&cut, &cluster, gate(11), store).unwrap();
                let store = node.executor.store();
                let got = states(store, &keys);
                drop(node);
                assert!(
                    got == held,
                    "seed {seed} (causal {causal}), step {step}: {keys:?} came back otherwise"
                );
                let _ = std::fs::remove_dir_all(&cut);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
