//! One node's cluster core: [`Membership`] (who is up) and the mode's
//! [`Engine`] (what is applied where), behind the one interface the host
//! drives. The reactor and the simulator both talk to this type only: they
//! report what arrived (client requests, hellos, frames, link events) and
//! the time, and carry out the effects and send the frames it gives back.
//!
//! ```text
//!  host ──► on_client ──────────────► fenced? refuse : engine
//!       ──► on_hello / on_welcome / on_frame / on_leave / on_refused ──► membership
//!                                             └──► up/down ──► engine
//!       ──► on_link ─────────────────► engine (resend on a new link)
//!       ──► tick(now) ───────────────► membership (silent peers go down), engine heartbeat
//!       ◄── outgoing(to) ◄──────────── engine's message, with this node's load
//! ```

use super::engine::{Effect, Engine, PeerEvent, ReplyTo, StoreWork};
use super::membership::{Change, Load, Membership, Millis, Run};
use super::message::Frame;
use super::{NodeId, Replica};
use crate::protocol::Request;
use crate::store::UnixTime;

pub struct Node<E: Engine> {
    me: NodeId,
    membership: Membership,
    engine: E,
    changes: Vec<Change>,
}

impl<E: Engine> Node<E> {
    /// Node `me` with `peers`, which go down after `timeout` ms of silence.
    pub fn new(
        me: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        timeout: Millis,
        engine: E,
    ) -> Self {
        Node {
            me,
            membership: Membership::new(peers, timeout),
            engine,
            changes: Vec::new(),
        }
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// This node's log is stuck, or moves again ([`Engine::on_log_stuck`]).
    pub fn on_log_stuck(&mut self, stuck: bool) {
        self.engine.on_log_stuck(stuck);
    }

    /// A client's data command. A fenced node refuses it.
    pub fn on_client(
        &mut self,
        to: ReplyTo,
        request: Request,
        now: UnixTime,
        out: &mut Vec<Effect<StoreWork<E>>>,
    ) {
        if let Some(fence) = self.membership.fenced() {
            let reason = format!("node unavailable: {fence}; not applied");
            out.push(Effect::Refuse { to, reason });
            return;
        }
        self.engine.on_client(to, request, now, out);
    }

    /// A hello from run `incarnation` of `peer` (its proof already checked),
    /// at `now`. `Err` says why the link is refused.
    pub fn on_hello(&mut self, peer: NodeId, incarnation: u64, now: Millis) -> Result<(), String> {
        let me = self.me;
        let run = self
            .membership
            .run_of(peer, incarnation)
            .ok_or_else(|| format!("node {peer} is not a member of this cluster"))?;
        let restarted = run == Run::New;
        if restarted {
            log::info!("node {me}: node {peer} restarted with an empty store");
        }
        self.engine.on_hello(peer, incarnation, restarted);
        let change = self.membership.take_hello(peer, incarnation, now);
        self.apply(change);
        Ok(())
    }

    /// A frame from `from` at `now`.
    pub fn on_frame(
        &mut self,
        from: NodeId,
        frame: Frame<E::Message>,
        now: Millis,
        out: &mut Vec<Effect<StoreWork<E>>>,
    ) {
        if self.membership.member(from).is_none() {
            return;
        }
        self.membership.report(from, frame.load);
        let change = self.membership.heard(from, now);
        self.apply(change);
        self.engine.on_message(from, frame.body, out);
    }

    /// Run `incarnation` of `peer` took this node's hello at `now`: it
    /// counts this node as a member again.
    pub fn on_welcome(&mut self, peer: NodeId, incarnation: u64, now: Millis) {
        self.engine.on_welcome(peer, incarnation);
        let change = self.membership.welcome(peer, incarnation, now);
        self.apply(change);
    }

    /// `from` said it is leaving.
    pub fn on_leave(&mut self, from: NodeId) {
        log::info!("node {}: node {from} is leaving", self.me);
        if self.membership.left(from).is_some() {
            log::warn!("node {}: node {from} is down", self.me);
        }
        self.engine.on_peer(from, PeerEvent::Left);
    }

    /// `by` refused this node: it serves nothing from now on.
    pub fn on_refused(&mut self, by: NodeId, why: &str) {
        self.membership.fence(by, why);
        log::error!(
            "node {}: node {by} refused this node: {why}; check the cluster's config",
            self.me
        );
    }

    /// This node's link to `peer` opened or broke
    /// ([`PeerEvent::LinkOpened`], [`PeerEvent::LinkLost`]).
    pub fn on_link(&mut self, peer: NodeId, event: PeerEvent) {
        self.engine.on_peer(peer, event);
    }

    /// A heartbeat at `now`: silent peers go down, every peer is owed a frame.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Effect<StoreWork<E>>>) {
        self.engine.on_tick(out);
        let mut changes = std::mem::take(&mut self.changes);
        self.membership.tick(now, &mut changes);
        for change in changes.drain(..) {
            log::warn!(
                "node {}: node {} is silent for over {} ms",
                self.me,
                change.peer,
                self.membership.timeout()
            );
            self.apply(Some(change));
        }
        self.changes = changes;
    }

    /// A report from the store side.
    pub fn on_store(
        &mut self,
        done: <E::Replica as Replica>::Done,
        out: &mut Vec<Effect<StoreWork<E>>>,
    ) {
        self.engine.on_store(done, out);
    }

    /// The frame owed to `to`, carrying this node's `load`.
    pub fn outgoing(&mut self, to: NodeId, load: Load) -> Option<Frame<E::Message>> {
        self.engine.outgoing(to).map(|body| Frame { load, body })
    }

    fn apply(&mut self, change: Option<Change>) {
        let Some(Change { peer, up }) = change else {
            return;
        };
        if up {
            log::info!("node {}: node {peer} is up", self.me);
        } else {
            log::warn!("node {}: node {peer} is down", self.me);
        }
        let event = if up { PeerEvent::Up } else { PeerEvent::Down };
        self.engine.on_peer(peer, event);
    }
}
