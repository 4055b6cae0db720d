//! What peers say to each other.
//!
//! A link opens with a [`Hello`]; after it, every message is a [`Frame`]
//! that carries, coalesced, everything the sender has for that peer since
//! its last frame: its clock, its cumulative acknowledgements and its new
//! proposals. A frame with nothing new is a heartbeat. [`PeerMessage::Leave`]
//! says the sender is shutting down; [`PeerMessage::Refused`] answers a hello
//! that cannot be accepted.

use std::sync::Arc;

use super::eventual::version::Version;
use super::{NodeId, Stamp};
use crate::protocol::Request;
use crate::store::UnixTime;

/// An operation as it is replicated: the client's request and the origin's
/// wall time, so relative expiry times mean the same at every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub request: Request,
    pub now: UnixTime,
}

/// An operation stamped by its origin (`stamp.node`). The op is shared:
/// one proposal goes to every peer and into the local queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub stamp: Stamp,
    pub op: Arc<Op>,
}

/// Everything new a node has for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The sender's Lamport clock: it will never stamp at or below this.
    pub clock: u64,
    /// `(origin, ts)`: the sender holds every proposal of `origin` up to `ts`.
    pub acks: Vec<(NodeId, u64)>,
    /// The sender's own new proposals, in stamp order.
    pub proposals: Vec<Proposal>,
    /// The sender's queue depth and operations served, for `show`.
    pub pending: u64,
    pub ops: u64,
    /// Eventual mode: versions pushed, or sent in answer to a sync request.
    pub versions: Vec<Version>,
    /// Eventual mode: "send me every version you changed after this mark".
    pub sync_request: Option<ChangeMark>,
    /// Eventual mode: the versions above complete the answer to the
    /// receiver's sync request.
    pub sync_complete: Option<SyncDone>,
}

/// Eventual mode: what an answer to a sync request carried: every change of
/// the sender's run `upto.incarnation` after `since`, up to `upto.seq`.
/// The asker takes it only if it starts at or below where the asker is, so
/// an answer to an earlier run of the asker completes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDone {
    pub since: u64,
    pub upto: ChangeMark,
}

/// Eventual mode: a position in one node's change log. Change numbers start
/// over when a node restarts, so a number means something only together
/// with the run (incarnation) of the node that counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMark {
    pub incarnation: u64,
    pub seq: u64,
}

/// The first message on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub cluster: String,
    pub node: NodeId,
    /// Changes every time the node process starts.
    pub incarnation: u64,
    /// HMAC-SHA256 of the fields above under the cluster secret.
    pub proof: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    Hello(Hello),
    Frame(Frame),
    /// The sender is shutting down.
    Leave,
    /// The receiver's hello was refused, and why; the link then closes.
    Refused(String),
}
