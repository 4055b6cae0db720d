//! What the strong modes' nodes say to each other: one [`Broadcast`] per
//! frame, carrying, coalesced, everything the sender has for that peer
//! since its last frame: the ballot of the view it is in, its clock, its
//! cumulative acknowledgements, its new proposals, and the view-change
//! messages ([`Control`]) it owes that peer. A broadcast with nothing new
//! is a heartbeat.

use std::sync::Arc;

use crate::cluster::message::Op;
use crate::cluster::view::Ballot;
use crate::cluster::wire::{self, Reader, WireError};
use crate::cluster::{NodeId, Stamp};
use crate::protocol::{Command, MetaOp};
use crate::store::{Entry, Expiry, Head, Housekeeping, Record};

/// An operation stamped by its origin (`stamp.node`). The op is shared:
/// one proposal goes to every peer and into the local queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub stamp: Stamp,
    pub op: Arc<Op>,
}

impl Proposal {
    /// About how many bytes the proposal takes in a frame.
    pub fn approximate_len(&self) -> usize {
        op_len(&self.op)
    }
}

/// About how many bytes an operation takes in a frame or a queue: its key
/// and value, and a little for the rest.
pub fn op_len(op: &Op) -> usize {
    const REST: usize = 48;
    REST + match &op.request.command {
        Command::Get(get) => get.keys.total_len(),
        Command::Storage(storage) => storage.key.len() + storage.value.len(),
        Command::Meta(meta) => match &meta.op {
            MetaOp::Set(set) => meta.key.len() + set.value.len(),
            _ => meta.key.len(),
        },
        Command::TooLarge { key, .. } | Command::Delete { key } | Command::Touch { key, .. } => {
            key.len()
        }
        Command::Arith(arith) => arith.key.len(),
        Command::FlushAll { .. } => 0,
    }
}

/// Everything new a node has for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// The view the sender is in: its clock, acks and proposals count only
    /// for a receiver in the same view.
    pub ballot: Ballot,
    /// The sender's Lamport clock: it will never stamp at or below this.
    pub clock: u64,
    /// The highest clock the sender has seen from the receiver in this view.
    pub echo: u64,
    /// The peers the sender's failure detector holds up.
    pub sees: Vec<NodeId>,
    /// `(origin, ts)`: the sender holds every proposal of `origin` up to `ts`.
    pub acks: Vec<(NodeId, u64)>,
    /// The sender's own new proposals, in stamp order.
    pub proposals: Vec<Proposal>,
    pub control: Vec<Control>,
}

/// What a member holds, as it flushes it to a view change's coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    /// The view it last installed, and that view's members.
    pub normal: Ballot,
    pub normal_members: Vec<NodeId>,
    /// The latest view that had started whose state `normal` was formed
    /// from (`normal` itself once `normal` started and the sender holds
    /// its state).
    pub base: Ballot,
    /// It holds the state of `normal` (it is no member waiting for a snapshot).
    pub has_state: bool,
    /// Without that state, the floor `normal` started from (its
    /// `StartView`'s): what `base` delivered up to it is in `normal`'s
    /// state, and above it only what `normal`'s start sequence holds.
    pub start_floor: Stamp,
    /// Its store holds the effect of exactly the writes up to
    /// `delivered_upto` (no snapshot is half installed).
    pub intact: bool,
    /// This run of the node installed a view: it did not restart since.
    pub remembers: bool,
    /// This run began from a data directory and installed no view since:
    /// it holds a prefix of the delivered writes but no proposal, and may
    /// have forgotten views it was in.
    pub recovered: bool,
    /// Its store was rebuilt from its data directory and copied from no
    /// peer since, or it is a member of a view whose only source's was
    /// (`reordered`): it may order items otherwise than the cluster does.
    pub rebuilt: bool,
    /// Its log is stuck (its data directory refuses it, or has taken none
    /// of it for a while): as a source it would hand no snapshot until the
    /// log moves again.
    pub log_stuck: bool,
    /// Nodes it saw come back as a new run (their memory lost) that have
    /// not been members of a view it started since.
    pub amnesiacs: Vec<NodeId>,
    pub delivered_upto: Stamp,
    /// The proposals it holds and has not delivered, in stamp order, and,
    /// without the state of `normal`, that view's start sequence.
    pub held: Vec<Proposal>,
}

/// A view change's messages (see the module doc of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The coordinator of `ballot` asks `members` to leave their view for it.
    Prepare {
        ballot: Ballot,
        members: Vec<NodeId>,
    },
    /// A member promised `ballot`, and says what it holds.
    Flush { ballot: Ballot, flush: Flush },
    /// The receiver of `State` holds the state of the view of `ballot`.
    Caught { ballot: Ballot },
    /// The receiver of `State` installed `chunks` parts of the snapshot it
    /// is installing (its store reported them done): its source may read
    /// more (flow control only).
    Took { ballot: Ballot, chunks: u64 },
    /// The promise of `ballot` was refused: `promised` is higher, or the
    /// sender keeps a serving view that `ballot` would drop a live member of.
    Nack { ballot: Ballot, promised: Ballot },
    /// The view of `ballot` forms: its members, those that hold the state
    /// (the others are handed it), and what they deliver first.
    StartView {
        ballot: Ballot,
        /// The latest started view the flushes came from.
        base: Ballot,
        /// Every write `base` delivered up to this one is in the sources'
        /// state; of those above it, only what `start` holds was delivered
        /// anywhere.
        floor: Stamp,
        members: Vec<NodeId>,
        /// The members that hold the state. The first hands the others
        /// the snapshots and the writes they missed: the lowest, after any
        /// whose log is stuck (`Flush::log_stuck`).
        sources: Vec<NodeId>,
        start: Vec<Proposal>,
        /// Its source's store was rebuilt from a log (a view formed from the
        /// longest one): the others' order is not the cluster's any more,
        /// until they take its snapshot.
        reordered: bool,
    },
    /// The sender installed the view of `ballot`.
    Started { ballot: Ballot },
    /// The sender, a member of the view of `ballot` without its state,
    /// holds an intact store of exactly the writes up to `upto`, in the
    /// cluster's order (it was never rebuilt from a log): it can take the
    /// writes delivered after `upto` instead of a snapshot. Sent to the
    /// view's first source before `Started`, so it is there when the
    /// handing begins.
    Behind { ballot: Ballot, upto: Stamp },
    /// Part of the writes a member that is `Behind` missed: every write
    /// delivered after `after` (in the order delivered), up to the start of
    /// the view of `ballot` with the `last` part.
    Missed {
        ballot: Ballot,
        after: Stamp,
        writes: Vec<Proposal>,
        last: bool,
    },
    /// Part of the snapshot of the view of `ballot`, for a member without
    /// the state: the store as the writes up to `upto` left it; `first`
    /// carries the snapshot's head (the pending delayed `flush_all`, where
    /// the store's sweep and eviction clock stand).
    State {
        ballot: Ballot,
        upto: Stamp,
        first: Option<Head>,
        records: Vec<Record>,
        /// When the source read `records` (see `Work::Install`).
        read_at: u64,
        last: bool,
        /// About how many bytes of keys and values the whole snapshot carries.
        total: u64,
    },
}

impl wire::Message for Broadcast {
    const PROTOCOL: &'static str = "total-order broadcast v8";

    fn encode(&self, out: &mut Vec<u8>) {
        put_ballot(out, self.ballot);
        wire::put_u64(out, self.clock);
        wire::put_u64(out, self.echo);
        put_nodes(out, &self.sees);
        wire::put_u32(out, self.acks.len() as u32);
        for &(origin, ts) in &self.acks {
            wire::put_u32(out, origin);
            wire::put_u64(out, ts);
        }
        put_proposals(out, &self.proposals);
        wire::put_u32(out, self.control.len() as u32);
        for control in &self.control {
            put_control(out, control);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Broadcast, WireError> {
        let ballot = read_ballot(r)?;
        let clock = r.u64()?;
        let echo = r.u64()?;
        let sees = read_nodes(r)?;
        let mut acks = Vec::new();
        for _ in 0..r.count(12)? {
            acks.push((r.u32()?, r.u64()?));
        }
        let proposals = read_proposals(r)?;
        let mut control = Vec::new();
        for _ in 0..r.count(13)? {
            control.push(read_control(r)?);
        }
        Ok(Broadcast {
            ballot,
            clock,
            echo,
            sees,
            acks,
            proposals,
            control,
        })
    }
}

const PREPARE: u8 = 1;
const FLUSH: u8 = 2;
const NACK: u8 = 3;
const START_VIEW: u8 = 4;
const STARTED: u8 = 5;
const STATE: u8 = 6;
const CAUGHT: u8 = 7;
const TOOK: u8 = 8;
const BEHIND: u8 = 9;
const MISSED: u8 = 10;

fn put_control(out: &mut Vec<u8>, control: &Control) {
    match control {
        Control::Prepare { ballot, members } => {
            out.push(PREPARE);
            put_ballot(out, *ballot);
            put_nodes(out, members);
        }
        Control::Flush { ballot, flush } => {
            out.push(FLUSH);
            put_ballot(out, *ballot);
            put_ballot(out, flush.normal);
            put_nodes(out, &flush.normal_members);
            put_ballot(out, flush.base);
            out.push(u8::from(flush.has_state));
            put_stamp(out, flush.start_floor);
            out.push(u8::from(flush.intact));
            out.push(u8::from(flush.remembers));
            out.push(u8::from(flush.recovered));
            out.push(u8::from(flush.rebuilt));
            out.push(u8::from(flush.log_stuck));
            put_nodes(out, &flush.amnesiacs);
            put_stamp(out, flush.delivered_upto);
            put_proposals(out, &flush.held);
        }
        Control::Caught { ballot } => {
            out.push(CAUGHT);
            put_ballot(out, *ballot);
        }
        Control::Took { ballot, chunks } => {
            out.push(TOOK);
            put_ballot(out, *ballot);
            wire::put_u64(out, *chunks);
        }
        Control::Nack { ballot, promised } => {
            out.push(NACK);
            put_ballot(out, *ballot);
            put_ballot(out, *promised);
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
            out.push(START_VIEW);
            put_ballot(out, *ballot);
            put_ballot(out, *base);
            put_stamp(out, *floor);
            put_nodes(out, members);
            put_nodes(out, sources);
            put_proposals(out, start);
            out.push(u8::from(*reordered));
        }
        Control::Started { ballot } => {
            out.push(STARTED);
            put_ballot(out, *ballot);
        }
        Control::Behind { ballot, upto } => {
            out.push(BEHIND);
            put_ballot(out, *ballot);
            put_stamp(out, *upto);
        }
        Control::Missed {
            ballot,
            after,
            writes,
            last,
        } => {
            out.push(MISSED);
            put_ballot(out, *ballot);
            put_stamp(out, *after);
            put_proposals(out, writes);
            out.push(u8::from(*last));
        }
        Control::State {
            ballot,
            upto,
            first,
            records,
            read_at,
            last,
            total,
        } => {
            out.push(STATE);
            put_ballot(out, *ballot);
            put_stamp(out, *upto);
            match first {
                None => out.push(0),
                Some(head) => {
                    out.push(1);
                    put_head(out, head);
                }
            }
            wire::put_u32(out, records.len() as u32);
            for record in records {
                wire::put_bytes(out, &record.key);
                wire::put_u32(out, record.entry.flags);
                wire::put_u64(out, expiry_code(record.entry.expiry));
                wire::put_bytes(out, &record.entry.value);
                wire::put_u64(out, record.cas);
                wire::put_u64(out, record.stored_at);
                out.push(u8::from(record.referenced));
            }
            wire::put_u64(out, *read_at);
            out.push(u8::from(*last));
            wire::put_u64(out, *total);
        }
    }
}

fn read_control(r: &mut Reader<'_>) -> Result<Control, WireError> {
    Ok(match r.u8()? {
        PREPARE => Control::Prepare {
            ballot: read_ballot(r)?,
            members: read_nodes(r)?,
        },
        FLUSH => Control::Flush {
            ballot: read_ballot(r)?,
            flush: Flush {
                normal: read_ballot(r)?,
                normal_members: read_nodes(r)?,
                base: read_ballot(r)?,
                has_state: r.u8()? != 0,
                start_floor: read_stamp(r)?,
                intact: r.u8()? != 0,
                remembers: r.u8()? != 0,
                recovered: r.u8()? != 0,
                rebuilt: r.u8()? != 0,
                log_stuck: r.u8()? != 0,
                amnesiacs: read_nodes(r)?,
                delivered_upto: read_stamp(r)?,
                held: read_proposals(r)?,
            },
        },
        CAUGHT => Control::Caught {
            ballot: read_ballot(r)?,
        },
        TOOK => Control::Took {
            ballot: read_ballot(r)?,
            chunks: r.u64()?,
        },
        NACK => Control::Nack {
            ballot: read_ballot(r)?,
            promised: read_ballot(r)?,
        },
        START_VIEW => Control::StartView {
            ballot: read_ballot(r)?,
            base: read_ballot(r)?,
            floor: read_stamp(r)?,
            members: read_nodes(r)?,
            sources: read_nodes(r)?,
            start: read_proposals(r)?,
            reordered: r.u8()? != 0,
        },
        STARTED => Control::Started {
            ballot: read_ballot(r)?,
        },
        BEHIND => Control::Behind {
            ballot: read_ballot(r)?,
            upto: read_stamp(r)?,
        },
        MISSED => Control::Missed {
            ballot: read_ballot(r)?,
            after: read_stamp(r)?,
            writes: read_proposals(r)?,
            last: r.u8()? != 0,
        },
        STATE => {
            let ballot = read_ballot(r)?;
            let upto = read_stamp(r)?;
            let first = match r.u8()? {
                0 => None,
                1 => Some(read_head(r)?),
                _ => return Err(WireError::Malformed("snapshot head")),
            };
            let mut records = Vec::new();
            for _ in 0..r.count(37)? {
                let key = r.bytes()?.to_vec();
                let flags = r.u32()?;
                let expiry = match r.u64()? {
                    0 => Expiry::Never,
                    at => Expiry::At(at),
                };
                let value = r.bytes()?.to_vec();
                let cas = r.u64()?;
                let stored_at = r.u64()?;
                let referenced = r.u8()? != 0;
                records.push(Record {
                    key,
                    entry: Entry {
                        flags,
                        expiry,
                        value,
                    },
                    cas,
                    stored_at,
                    referenced,
                });
            }
            Control::State {
                ballot,
                upto,
                first,
                records,
                read_at: r.u64()?,
                last: r.u8()? != 0,
                total: r.u64()?,
            }
        }
        _ => return Err(WireError::Malformed("view change message")),
    })
}

/// An expiry as the wire carries it: 0 for never (an absolute time of 0
/// has passed anyway, so it is sent as 1).
fn put_head(out: &mut Vec<u8>, head: &Head) {
    let housekeeping = &head.housekeeping;
    put_optional(out, head.flush_at);
    put_optional(out, housekeeping.sweep_cursor);
    wire::put_u64(out, housekeeping.sweep_began);
    wire::put_u64(out, housekeeping.hand);
    wire::put_u64(out, housekeeping.last_reclaim);
}

fn read_head(r: &mut Reader<'_>) -> Result<Head, WireError> {
    Ok(Head {
        flush_at: read_optional(r)?,
        housekeeping: Housekeeping {
            sweep_cursor: read_optional(r)?,
            sweep_began: r.u64()?,
            hand: r.u64()?,
            last_reclaim: r.u64()?,
        },
    })
}

fn put_optional(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            wire::put_u64(out, value);
        }
    }
}

fn read_optional(r: &mut Reader<'_>) -> Result<Option<u64>, WireError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        _ => Err(WireError::Malformed("optional number")),
    }
}

fn expiry_code(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::At(at) => at.max(1),
    }
}

fn put_ballot(out: &mut Vec<u8>, ballot: Ballot) {
    wire::put_u64(out, ballot.round);
    wire::put_u32(out, ballot.coordinator);
}

fn read_ballot(r: &mut Reader<'_>) -> Result<Ballot, WireError> {
    Ok(Ballot {
        round: r.u64()?,
        coordinator: r.u32()?,
    })
}

fn put_stamp(out: &mut Vec<u8>, stamp: Stamp) {
    wire::put_u64(out, stamp.ts);
    wire::put_u32(out, stamp.node);
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp, WireError> {
    Ok(Stamp {
        ts: r.u64()?,
        node: r.u32()?,
    })
}

fn put_nodes(out: &mut Vec<u8>, nodes: &[NodeId]) {
    wire::put_u32(out, nodes.len() as u32);
    for &node in nodes {
        wire::put_u32(out, node);
    }
}

fn read_nodes(r: &mut Reader<'_>) -> Result<Vec<NodeId>, WireError> {
    let mut nodes = Vec::new();
    for _ in 0..r.count(4)? {
        nodes.push(r.u32()?);
    }
    Ok(nodes)
}

fn put_proposals(out: &mut Vec<u8>, proposals: &[Proposal]) {
    wire::put_u32(out, proposals.len() as u32);
    for proposal in proposals {
        put_stamp(out, proposal.stamp);
        wire::put_op(out, &proposal.op);
    }
}

fn read_proposals(r: &mut Reader<'_>) -> Result<Vec<Proposal>, WireError> {
    let mut proposals = Vec::new();
    for _ in 0..r.count(21)? {
        let stamp = read_stamp(r)?;
        proposals.push(Proposal { stamp, op: r.op()? });
    }
    Ok(proposals)
}
