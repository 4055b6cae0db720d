//! How a view forms and how a member without the state is handed it (the
//! protocol and its safety argument are in the module doc of [`super`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::{Control, Flush, Image, Phase, Proposal, Queued, Report, TotalOrder, Transfer, Work};

/// What view changes said they wait for since the last view formed. A
/// cluster that waits (for a node to come back, say) tries again every
/// heartbeat; an attempt that says what the last one said logs it at
/// debug, so the wait is in the log once, not every heartbeat.
#[derive(Debug, Default)]
pub(super) struct Said {
    proposed: Vec<NodeId>,
    waiting: String,
}

impl Said {
    /// A proposal of a view of `members` (`line` says its round too), at
    /// info.
    fn proposing(&mut self, members: &[NodeId], line: String) {
        say(self.proposed == members, log::Level::Info, &line);
        self.proposed = members.to_vec();
    }

    /// Why a view could not form, at warn.
    fn waiting(&mut self, line: String) {
        say(self.waiting == line, log::Level::Warn, &line);
        self.waiting = line;
    }
}

/// Logs `line` at `level`, or at debug if it says `again` what was said.
fn say(again: bool, level: log::Level, line: &str) {
    log::log!(if again { log::Level::Debug } else { level }, "{line}");
}

/// A snapshot for one member, or the writes it missed (module doc,
/// "Catching up"): where it is, and how many of its parts are on their
/// way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Handing {
    step: Step,
    /// Handing the writes the member missed rather than a snapshot: the
    /// last write handed so far (at first, the last the member holds).
    writes_after: Option<Stamp>,
    /// Chunks sent in this attempt.
    sent: u64,
    /// How many of them the member said it took (`Control::Took`).
    taken: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Its next chunk is to be read once fewer than [`WINDOW`] are on
    /// their way (`start`: the first, from a fresh listing of the store).
    Due { start: bool },
    /// A chunk is being read from the store, by the work of this tag.
    Reading { tag: u64 },
    /// The last chunk is sent; waiting for the member's `Caught`.
    Sent,
}

impl Handing {
    /// From the first chunk: a new view, a lost link, a failed read.
    pub(super) fn anew() -> Handing {
        Handing {
            step: Step::Due { start: true },
            writes_after: None,
            sent: 0,
            taken: 0,
        }
    }

    fn reading(&self, tag: u64) -> bool {
        self.step == Step::Reading { tag }
    }

    /// Whether delivery waits for it (module doc, step 4): while it hands
    /// the writes the member missed, which end where delivery stopped. One
    /// not chosen yet (its link is down) does not wait: once a write is
    /// delivered after the image, it can only take the image.
    fn holds_delivery(&self) -> bool {
        self.writes_after.is_some()
    }
}

/// Chunks of a snapshot (each at most about 1 MiB: `CHUNK_BYTES`) a source
/// lets be on their way to a member at once. The source reads the next as
/// fast as the member installs them (its `Took`, said once its store
/// installed one, opens the window again), and no faster: a member, a
/// store or a link that is slow holds at most this many chunks in the
/// source's memory and in the member's (module doc, step 4).
pub(super) const WINDOW: u64 = 4;
use crate::cluster::engine::Effect;
use crate::cluster::view::Ballot;
use crate::cluster::{NodeId, Stamp, View};

/// What a view starts from, as its `StartView` says: the latest started
/// view its flushes came from, the members that hold its state, what they
/// deliver first, and whether those sources' order is one rebuilt from a
/// log (which the others' is not, until they take its snapshot).
struct Formed {
    base: Ballot,
    /// The sources' state holds `base`'s order up to this write; of what
    /// was delivered above it, `start` holds all.
    floor: Stamp,
    sources: Vec<NodeId>,
    start: Vec<Proposal>,
    reordered: bool,
}

/// How the view a member waits in without its state began: the floor of
/// its `StartView` and its start sequence.
#[derive(Debug, Default)]
pub(super) struct Began {
    floor: Stamp,
    start: Vec<Proposal>,
}

/// No snapshot is being installed here (tags start at 1).
pub(super) const NO_SNAPSHOT: u64 = 0;

/// Reads of a snapshot that fail in a row before its source gives up.
const SNAPSHOT_RETRIES: u32 = 3;

/// A member without the state that has heard nothing of its snapshot for
/// this many times the patience, and whose store installs no chunk of it,
/// asks for a new view.
pub(super) const SNAPSHOT_PATIENCE: u64 = 4;
use crate::store::Record;

impl TotalOrder {
    /// Every tick: start a view change when one is needed and this node is
    /// the one to coordinate it (or the one expected has not for too long);
    /// give up on one that is not finishing.
    pub(super) fn reconsider(&mut self, out: &mut Vec<Effect<Work>>) {
        let ticks = self.ticks;
        // Not while its store installs chunks it has: a store that installs
        // slowly (a memcached backend) may take longer than this patience.
        let installing = self.chunks_received > self.chunks_installed;
        let starved = matches!(self.phase, Phase::Normal) && !self.has_state && !installing;
        if starved && ticks.saturating_sub(self.awaited_since) > SNAPSHOT_PATIENCE * self.patience {
            // No chunk of a snapshot for long: its source gave up, or it
            // was lost. A new view hands a new one.
            log::warn!(
                "node {}: no snapshot is coming; asking for a new view",
                self.me
            );
            self.go_idle(out);
        }
        let stuck = match self.phase {
            Phase::Collecting { since, .. } | Phase::Flushed { since } => {
                ticks.saturating_sub(since) > self.patience
            }
            // A member installs the view one trip after its coordinator
            // sent it, and the last member's `Started` may come two trips
            // after that: twice the patience for it.
            Phase::Starting { since, .. } => ticks.saturating_sub(since) > 2 * self.patience,
            Phase::Idle | Phase::Normal => false,
        };
        if !stuck && self.change_lost_a_node() {
            log::info!(
                "node {}: a node of the view change to {:?} went down; starting over",
                self.me,
                self.promised
            );
            self.go_idle(out);
        } else if stuck {
            log::warn!(
                "node {}: the view change to {:?} is not finishing; starting over",
                self.me,
                self.promised
            );
            // Members that never flushed are left out of the next attempt
            // (a link that delivers nothing looks up, yet never answers).
            match &self.phase {
                Phase::Collecting {
                    members, flushes, ..
                } => {
                    let silent = members.iter().filter(|m| !flushes.contains_key(m));
                    self.unresponsive.extend(silent);
                }
                // A member gives its coordinator another round of patience
                // to try again without the silent ones before it competes.
                _ => self.unsettled_since = Some(ticks),
            }
            self.go_idle(out);
        }
        if !matches!(self.phase, Phase::Idle | Phase::Normal) {
            return;
        }
        let want = self.wanted_members();
        let settled = matches!(self.phase, Phase::Normal)
            && want == self.view.members
            && !self.member_restarted
            && !self.member_elsewhere();
        if settled {
            self.unsettled_since = None;
            return;
        }
        if want.len() < self.majority() {
            if matches!(self.phase, Phase::Normal) {
                log::warn!(
                    "node {}: only {} of {} nodes up: no quorum",
                    self.me,
                    want.len(),
                    self.configured.len()
                );
                self.go_idle(out);
            }
            // No view forms without the nodes left out for not answering
            // an earlier attempt: ask them again (two nodes that left each
            // other out would otherwise wait for a third for ever).
            self.unresponsive.clear();
            return;
        }
        let since = *self.unsettled_since.get_or_insert(ticks);
        let waited = ticks.saturating_sub(since);
        // The lowest coordinates at once; when it does not (it holds a node
        // the others hear left out, say), the next takes over after the
        // patience and each member after it half a patience later, so that
        // the first one's `Prepare` can reach it: two that took over
        // together would preempt each other's ballots in turn. A node in
        // no serving view takes over after the patience whatever its rank:
        // if the lowest left it out, its own `Prepare` tells the lowest it
        // answers again.
        let below = want.iter().filter(|&&m| m < self.me).count() as u64;
        let stagger = match self.phase {
            Phase::Normal => below.saturating_sub(1) * self.patience / 2,
            _ => 0,
        };
        if below == 0 || waited > self.patience + stagger {
            self.unsettled_since = Some(ticks);
            self.coordinate(want, out);
        }
    }

    /// The view change under way cannot finish, because its coordinator
    /// or, for the coordinator, one of the members it waits for said it is
    /// leaving: waiting out the patience would only delay the next attempt.
    /// (Not on the detector's word: a peer it holds down for a moment may
    /// still answer, and giving up on every such moment could go on for
    /// ever on a slow network.)
    fn change_lost_a_node(&self) -> bool {
        let down = |id: &NodeId| self.peers.get(id).is_some_and(|p| p.left);
        let coordinating = self.promised.coordinator == self.me;
        match &self.phase {
            Phase::Collecting { members, .. } => members.iter().any(down),
            Phase::Starting { .. } if coordinating => self.view.members.iter().any(down),
            Phase::Flushed { .. } | Phase::Starting { .. } => down(&self.promised.coordinator),
            Phase::Idle | Phase::Normal => false,
        }
    }

    /// The members a view should have: this node and the peers the
    /// detector holds up, as long as each pair of them sees each other up
    /// (by each one's own detector, gossiped in frames): two nodes that
    /// cannot hear each other cannot be in one view. Members of the current
    /// view are taken first, so a serving view is not traded for another
    /// of the same size.
    fn wanted_members(&self) -> Vec<NodeId> {
        let up = |id: &NodeId| {
            self.peers
                .get(id)
                .is_some_and(|p| p.up && !self.unresponsive.contains(id))
        };
        let mut candidates: Vec<NodeId> = self.others().filter(|id| up(id)).collect();
        candidates.extend(
            self.peers
                .keys()
                .filter(|id| up(id) && !self.view.contains(**id)),
        );
        let mut want = vec![self.me];
        for candidate in candidates {
            if want.iter().all(|&m| self.see_each_other(m, candidate)) {
                want.push(candidate);
            }
        }
        want.sort_unstable();
        want
    }

    /// `a` and `b` each hold the other up (this node's detector for
    /// itself, a peer's last report for it).
    fn see_each_other(&self, a: NodeId, b: NodeId) -> bool {
        self.sees(a, b) && self.sees(b, a)
    }

    fn sees(&self, who: NodeId, whom: NodeId) -> bool {
        if who == self.me {
            return self.peers.get(&whom).is_some_and(|p| p.up);
        }
        self.peers.get(&who).is_some_and(|p| p.sees.contains(&whom))
    }

    /// A member that is up says it is in another view (it left this one
    /// without our knowing, e.g. it restarted within the detector's timeout).
    fn member_elsewhere(&self) -> bool {
        self.member_peers()
            .any(|(_, p)| p.up && p.ballot != self.ballot)
    }

    /// Stops serving: pending local reads are refused (a read has no
    /// effect, so "not applied" is true); held proposals stay held for a
    /// later flush.
    fn go_idle(&mut self, out: &mut Vec<Effect<Work>>) {
        self.drop_local_reads(out, "no quorum; not applied");
        self.end_handing(out);
        self.phase = Phase::Idle;
    }

    /// The snapshots this node was handing end with the view: the store
    /// side forgets how far it had listed them (for a store listed by key,
    /// every key of it).
    fn end_handing(&mut self, out: &mut Vec<Effect<Work>>) {
        self.image = None;
        if !self.handing.is_empty() {
            self.handing.clear();
            out.push(Effect::Work(Work::EndDumps));
        }
    }

    /// Once no member is handed anything more, the image its snapshots
    /// were read from is dropped: the store stops keeping it.
    fn end_image(&mut self, out: &mut Vec<Effect<Work>>) {
        if self.handing.is_empty() && self.image.take().is_some() {
            out.push(Effect::Work(Work::EndDumps));
        }
    }

    /// Whether delivery waits for the members being handed the state
    /// (module doc, step 4): until an image is taken, which the store says
    /// it keeps; while one is handed the writes it missed; and once the
    /// writes delivered since the image was taken pass the queue limit
    /// (each member holds them until its snapshot is in, and the store a
    /// copy of each item they changed).
    pub(super) fn handing_holds_delivery(&self) -> bool {
        let kept = self
            .image
            .is_some_and(|image| image.frozen && image.written <= self.queue_limit);
        !self.handing.is_empty() && (!kept || self.handing.values().any(Handing::holds_delivery))
    }

    fn drop_local_reads(&mut self, out: &mut Vec<Effect<Work>>, reason: &str) {
        let queue = std::mem::take(&mut self.queue);
        for Reverse(entry) in queue {
            match (entry.read, entry.reply_to) {
                (true, Some(to)) => out.push(Effect::Refuse {
                    to,
                    reason: reason.to_string(),
                }),
                _ => self.queue.push(Reverse(entry)),
            }
        }
    }

    /// What this node flushes: the view it last installed, what it holds of
    /// it, and the proposals it holds undelivered.
    fn flush(&self) -> Flush {
        let mut held: Vec<Proposal> = self
            .queue
            .iter()
            .filter(|Reverse(q)| !q.read)
            .map(|Reverse(q)| Proposal {
                stamp: q.stamp,
                op: q.op.clone(),
            })
            .collect();
        held.extend(self.began.start.iter().cloned());
        held.sort_by_key(|p| p.stamp);
        held.dedup_by_key(|p| p.stamp);
        Flush {
            normal: self.ballot,
            normal_members: self.view.members.clone(),
            base: self.base,
            has_state: self.has_state,
            start_floor: self.began.floor,
            intact: self.intact,
            remembers: self.remembers,
            recovered: self.recovered,
            rebuilt: self.rebuilt,
            log_stuck: self.log_stuck,
            amnesiacs: self.amnesiacs.iter().copied().collect(),
            delivered_upto: self.delivered_upto,
            held,
        }
    }

    /// Coordinates a higher ballot with `members`.
    fn coordinate(&mut self, members: Vec<NodeId>, out: &mut Vec<Effect<Work>>) {
        let round = self.promised.round.max(self.ballot.round) + 1;
        let ballot = Ballot {
            round,
            coordinator: self.me,
        };
        let line = format!(
            "node {}: proposing view {round} with nodes {members:?}",
            self.me
        );
        self.said.proposing(&members, line);
        self.promise(ballot, out);
        let me = self.me;
        for &member in members.iter().filter(|&&m| m != me) {
            let prepare = Control::Prepare {
                ballot,
                members: members.clone(),
            };
            self.send(member, prepare);
        }
        let mut flushes = BTreeMap::new();
        flushes.insert(self.me, self.flush());
        self.phase = Phase::Collecting {
            members,
            flushes,
            since: self.ticks,
        };
        self.check_flushes(out);
    }

    /// Promises `ballot`: nothing of an older view counts from now on.
    fn promise(&mut self, ballot: Ballot, out: &mut Vec<Effect<Work>>) {
        self.promised = ballot;
        self.started_early.clear();
        self.drop_local_reads(out, "the cluster is changing its view; not applied");
        self.end_handing(out);
        // An install of the old view's snapshot still under way in the
        // store must not count in the new one.
        self.installing = NO_SNAPSHOT;
    }

    pub(super) fn on_control(
        &mut self,
        from: NodeId,
        control: Control,
        out: &mut Vec<Effect<Work>>,
    ) {
        match control {
            Control::Prepare { ballot, members } => self.on_prepare(from, ballot, members, out),
            Control::Flush { ballot, flush } => {
                if let Phase::Collecting {
                    flushes, members, ..
                } = &mut self.phase
                {
                    if ballot == self.promised && members.contains(&from) {
                        flushes.insert(from, flush);
                        self.check_flushes(out);
                    }
                }
            }
            Control::Caught { ballot } => {
                let handed = (ballot == self.ballot).then(|| self.handing.remove(&from));
                if let Some(handing) = handed.flatten() {
                    // Decided as the handing began (a lost link may have
                    // started it over since, not decided yet): the same.
                    match handing.writes_after.or_else(|| self.behind_by(from)) {
                        Some(_) => self.counters.missed_handed += 1,
                        None => self.counters.snapshots_sent += 1,
                    }
                    log::info!(
                        "node {}: node {from} holds the state of view {}",
                        self.me,
                        ballot.round
                    );
                    self.end_image(out);
                    self.deliver(out);
                }
            }
            Control::Took { ballot, chunks } => {
                if let Some(handing) = self
                    .handing
                    .get_mut(&from)
                    .filter(|_| ballot == self.ballot)
                {
                    // A `Took` of an attempt a lost link ended (it may come
                    // after the next attempt began, each one of a slow link
                    // in turn) says more was taken than of this attempt and
                    // opens the window early until this attempt's own come:
                    // pacing only, the chunks say what is whose.
                    handing.taken = chunks.min(handing.sent);
                    self.hand_snapshots(out);
                }
            }
            Control::Nack { ballot, promised } => {
                // Refused: a higher promise there, or a member that keeps
                // its view. Try again later (with a higher round).
                if ballot == self.promised && matches!(self.phase, Phase::Collecting { .. }) {
                    self.promised = self.promised.max(promised);
                    self.go_idle(out);
                }
            }
            Control::StartView {
                ballot,
                base,
                floor,
                members,
                sources,
                start,
                reordered,
            } => {
                // Only the view this node flushed to (not one it has since
                // promised away). Also one it gave up waiting for and has
                // promised nothing since: idle, it refused every client and
                // counted nothing, so it holds exactly what it flushed (on
                // a slow network a view's messages may take longer than the
                // patience, and the others install it and wait for us).
                let flushed = match self.phase {
                    Phase::Flushed { .. } => true,
                    Phase::Idle => self.flushed_to == Some(ballot),
                    _ => false,
                };
                if flushed && ballot == self.promised && members.contains(&self.me) {
                    let view = View::new(ballot.round, members);
                    let formed = Formed {
                        base,
                        floor,
                        sources,
                        start,
                        reordered,
                    };
                    self.install(ballot, view, formed, out);
                }
            }
            Control::Started { ballot } => match &mut self.phase {
                Phase::Starting { started, .. } if ballot == self.ballot => {
                    started.insert(from);
                    self.maybe_start(out);
                }
                _ if ballot == self.promised && ballot != self.ballot => {
                    self.started_early.insert(from);
                }
                _ => {}
            },
            Control::Behind { ballot, upto } => {
                self.behind.insert(from, (ballot, upto));
            }
            Control::Missed {
                ballot,
                after,
                writes,
                last,
            } => self.on_missed(from, ballot, after, writes, last, out),
            Control::State {
                ballot,
                upto,
                first,
                records,
                read_at,
                last,
                total,
            } => {
                if ballot != self.ballot || self.promised != ballot {
                    // Of another view, or of one this node promised to
                    // leave: its install could end once the newer view
                    // formed and pass for that view's state (`promise`
                    // forgets only an install already begun).
                    return;
                }
                if self.has_state {
                    // A snapshot sent again (our `Caught` may have been lost).
                    self.send(from, Control::Caught { ballot });
                    return;
                }
                if first.is_some() {
                    // The store is reset: it holds a prefix again only once
                    // the last chunk is in.
                    self.intact = false;
                    self.delivered_upto = upto;
                    self.order_begins(upto);
                    self.receiving = Some(Transfer { done: 0, total });
                    self.chunks_installed = 0;
                    self.chunks_received = 0;
                    self.installing_from = from;
                    self.tags += 1;
                    self.installing = self.tags;
                } else if self.installing == NO_SNAPSHOT {
                    return; // the rest of a snapshot whose install failed
                }
                self.awaited_since = self.ticks;
                self.chunks_received += 1;
                if let Some(transfer) = &mut self.receiving {
                    transfer.done += records.iter().map(Record::size).sum::<u64>();
                }
                // No `Took` yet: it waits for the store to install the
                // chunk (`Report::ChunkInstalled`).
                let upto = self.delivered_upto.cas_unique();
                out.push(Effect::Work(Work::Install {
                    reset: first,
                    records,
                    read_at,
                    last,
                    tag: self.installing,
                    mark_delivered: Some(upto).filter(|_| last && self.marks_delivered),
                }));
            }
        }
    }

    fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        members: Vec<NodeId>,
        out: &mut Vec<Effect<Work>>,
    ) {
        self.unresponsive.remove(&from);
        // A serving member does not leave its view for one that drops a
        // member it still sees, and that still sees it: the coordinator
        // merely cannot hear that member (two nodes suspecting each other
        // would otherwise take turns forming views without the other).
        let serving = matches!(self.phase, Phase::Normal) && self.has_state;
        let drops_a_live_member = self
            .others()
            .any(|m| !members.contains(&m) && self.see_each_other(self.me, m));
        if ballot < self.promised || (ballot > self.promised && serving && drops_a_live_member) {
            let promised = self.promised;
            self.send(from, Control::Nack { ballot, promised });
            return;
        }
        if ballot == self.promised {
            return;
        }
        self.promise(ballot, out);
        // Someone is coordinating: give it the full patience before
        // starting a competing change (two coordinators preempting each
        // other in turn would never finish).
        self.unsettled_since = Some(self.ticks);
        if !members.contains(&self.me) {
            // A view is forming without this node: the old one is over here.
            self.phase = Phase::Idle;
            return;
        }
        let flush = Control::Flush {
            ballot,
            flush: self.flush(),
        };
        self.send(from, flush);
        self.flushed_to = Some(ballot);
        self.phase = Phase::Flushed { since: self.ticks };
    }

    /// With every member's flush, forms the view: its sources are the
    /// members that hold the state of the latest view any of them installed
    /// (or, after a crash of most nodes, the one that logged the most).
    fn check_flushes(&mut self, out: &mut Vec<Effect<Work>>) {
        let Phase::Collecting {
            members, flushes, ..
        } = &self.phase
        else {
            return;
        };
        if flushes.len() < members.len() {
            return;
        }
        // A node that restarted remembers nothing of what was delivered,
        // and one that recovered from a data directory only the prefix it
        // logged: the flushers not known to have lost their memory (seen
        // by some flusher to come back as a new run, or recovered, and in
        // no view since) must be a majority, so they meet every view that
        // delivered anything. At the cluster's first start nobody knows of
        // an earlier run.
        let amnesiacs: BTreeSet<NodeId> = flushes
            .values()
            .flat_map(|f| f.amnesiacs.iter().copied())
            .collect();
        let remembering = flushes
            .iter()
            .filter(|(id, f)| f.remembers || (!f.recovered && !amnesiacs.contains(id)))
            .count();
        // Else, or if no node that remembers holds the latest view's state
        // nor may take the view it was formed from (module doc, "A view
        // whose sources are gone"), every configured node must be here,
        // each remembering or recovered: a write is acknowledged only once
        // the node that answered logged it, and a snapshot replaces a log
        // only once its source's log holds more, so the longest prefix
        // held holds them all. No node need be recovered still: the view
        // whose state nobody holds may be one formed from the longest log
        // by a node that recovered and has since installed a view.
        let everyone_logged = flushes.len() == self.configured.len()
            && flushes
                .iter()
                .all(|(id, f)| f.remembers || f.recovered || !amnesiacs.contains(id));
        if remembering < self.majority() && !everyone_logged {
            let missing: Vec<NodeId> = (self.configured.iter())
                .filter(|id| !flushes.contains_key(id))
                .copied()
                .collect();
            // After a crash of most nodes, recovered ones count only all
            // together (module doc, "Data directories").
            let line = format!(
                "node {}: {remembering} of the nodes up remember the cluster's views and a view \
                 needs {} that do, or, after a crash of most nodes, every configured node \
                 back from its data directory: waiting for {}",
                self.me,
                self.majority(),
                match missing.is_empty() {
                    true => "more".to_string(),
                    false => format!("nodes {missing:?}"),
                }
            );
            self.said.waiting(line);
            // A view may need every node now: the next attempt asks again
            // those left out for not answering an earlier one.
            self.unresponsive.clear();
            self.go_idle(out);
            return;
        }
        let remembered = (remembering >= self.majority())
            .then(|| from_remembered(flushes))
            .flatten();
        let formed = remembered.or_else(|| everyone_logged.then(|| from_longest_log(flushes))?);
        let Some(formed) = formed else {
            let line = format!(
                "node {}: no node up holds the state of the cluster's latest view; waiting for one",
                self.me
            );
            self.said.waiting(line);
            self.unresponsive.clear();
            self.go_idle(out);
            return;
        };
        let (ballot, members) = (self.promised, members.clone());
        let me = self.me;
        for &member in members.iter().filter(|&&m| m != me) {
            let start_view = Control::StartView {
                ballot,
                base: formed.base,
                floor: formed.floor,
                members: members.clone(),
                sources: formed.sources.clone(),
                start: formed.start.clone(),
                reordered: formed.reordered,
            };
            self.send(member, start_view);
        }
        let view = View::new(ballot.round, members);
        self.install(ballot, view, formed, out);
    }

    /// Installs the view of `ballot`: a source queues the start entries it
    /// has not delivered (keeping its own clients' reply slots), a member
    /// without the state drops what it held, keeps how the view began
    /// ([`Began`]) and waits for a snapshot;
    /// every member says it started.
    fn install(&mut self, ballot: Ballot, view: View, formed: Formed, out: &mut Vec<Effect<Work>>) {
        let Formed {
            base,
            floor,
            sources,
            start,
            reordered,
        } = formed;
        let source = sources.contains(&self.me);
        if reordered && !source {
            // The source's order is the cluster's from now on; this store's
            // may differ until it takes the snapshot: no source, not behind.
            self.rebuilt = true;
        }
        // Said before this install makes it remember (module doc,
        // "Catching up"): a node that restarted may hold more than it says
        // (a memcached backend keeps its items), one rebuilt from its log
        // another order, one half way through a snapshot no prefix. One
        // recovered exactly from its log holds a prefix, as one that
        // remembers does.
        let behind = !source && (self.remembers || self.recovered) && self.intact && !self.rebuilt;
        let mut slots: BTreeMap<_, _> = std::mem::take(&mut self.queue)
            .into_iter()
            .filter_map(|Reverse(q)| q.reply_to.filter(|_| !q.read).map(|r| (q.stamp, r)))
            .collect();
        if let Some(last) = start.last() {
            self.clock.observe(last.stamp.ts);
        }
        if source {
            // Its intact store reaches what the view starts from, even if
            // it was waiting for a snapshot of the view before; if rebuilt,
            // it is the only source, and the others copy its order, which
            // is the cluster's from its prefix on (also when it was rebuilt
            // only by an earlier view's order, and kept its writes).
            self.has_state = true;
            self.began = Began::default();
            if self.rebuilt {
                self.order_begins(self.delivered_upto);
            }
            self.rebuilt = false;
            for proposal in start {
                if proposal.stamp <= self.delivered_upto {
                    continue; // delivered here in an earlier view
                }
                self.queue.push(Reverse(Queued {
                    stamp: proposal.stamp,
                    op: proposal.op,
                    reply_to: slots.remove(&proposal.stamp),
                    read: false,
                    start: true,
                    // Its wait before this view is not known here.
                    queued_at: self.ticks,
                }));
            }
        } else {
            // The snapshot will hold the effect of everything before it.
            self.has_state = false;
            self.began = Began { floor, start };
        }
        // A member without the state waits for its snapshot from now.
        self.awaited_since = self.ticks;
        // Reads held behind a session's writes: those writes may have been
        // dropped here, so the reads are answered now (a read has no effect).
        for (_, order) in self.sessions.drain() {
            for (_, to, _) in order.held_reads {
                out.push(Effect::Refuse {
                    to,
                    reason: "the cluster is changing its view; not applied".to_string(),
                });
            }
        }
        self.remembers = true;
        self.recovered = false;
        // Installed: a late copy of its `StartView` installs nothing again.
        self.flushed_to = None;
        // Own writes in no start sequence were never delivered anywhere:
        // their clients get the reactor's timeout (the write is lost, but
        // "may have been applied" is all this node can know).
        drop(slots);
        log::info!(
            "node {}: installed view {} with nodes {:?} (state from {sources:?}){}",
            self.me,
            ballot.round,
            view.members,
            if source {
                ""
            } else {
                "; waiting for a snapshot"
            }
        );
        self.ballot = ballot;
        self.base = base;
        self.view = view;
        let view = &self.view;
        self.unresponsive.retain(|n| !view.contains(*n));
        self.counters.views_installed += 1;
        self.said = Said::default();
        self.member_restarted = false;
        self.unacked.clear();
        self.ack_generation += 1;
        for peer in self.peers.values_mut() {
            peer.received = 0;
            peer.holds.clear();
            peer.clock = 0;
            peer.echo = 0;
            peer.out.sent_echo = 0;
            peer.out.proposals.clear();
            peer.out.cut = None;
        }
        self.behind.retain(|_, (b, _)| *b == ballot);
        self.chunks_installed = 0;
        self.chunks_received = 0;
        if let (true, Some(&first)) = (behind, sources.first()) {
            // Before `Started`, so the source has it when it begins handing.
            let upto = self.delivered_upto;
            self.send(first, Control::Behind { ballot, upto });
        }
        let mut started = std::mem::take(&mut self.started_early);
        started.insert(self.me);
        for member in self.view.members.clone() {
            if member != self.me {
                self.send(member, Control::Started { ballot });
            }
        }
        self.phase = Phase::Starting {
            started,
            since: self.ticks,
        };
        if source && sources.first() == Some(&self.me) {
            for &member in self.view.members.iter() {
                if !sources.contains(&member) {
                    self.handing.insert(member, Handing::anew());
                }
            }
        }
        self.maybe_start(out);
    }

    /// Once every member installed the view, serve it: deliver the start
    /// sequence (a source), then begin handing snapshots.
    fn maybe_start(&mut self, out: &mut Vec<Effect<Work>>) {
        let Phase::Starting { started, .. } = &self.phase else {
            return;
        };
        if self.view.members.iter().any(|m| !started.contains(m)) {
            return;
        }
        self.phase = Phase::Normal;
        // Without the state, the node's state still descends from the
        // view this one was formed from (until `hold_state`).
        if self.has_state {
            self.base = self.ballot;
        }
        // Every member installed this view in its current run.
        let view = &self.view;
        self.amnesiacs.retain(|n| !view.contains(*n));
        self.unsettled_since = None;
        // The start sequence, then the first chunk of each snapshot: the
        // store work runs in that order.
        self.deliver(out);
        self.hand_snapshots(out);
    }

    /// The first source reads the next chunk of each snapshot it owes
    /// whose window has room, once the last one left in a frame (so that
    /// a frame carries one chunk, and a thin link passes whole frames, and
    /// with them the failure detector's news, as often as before): at the
    /// view's start, each tick, and as soon as the member took a chunk.
    pub(super) fn hand_snapshots(&mut self, out: &mut Vec<Effect<Work>>) {
        if !matches!(self.phase, Phase::Normal) {
            return;
        }
        let owed: Vec<NodeId> = self.handing.keys().copied().collect();
        for to in owed {
            let Some(peer) = self.peers.get(&to).filter(|p| p.linked) else {
                continue;
            };
            let queued = peer
                .out
                .control
                .iter()
                .any(|c| matches!(c, Control::State { .. } | Control::Missed { .. }));
            let Some(mut handing) = self.handing.get(&to).copied() else {
                continue;
            };
            let Step::Due { start } = handing.step else {
                continue;
            };
            if handing.sent - handing.taken >= WINDOW || queued {
                continue;
            }
            // Writes delivered since the image was taken are no longer
            // missed writes that end where delivery stopped: the image
            // (theirs too) is handed.
            let delivered_since = self.image.is_some_and(|image| image.written > 0);
            if start && !delivered_since {
                handing.writes_after = self.behind_by(to);
            }
            match handing.writes_after {
                Some(after) => self.hand_missed(to, after, &mut handing),
                None => {
                    self.tags += 1;
                    let tag = self.tags;
                    handing.step = Step::Reading { tag };
                    // The store takes the image as this work runs: after
                    // every write delivered so far, before any later one.
                    let upto = self.delivered_upto;
                    self.image.get_or_insert(Image {
                        upto,
                        frozen: false,
                        written: 0,
                    });
                    out.push(Effect::Work(Work::Dump { to, start, tag }));
                }
            }
            self.handing.insert(to, handing);
        }
    }

    /// Where member `to` said its store stands in this view, if this node
    /// kept every write delivered since (module doc, "Catching up").
    fn behind_by(&self, to: NodeId) -> Option<Stamp> {
        let &(ballot, upto) = self.behind.get(&to)?;
        (ballot == self.ballot && self.missed_since(upto).is_some()).then_some(upto)
    }

    /// Sends member `to` the next part of the writes it missed: those
    /// delivered after `after`, as many as a frame's budget takes.
    fn hand_missed(&mut self, to: NodeId, after: Stamp, handing: &mut Handing) {
        let Some(missed) = self.missed_since(after) else {
            return; // never: nothing is delivered while handing
        };
        let fits = super::proposals_within(missed.clone(), self.frame_budget);
        let last = fits == missed.len();
        if handing.sent == 0 {
            log::info!(
                "node {}: node {to} missed {} writes (about {} bytes): handing them rather than a snapshot",
                self.me,
                missed.len(),
                missed.clone().map(Proposal::approximate_len).sum::<usize>()
            );
        }
        let writes: Vec<Proposal> = missed.take(fits).cloned().collect();
        self.counters.missed_writes_handed += writes.len() as u64;
        handing.writes_after = Some(writes.last().map_or(after, |w| w.stamp));
        handing.sent += 1;
        handing.step = match last {
            true => Step::Sent,
            false => Step::Due { start: false },
        };
        let ballot = self.ballot;
        self.send(
            to,
            Control::Missed {
                ballot,
                after,
                writes,
                last,
            },
        );
    }

    /// A part of the writes this node missed, from the view's source: each
    /// is delivered here as it was there, in order, after what the store
    /// holds. A part that starts past that is dropped (it cannot be: the
    /// source sends from what this node said, and parts in order).
    fn on_missed(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        after: Stamp,
        writes: Vec<Proposal>,
        last: bool,
        out: &mut Vec<Effect<Work>>,
    ) {
        if ballot != self.ballot || self.promised != ballot {
            return; // of another view, or of one this node promised to leave
        }
        if self.has_state {
            self.send(from, Control::Caught { ballot });
            return;
        }
        if !self.intact || self.rebuilt || after > self.delivered_upto {
            return;
        }
        self.awaited_since = self.ticks;
        for write in writes {
            if write.stamp <= self.delivered_upto {
                continue; // handed again after a lost link
            }
            self.clock.observe(write.stamp.ts);
            self.deliver_write(write.stamp, write.op, None, out);
        }
        // Its writes are delivered as any are, with nothing installed to
        // wait for: the part counts as taken once they are handed to the store.
        self.chunks_installed += 1;
        if !last {
            let chunks = self.chunks_installed;
            self.send(from, Control::Took { ballot, chunks });
            return;
        }
        self.counters.missed_received += 1;
        self.hold_state(" (caught up by the writes it missed)", out);
    }

    /// This member now holds the state of its view (a snapshot installed,
    /// or the last of the writes it missed delivered, `how` says which in
    /// the log): it tells every member, and delivers what it held meanwhile.
    fn hold_state(&mut self, how: &str, out: &mut Vec<Effect<Work>>) {
        self.has_state = true;
        self.began = Began::default();
        self.receiving = None;
        let ballot = self.ballot;
        if !matches!(self.phase, Phase::Starting { .. }) {
            self.base = ballot; // the view started: else `maybe_start` does it
        }
        log::info!(
            "node {}: holds the state of view {}{how}",
            self.me,
            ballot.round
        );
        for member in self.view.members.clone() {
            if member != self.me {
                self.send(member, Control::Caught { ballot });
            }
        }
        self.deliver(out);
    }

    /// A report of store work with `tag` is of the snapshot this node is
    /// installing now (not of one a view change ended, or that failed).
    fn installs(&self, tag: u64) -> bool {
        !self.has_state && tag != NO_SNAPSHOT && tag == self.installing
    }

    pub(super) fn on_snapshot_report(&mut self, report: Report, out: &mut Vec<Effect<Work>>) {
        match report {
            Report::Chunk {
                tag,
                to,
                records,
                read_at,
                first,
                last,
                total,
                frozen,
            } => {
                let Some(handing) = self.handing.get_mut(&to).filter(|h| h.reading(tag)) else {
                    return; // a view change ended that snapshot, or a lost link restarted it
                };
                let Some(image) = &mut self.image else {
                    return; // never: an image is taken with the first chunk's work
                };
                image.frozen = frozen;
                let upto = image.upto;
                // After the last chunk, the member's `Caught` ends the
                // handing; until then it starts over if the link breaks.
                handing.sent += 1;
                handing.step = match last {
                    true => Step::Sent,
                    false => Step::Due { start: false },
                };
                self.snapshot_failures = 0;
                let ballot = self.ballot;
                let state = Control::State {
                    ballot,
                    upto,
                    first,
                    records,
                    read_at,
                    last,
                    total,
                };
                self.send(to, state);
                // A frozen image lets what waited for the read go on.
                self.deliver(out);
            }
            Report::ChunkInstalled { tag } => {
                if !self.installs(tag) {
                    return; // a snapshot a view change ended, or one that failed
                }
                // The store holds the chunk now: its source may read
                // another (module doc, step 4). The store making progress
                // is news of the snapshot, like a chunk that comes.
                self.awaited_since = self.ticks;
                self.chunks_installed += 1;
                let (ballot, chunks) = (self.ballot, self.chunks_installed);
                self.send(self.installing_from, Control::Took { ballot, chunks });
            }
            Report::Installed { tag } => {
                if !self.installs(tag) {
                    return; // a snapshot a view change ended, or one that failed
                }
                self.intact = true;
                self.rebuilt = false;
                self.counters.snapshots_received += 1;
                self.hold_state("", out);
            }
            Report::SnapshotFailed { tag, why } if tag == self.installing => {
                // Part of the store is missing or stale: never serve it. A
                // view change hands a new snapshot.
                log::error!(
                    "node {}: installing a snapshot failed: {why}; asking for a new view",
                    self.me
                );
                self.installing = NO_SNAPSHOT;
                self.go_idle(out);
            }
            Report::SnapshotFailed { tag, why } => {
                let Some((&to, _)) = self.handing.iter().find(|(_, h)| h.reading(tag)) else {
                    return; // a snapshot a view change ended
                };
                self.snapshot_failures += 1;
                if self.snapshot_failures <= SNAPSHOT_RETRIES {
                    log::warn!(
                        "node {}: reading a snapshot for node {to} failed: {why}; again",
                        self.me
                    );
                    self.handing.insert(to, Handing::anew());
                } else {
                    // Delivery waits while a snapshot is read: give up so
                    // the others serve; node `to` asks for a new view later.
                    log::error!(
                        "node {}: reading a snapshot for node {to} failed {} times: {why}; \
                         it waits for a new view",
                        self.me,
                        self.snapshot_failures
                    );
                    self.handing.remove(&to);
                    self.snapshot_failures = 0;
                    self.end_image(out);
                    self.deliver(out);
                }
            }
        }
    }
}

/// A view formed with a majority that remembers: the start sequence and
/// sources of the latest view any flusher installed (module doc, step 3);
/// if no flusher holds that view's state, those of the view it was formed
/// from (module doc, "A view whose sources are gone"); `None` if no
/// flusher holds that one's either.
fn from_remembered(flushes: &BTreeMap<NodeId, Flush>) -> Option<Formed> {
    // A view some member of which flushed an older one never started
    // (that member never installed it), so nothing was delivered in it:
    // its members hold the state of the view it was formed from. A
    // member that restarted since says nothing either way.
    let started = |f: &Flush| {
        f.normal_members.iter().all(|m| {
            flushes
                .get(m)
                .is_none_or(|g| !g.remembers || g.normal >= f.normal)
        })
    };
    let effective = |f: &Flush| if started(f) { f.normal } else { f.base };
    let latest = flushes.values().map(effective).max().unwrap_or_default();
    let holds = |f: &Flush| effective(f) == latest && f.has_state && !f.recovered;
    if flushes.values().any(holds) {
        return from_latest(flushes, effective, |_, _| true);
    }
    // Its every source is gone: what it started from is the state of the
    // view it was formed from, and the start sequence its members kept.
    // Only if that is the latest view once the members' flushes count for
    // it: one between the two that looks started (a member that never
    // installed it is gone too) might be on no line `latest` descends
    // from, and its state may miss what `latest` delivered.
    let waits_in_latest = |f: &Flush| f.normal == latest && !f.has_state;
    let mut waiting = flushes.values().filter(|f| waits_in_latest(f));
    let (base, floor) = waiting.next().map(|f| (f.base, f.start_floor))?;
    if waiting.any(|f| (f.base, f.start_floor) != (base, floor)) {
        return None;
    }
    let counted = |f: &Flush| match waits_in_latest(f) {
        true => f.base,
        false => effective(f),
    };
    // What `base` delivered above `floor` is in `latest`'s start, which
    // its members hold: a write of `base` above it that only others hold
    // was delivered nowhere, and may sort before what `latest` delivered.
    let kept = |f: &Flush, p: &Proposal| waits_in_latest(f) || p.stamp <= floor;
    let mut formed = from_latest(flushes, counted, kept)?;
    if formed.base != base {
        return None;
    }
    // Its state is `latest`'s order, not `base`'s: unstarted, its
    // members' flushes count for `latest` (were they to count for `base`,
    // its holders' writes above `floor` would come back).
    formed.base = latest;
    Some(formed)
}

/// The sources and start sequence of the latest view by `effective` (the
/// view each flush counts for), if any flusher holds its state: the
/// proposals its flushes hold that `kept` keeps, in stamp order.
fn from_latest(
    flushes: &BTreeMap<NodeId, Flush>,
    effective: impl Fn(&Flush) -> Ballot,
    kept: impl Fn(&Flush, &Proposal) -> bool,
) -> Option<Formed> {
    let latest = flushes.values().map(&effective).max().unwrap_or_default();
    // Every write delivered anywhere above `floor` is in the start
    // sequence (the latest flusher that delivered least holds them), so
    // a member whose store is some prefix reaching `floor` is a source
    // too: the order is one sequence, so the same last write means the
    // same store. That is every node when nothing was delivered yet. A
    // recovered node holds no proposal (it sets no floor), and a store
    // rebuilt from a log, until it took a snapshot, may keep items in
    // another order than its peers': it is no source, and takes one. One
    // recovered exactly holds a prefix in the cluster's order, but is no
    // source either until it installed a view (a caution: the remembering
    // sources suffice, and it is handed the writes it missed instead).
    let floor = flushes
        .values()
        .filter(|f| effective(f) == latest && f.has_state && !f.recovered)
        .map(|f| f.delivered_upto)
        .min()?;
    let mut sources: Vec<NodeId> = flushes
        .iter()
        .filter(|(_, f)| f.intact && !f.rebuilt && !f.recovered && f.delivered_upto >= floor)
        .map(|(&id, _)| id)
        .collect();
    if sources.is_empty() {
        return None;
    }
    // The first hands the snapshots and the writes members missed: one
    // whose log moves, if any (a snapshot waits for the source's
    // log: module doc, "Data directories").
    sources.sort_by_key(|id| (flushes[id].log_stuck, *id));
    let held = flushes.values().filter(|f| effective(f) == latest);
    let held = held.flat_map(|f| f.held.iter().filter(|p| kept(f, p)));
    Some(Formed {
        base: latest,
        floor,
        sources,
        start: start_sequence(held),
        // Its sources were never rebuilt: their order is the cluster's.
        reordered: false,
    })
}

/// A view formed by every configured node when most of them recovered
/// from their data directories: the one whose store holds the longest
/// prefix of the delivered writes is the only source (the others copy its
/// store, order included), and the start sequence is every proposal any
/// node still holds (the source delivers those above its prefix). A store
/// that is intact holds a prefix, also that of a member still waiting for
/// a snapshot: it holds what it held before, since a node without the
/// state delivers nothing, an ordered store changes only by what is
/// delivered, and a snapshot's first part clears `intact` (and comes once
/// its source's log holds a longer prefix: module doc, "Data
/// directories"). A rebuilt source's order becomes the cluster's: the
/// view is `reordered`.
fn from_longest_log(flushes: &BTreeMap<NodeId, Flush>) -> Option<Formed> {
    let latest = flushes.values().map(|f| f.normal).max().unwrap_or_default();
    // Of the longest, one in the cluster's order if any: the view is then
    // not `reordered`.
    let (&source, longest) = flushes
        .iter()
        .filter(|(_, f)| f.intact)
        .max_by_key(|&(&id, f)| (f.delivered_upto, !f.rebuilt, Reverse(id)))?;
    // Nothing delivered past the longest prefix is known to a node here.
    Some(Formed {
        base: latest,
        floor: longest.delivered_upto,
        sources: vec![source],
        start: start_sequence(flushes.values().flat_map(|f| &f.held)),
        reordered: longest.rebuilt,
    })
}

/// The proposals `held`, once each, in stamp order.
fn start_sequence<'a>(held: impl Iterator<Item = &'a Proposal>) -> Vec<Proposal> {
    let mut start: Vec<Proposal> = held.cloned().collect();
    start.sort_by_key(|p| p.stamp);
    start.dedup_by_key(|p| p.stamp);
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::engine::{Engine, PeerEvent};
    use crate::cluster::message::Op;
    use crate::cluster::Stamp;
    use crate::config::Consistency;
    use std::sync::Arc;

    /// A write of `key`, stamped `ts` by node 0.
    fn write(ts: u64, key: &str) -> Proposal {
        let request = super::super::tests::set(key);
        Proposal {
            stamp: Stamp { ts, node: 0 },
            op: Arc::new(Op { request, now: 0 }),
        }
    }

    /// Node 0, the lowest source of view 2 with nodes 0 to 3, serving,
    /// having delivered (and kept) writes 1 to 3. It owes node 1 a
    /// snapshot (node 1 restarted), and node 2, which said it is `Behind`
    /// at write 1, whatever it chooses for it; its link to node 2 is down
    /// (node 2 is not chosen for yet). The first chunk for node 1 is read:
    /// the store takes the image, which it says it keeps.
    fn source_handing_a_snapshot_and_owing_a_member_that_is_behind() -> TotalOrder {
        let configured = View::new(0, vec![0, 1, 2, 3]);
        let mut engine =
            TotalOrder::new(0, configured, Consistency::Linearizable).with_retain_limit(1 << 20);
        let ballot = Ballot {
            round: 2,
            coordinator: 0,
        };
        engine.ballot = ballot;
        engine.promised = ballot;
        engine.base = ballot;
        engine.view = View::new(2, vec![0, 1, 2, 3]);
        engine.remembers = true;
        engine.phase = Phase::Normal;
        for peer in [1, 3] {
            engine.on_peer(peer, PeerEvent::LinkOpened);
        }
        for (ts, key) in [(1, "a"), (2, "b"), (3, "c")] {
            let w = write(ts, key);
            engine.deliver_write(w.stamp, w.op, None, &mut Vec::new());
        }
        let said = Control::Behind {
            ballot,
            upto: Stamp { ts: 1, node: 0 },
        };
        engine.on_control(2, said, &mut Vec::new());
        engine.handing.insert(1, Handing::anew());
        engine.handing.insert(2, Handing::anew());
        let mut out = Vec::new();
        engine.hand_snapshots(&mut out);
        assert_eq!(dumps_for(&out, 1), 1, "node 1's first chunk: {out:?}");
        assert_eq!(dumps_for(&out, 2), 0, "its link is down: {out:?}");
        let image = engine.image.as_mut().expect("taken with the first chunk");
        image.frozen = true;
        engine
    }

    /// Reads of a snapshot for `to`, from its start, in `out`.
    fn dumps_for(out: &[Effect<Work>], to: NodeId) -> usize {
        let dumps = out.iter().filter(
            |e| matches!(e, Effect::Work(Work::Dump { to: t, start: true, .. }) if *t == to),
        );
        dumps.count()
    }

    /// The writes handed to `to` as ones it missed, so far: after what, and which.
    fn missed_for(engine: &TotalOrder, to: NodeId) -> Vec<(Stamp, Vec<Stamp>)> {
        let queued = engine.peers.get(&to).map(|p| p.out.control.iter());
        let missed = queued.into_iter().flatten().filter_map(|c| match c {
            Control::Missed { after, writes, .. } => {
                Some((*after, writes.iter().map(|w| w.stamp).collect()))
            }
            _ => None,
        });
        missed.collect()
    }

    /// A member that said it is behind by writes the source kept, chosen
    /// for while no write was delivered since the image was taken, is
    /// handed the writes it missed: they end where delivery stopped, which
    /// is where the image ends.
    #[test]
    fn a_member_behind_by_kept_writes_takes_them_while_nothing_was_delivered_since_the_image() {
        let mut engine = source_handing_a_snapshot_and_owing_a_member_that_is_behind();
        engine.on_peer(2, PeerEvent::LinkOpened);
        let mut out = Vec::new();
        engine.hand_snapshots(&mut out);
        assert_eq!(dumps_for(&out, 2), 0, "no snapshot: {out:?}");
        let stamp = |ts| Stamp { ts, node: 0 };
        assert_eq!(
            missed_for(&engine, 2),
            [(stamp(1), vec![stamp(2), stamp(3)])]
        );
        assert!(engine.handing_holds_delivery(), "delivery waits for them");
    }

    /// Once a write was delivered after the image was taken, a member
    /// chosen for only now (its link was down) takes the image, even one
    /// behind by writes the source kept: the writes it missed no longer
    /// end where the image does, and it holds the later one in its queue
    /// too (delivery needed its ack), so it would apply it twice, once
    /// handed and once from its queue (module doc, step 4).
    #[test]
    fn a_member_behind_by_kept_writes_takes_the_image_once_a_write_was_delivered_since() {
        let mut engine = source_handing_a_snapshot_and_owing_a_member_that_is_behind();
        assert!(!engine.handing_holds_delivery(), "a kept image");
        let later = write(4, "d");
        engine.deliver_write(later.stamp, later.op, None, &mut Vec::new());
        assert!(engine.image.is_some_and(|image| image.written > 0));
        engine.on_peer(2, PeerEvent::LinkOpened);
        let mut out = Vec::new();
        engine.hand_snapshots(&mut out);
        assert_eq!(missed_for(&engine, 2), [], "no missed writes");
        assert_eq!(dumps_for(&out, 2), 1, "the image is read for it: {out:?}");
    }

    /// Delivery goes on beside a snapshot read from a kept image, and
    /// waits: before the store said it keeps one, while another member is
    /// handed the writes it missed (a write delivered then would reach it
    /// twice, in a part and from its queue), and past the queue limit.
    #[test]
    fn delivery_waits_while_missed_writes_are_handed_beside_a_kept_image() {
        let members = View::new(1, vec![0, 1, 2, 3, 4]);
        let mut engine = TotalOrder::new(0, members, Consistency::Linearizable);
        let reading = Handing {
            step: Step::Reading { tag: 1 },
            ..Handing::anew()
        };
        engine.handing.insert(4, reading);
        let image = |frozen, written| Image {
            upto: Stamp::default(),
            frozen,
            written,
        };
        engine.image = Some(image(false, 0));
        assert!(engine.handing_holds_delivery(), "not said kept yet");
        engine.image = Some(image(true, 100));
        assert!(!engine.handing_holds_delivery(), "a kept image");
        engine.handing.insert(3, Handing::anew());
        assert!(
            !engine.handing_holds_delivery(),
            "one not chosen yet takes the image"
        );
        let missed = Handing {
            writes_after: Some(Stamp::default()),
            step: Step::Sent,
            ..Handing::anew()
        };
        engine.handing.insert(3, missed);
        assert!(engine.handing_holds_delivery(), "missed writes handed");
        engine.handing.remove(&3);
        engine.image = Some(image(true, engine.queue_limit + 1));
        assert!(engine.handing_holds_delivery(), "past the queue limit");
    }

    fn flush(normal: u64, delivered: u64) -> Flush {
        Flush {
            normal: Ballot {
                round: normal,
                coordinator: 1,
            },
            normal_members: vec![1, 2, 3],
            base: Ballot::default(),
            has_state: true,
            start_floor: Stamp::default(),
            intact: true,
            remembers: true,
            recovered: false,
            rebuilt: false,
            log_stuck: false,
            amnesiacs: Vec::new(),
            delivered_upto: Stamp {
                ts: delivered,
                node: 1,
            },
            held: Vec::new(),
        }
    }

    /// Node 3 restarted with its data (its store rebuilt from its log) and
    /// installed view 5 as a member waiting for a snapshot; a view change
    /// ended that snapshot before its first part. Its store is intact and
    /// reaches the floor, but it is not the cluster's copy: node 2, whose
    /// store is, is the only source of the next view.
    #[test]
    fn a_rebuilt_store_is_no_source_until_it_took_a_snapshot() {
        let waiting = Flush {
            has_state: false,
            rebuilt: true,
            ..flush(5, 7)
        };
        let flushes = BTreeMap::from([(2, flush(5, 7)), (3, waiting)]);
        let Formed {
            base: latest,
            sources,
            ..
        } = from_remembered(&flushes).expect("a view forms");
        assert_eq!((latest.round, sources), (5, vec![2]));
    }

    /// View 6 of nodes 2 and 3 formed from view 5 (nodes 1 and 3 held its
    /// state; node 3 had delivered up to write 7, node 1 up to 5 and held
    /// 6 and 8, which node 3 never got) with node 3 its only source and
    /// start sequence write 9; node 2 installed it, waiting for node 3's
    /// snapshot, and acked write 10 there. Node 3 is gone. Nobody here
    /// holds view 6's state, so the view counts as view 5: node 1 is the
    /// source, and the start sequence is write 6 (view 5 delivered it: it
    /// is below view 6's floor), then what node 2 kept and held. Write 8
    /// was delivered nowhere, and view 6 delivered write 9 without it.
    /// The new view holds view 6's order: that is its base.
    #[test]
    fn a_view_whose_sources_are_gone_counts_as_the_view_it_was_formed_from() {
        let holder = holding_five(vec![write(6, "x"), write(8, "y")]);
        let waiting = waiting_in_six(vec![2, 3], vec![write(9, "a"), write(10, "b")]);
        let flushes = BTreeMap::from([(1, holder), (2, waiting)]);
        let formed = from_remembered(&flushes).expect("a view forms");
        let (base, sources) = (formed.base, formed.sources);
        let start = stamps(&formed.start);
        assert_eq!((base, sources, start), (SIX, vec![1], vec![6, 9, 10]));
    }

    /// Node 3, the only source of view 6 (nodes 3, 4 and 5, formed from
    /// view 5 of nodes 1, 2 and 3 at write 7), is gone; nodes 4 and 5
    /// waited for its snapshot and acked write 9 there, which it
    /// delivered. Node 1 holds view 5's state up to write 5, and write 8,
    /// which view 5 delivered nowhere. View 7 of nodes 1, 4 and 5 forms
    /// from view 5's holder without write 8, and node 1 never installs it
    /// (its `StartView` is lost). In the next change view 7 has not
    /// started, so its members' flushes count for the view it was formed
    /// from: that must be view 6, whose order it holds, not view 5, whose
    /// holder would put write 8 ahead of write 9.
    #[test]
    fn a_view_formed_when_the_sources_were_gone_counts_as_the_view_whose_order_it_holds() {
        let holder = holding_five(vec![write(8, "y")]);
        let waiting = waiting_in_six(vec![3, 4, 5], vec![write(9, "z")]);
        let flushes = BTreeMap::from([(1, holder.clone()), (4, waiting.clone()), (5, waiting)]);
        let seven = from_remembered(&flushes).expect("a view forms");
        assert_eq!(stamps(&seven.start), vec![9]);
        let unstarted = Flush {
            normal: Ballot {
                round: 7,
                coordinator: 1,
            },
            normal_members: vec![1, 4, 5],
            base: seven.base,
            has_state: false,
            start_floor: seven.floor,
            held: seven.start,
            ..flush(7, 4)
        };
        let next = BTreeMap::from([(1, holder), (4, unstarted.clone()), (5, unstarted)]);
        if let Some(formed) = from_remembered(&next) {
            let start = stamps(&formed.start);
            assert!(!start.contains(&8), "write 8 before write 9: {start:?}");
        }
    }

    /// View 5, coordinated by node 1, and view 6, by node 3, formed from
    /// it at write 7 with node 3 its only source.
    const FIVE: Ballot = Ballot {
        round: 5,
        coordinator: 1,
    };
    const SIX: Ballot = Ballot {
        round: 6,
        coordinator: 3,
    };

    /// A holder of view 5's state, delivered up to write 5.
    fn holding_five(held: Vec<Proposal>) -> Flush {
        Flush {
            normal: FIVE,
            base: FIVE,
            held,
            ..flush(5, 5)
        }
    }

    /// A member of view 6 of `members` that waits for node 3's snapshot.
    fn waiting_in_six(members: Vec<NodeId>, held: Vec<Proposal>) -> Flush {
        Flush {
            normal: SIX,
            normal_members: members,
            base: FIVE,
            has_state: false,
            start_floor: Stamp { ts: 7, node: 0 },
            held,
            ..flush(6, 4)
        }
    }

    fn stamps(start: &[Proposal]) -> Vec<u64> {
        start.iter().map(|p| p.stamp.ts).collect()
    }

    /// As above, but node 3 says it holds the state of a view that node 3
    /// coordinated after view 5 and before view 6, which looks started as
    /// its other members are not here: it may be on no line view 6
    /// descends from, so no view forms from it, nor from view 5.
    #[test]
    fn a_view_whose_sources_are_gone_counts_as_its_base_only_if_nothing_looks_newer() {
        let five = Ballot {
            round: 5,
            coordinator: 1,
        };
        let between = Flush {
            normal: Ballot {
                round: 5,
                coordinator: 3,
            },
            normal_members: vec![3, 4, 5],
            base: five,
            ..flush(5, 7)
        };
        let waiting = Flush {
            normal: Ballot {
                round: 6,
                coordinator: 2,
            },
            normal_members: vec![2, 4],
            base: five,
            has_state: false,
            ..flush(6, 4)
        };
        let holder = Flush {
            normal: five,
            ..flush(5, 7)
        };
        let flushes = BTreeMap::from([(1, holder), (2, waiting), (3, between)]);
        assert!(from_remembered(&flushes).is_none());
    }

    /// Kept until the member holds the state: a member that installs a
    /// view without it flushes the view's start sequence with what it
    /// holds, its floor, and the view it was formed from as its base, also
    /// once the view started.
    #[test]
    fn a_member_waiting_for_its_snapshot_flushes_how_its_view_began() {
        let mut engine = TotalOrder::new(2, View::new(0, vec![1, 2, 3]), Consistency::Linearizable);
        let ballot = Ballot {
            round: 6,
            coordinator: 3,
        };
        let five = Ballot {
            round: 5,
            coordinator: 1,
        };
        engine.promised = ballot;
        let formed = Formed {
            base: five,
            floor: Stamp { ts: 7, node: 0 },
            sources: vec![3],
            start: vec![write(8, "a")],
            reordered: false,
        };
        let mut out = Vec::new();
        engine.install(ballot, View::new(6, vec![2, 3]), formed, &mut out);
        engine.on_control(3, Control::Started { ballot }, &mut out);
        assert!(matches!(engine.phase, Phase::Normal), "the view started");
        let flush = engine.flush();
        assert!(!flush.has_state);
        let held: Vec<u64> = flush.held.iter().map(|p| p.stamp.ts).collect();
        let began = (flush.base, flush.start_floor.ts, held);
        assert_eq!(began, (five, 7, vec![8]));
    }

    /// Most of five nodes crashed at once: nodes 3, 4 and 5 recovered
    /// from their data directories, nodes 1 and 2 remember view 5. Node 1
    /// had begun installing a snapshot that ends at write 9 (its store is
    /// not intact, though it says 9); nodes 2, 3 and 4 hold the writes up
    /// to 7, node 5 those up to 5. The longest intact prefix is the only
    /// source: of those that tie, the lowest, node 2 (every node picks the
    /// same). Node 1, though it says more, holds no prefix. The start
    /// sequence is every proposal any flusher holds, once each, in stamp
    /// order, also those only a node that is no source holds (the source
    /// delivers those above its prefix: module doc, "Data directories").
    #[test]
    fn the_longest_intact_log_is_the_source_and_every_held_proposal_starts_the_view() {
        let proposal = |ts, node| Proposal {
            stamp: Stamp { ts, node },
            ..write(ts, "k")
        };
        let recovered = |delivered| Flush {
            normal: Ballot::default(),
            normal_members: Vec::new(),
            remembers: false,
            recovered: true,
            rebuilt: true,
            ..flush(0, delivered)
        };
        let installing = Flush {
            has_state: false,
            intact: false,
            held: vec![proposal(10, 1), proposal(12, 3)],
            ..flush(5, 9)
        };
        let holding = Flush {
            held: vec![proposal(9, 2), proposal(10, 1)],
            ..flush(5, 7)
        };
        let flushes = BTreeMap::from([
            (1, installing),
            (2, holding),
            (3, recovered(7)),
            (4, recovered(7)),
            (5, recovered(5)),
        ]);
        let Formed {
            base: latest,
            sources,
            start,
            ..
        } = from_longest_log(&flushes).expect("a view forms");
        assert_eq!((latest.round, sources), (5, vec![2]));
        let stamps: Vec<(u64, NodeId)> = start.iter().map(|p| (p.stamp.ts, p.stamp.node)).collect();
        assert_eq!(stamps, [(9, 2), (10, 1), (12, 3)]);

        // Without node 2, the tie is between two recovered nodes.
        let mut without_2 = flushes;
        without_2.remove(&2);
        let Formed { sources, .. } = from_longest_log(&without_2).expect("a view forms");
        assert_eq!(sources, [3]);
    }

    /// Nodes 0, 1 and 2, keeping what they deliver, deliver writes `a` and
    /// `b`: the engines, and the stamp of `a`.
    fn three_nodes_delivered_a_and_b() -> (Vec<TotalOrder>, Stamp) {
        use super::super::tests::{cluster_keeping, exchange_all, reply_to, set};
        let mut engines = cluster_keeping(3, Consistency::Linearizable, 1 << 20);
        engines[0].on_client(reply_to(1, 0), set("a"), 0, &mut Vec::new());
        exchange_all(&mut engines);
        let a = engines[2].delivered_upto;
        engines[0].on_client(reply_to(1, 1), set("b"), 0, &mut Vec::new());
        exchange_all(&mut engines);
        assert!(engines.iter().all(|e| e.delivered_upto > a), "b delivered");
        (engines, a)
    }

    /// Nodes 0, 1 and 2 deliver writes `a` and `b`; node 2 restarts from
    /// its data directory, its log marked up to `a` (the mark of `b` was
    /// lost), its store recovered `exact`ly or not. Runs the view change
    /// that takes it back; returns whether it said `Behind`, the parts of
    /// missed writes node 0 handed it, and the snapshots node 0 read for it.
    fn rejoin_from_data_dir(exact: bool) -> (bool, u64, usize) {
        use super::super::tests::exchange_all;
        let (mut engines, upto) = three_nodes_delivered_a_and_b();
        let view = View::new(0, vec![0, 1, 2]);
        let mut recovered = TotalOrder::new(2, view.clone(), Consistency::Linearizable)
            .with_retain_limit(1 << 20)
            .with_data_dir(Some(upto), exact);
        for peer in [0, 1] {
            recovered.on_peer(peer, PeerEvent::LinkOpened);
            recovered.on_peer(peer, PeerEvent::Up);
        }
        engines[2] = recovered;
        for e in engines.iter_mut().take(2) {
            e.on_hello(2, 99, true);
        }
        let (mut said_behind, mut dumps) = (false, 0);
        for _ in 0..30 {
            for e in engines.iter_mut() {
                e.on_tick(&mut Vec::new());
            }
            let effects = exchange_all(&mut engines);
            said_behind |= engines[0].behind.get(&2).is_some_and(|&(_, u)| u == upto);
            dumps += dumps_for(&effects[0], 2);
        }
        (said_behind, engines[0].status().missed_handed, dumps)
    }

    /// A node whose store was recovered exactly (the same ordered image its
    /// peers held at its last marked write) holds a prefix as one that
    /// remembers does: installing the view, it says it is behind, and the
    /// source hands it the write it missed, not a snapshot.
    #[test]
    fn an_exactly_recovered_store_is_behind_and_takes_the_writes_it_missed() {
        let (said_behind, missed, dumps) = rejoin_from_data_dir(true);
        assert!(said_behind, "node 2 said Behind at its mark");
        assert_eq!((missed, dumps), (1, 0), "missed parts, snapshots");
    }

    /// A store rebuilt from key states may order its items otherwise than
    /// its peers': its node is not behind, and takes a snapshot.
    #[test]
    fn a_store_rebuilt_from_key_states_is_not_behind_and_takes_a_snapshot() {
        let (said_behind, missed, dumps) = rejoin_from_data_dir(false);
        assert!(!said_behind, "node 2 said Behind");
        assert_eq!((missed, dumps), (0, 1), "missed parts, snapshots");
    }

    /// The first source hands the snapshots, and a source hands one only
    /// once its log holds it: one whose log is stuck comes last.
    #[test]
    fn a_source_whose_log_is_stuck_is_the_last_asked_to_hand_the_state() {
        let stuck = Flush {
            log_stuck: true,
            ..flush(5, 7)
        };
        let flushes = BTreeMap::from([(1, stuck), (2, flush(5, 7)), (3, flush(5, 7))]);
        let formed = from_remembered(&flushes).expect("a view forms");
        assert_eq!(formed.sources, [2, 3, 1]);
        let flushes = BTreeMap::from([(1, flush(5, 7)), (2, flush(5, 7)), (3, flush(5, 7))]);
        let formed = from_remembered(&flushes).expect("a view forms");
        assert_eq!(formed.sources, [1, 2, 3], "by id otherwise");
    }

    /// A recovered node holds no proposal and forgot its views: even one
    /// whose store is an exact prefix reaching the floor is no source of a
    /// view formed by a remembering majority (a caution: the others
    /// suffice, and it is handed what it missed).
    #[test]
    fn an_exactly_recovered_store_is_no_source_of_a_remembered_view() {
        let exact = Flush {
            normal: Ballot::default(),
            normal_members: Vec::new(),
            remembers: false,
            recovered: true,
            rebuilt: false,
            ..flush(0, 7)
        };
        let flushes = BTreeMap::from([(1, flush(5, 7)), (2, flush(5, 7)), (3, exact)]);
        let Formed {
            base: latest,
            sources,
            ..
        } = from_remembered(&flushes).expect("a view forms");
        assert_eq!((latest.round, sources), (5, vec![1, 2]));
    }

    /// After a crash of most nodes, an exact longest log is the only
    /// source, and the view is not `reordered`: its order is the cluster's.
    #[test]
    fn an_exact_longest_log_is_the_source_of_a_view_not_reordered() {
        let recovered = |delivered, rebuilt| Flush {
            normal: Ballot::default(),
            normal_members: Vec::new(),
            remembers: false,
            recovered: true,
            rebuilt,
            ..flush(0, delivered)
        };
        let flushes = BTreeMap::from([
            (1, recovered(9, false)),
            (2, recovered(7, true)),
            (3, recovered(7, false)),
        ]);
        let Formed { sources, .. } = from_longest_log(&flushes).expect("a view forms");
        assert_eq!(sources, [1]);
        assert!(!sources.iter().any(|s| flushes[s].rebuilt), "not reordered");
    }

    /// Of longest logs that tie, one in the cluster's order is the source,
    /// though a rebuilt one has a lower id: the view is not reordered.
    #[test]
    fn of_tied_longest_logs_the_one_in_the_clusters_order_is_the_source() {
        let recovered = |rebuilt| Flush {
            normal: Ballot::default(),
            normal_members: Vec::new(),
            remembers: false,
            recovered: true,
            rebuilt,
            ..flush(0, 7)
        };
        let flushes = BTreeMap::from([(1, recovered(true)), (2, recovered(false))]);
        let Formed { sources, .. } = from_longest_log(&flushes).expect("a view forms");
        assert_eq!(sources, [2]);
    }

    /// A node that remembers, made rebuilt by a reordered view it was no
    /// source of (found by review), becomes the only source of a view
    /// formed from the longest log: its order is the cluster's from its
    /// prefix on, so a member holding that prefix (perhaps in the order
    /// the first view made the cluster's) is handed a snapshot, not the
    /// writes this node kept from before.
    #[test]
    fn the_source_of_a_reordered_view_hands_no_write_from_before_its_prefix() {
        let (mut engines, a) = three_nodes_delivered_a_and_b();
        let node = &mut engines[1];
        let prefix = node.delivered_upto;
        assert!(node.missed_since(a).is_some(), "kept from before");
        node.rebuilt = true;
        let ballot = Ballot {
            round: 9,
            coordinator: 1,
        };
        node.promised = ballot;
        let formed = Formed {
            base: node.base,
            floor: prefix,
            sources: vec![1],
            start: Vec::new(),
            reordered: true,
        };
        node.install(ballot, View::new(9, vec![0, 1, 2]), formed, &mut Vec::new());
        assert!(node.missed_since(prefix).is_none(), "at its prefix");
        assert!(node.missed_since(a).is_none(), "before its prefix");
    }
}
