//! Causal mode's sync answers in parts, as the store side keeps them until
//! the last part comes: a causal node applies an answer whole, in one step
//! no read sees the middle of (`origins.rs` has why).
//!
//! An answer is kept one of two ways ([`Asides`], one per answering peer):
//!
//! - **Staged**: each part is applied as it comes to a store and a version
//!   log of their own, out of sight. With the last part, what the replica
//!   applied meanwhile (clients' writes, peers' pushes: few, or the answer
//!   is kept instead) is applied to them too, and they take the replica's
//!   place. A node that restarted empty takes its first answer, the whole
//!   store, this way: as items, applied a part at a time, where keeping the
//!   versions cost it over twice the store's memory and a pause of about
//!   1.4 s a million keys while the replica applied them at once.
//! - **Kept**: the versions as they came, applied whole with the last part
//!   (the replica holds much already, its store cannot make another of
//!   itself, it has a data directory, or another answer is staged).
//!
//! Why the swap is the whole answer applied at once. Applying versions
//! keeps each key's highest stamp (and a flush removes what is stamped
//! below it): the result depends on the set of versions applied, not on
//! their order (`mod.rs`, "Why replicas converge"). The staged store ends
//! with the answer and then every version the replica held: the same set
//! as the replica's store after it applied the whole answer. Until the
//! swap, every read, write and answer to a peer uses the replica's own
//! store and log, which hold nothing of the answer; the swap is one step
//! of the store side, between two works.
//!
//! Two things wait for the swap. The staged log's changes are numbered anew
//! above the replica's last ([`VersionLog::renumber_after`]): peers have
//! synced the replica's changes up to some number, and every change of the
//! staged log must be news to them, as each version applied at once would
//! have been. And the deletes staging makes (of what its store evicts, or
//! cannot keep) are published only after it: numbered before, they would
//! count as applied here while out of sight, and a peer's write that read
//! one could pass the gate ahead of it.

use std::collections::BTreeMap;

use super::version::Version;
use super::version_log::VersionLog;
use crate::cluster::{NodeId, Stamp};
use crate::store::{StoreError, UnixTime, VersionedStore};

/// A part of a sync answer in parts (`Work::ApplyVersions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerPart {
    /// The answer it is a part of: the answering node's run, and the change
    /// number it started after.
    pub run: u64,
    pub since: u64,
    /// The answer is whole with it.
    pub last: bool,
}

/// The most versions the replica may hold for an answer to be staged: the
/// swap applies them all to the staged store in one step.
pub const STAGED_BESIDE: usize = 1 << 16;

/// The answers in parts the store side keeps, by answering peer.
#[derive(Debug, Default)]
pub struct Asides {
    by_peer: BTreeMap<NodeId, Aside>,
}

#[derive(Debug)]
struct Aside {
    run: u64,
    since: u64,
    /// Every part so far was taken (none came while the replica could not).
    whole: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Staged(Box<Staged>),
    Kept(Vec<Version>),
}

/// What the last part of an answer leaves to apply.
pub enum Whole {
    /// The answer, to apply at once.
    Kept(Vec<Version>),
    /// The staged store and log, to take the replica's place.
    Staged(Box<Staged>),
    /// Nothing: a part was not taken, or the staged store did not keep
    /// all of it. What was staged is dropped unseen; the answer is asked
    /// for again.
    Lost,
}

/// An answer applied out of sight: see the module doc.
pub struct Staged {
    pub store: Box<dyn VersionedStore>,
    pub log: VersionLog,
    /// Deletes it made, published once it takes the replica's place.
    pub deletes: Vec<Version>,
    /// Whether its store kept every version applied to it.
    pub all_kept: bool,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("log", &self.log.len())
            .field("deletes", &self.deletes.len())
            .field("all_kept", &self.all_kept)
            .finish()
    }
}

impl Staged {
    /// Applies `versions` out of sight, as the replica would: what its
    /// store cannot keep, and what it evicts for them, becomes a delete
    /// stamped `stamp` (causal mode's way: `origins.rs`).
    pub fn apply(&mut self, versions: &[Version], stamp: Stamp, now: UnixTime) {
        let store = self.store.as_mut();
        for version in versions {
            let unkept = match self.log.apply_remote(store, version, now) {
                Ok(_) => continue,
                Err(StoreError::Refused(_) | StoreError::OutOfMemory) => {
                    self.log.record_unkept(store, version, stamp, now)
                }
                Err(e) => Err(e),
            };
            match unkept {
                Ok(deleted) => self.deletes.extend(deleted),
                Err(e) => {
                    log::warn!("cannot stage a version of an answer: {e:?}");
                    self.all_kept = false;
                }
            }
        }
        for key in store.take_evicted() {
            match self.log.record_eviction(store, &key, stamp, now) {
                Ok(deleted) => self.deletes.extend(deleted),
                Err(e) => log::warn!("cannot record a staged eviction: {e:?}"),
            }
        }
    }
}

impl Asides {
    /// Takes a part of peer `from`'s answer (`None`: a part the replica
    /// could not take, which spoils the answer): staged (in `store`, when
    /// given one, no other answer is, and it is not the answer's only part)
    /// or kept. Returns what the answer leaves to apply once `part` is its
    /// last. A part of another answer than the one kept for `from` (of its
    /// earlier run, or one it gave up) drops that one.
    pub fn take(
        &mut self,
        from: NodeId,
        part: AnswerPart,
        versions: Option<Vec<Version>>,
        store: impl FnOnce() -> Option<Box<dyn VersionedStore>>,
        (stamp, now): (Stamp, UnixTime),
    ) -> Option<Whole> {
        let stale = |a: &Aside| a.run != part.run || a.since != part.since;
        if self.by_peer.get(&from).is_some_and(stale) {
            self.by_peer.remove(&from);
        }
        if !self.by_peer.contains_key(&from) {
            // An answer whole in its first part is applied at once, as any.
            let staging = !part.last && !self.is_staging();
            let kind = match staging.then(store).flatten() {
                Some(store) => Kind::Staged(Box::new(Staged {
                    store,
                    log: VersionLog::new(),
                    deletes: Vec::new(),
                    all_kept: true,
                })),
                None => Kind::Kept(Vec::new()),
            };
            let aside = Aside {
                run: part.run,
                since: part.since,
                whole: true,
                kind,
            };
            self.by_peer.insert(from, aside);
        }
        let aside = self.by_peer.get_mut(&from)?;
        match (versions, &mut aside.kind) {
            (None, _) => aside.whole = false,
            (Some(versions), Kind::Staged(staged)) => staged.apply(&versions, stamp, now),
            (Some(versions), Kind::Kept(kept)) => kept.extend(versions),
        }
        if !part.last {
            return None;
        }
        let aside = self.by_peer.remove(&from)?;
        Some(match aside.kind {
            _ if !aside.whole => Whole::Lost,
            Kind::Staged(staged) if staged.all_kept => Whole::Staged(staged),
            Kind::Staged(_) => Whole::Lost,
            Kind::Kept(kept) => Whole::Kept(whole(kept)),
        })
    }

    fn is_staging(&self) -> bool {
        (self.by_peer.values()).any(|a| matches!(a.kind, Kind::Staged(_)))
    }

    /// Heap bytes of the staged logs, to count beside the replica's.
    pub fn heap_bytes(&self) -> u64 {
        let staged = self.by_peer.values().filter_map(|a| match &a.kind {
            Kind::Staged(staged) => Some(staged.log.heap_bytes()),
            Kind::Kept(_) => None,
        });
        staged.sum()
    }
}

/// The versions of an answer kept as they came, whole: the highest-stamped
/// version of each key (the store would keep that one), in key order, so a
/// run depends on its inputs alone. Sorted once, at the end: a map kept as
/// the parts came held every key twice, and its nodes.
fn whole(mut versions: Vec<Version>) -> Vec<Version> {
    versions.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(b.stamp.cmp(&a.stamp)));
    versions.dedup_by(|later, first| later.key == first.key);
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::version::State;
    use crate::protocol::Limits;
    use crate::store::memory::MemoryStore;

    const NOW: UnixTime = 1_700_000_000;
    const STAMP: Stamp = Stamp { ts: 100, node: 1 };

    fn gone(key: &str, ts: u64) -> Version {
        Version {
            key: key.as_bytes().to_vec(),
            stamp: Stamp { ts, node: 2 },
            state: State::Deleted,
            cause: None,
        }
    }

    fn part(last: bool) -> AnswerPart {
        AnswerPart {
            run: 20,
            since: 0,
            last,
        }
    }

    fn store() -> Option<Box<dyn VersionedStore>> {
        Some(Box::new(MemoryStore::new(1 << 20, Limits::default())))
    }

    fn no_store() -> Option<Box<dyn VersionedStore>> {
        None
    }

    /// A part not taken (it came while the replica could not apply it)
    /// loses the whole answer, staged or kept, though the rest came.
    #[test]
    fn a_part_not_taken_loses_its_answer() {
        for stores in [store, no_store] {
            let mut asides = Asides::default();
            let parts = [
                (false, Some(vec![gone("a", 1)])),
                (false, None),
                (true, Some(vec![])),
            ];
            let mut left = None;
            for (last, versions) in parts {
                left = asides.take(2, part(last), versions, stores, (STAMP, NOW));
            }
            assert!(matches!(left, Some(Whole::Lost)));
            assert_eq!(asides.heap_bytes(), 0, "nothing kept");
        }
    }

    /// Kept parts come back as each key's newest version, in key order; a
    /// part of another answer of the same peer drops the earlier one.
    #[test]
    fn kept_parts_come_back_newest_first_and_a_new_answer_drops_the_old() {
        let mut asides = Asides::default();
        let take = |asides: &mut Asides, p, versions| {
            asides.take(2, p, Some(versions), no_store, (STAMP, NOW))
        };
        take(&mut asides, part(false), vec![gone("stale", 1)]);
        let newer_run = AnswerPart {
            run: 21,
            ..part(false)
        };
        take(&mut asides, newer_run, vec![gone("b", 5), gone("a", 1)]);
        let last = AnswerPart {
            last: true,
            ..newer_run
        };
        let Some(Whole::Kept(whole)) = take(&mut asides, last, vec![gone("a", 7), gone("b", 3)])
        else {
            panic!("a kept answer");
        };
        assert_eq!(whole, [gone("a", 7), gone("b", 5)]);
    }
}
