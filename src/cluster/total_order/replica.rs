//! The strong modes' store side: apply each delivered operation, in
//! delivery order, with the cas unique its stamp gives, and reply to the
//! client if the operation was this node's.

use std::convert::Infallible;
use std::sync::Arc;

use crate::cluster::engine::{Done, Replica, ReplyTo};
use crate::cluster::message::Op;
use crate::store::Executor;

/// Apply `op` to the local store with `cas` as the unique of anything it
/// writes; reply to `reply_to` if set (`None` for another node's write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    pub op: Arc<Op>,
    pub cas: u64,
    pub reply_to: Option<ReplyTo>,
}

#[derive(Debug, Default)]
pub struct TotalOrderReplica;

impl Replica for TotalOrderReplica {
    type Work = Apply;
    /// The engine needs no report back: delivery order is decided before.
    type Done = Infallible;

    fn perform(
        &mut self,
        work: Apply,
        executor: &mut Executor,
        emit: &mut impl FnMut(Done<Infallible>),
    ) {
        let (reply, _) = executor.execute(&work.op.request, work.op.now, work.cas);
        match work.reply_to {
            Some(to) => emit(Done::Reply { to, reply }),
            // Another node's write: its buffer serves the next reply.
            None => executor.keep(reply),
        }
    }
}
