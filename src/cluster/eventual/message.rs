//! What eventual mode's nodes say to each other: one [`Gossip`] per frame,
//! carrying pushed versions, a sync request, or the versions of a sync
//! answer and the mark that completes it (see the module doc of
//! [`super`] for what each means).

use std::sync::Arc;

use super::origins::{Cause, Coverage, Origin};
use super::version::{State, Version};
use crate::cluster::wire::{self, Reader, WireError};
use crate::cluster::Stamp;
use crate::store::{Entry, Expiry};

/// Everything new a node has for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gossip {
    /// The sender's Lamport clock.
    pub clock: u64,
    /// Versions pushed, then those sent in answer to a sync request.
    pub versions: Vec<Version>,
    /// How many of `versions`, from the first, are pushes.
    pub pushes: usize,
    /// "Send me every version you changed after this mark".
    pub sync_request: Option<SyncRequest>,
    /// The versions above complete the answer to the receiver's sync request.
    pub sync_complete: Option<SyncDone>,
    /// The sender's coverage when it collected the answer (`origins.rs`);
    /// the asker takes it with the answer's last part.
    pub coverage: Option<Coverage>,
    /// What the run of the receiver this frame goes to said it covers (in
    /// its last sync request): the pushes' dependencies it covers are left
    /// out on the wire, as its gate would find them held anyway. Not
    /// itself sent (a decoded frame has none).
    pub receiver_covers: Option<Arc<Coverage>>,
}

/// A sync request: "send me every change of yours after `since`". It also
/// says the asker holds every change of the answering node up to `held`
/// (`since` itself, unless a causal node asks for the rest of an answer it
/// keeps aside until the last part), and where its own change log ended
/// when it asked (`last`): the answering node counts the request as "it
/// holds every change of mine up to `held`", which lets tombstones go, only
/// once it has synced the asker's changes up to there (see the module doc
/// of [`super`]).
///
/// It carries the asker's coverage (`origins.rs`), as its store side last
/// reported it: the answer leaves out what the asker covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub since: ChangeMark,
    pub held: u64,
    pub last: u64,
    pub covered: Coverage,
    /// The asker's run: the answer is for that run only, as it leaves out
    /// what that run covers.
    pub run: u64,
}

/// What an answer to a sync request carried: every change of the sender's
/// run `upto.incarnation` after `since`, up to `upto.seq`. The asker takes
/// it only if it starts at or below where the asker is, so an answer to an
/// earlier run of the asker completes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDone {
    pub since: u64,
    pub upto: ChangeMark,
    /// The run of the asker the answer was collected for (its request's
    /// `run`): another run of it takes nothing from it.
    pub asked_by: u64,
    /// The sender's last change number when it answered: an answer that
    /// stops below it is a part, and the asker asks at once for the rest.
    pub last: u64,
}

impl SyncDone {
    /// Changes after `upto` were left for the next request (the answer
    /// reached its budget).
    pub fn is_part(&self) -> bool {
        self.upto.seq < self.last
    }
}

/// A position in one node's change log. Change numbers start over when a
/// node restarts, so a number means something only together with the run
/// (incarnation) of the node that counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMark {
    pub incarnation: u64,
    pub seq: u64,
}

impl wire::Message for Gossip {
    const PROTOCOL: &'static str = "eventual gossip v5";

    fn encode(&self, out: &mut Vec<u8>) {
        wire::put_u64(out, self.clock);
        wire::put_u32(out, self.versions.len() as u32);
        let mut deps = None;
        let covered = self.receiver_covers.as_deref();
        for version in &self.versions {
            put_version(out, version);
            put_cause(out, version.cause.as_ref(), &mut deps, covered);
        }
        wire::put_u32(out, self.pushes.min(self.versions.len()) as u32);
        match &self.sync_request {
            Some(request) => {
                out.push(1);
                put_mark(out, request.since);
                wire::put_u64(out, request.held);
                wire::put_u64(out, request.last);
                request.covered.encode(out);
                wire::put_u64(out, request.run);
            }
            None => out.push(0),
        }
        match self.sync_complete {
            Some(done) => {
                out.push(1);
                wire::put_u64(out, done.since);
                put_mark(out, done.upto);
                wire::put_u64(out, done.asked_by);
                wire::put_u64(out, done.last);
            }
            None => out.push(0),
        }
        match &self.coverage {
            Some(coverage) => {
                out.push(1);
                coverage.encode(out);
            }
            None => out.push(0),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Gossip, WireError> {
        let clock = r.u64()?;
        let mut versions = Vec::new();
        let mut deps = None;
        for _ in 0..r.count(18)? {
            let mut version = read_version(r)?;
            version.cause = read_cause(r, version.stamp.node, &mut deps)?;
            versions.push(version);
        }
        let pushes = r.u32()? as usize;
        if pushes > versions.len() {
            return Err(WireError::Malformed("more pushes than versions"));
        }
        let sync_request = match r.u8()? {
            0 => None,
            _ => Some(SyncRequest {
                since: read_mark(r)?,
                held: r.u64()?,
                last: r.u64()?,
                covered: Coverage::decode(r)?,
                run: r.u64()?,
            }),
        };
        let sync_complete = match r.u8()? {
            0 => None,
            _ => Some(SyncDone {
                since: r.u64()?,
                upto: read_mark(r)?,
                asked_by: r.u64()?,
                last: r.u64()?,
            }),
        };
        let coverage = match r.u8()? {
            0 => None,
            _ => Some(Coverage::decode(r)?),
        };
        Ok(Gossip {
            clock,
            versions,
            pushes,
            sync_request,
            sync_complete,
            coverage,
            receiver_covers: None,
        })
    }
}

const PRESENT: u8 = 0;
const DELETED: u8 = 1;
const FLUSHED: u8 = 2;

pub(super) fn put_version(out: &mut Vec<u8>, version: &Version) {
    wire::put_bytes(out, &version.key);
    wire::put_u64(out, version.stamp.ts);
    wire::put_u32(out, version.stamp.node);
    match &version.state {
        State::Present(item) => {
            out.push(PRESENT);
            wire::put_u32(out, item.flags);
            wire::put_u64(
                out,
                match item.expiry {
                    Expiry::Never => 0,
                    Expiry::At(at) => at.max(1),
                },
            );
            wire::put_bytes(out, &item.value);
        }
        State::Deleted => out.push(DELETED),
        State::Flushed => out.push(FLUSHED),
    }
}

pub(super) fn read_version(r: &mut Reader<'_>) -> Result<Version, WireError> {
    let key = r.bytes()?.to_vec();
    let stamp = Stamp {
        ts: r.u64()?,
        node: r.u32()?,
    };
    let state = match r.u8()? {
        PRESENT => State::Present(Entry {
            flags: r.u32()?,
            expiry: match r.u64()? {
                0 => Expiry::Never,
                at => Expiry::At(at),
            },
            value: r.bytes()?.to_vec(),
        }),
        DELETED => State::Deleted,
        FLUSHED => State::Flushed,
        _ => return Err(WireError::Malformed("version state")),
    };
    Ok(Version {
        key,
        stamp,
        state,
        cause: None,
    })
}

const NO_CAUSE: u8 = 0;
const CAUSE: u8 = 1;
/// A cause whose dependencies are the previous dependencies in the frame:
/// the writes an origin makes between two changes of its coverage share them.
const CAUSE_SAME_DEPS: u8 = 2;
/// A cause without dependencies: eventual mode, or a sync answer's version.
const CAUSE_NO_DEPS: u8 = 3;

/// A version's cause (its origin's node is the stamp's), its dependencies
/// written out only when they differ from the previous ones in the frame,
/// and without those the receiver is known to cover (`covered`: the same
/// for the whole frame, so equal dependencies still write out alike).
fn put_cause<'a>(
    out: &mut Vec<u8>,
    cause: Option<&'a Cause>,
    previous: &mut Option<&'a Arc<Coverage>>,
    covered: Option<&Coverage>,
) {
    let Some(cause) = cause else {
        out.push(NO_CAUSE);
        return;
    };
    let same = match (&cause.deps, *previous) {
        (Some(deps), Some(before)) => Arc::ptr_eq(deps, before) || deps == before,
        _ => false,
    };
    let kind = match &cause.deps {
        None => CAUSE_NO_DEPS,
        Some(_) if same => CAUSE_SAME_DEPS,
        Some(_) => CAUSE,
    };
    out.push(kind);
    wire::put_u64(out, cause.origin.run);
    wire::put_u64(out, cause.seq);
    if let (CAUSE, Some(deps)) = (kind, &cause.deps) {
        match covered {
            Some(covered) => deps.encode_beyond(covered, out),
            None => deps.encode(out),
        }
        *previous = Some(deps);
    }
}

fn read_cause(
    r: &mut Reader<'_>,
    node: u32,
    previous: &mut Option<Arc<Coverage>>,
) -> Result<Option<Cause>, WireError> {
    let kind = r.u8()?;
    if kind == NO_CAUSE {
        return Ok(None);
    }
    let origin = Origin {
        node,
        run: r.u64()?,
    };
    let seq = r.u64()?;
    let deps = match kind {
        CAUSE => {
            let decoded = Arc::new(Coverage::decode(r)?);
            *previous = Some(decoded.clone());
            Some(decoded)
        }
        CAUSE_SAME_DEPS => Some(previous.clone().ok_or(WireError::Malformed(
            "a cause shares the dependencies of none",
        ))?),
        CAUSE_NO_DEPS => None,
        _ => return Err(WireError::Malformed("version cause")),
    };
    Ok(Some(Cause { origin, seq, deps }))
}

fn put_mark(out: &mut Vec<u8>, mark: ChangeMark) {
    wire::put_u64(out, mark.incarnation);
    wire::put_u64(out, mark.seq);
}

fn read_mark(r: &mut Reader<'_>) -> Result<ChangeMark, WireError> {
    Ok(ChangeMark {
        incarnation: r.u64()?,
        seq: r.u64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::Message;

    fn origin(node: u32) -> Origin {
        Origin { node, run: 1 }
    }

    fn push(seq: u64, deps: &Arc<Coverage>) -> Version {
        Version {
            key: format!("k{seq}").into_bytes(),
            stamp: Stamp { ts: seq, node: 1 },
            state: State::Deleted,
            cause: Some(Cause {
                origin: origin(1),
                seq,
                deps: Some(Arc::clone(deps)),
            }),
        }
    }

    fn round_trip(gossip: &Gossip) -> (Gossip, usize) {
        let mut bytes = Vec::new();
        gossip.encode(&mut bytes);
        let decoded = Gossip::decode(&mut Reader::new(&bytes)).unwrap();
        (decoded, bytes.len())
    }

    /// Dependencies the receiver covers are left out on the wire; those
    /// above what it covers go as they are, and pushes that shared theirs
    /// still share them.
    #[test]
    fn a_receivers_covered_dependencies_are_left_out() {
        let deps = Arc::new(Coverage::from_entries(vec![
            (origin(2), 7),
            (origin(3), 4),
            (origin(4), 9),
        ]));
        let mut gossip = Gossip {
            versions: vec![push(1, &deps), push(2, &deps)],
            pushes: 2,
            ..Gossip::default()
        };
        let (whole, whole_len) = round_trip(&gossip);
        assert_eq!(whole.versions, gossip.versions);
        gossip.receiver_covers = Some(Arc::new(Coverage::from_entries(vec![
            (origin(2), 7),
            (origin(3), 3),
            (origin(5), 50),
        ])));
        let (trimmed, trimmed_len) = round_trip(&gossip);
        let beyond = Coverage::from_entries(vec![(origin(3), 4), (origin(4), 9)]);
        for version in &trimmed.versions {
            let deps = version.cause.as_ref().and_then(|c| c.deps.as_deref());
            assert_eq!(deps, Some(&beyond));
        }
        // One entry of 20 bytes fewer, written out once for both pushes.
        assert_eq!(whole_len - trimmed_len, 20);
        assert!(trimmed.receiver_covers.is_none(), "not itself sent");
    }
}
