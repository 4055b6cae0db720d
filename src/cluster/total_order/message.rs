//! What the strong modes' nodes say to each other: one [`Broadcast`] per
//! frame, carrying, coalesced, everything the sender has for that peer
//! since its last frame: its clock, its cumulative acknowledgements and its
//! new proposals. A broadcast with nothing new is a heartbeat.

use std::sync::Arc;

use crate::cluster::message::Op;
use crate::cluster::wire::{self, Reader, WireError};
use crate::cluster::{NodeId, Stamp};

/// An operation stamped by its origin (`stamp.node`). The op is shared:
/// one proposal goes to every peer and into the local queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub stamp: Stamp,
    pub op: Arc<Op>,
}

/// Everything new a node has for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// The sender's Lamport clock: it will never stamp at or below this.
    pub clock: u64,
    /// `(origin, ts)`: the sender holds every proposal of `origin` up to `ts`.
    pub acks: Vec<(NodeId, u64)>,
    /// The sender's own new proposals, in stamp order.
    pub proposals: Vec<Proposal>,
}

impl wire::Message for Broadcast {
    const PROTOCOL: &'static str = "total-order broadcast";

    fn encode(&self, out: &mut Vec<u8>) {
        wire::put_u64(out, self.clock);
        wire::put_u32(out, self.acks.len() as u32);
        for &(origin, ts) in &self.acks {
            wire::put_u32(out, origin);
            wire::put_u64(out, ts);
        }
        wire::put_u32(out, self.proposals.len() as u32);
        for proposal in &self.proposals {
            wire::put_u64(out, proposal.stamp.ts);
            wire::put_u32(out, proposal.stamp.node);
            wire::put_op(out, &proposal.op);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Broadcast, WireError> {
        let clock = r.u64()?;
        let mut acks = Vec::new();
        for _ in 0..r.count(12)? {
            acks.push((r.u32()?, r.u64()?));
        }
        let mut proposals = Vec::new();
        for _ in 0..r.count(21)? {
            let stamp = Stamp {
                ts: r.u64()?,
                node: r.u32()?,
            };
            proposals.push(Proposal { stamp, op: r.op()? });
        }
        Ok(Broadcast {
            clock,
            acks,
            proposals,
        })
    }
}
