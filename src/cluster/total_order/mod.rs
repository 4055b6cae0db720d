//! The strong modes' engine: total-order broadcast with Lamport clocks, as a
//! pure state machine (no socket, no clock: inputs in, [`Effect`]s out).
//! Its message is [`Broadcast`]; its store side, [`TotalOrderReplica`], applies
//! what it delivers.
//!
//! ```text
//!  on_client ──► stamp (ts, me) ──► queue (BinaryHeap by stamp) ──► deliver head ──► Apply
//!                     └─► outbox of every peer ──► Broadcast ──► on_message at the peers
//!  on_message ─► their proposals into the queue, their acks and clock noted ──► deliver
//! ```
//!
//! Why delivery in stamp order is safe. Links are FIFO and a node stamps
//! above every clock it has seen. A node delivers the head of its queue, a
//! proposal `(ts, o)`, only when every member holds it: the origin does by
//! definition, every other member `q` has said so in its cumulative ack. When
//! `q` acked it, `q`'s clock was at least `ts`, so anything `q` proposes later
//! is stamped above `ts`; anything `q` proposed earlier reached us before its
//! ack (FIFO). So no proposal stamped below the head can still arrive, every
//! node delivers the same sequence, and anything delivered anywhere is held
//! by every member. A linearizable read is stamped locally and not shipped:
//! it is delivered when every peer's reported clock has reached its stamp
//! (nothing below it can still arrive), so it sees every write ordered before
//! it. The origin replies when it delivers, which is after the client asked:
//! that makes the order linearizable.
//!
//! Sequential mode orders writes the same way but serves reads from the local
//! replica at once, except that a read waits behind the same connection's
//! writes that are not yet applied, so a client always reads its own writes.
//!
//! Links may break and reconnect (same incarnation): acks are cumulative and
//! every frame carries the whole ack vector, so only proposals can be lost,
//! and those are kept until every peer acked them and resent on reconnect;
//! duplicates are dropped by stamp. While a member is down (the failure
//! detector in [`crate::cluster::membership`] says so through
//! [`PeerEvent::Down`]), new operations are refused at once (this version
//! has no view changes, so it cannot make progress without every member)
//! and queued ones wait for it. A member that restarted lost what it held
//! and cannot be handed the state again, so its new run is refused.

mod message;
mod replica;

pub use message::{Broadcast, Proposal};
pub use replica::{Apply, TotalOrderReplica};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use super::engine::{Effect, Engine, PeerEvent, PeerStatus, ReplyTo, Status};
use super::message::Op;
use super::{LamportClock, NodeId, Stamp, View};
use crate::config::Consistency;
use crate::protocol::{Command, Request};
use crate::store::UnixTime;

/// A queued operation, ordered by stamp alone (stamps are unique).
#[derive(Debug)]
struct Queued {
    stamp: Stamp,
    op: Arc<Op>,
    reply_to: Option<ReplyTo>,
    /// A local linearizable read: never shipped, applied only here.
    read: bool,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        self.stamp == other.stamp
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> std::cmp::Ordering {
        self.stamp.cmp(&other.stamp)
    }
}

/// What is waiting to be sent to one peer.
#[derive(Debug, Default)]
struct Outbox {
    proposals: Vec<Proposal>,
    sent_clock: u64,
    sent_acks: u64,
    /// A frame is owed even with nothing new in it (heartbeat, reconnect).
    due: bool,
}

/// What this node knows of one peer.
#[derive(Debug, Default)]
struct Peer {
    up: bool,
    /// The highest stamp time of this peer's own proposals received here.
    received: u64,
    /// Per origin: the highest stamp time this peer says it holds.
    holds: HashMap<NodeId, u64>,
    /// The highest clock this peer reported.
    clock: u64,
    out: Outbox,
}

/// A client session's writes issued and applied here, and the reads waiting
/// for the writes issued before them (sequential mode).
#[derive(Debug, Default)]
struct SessionOrder {
    issued: u64,
    applied: u64,
    /// `(writes that must be applied first, reply_to, op)`, in arrival order.
    held_reads: VecDeque<(u64, ReplyTo, Arc<Op>)>,
}

/// The engine of one node.
#[derive(Debug)]
pub struct TotalOrder {
    me: NodeId,
    mode: Consistency,
    view: View,
    clock: LamportClock,
    queue: BinaryHeap<Reverse<Queued>>,
    peers: BTreeMap<NodeId, Peer>,
    /// Bumped whenever this node comes to hold a new proposal.
    ack_generation: u64,
    /// Own proposals not yet held by every peer, oldest first.
    unacked: VecDeque<Proposal>,
    sessions: HashMap<u64, SessionOrder>,
    delivered: u64,
}

impl TotalOrder {
    /// An engine for node `me` of `view`, in a strong `mode`.
    pub fn new(me: NodeId, view: View, mode: Consistency) -> TotalOrder {
        assert!(view.contains(me), "node {me} is not a member of {view:?}");
        assert!(
            matches!(mode, Consistency::Linearizable | Consistency::Sequential),
            "the total-order engine runs the strong modes"
        );
        let peers = view.others(me).map(|id| (id, Peer::default())).collect();
        TotalOrder {
            me,
            mode,
            view,
            clock: LamportClock::default(),
            queue: BinaryHeap::new(),
            peers,
            ack_generation: 0,
            unacked: VecDeque::new(),
            sessions: HashMap::new(),
            delivered: 0,
        }
    }

    /// Operations waiting here: queued for delivery or held behind writes.
    fn pending(&self) -> usize {
        self.queue.len()
            + self
                .sessions
                .values()
                .map(|c| c.held_reads.len())
                .sum::<usize>()
    }

    fn propose(&mut self, proposal: Proposal) {
        if self.peers.is_empty() {
            return;
        }
        for peer in self.peers.values_mut() {
            peer.out.proposals.push(proposal.clone());
        }
        self.unacked.push_back(proposal);
    }

    fn read_locally(&mut self, reply_to: ReplyTo, op: Arc<Op>, out: &mut Vec<Effect<Apply>>) {
        match self.sessions.get_mut(&reply_to.session) {
            Some(order) if order.applied < order.issued => {
                order.held_reads.push_back((order.issued, reply_to, op));
            }
            _ => out.push(Effect::Work(Apply {
                op,
                cas: 0,
                reply_to: Some(reply_to),
            })),
        }
    }

    /// Drops own proposals every peer holds: they will never be resent.
    fn forget_acked(&mut self) {
        let me = self.me;
        let everywhere = self
            .peers
            .values()
            .map(|p| p.holds.get(&me).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        while self
            .unacked
            .front()
            .is_some_and(|p| p.stamp.ts <= everywhere)
        {
            self.unacked.pop_front();
        }
    }

    fn deliverable(&self, head: &Queued) -> bool {
        if head.read {
            return self.peers.values().all(|p| p.clock >= head.stamp.ts);
        }
        let origin = head.stamp.node;
        self.peers.iter().all(|(&id, p)| {
            id == origin || p.holds.get(&origin).copied().unwrap_or(0) >= head.stamp.ts
        })
    }

    fn deliver(&mut self, out: &mut Vec<Effect<Apply>>) {
        while let Some(Reverse(head)) = self.queue.peek() {
            if !self.deliverable(head) {
                break;
            }
            let Some(Reverse(entry)) = self.queue.pop() else {
                break;
            };
            self.delivered += 1;
            let mine = entry.stamp.node == self.me;
            out.push(Effect::Work(Apply {
                op: entry.op,
                cas: entry.stamp.cas_unique(),
                reply_to: entry.reply_to.filter(|_| mine),
            }));
            if let (true, false, Some(reply_to)) = (mine, entry.read, entry.reply_to) {
                self.write_applied(reply_to.session, out);
            }
        }
    }

    /// One of a session's writes was applied: release the reads that
    /// waited for it (and for nothing issued later).
    fn write_applied(&mut self, session: u64, out: &mut Vec<Effect<Apply>>) {
        let Some(order) = self.sessions.get_mut(&session) else {
            return;
        };
        order.applied += 1;
        while order
            .held_reads
            .front()
            .is_some_and(|(needed, ..)| *needed <= order.applied)
        {
            if let Some((_, reply_to, op)) = order.held_reads.pop_front() {
                out.push(Effect::Work(Apply {
                    op,
                    cas: 0,
                    reply_to: Some(reply_to),
                }));
            }
        }
        if order.applied == order.issued {
            self.sessions.remove(&session);
        }
    }

    /// A new link to `peer`: queue every own proposal it may not hold yet.
    fn resend_to(&mut self, peer: NodeId) {
        let me = self.me;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let held = p.holds.get(&me).copied().unwrap_or(0);
        p.out.proposals = self
            .unacked
            .iter()
            .filter(|q| q.stamp.ts > held)
            .cloned()
            .collect();
        p.out.due = true;
    }
}

impl Engine for TotalOrder {
    type Message = Broadcast;
    type Replica = TotalOrderReplica;

    fn on_client(
        &mut self,
        to: ReplyTo,
        request: Request,
        now: UnixTime,
        out: &mut Vec<Effect<Apply>>,
    ) {
        // Reads too: a node that cannot reach every member may be behind
        // (or restarted empty) and must not answer from its replica.
        if let Some(down) = self.peers.iter().find(|(_, p)| !p.up).map(|(id, _)| *id) {
            let reason = format!("cluster unavailable: node {down} is down; not applied");
            out.push(Effect::Refuse { to, reason });
            return;
        }
        let read = matches!(&request.command, Command::Get(g) if g.touch.is_none());
        let op = Arc::new(Op { request, now });
        if read && self.mode == Consistency::Sequential {
            return self.read_locally(to, op, out);
        }
        let stamp = Stamp {
            ts: self.clock.tick(),
            node: self.me,
        };
        if !read {
            self.propose(Proposal {
                stamp,
                op: op.clone(),
            });
            if self.mode == Consistency::Sequential {
                self.sessions.entry(to.session).or_default().issued += 1;
            }
        }
        self.queue.push(Reverse(Queued {
            stamp,
            op,
            reply_to: Some(to),
            read,
        }));
        self.deliver(out);
    }

    fn on_message(&mut self, from: NodeId, frame: Broadcast, out: &mut Vec<Effect<Apply>>) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.clock = peer.clock.max(frame.clock);
        self.clock.observe(frame.clock);
        for proposal in frame.proposals {
            let stamp = proposal.stamp;
            if stamp.node != from || stamp.ts <= peer.received {
                continue; // not its own, or a resent duplicate
            }
            peer.received = stamp.ts;
            self.clock.observe(stamp.ts);
            self.ack_generation += 1;
            self.queue.push(Reverse(Queued {
                stamp,
                op: proposal.op,
                reply_to: None,
                read: false,
            }));
        }
        for (origin, ts) in frame.acks {
            let held = peer.holds.entry(origin).or_insert(0);
            *held = (*held).max(ts);
        }
        self.forget_acked();
        self.deliver(out);
    }

    fn on_tick(&mut self, _out: &mut Vec<Effect<Apply>>) {
        for peer in self.peers.values_mut() {
            peer.out.due = true;
        }
    }

    /// A member that is down makes new operations refused; a lost link's
    /// unsent proposals are resent, with every own proposal the peer may
    /// not hold, when a new link opens.
    fn on_peer(&mut self, peer: NodeId, event: PeerEvent) {
        match event {
            PeerEvent::Up | PeerEvent::Down => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.up = event == PeerEvent::Up;
                }
            }
            PeerEvent::LinkLost => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.out.proposals.clear();
                }
            }
            PeerEvent::LinkOpened => self.resend_to(peer),
        }
    }

    /// A restarted peer lost what it held, and this version cannot hand it
    /// the state again (no view changes): it is refused.
    fn on_hello(&mut self, _peer: NodeId, _incarnation: u64, restarted: bool) -> bool {
        !restarted
    }

    fn on_store(&mut self, done: Infallible, _out: &mut Vec<Effect<Apply>>) {
        match done {}
    }

    /// The frame owed to `to`, if any: new proposals, new acks, a higher
    /// clock, or a heartbeat. Everything since the last frame goes in one.
    fn outgoing(&mut self, to: NodeId) -> Option<Broadcast> {
        let clock = self.clock.now();
        let generation = self.ack_generation;
        let out = &self.peers.get(&to)?.out;
        let owed = !out.proposals.is_empty()
            || out.due
            || out.sent_acks != generation
            || out.sent_clock < clock;
        if !owed {
            return None;
        }
        // Built only for a frame that goes: this runs every loop iteration.
        let acks: Vec<(NodeId, u64)> = self.peers.iter().map(|(&id, p)| (id, p.received)).collect();
        let out = &mut self.peers.get_mut(&to)?.out;
        out.sent_clock = clock;
        out.sent_acks = generation;
        out.due = false;
        Some(Broadcast {
            clock,
            acks,
            proposals: std::mem::take(&mut out.proposals),
        })
    }

    fn status(&self) -> Status {
        Status {
            clock: self.clock.now(),
            epoch: self.view.epoch,
            members: self.view.members.len(),
            pending: self.pending(),
            delivered: self.delivered,
            sync: None,
        }
    }

    fn peer_status(&self, peer: NodeId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(|p| PeerStatus {
            clock: p.clock,
            sync_lag: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Get, Storage, StorageMode};

    fn reply_to(session: u64, slot: u64) -> ReplyTo {
        ReplyTo { session, slot }
    }

    fn set(key: &str) -> Request {
        Request {
            command: Command::Storage(Storage {
                mode: StorageMode::Set,
                key: key.as_bytes().to_vec(),
                flags: 0,
                exptime: 0,
                value: b"v".to_vec(),
            }),
            noreply: false,
        }
    }

    fn get(key: &str) -> Request {
        Request {
            command: Command::Get(Get {
                keys: vec![key.as_bytes().to_vec()],
                with_cas: false,
                touch: None,
            }),
            noreply: false,
        }
    }

    fn cluster(n: u32, mode: Consistency) -> Vec<TotalOrder> {
        let view = View::new(0, (0..n).collect());
        (0..n)
            .map(|id| {
                let mut e = TotalOrder::new(id, view.clone(), mode);
                for peer in view.others(id) {
                    e.on_peer(peer, PeerEvent::Up);
                }
                e
            })
            .collect()
    }

    /// Delivers every owed frame, in node order, until nothing moves;
    /// returns each node's applied ops as (key, cas, replied).
    fn exchange(engines: &mut [TotalOrder], applied: &mut [Vec<(Vec<u8>, u64, bool)>]) {
        loop {
            let mut moved = false;
            for from in 0..engines.len() {
                for to in 0..engines.len() {
                    if from == to {
                        continue;
                    }
                    if let Some(frame) = engines[from].outgoing(to as NodeId) {
                        moved = true;
                        let mut out = Vec::new();
                        engines[to].on_message(from as NodeId, frame, &mut out);
                        record(&out, &mut applied[to]);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn record(effects: &[Effect<Apply>], into: &mut Vec<(Vec<u8>, u64, bool)>) {
        for effect in effects {
            if let Effect::Work(Apply { op, cas, reply_to }) = effect {
                let key = match &op.request.command {
                    Command::Storage(s) => s.key.clone(),
                    Command::Get(g) => g.keys[0].clone(),
                    _ => Vec::new(),
                };
                into.push((key, *cas, reply_to.is_some()));
            }
        }
    }

    #[test]
    fn a_single_node_applies_at_once_with_a_stamp_unique() {
        let mut e = cluster(1, Consistency::Linearizable).remove(0);
        let mut out = Vec::new();
        e.on_client(reply_to(1, 0), set("k"), 0, &mut out);
        let cas = Stamp { ts: 1, node: 0 }.cas_unique();
        assert!(
            matches!(&out[..], [Effect::Work(Apply { cas: c, reply_to: Some(_), .. })] if *c == cas)
        );
    }

    #[test]
    fn concurrent_writes_apply_in_the_same_order_everywhere() {
        let mut engines = cluster(3, Consistency::Linearizable);
        let mut applied = vec![Vec::new(); 3];
        for (node, key) in [(0, "a"), (1, "b"), (2, "c"), (1, "d")] {
            let mut out = Vec::new();
            engines[node].on_client(reply_to(node as u64, 0), set(key), 0, &mut out);
            assert!(
                out.is_empty(),
                "nothing is applied before every member holds it"
            );
        }
        exchange(&mut engines, &mut applied);
        let order = |a: &Vec<(Vec<u8>, u64, bool)>| {
            a.iter()
                .map(|(k, c, _)| (k.clone(), *c))
                .collect::<Vec<_>>()
        };
        assert_eq!(applied[0].len(), 4);
        assert_eq!(order(&applied[0]), order(&applied[1]));
        assert_eq!(order(&applied[0]), order(&applied[2]));
        // Only the origin answers its client.
        let replied: usize = applied.iter().flatten().filter(|(_, _, r)| *r).count();
        assert_eq!(replied, 4);
        assert!(engines.iter().all(|e| e.pending() == 0));
    }

    #[test]
    fn a_down_peer_makes_new_operations_refused() {
        let mut engines = cluster(3, Consistency::Linearizable);
        engines[0].on_peer(2, PeerEvent::Down);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        assert!(
            matches!(&out[..], [Effect::Refuse { reason, .. }] if reason.contains("node 2 is down"))
        );
        assert!(engines[0].outgoing(1).is_none(), "nothing was proposed");
    }

    #[test]
    fn a_lost_link_resends_what_the_peer_does_not_hold() {
        let mut engines = cluster(2, Consistency::Linearizable);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(1, 0), set("k"), 0, &mut out);
        let lost = engines[0].outgoing(1).expect("a frame");
        assert_eq!(lost.proposals.len(), 1);
        engines[0].on_peer(1, PeerEvent::LinkLost);
        engines[0].on_peer(1, PeerEvent::LinkOpened);
        let mut applied = vec![Vec::new(); 2];
        exchange(&mut engines, &mut applied);
        assert_eq!(applied[0].len(), 1);
        assert_eq!(applied[1].len(), 1);
        // A duplicate of what was already received is ignored.
        engines[1].on_message(0, lost, &mut out);
        assert_eq!(engines[1].pending(), 0);
    }

    #[test]
    fn a_sequential_read_waits_only_for_its_own_earlier_writes() {
        let mut engines = cluster(2, Consistency::Sequential);
        let mut out = Vec::new();
        engines[0].on_client(reply_to(7, 0), set("a"), 0, &mut out);
        engines[0].on_client(reply_to(7, 1), get("a"), 0, &mut out);
        engines[0].on_client(reply_to(7, 2), set("b"), 0, &mut out);
        engines[0].on_client(reply_to(8, 0), get("a"), 0, &mut out);
        // Another connection's read is served at once; ours waits.
        let mut applied = vec![Vec::new(); 2];
        record(&out, &mut applied[0]);
        assert_eq!(applied[0], vec![(b"a".to_vec(), 0, true)]);
        exchange(&mut engines, &mut applied);
        let keys: Vec<&[u8]> = applied[0].iter().map(|(k, ..)| k.as_slice()).collect();
        assert_eq!(
            keys,
            [&b"a"[..], b"a", b"a", b"b"],
            "the read comes after `set a`, before `set b`"
        );
    }
}
