//! The node's replication engine, whichever the consistency mode: the
//! ordering engine for the strong modes, the last-writer-wins engine for
//! eventual mode. The reactor and the peer links talk to this one type.

use super::eventual::version::Version;
use super::eventual::{EventualEngine, SyncStats};
use super::{ChangeMark, Effect, Engine, Frame, NodeId, View};
use crate::backend::ReplyTo;
use crate::protocol::Request;
use crate::store::UnixTime;

#[derive(Debug)]
pub enum Replicator {
    Ordered(Engine),
    Eventual(EventualEngine),
}

impl Replicator {
    pub fn on_client(
        &mut self,
        reply_to: ReplyTo,
        request: Request,
        now: UnixTime,
        out: &mut Vec<Effect>,
    ) {
        match self {
            Replicator::Ordered(e) => e.on_client(reply_to, request, now, out),
            Replicator::Eventual(e) => e.on_client(reply_to, request, now, out),
        }
    }

    pub fn on_frame(&mut self, from: NodeId, frame: Frame, out: &mut Vec<Effect>) {
        match self {
            Replicator::Ordered(e) => e.on_frame(from, frame, out),
            Replicator::Eventual(e) => e.on_frame(from, frame, out),
        }
    }

    pub fn outgoing(&mut self, to: NodeId) -> Option<Frame> {
        match self {
            Replicator::Ordered(e) => e.outgoing(to),
            Replicator::Eventual(e) => e.outgoing(to),
        }
    }

    pub fn heartbeat(&mut self, out: &mut Vec<Effect>) {
        match self {
            Replicator::Ordered(e) => e.heartbeat(),
            Replicator::Eventual(e) => e.heartbeat(out),
        }
    }

    /// Whether `peer` is taking part (the strong modes refuse new
    /// operations without it; eventual mode goes by its links instead).
    pub fn set_up(&mut self, peer: NodeId, up: bool) {
        if let Replicator::Ordered(e) = self {
            e.set_up(peer, up);
        }
    }

    pub fn link_lost(&mut self, peer: NodeId) {
        match self {
            Replicator::Ordered(e) => e.link_lost(peer),
            Replicator::Eventual(e) => e.link_lost(peer),
        }
    }

    pub fn link_opened(&mut self, peer: NodeId) {
        match self {
            Replicator::Ordered(e) => e.link_opened(peer),
            Replicator::Eventual(e) => e.link_opened(peer),
        }
    }

    /// A hello from run `incarnation` of `peer`; `restarted`: an earlier
    /// run was known, so the peer came back with an empty store. Only
    /// eventual mode can take such a peer back (anti-entropy refills it);
    /// returns whether the peer is taken.
    pub fn peer_incarnation(&mut self, peer: NodeId, incarnation: u64, restarted: bool) -> bool {
        match self {
            Replicator::Ordered(_) => !restarted,
            Replicator::Eventual(e) => {
                e.peer_incarnation(peer, incarnation);
                true
            }
        }
    }

    /// Versions this node's writes left, to push to peers.
    pub fn on_published(&mut self, versions: Vec<Version>) {
        if let Replicator::Eventual(e) = self {
            e.on_local_versions(versions);
        }
    }

    /// The store has applied `peer`'s sync answer up to `mark`.
    pub fn on_sync_applied(&mut self, peer: NodeId, mark: ChangeMark, all_kept: bool) {
        if let Replicator::Eventual(e) = self {
            e.on_sync_applied(peer, mark, all_kept);
        }
    }

    /// The store's answer to `peer`'s sync request.
    pub fn on_collected(&mut self, peer: NodeId, versions: Vec<Version>, since: u64, upto: u64) {
        if let Replicator::Eventual(e) = self {
            e.on_collected(peer, versions, since, upto);
        }
    }

    pub fn view(&self) -> &View {
        match self {
            Replicator::Ordered(e) => e.view(),
            Replicator::Eventual(e) => e.view(),
        }
    }

    pub fn clock(&self) -> u64 {
        match self {
            Replicator::Ordered(e) => e.clock(),
            Replicator::Eventual(e) => e.clock(),
        }
    }

    /// Operations waiting to be ordered (none in eventual mode).
    pub fn pending(&self) -> usize {
        match self {
            Replicator::Ordered(e) => e.pending(),
            Replicator::Eventual(_) => 0,
        }
    }

    /// Operations delivered in order (none in eventual mode).
    pub fn delivered(&self) -> u64 {
        match self {
            Replicator::Ordered(e) => e.delivered(),
            Replicator::Eventual(_) => 0,
        }
    }

    pub fn peer_clock(&self, peer: NodeId) -> Option<u64> {
        match self {
            Replicator::Ordered(e) => e.peer_clock(peer),
            Replicator::Eventual(e) => e.peer_clock(peer),
        }
    }

    pub fn sync_stats(&self) -> Option<SyncStats> {
        match self {
            Replicator::Ordered(_) => None,
            Replicator::Eventual(e) => Some(e.stats()),
        }
    }

    /// Heartbeats since the last completed sync from `peer` (eventual mode).
    pub fn sync_lag(&self, peer: NodeId) -> Option<u64> {
        match self {
            Replicator::Ordered(_) => None,
            Replicator::Eventual(e) => e.sync_lag(peer),
        }
    }
}
