//! Eventual and causal mode's engine: every node answers from its own
//! replica at once, and replicas converge by last-writer-wins on stamps. A
//! pure state machine like the total-order engine: inputs in, [`Effect`]s
//! out (an [`Engine`]).
//!
//! ```text
//!  on_client  ──► stamp (clock, me) ──► Publish: apply here, number, reply ──► Report::Published
//!                                        └─► on_store: pushed to linked peers
//!  on_tick    ──► Summarize (the coverage for requests); every sync_every beats:
//!                 `sync request <since> <summary>` to each peer
//!  on_message ──► versions: ApplyVersions (newer stamp wins); a sync request:
//!                 Collect ──► Report::Collected ──► versions within the budget
//!                                                   + `complete <since..upto> of <last>`
//!  on_message ──► a complete: ApplyVersions ──► Report::SyncApplied ──► synced up to `upto`;
//!                 a part (`upto < last`): `sync request <upto>` at once
//! ```
//!
//! All of eventual and causal mode lives in this folder: this engine; its
//! wire message [`Gossip`] (`message.rs`); [`origins`], who wrote what and
//! what a replica covers; [`version`], the [`Version`] of a key that
//! peers exchange and its [`version::State`]; [`version_log`], the
//! [`version_log::VersionLog`] kept beside the store, which applies versions
//! (last writer wins) and answers sync requests; and its store side
//! [`EventualReplica`] (`replica.rs`), which runs the engine's [`Work`]
//! where the store lives and reports back. The store knows none of it: it
//! reads and sets entries exactly as a [`crate::store::VersionedStore`].
//! Eventual mode goes by its links, not by the failure detector: it serves
//! whoever is down, and a restarted peer is taken back and refilled.
//!
//! Why replicas converge. Each key's state is a version stamped by the write
//! that made it; applying versions keeps the highest stamp, which is
//! commutative, associative and idempotent, so any two replicas that have
//! applied the same set of versions hold the same state, in whatever order
//! the versions came. Pushes carry new versions at once but may be lost
//! (a link breaks); anti-entropy makes up for that: a node asks each peer
//! for every change after the last sequence number it completed from that
//! peer, and only advances it once the store has kept what the `complete`
//! finished. One sync is in flight per peer. The request carries the
//! asker's *summary*, per origin the number up to which it holds every
//! write, and the answer leaves out what that covers; the asker takes the
//! answering node's coverage with a whole answer ([`origins`] has why).
//! Causal mode is this engine with [`origins::Gate`] holding back writes
//! until their causes are applied, and answers applied whole (kept aside
//! or staged until their last part: `staging.rs`; a node restarted empty
//! takes one answer from a peer's first change at a time).
//! A restarted node asks from zero. Deletes and `flush_all` are versions too
//! (tombstones), forgotten only once every peer has synced past them (and
//! its copies of them are fetched: below).
//!
//! **Evictions are deletes.** A full store evicts on its own, so replicas
//! would hold different keys and anti-entropy would bring an evicted value
//! back from a peer, to be evicted again. So the store hands what it
//! evicted to the store side, which records each key as a tombstone with a
//! stamp the engine gave the work that evicted it (a local write's own
//! stamp, or one taken for a batch of peers' versions): the clock has seen
//! every stamp held here, so the tombstone beats the evicted value, and it
//! goes to every peer as a client's delete would; a newer write of the key
//! anywhere beats the tombstone, as it beats a delete. A key the same work
//! stored again after evicting it is held, and gets no tombstone. Replicas
//! converge as above: evictions are just more versions.
//!
//! Change numbers start over when a node restarts, so requests and answers
//! carry the incarnation that counted them ([`ChangeMark`]). A request that
//! names an earlier run of the answering node (its sender had not yet heard
//! the new hello) is answered from zero and says nothing about what the
//! sender holds; an answer from an earlier run of the requested node, or
//! one that starts above where the asker is (it answered the asker's earlier
//! run), completes nothing. Taking any of them at its word would let a node
//! forget tombstones a peer never received, or skip changes it never fetched.
//!
//! **Answers and pushes have a budget.** A store can be far bigger than the
//! 256 MiB a receiver takes in one message, so a sync answer carries the
//! changes after `since` in change order only up to about `frame_budget`
//! bytes of keys and values (at least one change): a *part*. It completes
//! up to the change before the first one it left out (`upto`) and says
//! where the sender's log ended (`last`, above `upto` for a part); once its
//! store kept the part, the asker asks at once for the changes after
//! `upto`, not at the next round. For what `upto` claims a part is as good
//! as a whole answer, because it is a prefix in change order: every change
//! numbered up to `upto` that was current when the part was collected is in
//! it, and a change made later gets a number above `last`. So the asker
//! holds every change up to `upto`, as after a whole answer, and the rest
//! of the argument stands: its next request asks from `upto` and skips
//! nothing; the answering node learns from that request that the asker
//! synced past `upto`, so it forgets only tombstones numbered at or below
//! it, which the part carried and the asker's store kept (a tombstone
//! written over before the part was collected is no tombstone any more:
//! forgetting only drops a key's current change). A part that claimed
//! `last` would skip the changes between, and let the answering node forget
//! tombstones among them the asker never got; the eventual simulation's
//! negative control shows its checks catch that.
//!
//! Pushes go the same way: a frame carries at most about `frame_budget`
//! bytes of pushed versions, the oldest first, and the rest go in the next
//! frames. Convergence needs no order among versions (the highest stamp
//! wins whatever came first), and a push moves no sync mark, so holding one
//! back, or losing it with a broken link, changes nothing above: the next
//! sync carries what it carried. A frame with an answer and pushes stays
//! under about twice the budget.
//!
//! **A forgotten tombstone stays forgotten.** A node that learns a
//! tombstone from a peer records it as a change of its own, under a new
//! number, which its peers fetch in turn. Had the peer forgotten its own
//! tombstone by the time that copy reached it, the copy would be news
//! there, be recorded again, and could go round for ever (in the
//! simulation two nodes answering in one-version parts passed fifty
//! tombstones back and forth for good). So a sync request also says where
//! the asker's log ended (`last`, as its store side reported after the
//! answer that moved it on: every copy it made of what it synced is at or
//! below), and the answering node takes the request's word only once it has
//! synced the asker's changes up to there: each such copy has then reached
//! it while it still held the tombstone, and changed nothing. (Words not
//! taken yet are kept two at most, a third merged into the second, which
//! then waits for the later `last`.) A later copy would be made only by a
//! node that held no tombstone when it heard one: one that had forgotten
//! it. The first time that happened, its sender's copy was made after the
//! sender's request that let the receiver forget, so the sender held the
//! tombstone then (it had synced past it) and recorded nothing new unless
//! it had forgotten and heard it again earlier still: it cannot happen a
//! first time, and an idle cluster falls quiet. Taking a peer's word later
//! only keeps tombstones longer, which the argument above allows.
//!
//! The clock starts at the wall time in microseconds, so a restarted node's
//! new writes are stamped above what it wrote before it crashed; with a
//! data directory, also above what its log recovered and reserved
//! (`journal.rs`, point 8), for stamps that ran ahead of the wall clock.

mod journal;
mod log_key;
mod message;
pub mod origins;
mod replica;
mod staging;
pub mod version;
pub mod version_log;

pub use message::{ChangeMark, Gossip, SyncDone, SyncRequest};
pub use replica::{EventualReplica, Report, Work};
pub use staging::AnswerPart;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::engine::{Effect, Engine, PeerEvent, PeerStatus, ReplyTo, Status, SyncStats};
use super::message::Op;
use super::{LamportClock, NodeId, Stamp, View};
use crate::protocol::{Command, Request};
use crate::store::UnixTime;
use origins::{Coverage, Gate, Origin};
use version::Version;
use version_log::Changes;

/// About how many bytes of versions a sync answer carries, and a frame of
/// pushes (module doc).
const DEFAULT_FRAME_BUDGET: usize = 4 << 20;

/// Pushes waiting for one peer beyond about this many bytes are dropped:
/// its link is not taking them (the reactor asks for no frame while a link
/// is backed up), and anti-entropy brings what they carried.
const PUSH_BACKLOG: usize = 8 << 20;

/// A peer's queue of pushes grown past this many versions (a backlog: up
/// to [`PUSH_BACKLOG`]'s worth, tens of thousands) is freed once sent,
/// rather than kept for the next burst.
const SPARE_PUSHES: usize = 1024;

/// A peer's word, in its sync request, that it holds every change of ours
/// up to `seq`, given when its own change log ended at `their_last`.
#[derive(Debug, Clone, Copy)]
struct SyncedPast {
    seq: u64,
    their_last: u64,
}

#[derive(Debug, Default)]
struct SyncPeer {
    /// The link to it is open: pushes can go.
    linked: bool,
    /// Its run we last heard a hello from (0: none yet); its change numbers
    /// below count in that run.
    incarnation: u64,
    /// The run that welcomed our link to it, while that link lasts: the
    /// one our frames reach (its hello, on its own link, may come later).
    link_run: Option<u64>,
    /// What one of its runs said it covers, in its last sync request: the
    /// run, and its coverage. Only while that run is `link_run` are our
    /// pushes' dependencies it covers left out (module doc).
    covers: Option<(u64, Arc<Coverage>)>,
    clock: u64,
    /// Versions of local writes not pushed yet, oldest first.
    pushes: VecDeque<Version>,
    /// About how many bytes `pushes` holds.
    pushed_bytes: usize,
    /// A frame is owed even with nothing new in it (a heartbeat).
    due: bool,
    /// Its change sequence number we hold every change up to.
    synced_from: u64,
    /// A sync request of ours is out.
    in_flight: bool,
    /// The heartbeat our sync request went out at.
    requested_at: u64,
    request_due: bool,
    /// Our change sequence number it holds every change up to, from its
    /// requests, taken once we have fetched the copies it made (module doc).
    synced_to: u64,
    /// Its word not taken yet, oldest first: at most two (a third is merged
    /// into the second, which then waits for the later of the two).
    untaken: VecDeque<SyncedPast>,
    /// Our answer to its sync request, waiting to be sent: versions, what
    /// they complete, and our coverage when collected.
    answer: Option<(Vec<Version>, SyncDone, Coverage)>,
    /// Causal mode: the parts of its answer we keep aside until the last.
    partial: Option<Partial>,
    /// Causal mode: how many of its writes wait here for their causes,
    /// per run of it, by run (only runs with writes waiting).
    waiting: Vec<(u64, usize)>,
    /// Its answers handed to the store and not applied yet: while one is,
    /// the sync is not given up on.
    applying: u32,
    /// The heartbeat at which our last sync from it completed (with an
    /// answer that was no part: we were up to date with it then).
    completed_at: u64,
}

/// Causal mode: how far the parts of an answer received so far reach. The
/// store side keeps them aside until the last (`replica.rs`), so that the
/// answer is applied whole (`origins.rs`).
#[derive(Debug)]
struct Partial {
    /// Where the answer started.
    since: u64,
    /// Up to where the parts so far reach: where the next one starts.
    upto: u64,
}

impl SyncPeer {
    /// Where our next request asks it to start: after the parts of an
    /// answer we keep aside, or after what we hold.
    fn asking_from(&self) -> u64 {
        self.partial.as_ref().map_or(self.synced_from, |p| p.upto)
    }

    /// Causal mode: takes the sync answer in a frame. Its versions go to
    /// the store side as a part of the answer they belong to ([`AnswerPart`],
    /// kept aside there until the last part), and the rest is asked for at
    /// once, if the part moved us on; with the last part come what the
    /// whole answer completes and the coverage that goes with it. An answer
    /// not for us leaves `answer` empty.
    fn gather(
        &mut self,
        done: Option<SyncDone>,
        coverage: Option<Coverage>,
        answer: &mut Vec<Version>,
        beats: u64,
    ) -> (Option<AnswerPart>, Option<(SyncDone, Coverage)>) {
        let reached = self.asking_from();
        // From an earlier run of the peer, or to an earlier run of ours: an
        // answer's versions are applied whole or not at all, so dropped.
        let Some(done) =
            done.filter(|d| d.upto.incarnation == self.incarnation && d.since <= reached)
        else {
            answer.clear();
            return (None, None);
        };
        let partial = self.partial.get_or_insert(Partial {
            since: done.since,
            upto: done.since,
        });
        let mut part = AnswerPart {
            run: self.incarnation,
            since: partial.since,
            last: false,
        };
        if done.is_part() {
            let moved_on = done.upto.seq > partial.upto;
            partial.upto = partial.upto.max(done.upto.seq);
            if moved_on && self.linked {
                self.ask(beats);
            }
            return (Some(part), None);
        }
        let Some(coverage) = coverage else {
            return (Some(part), None);
        };
        self.partial = None;
        part.last = true;
        let whole = SyncDone {
            since: part.since,
            ..done
        };
        (Some(part), Some((whole, coverage)))
    }

    /// Our next frame to it asks for every change after where we are.
    fn ask(&mut self, beats: u64) {
        self.request_due = true;
        self.in_flight = true;
        self.requested_at = beats;
    }

    /// Its request says it holds our changes up to `word.seq`.
    fn heard(&mut self, word: SyncedPast) {
        let full = self.untaken.len() == 2;
        match self.untaken.back_mut() {
            Some(newest) if full => {
                newest.seq = newest.seq.max(word.seq);
                newest.their_last = newest.their_last.max(word.their_last);
            }
            _ => self.untaken.push_back(word),
        }
        self.take_its_word();
    }

    /// Takes its word that it holds our changes up to some number once we
    /// hold its own changes up to where its log ended when it said so.
    fn take_its_word(&mut self) {
        while let Some(word) = self.untaken.front() {
            if word.their_last > self.synced_from {
                return;
            }
            self.synced_to = self.synced_to.max(word.seq);
            self.untaken.pop_front();
        }
    }
}

/// The engine of one node in eventual mode.
#[derive(Debug)]
pub struct EventualEngine {
    me: NodeId,
    incarnation: u64,
    view: View,
    clock: LamportClock,
    peers: BTreeMap<NodeId, SyncPeer>,
    /// Heartbeats per anti-entropy round.
    sync_every: u64,
    /// About how many bytes of versions a sync answer carries, and a frame
    /// of pushes.
    frame_budget: usize,
    /// Our version log's last change number, as the store side last
    /// reported it: what our sync requests say our log ended at.
    log_last: u64,
    /// Causal mode (`origins.rs`): pushes carry their causes and wait for
    /// them, and sync answers are applied whole.
    causal: bool,
    /// Whether a whole sync answer of a peer's was applied here (see
    /// [`EventualEngine::one_at_a_time`]).
    took_an_answer: bool,
    /// The coverage of what our store side has applied, as it last
    /// reported it: what our sync requests say we hold (`origins.rs`).
    summary: Coverage,
    beats: u64,
    stats: SyncStats,
}

impl SyncPeer {
    /// Whether `version` may wait among the pushes (counting it), or is
    /// dropped (counted in `dropped`).
    fn room_for(&mut self, version: &Version, dropped: &mut u64) -> bool {
        if self.pushed_bytes >= PUSH_BACKLOG {
            *dropped += 1;
            return false;
        }
        self.pushed_bytes += version.approximate_len();
        true
    }
}

impl EventualEngine {
    /// An engine for run `incarnation` of node `me` of `view`; the clock
    /// starts at `start_clock` (wall time in microseconds), and a sync round
    /// runs every `sync_every` heartbeats.
    pub fn new(
        me: NodeId,
        incarnation: u64,
        view: View,
        start_clock: u64,
        sync_every: u64,
    ) -> EventualEngine {
        let peers = view
            .others(me)
            .map(|id| (id, SyncPeer::default()))
            .collect();
        let mut clock = LamportClock::default();
        clock.observe(start_clock);
        EventualEngine {
            me,
            incarnation,
            view,
            clock,
            peers,
            sync_every: sync_every.max(1),
            frame_budget: DEFAULT_FRAME_BUDGET,
            log_last: 0,
            causal: false,
            took_an_answer: false,
            summary: Coverage::default(),
            beats: 0,
            stats: SyncStats::default(),
        }
    }

    /// Stamps from now on above `ts` (the highest a data directory held).
    pub fn stamp_above(&mut self, ts: u64) {
        self.clock.observe(ts);
    }

    /// This engine in causal mode: no peer's write is applied here before
    /// its causes (`origins.rs`).
    pub fn causal(mut self) -> EventualEngine {
        self.causal = true;
        self
    }

    /// About how many bytes of versions a sync answer carries, and a frame
    /// of pushes (at least one version, whatever its size).
    pub fn with_frame_budget(mut self, bytes: usize) -> EventualEngine {
        self.frame_budget = bytes;
        self
    }

    /// Versions local writes produced: push them to every linked peer.
    fn on_local_versions(&mut self, versions: Vec<Version>) {
        self.stats.versions_written += versions.len() as u64;
        let dropped = &mut self.stats.pushes_dropped;
        let mut linked: Vec<&mut SyncPeer> = self.peers.values_mut().filter(|p| p.linked).collect();
        // The last peer takes the versions themselves: one copy fewer.
        let Some(last) = linked.pop() else {
            return;
        };
        for peer in linked {
            for version in &versions {
                if peer.room_for(version, dropped) {
                    peer.pushes.push_back(version.clone());
                }
            }
        }
        for version in versions {
            if last.room_for(&version, dropped) {
                last.pushes.push_back(version);
            }
        }
    }

    /// The store has applied the versions of `peer`'s answer that `done`
    /// completes; `all_kept`: it kept every one; `last`: our log's last
    /// change number after them. Only then has this node synced up to
    /// `done.upto`: a version the store refused (a memcached that stopped
    /// answering, a full memory store) is asked for again in the next
    /// round, and the next request must not tell the peer otherwise. After
    /// a part that moved it on, the rest is asked for at once.
    fn on_sync_applied(&mut self, peer: NodeId, done: SyncDone, all_kept: bool, last: u64) {
        self.log_last = self.log_last.max(last);
        let beats = self.beats;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.applying = p.applying.saturating_sub(1);
        if done.upto.incarnation != p.incarnation {
            return; // the peer restarted meanwhile; its new run is synced anew
        }
        p.in_flight = false;
        if !all_kept {
            return;
        }
        // A repeated request may be answered twice; never step back, and
        // follow only the part that moved us on (a duplicate one would
        // double every request after it).
        let moved_on = done.upto.seq > p.synced_from;
        p.synced_from = p.synced_from.max(done.upto.seq);
        p.take_its_word();
        if !done.is_part() {
            p.completed_at = beats;
            self.took_an_answer = true;
        } else if moved_on && p.linked {
            p.ask(beats);
            self.stats.rounds += 1;
        }
    }

    /// The worker's answer to the sync request since `since` of run
    /// `asked_by` of `peer`.
    fn on_collected(
        &mut self,
        peer: NodeId,
        since: u64,
        changes: Changes,
        coverage: Coverage,
        asked_by: u64,
    ) {
        if let Some(p) = self.peers.get_mut(&peer) {
            let done = SyncDone {
                since,
                asked_by,
                upto: ChangeMark {
                    incarnation: self.incarnation,
                    seq: changes.upto,
                },
                last: changes.last,
            };
            p.answer = Some((changes.versions, done, coverage));
        }
    }

    /// The store side's count of writes waiting for their causes, per
    /// origin (sorted, so each peer's runs come out by run).
    fn on_waiting(&mut self, per_origin: &[(Origin, usize)], dropped: u64) {
        for (id, peer) in &mut self.peers {
            peer.waiting = per_origin
                .iter()
                .filter(|(origin, _)| origin.node == *id)
                .map(|(origin, n)| (origin.run, *n))
                .collect();
        }
        self.stats.waiting = per_origin.iter().map(|(_, n)| *n as u64).sum();
        self.stats.waiting_dropped = dropped;
    }

    /// The link to `peer` broke: pushes and a sync in flight are lost; the
    /// next round repairs what they carried.
    fn link_lost(&mut self, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.linked = false;
            p.link_run = None;
            p.pushes.clear();
            p.pushed_bytes = 0;
            p.answer = None;
            p.in_flight = false;
            p.request_due = false;
        }
    }

    /// A link to `peer` opened: pushes can go, and a sync starts at once.
    fn link_opened(&mut self, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.linked = true;
            p.due = true;
            p.ask(self.beats);
            self.stats.rounds += 1;
        }
    }

    /// Causal mode: a node that has taken no peer's whole answer yet (one
    /// restarted empty) takes one answer from its peers' first change at a
    /// time: each peer would answer with its whole store, and every answer
    /// but the one its store side stages would be held aside whole
    /// (`staging.rs`). It asks every peer it has a link to, and the first
    /// answer to come in parts is the one taken: another's first part is
    /// dropped, and that peer is not asked again while the one taken goes
    /// on. Once it is whole, the others' answers leave out what it brought.
    fn one_at_a_time(&self) -> bool {
        self.causal && !self.took_an_answer
    }

    /// Whether an answer from the first change of a peer other than `from`
    /// is coming in parts: on a link that is up, and not given up on (a
    /// peer that stopped answering mid-way does not hold the others back).
    fn another_whole_answer(&self, from: NodeId) -> bool {
        let patience = 2 * self.sync_every;
        let awaited =
            |p: &SyncPeer| !p.in_flight || self.beats - p.requested_at < patience || p.applying > 0;
        let taking = |p: &SyncPeer| {
            p.linked && awaited(p) && p.partial.as_ref().is_some_and(|q| q.since == 0)
        };
        (self.peers.iter()).any(|(&id, p)| id != from && taking(p))
    }
}

impl Engine for EventualEngine {
    type Message = Gossip;
    type Replica = EventualReplica;

    fn on_client(
        &mut self,
        to: ReplyTo,
        request: Request,
        now: UnixTime,
        out: &mut Vec<Effect<Work>>,
    ) {
        let op = Arc::new(Op { request, now });
        match &op.request.command {
            command if command.is_read() => out.push(Effect::Work(Work::Read { op, reply_to: to })),
            Command::FlushAll { delay } if *delay > 0 => {
                let reason =
                    "flush_all with a delay is not supported in eventual mode; not applied";
                out.push(Effect::Refuse {
                    to,
                    reason: reason.into(),
                });
            }
            _ => {
                let stamp = Stamp {
                    ts: self.clock.tick(),
                    node: self.me,
                };
                out.push(Effect::Work(Work::Publish {
                    op,
                    stamp,
                    reply_to: to,
                }));
            }
        }
    }

    fn on_message(&mut self, from: NodeId, frame: Gossip, out: &mut Vec<Effect<Work>>) {
        let another_whole = self.one_at_a_time() && self.another_whole_answer(from);
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.clock = peer.clock.max(frame.clock);
        self.clock.observe(frame.clock);
        self.stats.versions_received += frame.versions.len() as u64;
        let mut pushes = frame.versions;
        let mut answer = pushes.split_off(frame.pushes.min(pushes.len()));
        let (completes, coverage, part) = if self.causal {
            let asked = peer.request_due;
            let ours = frame
                .sync_complete
                .filter(|d| d.asked_by == self.incarnation);
            let competing = |d: &SyncDone| d.since == 0 && d.is_part() && peer.partial.is_none();
            let dropped = another_whole && ours.as_ref().is_some_and(competing);
            if dropped {
                peer.in_flight = false; // asked again once the one taken is whole
            }
            let ours = ours.filter(|_| !dropped);
            let (part, gathered) = peer.gather(ours, frame.coverage, &mut answer, self.beats);
            if peer.request_due && !asked {
                self.stats.rounds += 1; // the rest of an answer kept aside
            }
            let (completes, coverage) = gathered.unzip();
            (completes, coverage, part)
        } else {
            // An answer from an earlier run of the peer, or to an earlier run
            // of ours (it left out what that run held, or starts above where
            // we are), completes nothing.
            let completes = frame.sync_complete.filter(|done| {
                done.upto.incarnation == peer.incarnation
                    && done.asked_by == self.incarnation
                    && done.since <= peer.synced_from
            });
            // Only a whole answer brings the answering node's coverage.
            let whole = completes.is_some_and(|done| !done.is_part());
            (completes, frame.coverage.filter(|_| whole), None)
        };
        if completes.is_some() {
            peer.applying += 1;
        }
        if !pushes.is_empty() || !answer.is_empty() || completes.is_some() {
            // Above every version held (the clock has seen them all), for
            // the deletes of what they make the store evict.
            let stamp = Stamp {
                ts: self.clock.tick(),
                node: self.me,
            };
            out.push(Effect::Work(Work::ApplyVersions {
                from,
                pushes,
                answer,
                part,
                stamp,
                completes,
                coverage,
            }));
        }
        if let Some(request) = frame.sync_request {
            peer.covers = Some((request.run, Arc::new(request.covered.clone())));
            let since = if request.since.incarnation == self.incarnation {
                // The word of a run of the peer other than the one we know
                // (a late frame of an earlier one) says nothing of it.
                if request.run == peer.incarnation {
                    peer.heard(SyncedPast {
                        seq: request.held,
                        their_last: request.last,
                    });
                }
                request.since.seq
            } else {
                0
            };
            out.push(Effect::Work(Work::Collect {
                peer: from,
                since,
                budget: self.frame_budget,
                covered: request.covered,
                asked_by: request.run,
            }));
        }
    }

    /// Every heartbeat: owe each peer a frame; every `sync_every` beats start
    /// a sync round with each linked peer that has none in flight; let the
    /// store forget tombstones every peer has synced past.
    fn on_tick(&mut self, out: &mut Vec<Effect<Work>>) {
        self.beats += 1;
        let round = self.beats.is_multiple_of(self.sync_every);
        let mut started = false;
        let beats = self.beats;
        let patience = 2 * self.sync_every;
        // One answer from the first change at a time: the others wait.
        let waiting: Vec<NodeId> = (self.peers.keys().copied())
            .filter(|&id| self.one_at_a_time() && self.another_whole_answer(id))
            .collect();
        for (id, peer) in self.peers.iter_mut() {
            peer.due = true;
            // An answer lost with a link of its peer's never comes: ask again
            // (not while one is being applied: it is here, just slow).
            let given_up =
                peer.in_flight && peer.applying == 0 && beats - peer.requested_at >= patience;
            if round && peer.linked && (!peer.in_flight || given_up) && !waiting.contains(id) {
                peer.ask(beats);
                started = true;
            }
        }
        if started {
            self.stats.rounds += 1;
        }
        // For the requests to come: what we hold now (a summary a beat old
        // claims a little less than we hold, which only costs resending).
        out.push(Effect::Work(Work::Summarize));
        if round {
            let synced = self
                .peers
                .values()
                .map(|p| p.synced_to)
                .min()
                .unwrap_or(u64::MAX);
            out.push(Effect::Work(Work::ForgetTombstones { synced }));
        }
    }

    /// Eventual mode goes by its links, not by the failure detector: a
    /// node serves whoever is down, and pushes to whoever it has a link to.
    fn on_peer(&mut self, peer: NodeId, event: PeerEvent) {
        match event {
            PeerEvent::Up | PeerEvent::Down | PeerEvent::Left => {}
            PeerEvent::LinkLost => self.link_lost(peer),
            PeerEvent::LinkOpened => self.link_opened(peer),
        }
    }

    /// A hello from run `incarnation` of `peer`. A run other than the one
    /// we knew started with an empty store: its change numbers start over,
    /// and it holds none of ours. Anti-entropy refills it.
    fn on_hello(&mut self, peer: NodeId, incarnation: u64, _restarted: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.incarnation != incarnation {
                p.incarnation = incarnation;
                p.synced_from = 0;
                p.synced_to = 0;
                p.untaken.clear();
                p.in_flight = false;
                p.answer = None; // it answered a request of the earlier run
                p.partial = None;
            }
        }
    }

    fn on_welcome(&mut self, peer: NodeId, incarnation: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.link_run = Some(incarnation);
        }
    }

    fn on_store(&mut self, report: Report, _out: &mut Vec<Effect<Work>>) {
        match report {
            Report::Published(versions) => self.on_local_versions(versions),
            Report::Collected {
                peer,
                since,
                changes,
                coverage,
                asked_by,
            } => self.on_collected(peer, since, changes, coverage, asked_by),
            Report::SyncApplied {
                from,
                done,
                all_kept,
                last,
            } => self.on_sync_applied(from, done, all_kept, last),
            Report::Waiting {
                per_origin,
                dropped,
            } => self.on_waiting(&per_origin, dropped),
            Report::Summary(coverage) => self.summary = coverage,
        }
    }

    /// The frame owed to `to`: pushes (the oldest, within the budget), a
    /// sync answer, a sync request, or a heartbeat. A clock that rose is not
    /// news enough for a frame of its own (unlike in the total-order engine,
    /// no peer waits on it): echoing it would make every push cost a frame
    /// from every node to every other.
    fn outgoing(&mut self, to: NodeId) -> Option<Gossip> {
        let clock = self.clock.now();
        let peer = self.peers.get_mut(&to)?;
        let owed = !peer.pushes.is_empty() || peer.answer.is_some() || peer.request_due || peer.due;
        if !owed {
            return None;
        }
        let fits = versions_within(&peer.pushes, self.frame_budget);
        let mut versions: Vec<Version> = peer.pushes.drain(..fits).collect();
        if peer.pushes.is_empty() && peer.pushes.capacity() > SPARE_PUSHES {
            peer.pushes = VecDeque::new();
        }
        let pushes = versions.len();
        let pushed: usize = versions.iter().map(Version::approximate_len).sum();
        peer.pushed_bytes = peer.pushed_bytes.saturating_sub(pushed);
        let mut coverage = None;
        let sync_complete = peer.answer.take().map(|(answer, done, covered)| {
            self.stats.versions_answered += answer.len() as u64;
            versions.extend(answer);
            coverage = Some(covered);
            done
        });
        self.stats.versions_sent += versions.len() as u64;
        let sync_request = std::mem::take(&mut peer.request_due).then_some(SyncRequest {
            since: ChangeMark {
                incarnation: peer.incarnation,
                seq: peer.asking_from(),
            },
            held: peer.synced_from,
            last: self.log_last,
            covered: self.summary.clone(),
            run: self.incarnation,
        });
        peer.due = false;
        let receiver_covers = match (peer.link_run, &peer.covers) {
            (Some(run), Some((said_by, covered))) if run == *said_by => Some(Arc::clone(covered)),
            _ => None,
        };
        Some(Gossip {
            clock,
            versions,
            pushes,
            sync_request,
            sync_complete,
            coverage,
            receiver_covers,
        })
    }

    fn status(&self) -> Status<'_> {
        Status {
            clock: self.clock.now(),
            epoch: self.view.epoch,
            members: self.view.members.len(),
            pending: 0,
            delivered: 0,
            sync: Some(self.stats),
            view_members: &self.view.members,
            // Eventual mode serves whoever is up: every node is a member.
            role: "member",
            ..Status::default()
        }
    }

    fn peer_status(&self, peer: NodeId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(|p| PeerStatus {
            clock: p.clock,
            sync_lag: Some(self.beats - p.completed_at),
            waiting: self.causal.then(|| p.waiting.clone()),
        })
    }

    fn replica(&self) -> EventualReplica {
        let me = Origin {
            node: self.me,
            run: self.incarnation,
        };
        EventualReplica::new(match self.causal {
            true => Gate::causal(me),
            false => Gate::eventual(me),
        })
    }
}

/// How many of `versions`, from the first, fit in `budget` bytes (at least
/// one).
fn versions_within(versions: &VecDeque<Version>, budget: usize) -> usize {
    let mut used = 0;
    let over = versions.iter().position(|v| {
        used += v.approximate_len();
        used > budget
    });
    over.map_or(versions.len(), |at| at.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_RUN: u64 = 10;
    const NEW_RUN: u64 = 11;

    /// Node 1, linked to node 2 (run `OLD_RUN`), a sync round every beat.
    fn node_one() -> EventualEngine {
        let mut engine = EventualEngine::new(1, 7, View::new(0, vec![1, 2]), 1_000, 1);
        engine.on_hello(2, OLD_RUN, false);
        engine.on_peer(2, PeerEvent::LinkOpened);
        engine
    }

    fn mark(incarnation: u64, seq: u64) -> Option<ChangeMark> {
        Some(ChangeMark { incarnation, seq })
    }

    /// A sync request for the changes of run `incarnation` after `seq`,
    /// from a node whose own log ended at `last`.
    fn request(incarnation: u64, seq: u64, last: u64) -> Option<SyncRequest> {
        Some(SyncRequest {
            since: ChangeMark { incarnation, seq },
            held: seq,
            last,
            covered: Coverage::default(),
            run: OLD_RUN,
        })
    }

    fn forget_horizon(effects: &[Effect<Work>]) -> Option<u64> {
        effects.iter().find_map(|e| match e {
            Effect::Work(Work::ForgetTombstones { synced }) => Some(*synced),
            _ => None,
        })
    }

    #[test]
    fn a_peers_writes_waiting_are_shown_per_run_of_it() {
        let mut engine = node_one().causal();
        let mut out = Vec::new();
        let (old, new) = (
            Origin {
                node: 2,
                run: OLD_RUN,
            },
            Origin {
                node: 2,
                run: NEW_RUN,
            },
        );
        let waiting = |per_origin| Report::Waiting {
            per_origin,
            dropped: 0,
        };
        engine.on_store(waiting(vec![(old, 1), (new, 2)]), &mut out);
        let status = engine.peer_status(2).unwrap();
        assert_eq!(status.waiting, Some(vec![(OLD_RUN, 1), (NEW_RUN, 2)]));
        assert_eq!(status.waiting_total(), Some(3));
        assert_eq!(engine.status().sync.map(|s| s.waiting), Some(3));
        engine.on_store(waiting(vec![(new, 1)]), &mut out);
        let status = engine.peer_status(2).unwrap();
        assert_eq!(
            status.waiting,
            Some(vec![(NEW_RUN, 1)]),
            "the old run is gone"
        );
        engine.on_store(waiting(Vec::new()), &mut out);
        assert_eq!(engine.peer_status(2).unwrap().waiting_total(), Some(0));
        assert_eq!(
            node_one().peer_status(2).unwrap().waiting,
            None,
            "eventual mode"
        );
    }

    #[test]
    fn a_request_counted_in_an_earlier_run_of_ours_is_answered_from_zero() {
        let mut engine = node_one();
        let mut out = Vec::new();
        let stale = Gossip {
            sync_request: request(6, 200, 0),
            ..Gossip::default()
        };
        engine.on_message(2, stale, &mut out);
        assert!(matches!(
            out[..],
            [Effect::Work(Work::Collect {
                peer: 2,
                since: 0,
                budget: DEFAULT_FRAME_BUDGET,
                ..
            })]
        ));
        out.clear();
        engine.on_tick(&mut out);
        assert_eq!(forget_horizon(&out), Some(0), "no tombstone may go yet");

        let current = Gossip {
            sync_request: request(7, 200, 0),
            ..Gossip::default()
        };
        out.clear();
        engine.on_message(2, current, &mut out);
        assert!(matches!(
            out[..],
            [Effect::Work(Work::Collect {
                peer: 2,
                since: 200,
                budget: DEFAULT_FRAME_BUDGET,
                ..
            })]
        ));
        out.clear();
        engine.on_tick(&mut out);
        assert_eq!(forget_horizon(&out), Some(200));
    }

    #[test]
    fn the_word_of_an_earlier_run_of_the_peer_is_not_taken() {
        let mut engine = node_one();
        engine.outgoing(2);
        let late = Gossip {
            sync_request: request(7, 200, 0).map(|r| SyncRequest { run: 9, ..r }),
            ..Gossip::default()
        };
        engine.on_message(2, late, &mut Vec::new());
        assert_eq!(
            forgettable(&mut engine),
            Some(0),
            "run 9 is not the one we know"
        );
        let current = Gossip {
            sync_request: request(7, 200, 0),
            ..Gossip::default()
        };
        engine.on_message(2, current, &mut Vec::new());
        assert_eq!(forgettable(&mut engine), Some(200));
    }

    /// What node 2 said it covers is used to trim our pushes' dependencies
    /// only on a link its very run welcomed: not before a welcome, not on a
    /// link welcomed by another run (it restarted: its hello may come after
    /// our frames reach the new run), and not once the link broke.
    #[test]
    fn dependencies_are_trimmed_only_for_the_run_that_said_what_it_covers() {
        let mut engine = node_one().causal();
        let covered = Coverage::from_entries(vec![(Origin { node: 3, run: 1 }, 5)]);
        let said = Gossip {
            sync_request: request(7, 0, 0).map(|r| SyncRequest {
                covered: covered.clone(),
                ..r
            }),
            ..Gossip::default()
        };
        engine.on_message(2, said, &mut Vec::new());
        let trimmed_by = |engine: &mut EventualEngine| {
            let frame = engine.outgoing(2).expect("a frame is owed");
            frame.receiver_covers.map(|c| (*c).clone())
        };
        let owe = |engine: &mut EventualEngine| {
            engine.on_tick(&mut Vec::new());
            trimmed_by(engine)
        };
        assert_eq!(owe(&mut engine), None, "no link welcomed yet");
        engine.on_welcome(2, NEW_RUN);
        assert_eq!(owe(&mut engine), None, "welcomed by another run");
        engine.on_welcome(2, OLD_RUN);
        assert_eq!(owe(&mut engine), Some(covered), "its own run");
        engine.on_peer(2, PeerEvent::LinkLost);
        engine.on_peer(2, PeerEvent::LinkOpened);
        assert_eq!(owe(&mut engine), None, "the link it welcomed broke");
    }

    /// Delivers `frame` from node 2 and lets a store that keeps (or, with
    /// `all_kept` false, refuses) versions apply what it carries.
    fn receive(engine: &mut EventualEngine, frame: Gossip, all_kept: bool) {
        let mut out = Vec::new();
        engine.on_message(2, frame, &mut out);
        for effect in out {
            if let Effect::Work(Work::ApplyVersions {
                completes: Some(done),
                ..
            }) = effect
            {
                engine.on_sync_applied(2, done, all_kept, 0);
            }
        }
    }

    /// A whole answer of node 2's run `incarnation` to a request since 0.
    fn answer(incarnation: u64, seq: u64) -> Gossip {
        part(incarnation, 0, seq, seq)
    }

    /// An answer of node 2's run `incarnation` to a request since `since`
    /// that stops at `upto` of its changes up to `last`.
    fn part(incarnation: u64, since: u64, upto: u64, last: u64) -> Gossip {
        Gossip {
            sync_complete: Some(done(incarnation, since, upto, last)),
            ..Gossip::default()
        }
    }

    fn done(incarnation: u64, since: u64, upto: u64, last: u64) -> SyncDone {
        SyncDone {
            asked_by: 7,
            since,
            upto: ChangeMark {
                incarnation,
                seq: upto,
            },
            last,
        }
    }

    /// The sync request node 1 sends node 2 at the next round, if any.
    fn next_request(engine: &mut EventualEngine) -> Option<ChangeMark> {
        engine.on_tick(&mut Vec::new());
        engine
            .outgoing(2)
            .and_then(|f| f.sync_request)
            .map(|r| r.since)
    }

    /// Which of nodes 2 and 3 engine `engine` sends a sync request to now.
    fn asked(engine: &mut EventualEngine) -> Vec<NodeId> {
        let mut request_to = |p| engine.outgoing(p).and_then(|f| f.sync_request);
        [2, 3]
            .into_iter()
            .filter(|&p| request_to(p).is_some())
            .collect()
    }

    /// A causal node restarted empty (that took no whole answer yet) asks
    /// every peer, takes the first answer that comes in parts, drops the
    /// first part of another's and asks that peer nothing while the one
    /// taken goes on; once it is whole, every peer at each round. If the
    /// one taken is given up on, the other is asked too.
    #[test]
    fn a_causal_node_that_took_no_answer_yet_takes_one_answer_in_parts_at_a_time() {
        let mut engine = EventualEngine::new(1, 7, View::new(0, vec![1, 2, 3]), 1_000, 1).causal();
        for peer in [2, 3] {
            engine.on_hello(peer, OLD_RUN, false);
            engine.on_peer(peer, PeerEvent::LinkOpened);
        }
        assert_eq!(asked(&mut engine), [2, 3], "every peer at first");
        let first_part = |versions| {
            let mut part = part(OLD_RUN, 0, 1, 9);
            part.versions = versions;
            part
        };
        let mut out = Vec::new();
        engine.on_message(2, first_part(vec![gone("a", 1, false)]), &mut out);
        assert_eq!(asked(&mut engine), [2], "the rest of node 2's answer");
        out.clear();
        engine.on_message(3, first_part(vec![gone("b", 1, false)]), &mut out);
        assert!(out.is_empty(), "node 3's first part is dropped: {out:?}");
        engine.on_tick(&mut Vec::new());
        assert_eq!(asked(&mut engine), [], "node 2's answer is awaited");
        let mut last = part(OLD_RUN, 1, 9, 9);
        last.coverage = Some(Coverage::default());
        receive(&mut engine, last, true);
        engine.on_tick(&mut Vec::new());
        assert_eq!(asked(&mut engine), [2, 3], "a whole answer is in: both");

        let mut engine = EventualEngine::new(1, 7, View::new(0, vec![1, 2, 3]), 1_000, 1).causal();
        for peer in [2, 3] {
            engine.on_hello(peer, OLD_RUN, false);
            engine.on_peer(peer, PeerEvent::LinkOpened);
        }
        asked(&mut engine);
        engine.on_message(2, first_part(Vec::new()), &mut Vec::new());
        engine.on_message(3, first_part(Vec::new()), &mut Vec::new());
        asked(&mut engine);
        engine.on_tick(&mut Vec::new());
        assert_eq!(asked(&mut engine), [], "node 2's answer is awaited");
        engine.on_tick(&mut Vec::new());
        assert_eq!(
            asked(&mut engine),
            [2, 3],
            "node 2 is given up on: node 3 too"
        );
    }

    #[test]
    fn an_answer_from_an_earlier_run_of_the_peer_is_dropped() {
        let mut engine = node_one();
        let request = engine.outgoing(2).unwrap().sync_request.map(|r| r.since);
        assert_eq!(request, mark(OLD_RUN, 0));
        // Node 2 restarts; its old link's last frame is read after the new hello.
        engine.on_hello(2, NEW_RUN, true);
        receive(&mut engine, answer(OLD_RUN, 500), true);
        assert_eq!(
            next_request(&mut engine),
            mark(NEW_RUN, 0),
            "the new run is asked from zero"
        );
        receive(&mut engine, answer(NEW_RUN, 3), true);
        assert_eq!(next_request(&mut engine), mark(NEW_RUN, 3));
    }

    #[test]
    fn an_answer_to_an_earlier_run_of_ours_completes_nothing() {
        // Node 1 restarted (a fresh engine) and asks from zero; node 2's
        // answer to node 1's earlier run, since 500, arrives first.
        let mut engine = node_one();
        engine.outgoing(2);
        let stale = part(OLD_RUN, 500, 800, 800);
        let mut out = Vec::new();
        engine.on_message(2, stale, &mut out);
        assert!(out.is_empty(), "{out:?}");
        receive(&mut engine, answer(OLD_RUN, 810), true);
        assert_eq!(next_request(&mut engine), mark(OLD_RUN, 810));
    }

    /// An answer node 2 collected for a request of node 1's run `asked_by`.
    fn answer_for(asked_by: u64) -> Gossip {
        let mut frame = answer(OLD_RUN, 40);
        frame.sync_complete.as_mut().unwrap().asked_by = asked_by;
        frame.coverage = Some(Coverage::default());
        frame
    }

    #[test]
    fn an_answer_collected_for_an_earlier_run_of_ours_completes_nothing() {
        // It left out what that run covered, which this run never held.
        for mut engine in [node_one(), node_one().causal()] {
            engine.outgoing(2);
            let mut out = Vec::new();
            let mut stale = answer_for(6);
            stale.versions = vec![gone("a", 1, false)];
            engine.on_message(2, stale, &mut out);
            let applied: Vec<&Work> = out
                .iter()
                .filter_map(|e| match e {
                    Effect::Work(work) => Some(work),
                    _ => None,
                })
                .collect();
            let leaked = applied.iter().any(|w| {
                matches!(w, Work::ApplyVersions { answer, completes, .. } if !answer.is_empty() || completes.is_some())
            });
            assert!(
                !leaked || !engine.causal,
                "causal: none of it applied: {out:?}"
            );
            assert!(
                applied.iter().all(|w| matches!(
                    w,
                    Work::ApplyVersions {
                        completes: None,
                        ..
                    }
                )),
                "{out:?}"
            );
            out.clear();
            engine.on_message(2, answer_for(7), &mut out);
            assert!(
                matches!(
                    out[..],
                    [Effect::Work(Work::ApplyVersions {
                        completes: Some(_),
                        ..
                    })]
                ),
                "{out:?}"
            );
        }
    }

    #[test]
    fn an_answer_counts_only_once_the_store_kept_it() {
        let mut engine = node_one();
        engine.outgoing(2);
        // The answer arrives; the store (a worker) has not applied it yet.
        let mut out = Vec::new();
        engine.on_message(2, answer(OLD_RUN, 40), &mut out);
        let [Effect::Work(Work::ApplyVersions {
            completes: Some(completed),
            ..
        })] = out[..]
        else {
            panic!("the answer goes to the store: {out:?}");
        };
        for _ in 0..5 {
            let request = next_request(&mut engine);
            assert_eq!(request, None, "a sync being applied is not given up on");
        }
        // The store could not keep a version of it: asked again from where we were.
        engine.on_sync_applied(2, completed, false, 0);
        assert_eq!(
            next_request(&mut engine),
            Some(ChangeMark {
                incarnation: OLD_RUN,
                seq: 0
            })
        );
        receive(&mut engine, answer(OLD_RUN, 55), true);
        assert_eq!(next_request(&mut engine), mark(OLD_RUN, 55));
        // Applied after the peer restarted: it says nothing of the new run.
        engine.outgoing(2);
        engine.on_hello(2, NEW_RUN, true);
        engine.on_sync_applied(2, done(OLD_RUN, 0, 90, 90), true, 0);
        assert_eq!(next_request(&mut engine), mark(NEW_RUN, 0));
    }

    /// The sync request in the frame node 1 owes node 2 now, if any.
    fn request_now(engine: &mut EventualEngine) -> Option<ChangeMark> {
        engine
            .outgoing(2)
            .and_then(|f| f.sync_request)
            .map(|r| r.since)
    }

    fn sync_lag(engine: &EventualEngine) -> Option<u64> {
        engine.peer_status(2).and_then(|p| p.sync_lag)
    }

    #[test]
    fn after_a_part_the_rest_is_asked_for_at_once() {
        let mut engine = node_one();
        assert_eq!(request_now(&mut engine), mark(OLD_RUN, 0));
        engine.on_tick(&mut Vec::new());
        receive(&mut engine, part(OLD_RUN, 0, 3, 10), true);
        assert_eq!(
            request_now(&mut engine),
            mark(OLD_RUN, 3),
            "not at the next round"
        );
        assert_eq!(sync_lag(&engine), Some(1), "a part is no completed sync");
        // The same part again (a repeated request's answer) asks nothing more.
        receive(&mut engine, part(OLD_RUN, 0, 3, 10), true);
        assert_eq!(request_now(&mut engine), None);
        receive(&mut engine, part(OLD_RUN, 3, 10, 10), true);
        assert_eq!(sync_lag(&engine), Some(0));
        assert_eq!(request_now(&mut engine), None, "whole: the next round asks");
        assert_eq!(next_request(&mut engine), mark(OLD_RUN, 10));
    }

    /// A deleted key `key` stamped `ts` by node 2, pushed (with a cause)
    /// or in an answer (without).
    fn gone(key: &str, ts: u64, pushed: bool) -> Version {
        let cause = pushed.then(|| origins::Cause {
            origin: Origin {
                node: 2,
                run: OLD_RUN,
            },
            seq: ts,
            deps: Some(Arc::new(Coverage::default())),
        });
        Version {
            key: key.as_bytes().to_vec(),
            stamp: Stamp { ts, node: 2 },
            state: version::State::Deleted,
            cause,
        }
    }

    /// A causal node hands each part of an answer to the store side as a
    /// part of that answer, the coverage and what it completes only with
    /// the last (the store side keeps the parts aside until then:
    /// `replica.rs`'s tests).
    #[test]
    fn a_causal_node_hands_an_answers_parts_on_and_completes_it_with_the_last() {
        let mut engine = node_one().causal();
        engine.outgoing(2);
        let covered = Coverage::from_entries(vec![(
            Origin {
                node: 2,
                run: OLD_RUN,
            },
            9,
        )]);
        let mut first = part(OLD_RUN, 0, 3, 10);
        first.versions = vec![gone("p", 5, true), gone("c", 7, false), gone("a", 1, false)];
        first.pushes = 1;
        first.coverage = Some(Coverage::default());
        let mut out = Vec::new();
        engine.on_message(2, first, &mut out);
        let [Effect::Work(Work::ApplyVersions {
            pushes,
            answer,
            part: Some(taken),
            completes: None,
            coverage: None,
            ..
        })] = &out[..]
        else {
            panic!("the push and a part go to the store: {out:?}");
        };
        assert_eq!(pushes[..], [gone("p", 5, true)]);
        assert_eq!(answer[..], [gone("c", 7, false), gone("a", 1, false)]);
        let first_part = AnswerPart {
            run: OLD_RUN,
            since: 0,
            last: false,
        };
        assert_eq!(*taken, first_part);
        let asked = engine.outgoing(2).and_then(|f| f.sync_request);
        let held = asked.map(|r| (r.since.seq, r.held));
        assert_eq!(held, Some((3, 0)), "the rest, saying we hold nothing yet");

        let mut last = part(OLD_RUN, 3, 10, 10);
        last.versions = vec![gone("b", 8, false), gone("a", 9, false)];
        last.coverage = Some(covered.clone());
        out.clear();
        engine.on_message(2, last, &mut out);
        let [Effect::Work(Work::ApplyVersions {
            answer,
            part: Some(taken),
            completes: Some(whole),
            coverage: Some(coverage),
            ..
        })] = &out[..]
        else {
            panic!("the last part goes to the store: {out:?}");
        };
        assert_eq!(answer[..], [gone("b", 8, false), gone("a", 9, false)]);
        let last_part = AnswerPart {
            last: true,
            ..first_part
        };
        assert_eq!(*taken, last_part, "of the same answer");
        assert_eq!(
            (whole.since, whole.upto.seq, whole.is_part()),
            (0, 10, false)
        );
        assert_eq!(*coverage, covered);
        let whole = *whole;
        engine.on_sync_applied(2, whole, true, 0);
        assert_eq!(next_request(&mut engine), mark(OLD_RUN, 10));
    }

    #[test]
    fn a_causal_node_drops_a_part_that_starts_past_what_it_kept() {
        let mut engine = node_one().causal();
        engine.outgoing(2);
        let mut out = Vec::new();
        engine.on_message(2, part(OLD_RUN, 0, 3, 10), &mut out);
        let mut skipping = part(OLD_RUN, 5, 10, 10);
        skipping.coverage = Some(Coverage::default());
        engine.on_message(2, skipping, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_part_the_store_could_not_keep_is_asked_again_at_the_next_round() {
        let mut engine = node_one();
        engine.outgoing(2);
        receive(&mut engine, part(OLD_RUN, 0, 3, 10), false);
        assert_eq!(
            request_now(&mut engine),
            None,
            "no tight loop on a failing store"
        );
        assert_eq!(next_request(&mut engine), mark(OLD_RUN, 0));
    }

    /// Node 1's delete of `k{i}`, stamped `5 + i`.
    fn tombstone(i: u64) -> Version {
        Version {
            key: format!("k{i}").into_bytes(),
            stamp: Stamp { ts: 5 + i, node: 1 },
            state: version::State::Deleted,
            cause: None,
        }
    }

    #[test]
    fn pushes_go_in_frames_within_the_budget_oldest_first() {
        let versions: Vec<Version> = (0..3).map(tombstone).collect();
        let two = 2 * versions[0].approximate_len();
        for (budget, frames) in [(1, vec![1, 1, 1]), (two, vec![2, 1])] {
            let mut engine = node_one().with_frame_budget(budget);
            engine.outgoing(2);
            engine.on_store(Report::Published(versions.clone()), &mut Vec::new());
            let sent: Vec<Vec<Version>> = std::iter::from_fn(|| engine.outgoing(2))
                .map(|frame| frame.versions)
                .collect();
            let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
            assert_eq!(sizes, frames, "budget {budget}");
            assert_eq!(sent.concat(), versions, "in the order they were made");
        }
    }

    /// A burst of pushes to a peer grows its queue; once they are all
    /// sent, the queue's room goes with them (at 1M writes it was 16-24
    /// bytes an item of the writing node's RSS).
    #[test]
    fn a_peers_queue_of_pushes_gives_its_room_back_once_sent() {
        let versions: Vec<Version> = (0..5_000).map(tombstone).collect();
        let mut engine = node_one().with_frame_budget(1 << 10);
        engine.outgoing(2);
        engine.on_store(Report::Published(versions), &mut Vec::new());
        let queued = |engine: &EventualEngine| engine.peers[&2].pushes.capacity();
        assert!(queued(&engine) >= 5_000);
        let sent: usize = std::iter::from_fn(|| engine.outgoing(2))
            .map(|frame| frame.versions.len())
            .sum();
        assert_eq!(sent, 5_000);
        assert!(queued(&engine) <= SPARE_PUSHES, "{}", queued(&engine));
    }

    #[test]
    fn stats_count_versions_written_pushed_and_answered() {
        let version = tombstone;
        let mut engine = node_one();
        engine.outgoing(2);
        engine.on_store(
            Report::Published(vec![version(0), version(1)]),
            &mut Vec::new(),
        );
        while engine.outgoing(2).is_some() {}
        let changes = Changes {
            versions: vec![version(0), version(1), version(2)],
            upto: 3,
            last: 3,
            lost: Vec::new(),
        };
        let mut out = Vec::new();
        let asking = Gossip {
            sync_request: request(7, 0, 0),
            ..Gossip::default()
        };
        engine.on_message(2, asking, &mut out);
        let collected = Report::Collected {
            peer: 2,
            since: 0,
            changes,
            coverage: Coverage::default(),
            asked_by: 2,
        };
        engine.on_store(collected, &mut out);
        while engine.outgoing(2).is_some() {}
        let stats = engine.status().sync.expect("eventual mode reports sync");
        let counts = (
            stats.versions_written,
            stats.versions_sent,
            stats.versions_answered,
        );
        assert_eq!(counts, (2, 5, 3));
    }

    /// The tombstones node 1 may forget at the next round: those at or
    /// below this change number.
    fn forgettable(engine: &mut EventualEngine) -> Option<u64> {
        let mut out = Vec::new();
        engine.on_tick(&mut out);
        forget_horizon(&out)
    }

    #[test]
    fn a_peer_that_synced_past_our_changes_counts_once_we_hold_its_copies() {
        let mut engine = node_one();
        engine.outgoing(2);
        // Node 2 holds our changes up to 100 since its log ended at 10, up
        // to 150 since 20, and up to 200 since 30 (merged with the one before).
        for (seq, last) in [(100, 10), (150, 20), (200, 30)] {
            let frame = Gossip {
                sync_request: request(7, seq, last),
                ..Gossip::default()
            };
            engine.on_message(2, frame, &mut Vec::new());
        }
        assert_eq!(
            forgettable(&mut engine),
            Some(0),
            "none of its copies fetched"
        );
        for (upto, horizon) in [(10, 100), (25, 100), (30, 200)] {
            engine.on_sync_applied(2, done(OLD_RUN, 0, upto, 30), true, 0);
            assert_eq!(forgettable(&mut engine), Some(horizon), "synced to {upto}");
        }
    }

    #[test]
    fn a_request_says_where_our_log_ended_as_the_store_last_reported() {
        let mut engine = node_one();
        engine.outgoing(2);
        engine.on_sync_applied(2, done(OLD_RUN, 0, 5, 5), true, 42);
        engine.on_tick(&mut Vec::new());
        let sent = engine.outgoing(2).and_then(|f| f.sync_request);
        let ours = request(OLD_RUN, 5, 42).map(|r| SyncRequest { run: 7, ..r });
        assert_eq!(sent, ours);
    }
}
