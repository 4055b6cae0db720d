//! Membership of a strong-mode view: a [`View`] is a ballot and the members
//! that take part in it. Ballots order views: at most one view forms per
//! ballot, because only its coordinator proposes it (see
//! [`crate::cluster::total_order`] for how a view forms).

use super::NodeId;

/// A view's number: the round, then the coordinator that proposed it, so
/// two nodes proposing in the same round never propose the same ballot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    pub round: u64,
    pub coordinator: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The ballot's round: what `show` and `stats` call the epoch.
    pub epoch: u64,
    /// Sorted, without duplicates.
    pub members: Vec<NodeId>,
}

impl View {
    pub fn new(epoch: u64, mut members: Vec<NodeId>) -> View {
        members.sort_unstable();
        members.dedup();
        View { epoch, members }
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.members.binary_search(&node).is_ok()
    }

    /// The members other than `me`.
    pub fn others(&self, me: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().copied().filter(move |&m| m != me)
    }
}
