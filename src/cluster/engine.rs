//! The interface every consistency mode implements, in raft-rs's shape: the
//! host feeds inputs and carries out the effects it collects. An engine is
//! a pure state machine: it reads no clock and touches no socket or store,
//! so the same code runs in the node's reactor and in the simulator.
//!
//! ```text
//!  inputs                                    outputs
//!  on_client (request, reply slot) ──┐   ┌──► Effect::Work: store work, carried out in order
//!  on_message (from node, message) ──┤   ├──► Effect::Refuse: answer a client now, not applied
//!  on_tick (a heartbeat) ────────────┼───┤
//!  on_peer (up, down, link opened, lost)  └──► outgoing(to): the one message owed to a peer,
//!  on_hello (a peer's run)           │        everything since the last, coalesced
//!  on_store (what store work found) ─┘
//! ```
//!
//! Store work runs where the store lives (inline, or on the backend worker
//! thread), in the engine's own vocabulary: each engine names a
//! [`Replica`], its store side, which takes the engine's work and gives
//! back client replies and the engine's own [`Done`] reports. Adding a mode
//! means one new [`Engine`], its [`Replica`] and its wire message.

use std::fmt::Debug;

use super::wire;
use super::NodeId;
use crate::durability::ReportWait;
use crate::protocol::Request;
use crate::store::{Executor, UnixTime};

/// Where a client's reply goes: the host's name for the client session
/// (unique over the node's life; engines only compare it, to keep one
/// session's reads behind its writes) and the reply slot reserved for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo {
    pub session: u64,
    pub slot: u64,
}

/// What an engine asks its host to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<W> {
    /// Store work, carried out in the order given.
    Work(W),
    /// Answer a client at once; nothing was applied and nothing will be.
    Refuse { to: ReplyTo, reason: String },
}

/// What the host learned about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The failure detector holds it up (heard from within the timeout).
    Up,
    /// Silent past the timeout, or refused.
    Down,
    /// It said it is leaving (a clean shutdown): down, and certain to
    /// answer nothing more until it says hello again.
    Left,
    /// This node's link to it opened: messages can go.
    LinkOpened,
    /// This node's link to it broke: what was in flight may be lost.
    LinkLost,
}

/// An engine's state for `stats` and `show` (and its queue depth, which
/// the reactor reads every loop iteration: nothing here allocates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status<'a> {
    pub clock: u64,
    pub epoch: u64,
    pub members: usize,
    /// The view's members.
    pub view_members: &'a [NodeId],
    /// This node's part in it: `member`, `joining` (a view change is under
    /// way), `catching-up` (a member waiting for the state), `no-quorum`.
    pub role: &'static str,
    pub views_installed: u64,
    pub refused_no_quorum: u64,
    pub snapshots_sent: u64,
    pub snapshots_received: u64,
    /// Strong modes: members handed the writes they missed instead of a
    /// snapshot, those writes, and the times this node was.
    pub missed_handed: u64,
    pub missed_writes_handed: u64,
    pub missed_received: u64,
    /// Strong modes: writes this node applied while it handed a snapshot
    /// (read from an image its store kept meanwhile).
    pub writes_during_snapshots: u64,
    /// The snapshot a member catching up is being handed, so far.
    pub receiving: Option<Transfer>,
    /// Operations waiting here.
    pub pending: usize,
    /// Operations delivered in order (strong modes).
    pub delivered: u64,
    /// Strong modes: heartbeats the oldest operation waiting here for
    /// delivery had waited at the last heartbeat (0 when none waits).
    pub delivery_lag: Option<u64>,
    /// Anti-entropy counters (eventual mode).
    pub sync: Option<SyncStats>,
}

/// How far a snapshot has come, in bytes of keys and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub done: u64,
    /// About how many the whole snapshot carries.
    pub total: u64,
}

/// Anti-entropy counters, for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Sync rounds started: each asks every linked peer, and the rest of
    /// an answer that came in parts is asked for in a round of its own.
    pub rounds: u64,
    /// Versions this node's own writes (and evictions) made.
    pub versions_written: u64,
    /// Versions sent to peers: pushes and sync answers.
    pub versions_sent: u64,
    /// Of those, the ones in sync answers (anti-entropy's own volume).
    pub versions_answered: u64,
    pub versions_received: u64,
    /// Pushes dropped because the peer's link was backed up (anti-entropy
    /// brings what they carried).
    pub pushes_dropped: u64,
    /// Causal mode: peers' writes waiting here for their causes.
    pub waiting: u64,
    /// Causal mode: pushes dropped for want of room to wait (anti-entropy
    /// brings what they carried).
    pub waiting_dropped: u64,
}

/// What an engine knows of one peer, for `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The clock it last reported.
    pub clock: u64,
    /// Heartbeats since the last completed sync from it (eventual mode).
    pub sync_lag: Option<u64>,
    /// Causal mode: its writes waiting here for their causes, per run of
    /// it that wrote them (a restarted node writes as a new origin), by
    /// run; only runs with writes waiting.
    pub waiting: Option<Vec<(u64, usize)>>,
}

impl PeerStatus {
    /// Causal mode: its writes waiting here, of all its runs.
    pub fn waiting_total(&self) -> Option<usize> {
        let runs = self.waiting.as_ref()?;
        Some(runs.iter().map(|(_, n)| n).sum())
    }
}

/// One consistency mode's protocol.
pub trait Engine {
    /// What this mode's nodes say to each other.
    type Message: wire::Message + Debug;
    /// This mode's store side.
    type Replica: Replica;

    /// A client's data command arrives at this node; `now` is the wall time
    /// relative expiry times are read against.
    fn on_client(
        &mut self,
        to: ReplyTo,
        request: Request,
        now: UnixTime,
        out: &mut Vec<Effect<StoreWork<Self>>>,
    );

    /// A message from `from`, over a FIFO link.
    fn on_message(
        &mut self,
        from: NodeId,
        message: Self::Message,
        out: &mut Vec<Effect<StoreWork<Self>>>,
    );

    /// A heartbeat: every peer is owed a message, even an empty one.
    fn on_tick(&mut self, out: &mut Vec<Effect<StoreWork<Self>>>);

    fn on_peer(&mut self, peer: NodeId, event: PeerEvent);

    /// A hello from run `incarnation` of `peer`; `restarted`: an earlier run
    /// was known, so the peer came back with an empty store.
    fn on_hello(&mut self, peer: NodeId, incarnation: u64, restarted: bool);

    /// Run `incarnation` of `peer` welcomed this node's link to it: what
    /// goes on that link, until it breaks, goes to that run. (Its own hello,
    /// on its link to this node, may come later.)
    fn on_welcome(&mut self, peer: NodeId, incarnation: u64);

    /// This node's log is stuck: its data directory refuses it (a full or
    /// read-only disk) or has taken none of it for a while (a slow or hung
    /// disk); or it moves again. A strong node hands no snapshot its log
    /// does not hold, so it asks to be listed last among a view's sources.
    fn on_log_stuck(&mut self, _stuck: bool) {}

    /// A report from the store side.
    fn on_store(
        &mut self,
        done: <Self::Replica as Replica>::Done,
        out: &mut Vec<Effect<StoreWork<Self>>>,
    );

    /// The message owed to `to`, if any: everything since the last one.
    fn outgoing(&mut self, to: NodeId) -> Option<Self::Message>;

    fn status(&self) -> Status<'_>;

    fn peer_status(&self, peer: NodeId) -> Option<PeerStatus>;

    /// The store side this engine's work runs on, new and empty.
    fn replica(&self) -> Self::Replica;
}

/// The store work an engine asks for.
pub type StoreWork<E> = <<E as Engine>::Replica as Replica>::Work;

/// What carried-out store work gives back.
#[derive(Debug)]
pub enum Done<D> {
    /// A client's reply (empty for `noreply`), and how far into the
    /// node's log the state it shows reaches, if the store tells
    /// (`VersionedStore::take_shown`; `None`: all that is logged).
    Reply {
        to: ReplyTo,
        reply: Vec<u8>,
        shows: Option<u64>,
    },
    /// A report for the engine.
    Engine(D),
}

/// An engine's store side: carries out its work on the node's store, in
/// the order given, where the store lives.
pub trait Replica: Send + 'static {
    type Work: Send + Debug + 'static;
    type Done: Send + Debug + 'static;

    fn perform(
        &mut self,
        work: Self::Work,
        executor: &mut Executor,
        emit: &mut impl FnMut(Done<Self::Done>),
    );

    /// Housekeeping of its own, beside the store's (a journal's snapshot
    /// parts); whether more is waiting.
    fn maintain(&mut self, _executor: &mut Executor) -> bool {
        false
    }

    /// The reactor's loop iteration ends (a journal hands its records over).
    fn end_batch(&mut self) {}

    /// What `report` waits for in the log, with a data directory, before
    /// it reaches the engine.
    fn report_waits(_report: &Self::Done) -> ReportWait {
        ReportWait::Nothing
    }
}
