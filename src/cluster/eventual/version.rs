//! Eventual mode's unit of replication: a key's latest state and the stamp
//! of the write that made it. Replicas keep, per key, the version with the
//! highest stamp (last writer wins; stamps are unique, so there are no ties).
//!
//! Part of eventual mode (`cluster/eventual/`): the engine sends versions to
//! peers, the [`super::version_log::VersionLog`] records and applies them, and
//! a present version carries the store's [`Entry`], exactly as the store
//! exports and imports it.

use super::origins::Cause;
use crate::cluster::Stamp;
use crate::protocol::Key;
use crate::store::Entry;

/// What a version says about its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Present(Entry),
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
    /// Who wrote it (`origins.rs`), and on a causal node's push what it
    /// depends on; none for a version whose origin the log does not know.
    pub cause: Option<Cause>,
}

impl Version {
    /// About how many bytes the version takes in a frame.
    pub fn approximate_len(&self) -> usize {
        let value = match &self.state {
            State::Present(item) => item.value.len(),
            State::Deleted | State::Flushed => 0,
        };
        // Its origin's run and number, and the dependencies a push carries.
        let cause = self.cause.as_ref().map_or(0, |c| {
            CAUSE_LEN + c.deps.as_ref().map_or(0, |d| d.wire_len())
        });
        approximate_len(self.key.len(), value) + cause
    }
}

/// Bytes of a version's origin run and number on the wire.
const CAUSE_LEN: usize = 17;

/// About how many bytes a version with a `key_len`-byte key and a
/// `value_len`-byte value takes in a frame: its key and value, and a little
/// for the stamp, state, flags, expiry and lengths.
pub fn approximate_len(key_len: usize, value_len: usize) -> usize {
    const REST: usize = 40;
    REST + key_len + value_len
}
