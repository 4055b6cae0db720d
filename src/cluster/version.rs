//! Eventual mode's unit of replication: a key's latest state and the stamp
//! of the write that made it. Replicas keep, per key, the version with the
//! highest stamp (last writer wins; stamps are unique, so there are no ties).

use super::Stamp;
use crate::protocol::Key;
use crate::store::Expiry;

/// A stored value as replicas exchange it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub flags: u32,
    pub expiry: Expiry,
    pub value: Vec<u8>,
}

/// What a version says about its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Present(Item),
    /// Deleted: a tombstone, kept until every peer has synced past it.
    Deleted,
    /// `flush_all`: every version of every key stamped below this one is gone.
    /// Its key is empty (memcached keys never are).
    Flushed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: Key,
    pub stamp: Stamp,
    pub state: State,
}
