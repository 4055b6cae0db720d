//! Eventual mode's bookkeeping beside the store, on the backend worker: the
//! stamp of every key's current version, tombstones, and a change log in
//! local order, so a peer's `sync request <since>` is answered with only the
//! keys that changed since `since` (the cost follows the changes, not the
//! store's size).
//!
//! ```text
//!  local write ──► store ──► record (stamp, seq) ──► Version pushed to peers
//!  remote Version ──► newer than what we hold? ──► import into store, record
//!  sync request since s ──► changes after s ──► current Versions + complete(seq)
//! ```

use std::collections::{BTreeMap, HashMap};

use super::{Store, UnixTime};
use crate::cluster::version::{State, Version};
use crate::cluster::Stamp;
use crate::protocol::Key;

#[derive(Debug, Clone, Copy)]
struct Known {
    stamp: Stamp,
    seq: u64,
    deleted: bool,
}

/// The versions a replica holds, and the order they changed in.
#[derive(Debug, Default)]
pub struct VersionLog {
    known: HashMap<Key, Known>,
    /// Local sequence number of each key's latest change.
    changes: BTreeMap<u64, Key>,
    last_seq: u64,
    /// The newest `flush_all`: versions stamped below it are gone.
    flushed: Option<(Stamp, u64)>,
}

impl VersionLog {
    pub fn new() -> VersionLog {
        VersionLog::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    fn note(&mut self, key: &[u8], stamp: Stamp, deleted: bool) {
        let seq = self.next_seq();
        if let Some(old) = self.known.insert(
            key.to_vec(),
            Known {
                stamp,
                seq,
                deleted,
            },
        ) {
            self.changes.remove(&old.seq);
        }
        self.changes.insert(seq, key.to_vec());
    }

    fn is_flushed(&self, stamp: Stamp) -> bool {
        self.flushed.is_some_and(|(f, _)| stamp < f)
    }

    /// Records what a local write stamped `stamp` left under `key`, and
    /// returns it as the version to push.
    pub fn record_local(
        &mut self,
        store: &mut dyn Store,
        key: &[u8],
        stamp: Stamp,
        now: UnixTime,
    ) -> Version {
        let state = match store.export(key, now) {
            Ok(Some(item)) => State::Present(item),
            Ok(None) => State::Deleted,
            Err(e) => {
                log::error!("cannot read back a local write for replication: {e:?}");
                State::Deleted
            }
        };
        self.note(key, stamp, state == State::Deleted);
        Version {
            key: key.to_vec(),
            stamp,
            state,
        }
    }

    /// Records a local `flush_all` stamped `stamp` (the store already did it).
    pub fn record_flush(&mut self, stamp: Stamp) -> Version {
        self.apply_flush(stamp);
        Version {
            key: Vec::new(),
            stamp,
            state: State::Flushed,
        }
    }

    fn apply_flush(&mut self, stamp: Stamp) -> Vec<Key> {
        let seq = self.next_seq();
        if let Some((_, old_seq)) = self.flushed.replace((stamp, seq)) {
            self.changes.remove(&old_seq);
        }
        self.changes.insert(seq, Vec::new());
        let dead: Vec<Key> = self
            .known
            .iter()
            .filter(|(_, k)| k.stamp < stamp)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &dead {
            if let Some(old) = self.known.remove(key) {
                self.changes.remove(&old.seq);
            }
        }
        dead
    }

    /// Applies a peer's version if it is newer than what this replica holds
    /// (last writer wins). Returns whether it changed anything.
    pub fn apply_remote(
        &mut self,
        store: &mut dyn Store,
        version: &Version,
        now: UnixTime,
    ) -> bool {
        if self.is_flushed(version.stamp) {
            return false;
        }
        if version.state == State::Flushed {
            if self.flushed.is_some_and(|(held, _)| version.stamp <= held) {
                return false; // the same flush again, or an older one
            }
            for key in self.apply_flush(version.stamp) {
                let _ = store.delete(&key, now);
            }
            return true;
        }
        if self
            .known
            .get(&version.key)
            .is_some_and(|k| k.stamp >= version.stamp)
        {
            return false;
        }
        let item = match &version.state {
            State::Present(item) => Some(item),
            _ => None,
        };
        if let Err(e) = store.import(&version.key, item, version.stamp.cas_unique(), now) {
            log::warn!("cannot keep a replicated version: {e:?}");
            return false;
        }
        self.note(&version.key, version.stamp, item.is_none());
        true
    }

    /// Every change after `since`, as current versions, and the sequence
    /// number they bring the asker up to.
    pub fn since(&self, store: &mut dyn Store, since: u64, now: UnixTime) -> (Vec<Version>, u64) {
        let mut versions = Vec::new();
        for (_, key) in self.changes.range(since + 1..) {
            if key.is_empty() {
                if let Some((stamp, _)) = self.flushed {
                    versions.push(Version {
                        key: Vec::new(),
                        stamp,
                        state: State::Flushed,
                    });
                }
                continue;
            }
            let Some(known) = self.known.get(key) else {
                continue;
            };
            let state = match (known.deleted, store.export(key, now)) {
                (false, Ok(Some(item))) => State::Present(item),
                _ => State::Deleted,
            };
            versions.push(Version {
                key: key.clone(),
                stamp: known.stamp,
                state,
            });
        }
        (versions, self.last_seq)
    }

    /// Forgets tombstones every peer has synced past (changed at or below `synced`).
    pub fn forget_tombstones(&mut self, synced: u64) {
        let dead: Vec<(u64, Key)> = self
            .changes
            .range(..=synced)
            .filter(|(_, key)| self.known.get(*key).is_some_and(|k| k.deleted))
            .map(|(seq, key)| (*seq, key.clone()))
            .collect();
        for (seq, key) in dead {
            self.changes.remove(&seq);
            self.known.remove(&key);
        }
    }

    /// Keys with a version (tombstones included), for tests and stats.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The stamp of `key`'s current version.
    pub fn stamp(&self, key: &[u8]) -> Option<Stamp> {
        self.known.get(key).map(|k| k.stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::version::Item;
    use crate::protocol::Limits;
    use crate::store::memory::MemoryStore;
    use crate::store::Expiry;

    const NOW: UnixTime = 1_700_000_000;

    fn stamp(ts: u64, node: u32) -> Stamp {
        Stamp { ts, node }
    }

    fn put(key: &str, ts: u64, node: u32, value: &str) -> Version {
        Version {
            key: key.as_bytes().to_vec(),
            stamp: stamp(ts, node),
            state: State::Present(Item {
                flags: 0,
                expiry: Expiry::Never,
                value: value.as_bytes().to_vec(),
            }),
        }
    }

    fn value(store: &mut MemoryStore, key: &str) -> Option<Vec<u8>> {
        store.export(key.as_bytes(), NOW).unwrap().map(|i| i.value)
    }

    fn store() -> MemoryStore {
        MemoryStore::new(1 << 20, Limits::default())
    }

    #[test]
    fn the_highest_stamp_wins_in_any_order() {
        let versions = [
            put("k", 5, 1, "b"),
            put("k", 3, 2, "a"),
            put("k", 5, 2, "c"),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let (mut s, mut log) = (store(), VersionLog::new());
            for i in order {
                log.apply_remote(&mut s, &versions[i], NOW);
            }
            assert_eq!(value(&mut s, "k"), Some(b"c".to_vec()));
            assert_eq!(log.stamp(b"k"), Some(stamp(5, 2)));
        }
    }

    #[test]
    fn tombstones_beat_older_writes_and_lose_to_newer_ones() {
        let (mut s, mut log) = (store(), VersionLog::new());
        let delete = Version {
            key: b"k".to_vec(),
            stamp: stamp(4, 0),
            state: State::Deleted,
        };
        assert!(log.apply_remote(&mut s, &delete, NOW));
        assert!(!log.apply_remote(&mut s, &put("k", 3, 1, "old"), NOW));
        assert_eq!(value(&mut s, "k"), None);
        assert!(log.apply_remote(&mut s, &put("k", 6, 1, "new"), NOW));
        assert_eq!(value(&mut s, "k"), Some(b"new".to_vec()));
    }

    #[test]
    fn flush_removes_what_is_older_and_refuses_late_old_writes() {
        let (mut s, mut log) = (store(), VersionLog::new());
        log.apply_remote(&mut s, &put("a", 1, 0, "x"), NOW);
        log.apply_remote(&mut s, &put("b", 9, 0, "y"), NOW);
        let flush = Version {
            key: Vec::new(),
            stamp: stamp(5, 1),
            state: State::Flushed,
        };
        log.apply_remote(&mut s, &flush, NOW);
        assert_eq!(value(&mut s, "a"), None);
        assert_eq!(value(&mut s, "b"), Some(b"y".to_vec()));
        assert!(!log.apply_remote(&mut s, &put("c", 2, 2, "late"), NOW));
        assert_eq!(value(&mut s, "c"), None);
    }

    #[test]
    fn since_returns_only_what_changed() {
        let (mut s, mut log) = (store(), VersionLog::new());
        for i in 0..100 {
            log.apply_remote(&mut s, &put(&format!("k{i}"), 1, 0, "v"), NOW);
        }
        let (all, upto) = log.since(&mut s, 0, NOW);
        assert_eq!((all.len(), upto), (100, 100));
        log.apply_remote(&mut s, &put("k7", 2, 0, "w"), NOW);
        let (changed, upto) = log.since(&mut s, upto, NOW);
        assert_eq!(changed, vec![put("k7", 2, 0, "w")]);
        assert_eq!(upto, 101);
    }

    #[test]
    fn tombstones_are_forgotten_only_once_synced_past() {
        let (mut s, mut log) = (store(), VersionLog::new());
        log.apply_remote(&mut s, &put("k", 1, 0, "v"), NOW);
        let delete = Version {
            key: b"k".to_vec(),
            stamp: stamp(2, 0),
            state: State::Deleted,
        };
        log.apply_remote(&mut s, &delete, NOW);
        log.forget_tombstones(1);
        assert_eq!(log.len(), 1, "the tombstone (seq 2) is not synced past yet");
        log.forget_tombstones(2);
        assert!(log.is_empty());
    }
}
