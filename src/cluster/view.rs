//! Membership: a [`View`] is an epoch and the members that take part in it.
//! This version has one view, epoch 0 with every configured node; the
//! epoch is there so views can change under crashes without a new format.

use super::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
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
