//! What a reply of a durable store shows, as a log position: where the
//! last record of each key it names ends, and where the last `flush_all`'s
//! does. The reactor holds the reply until the log is written (`everysec`,
//! `no`) or fsynced (`always`) that far, and no further: a `get` of a key
//! no pending record touches leaves at once, however many other keys'
//! writes wait for the disk.
//!
//! Why that is enough for "nobody sees a value a crash could take back":
//! every command of a one-node store reads or changes only the keys it
//! names (`store/execute.rs`: retrieval, storage, delete, touch, arith,
//! and a `flush_all`, which names every key), and a record is a key's
//! whole state after a change (`store.rs`). So what a reply shows of a key
//! is the state the key's last record before the reply left it, or the
//! state the store recovered with if it has none since. A crash that keeps
//! the log up to the reply's position replays every record that ends at or
//! below it, among them the last of each key named and the last
//! `flush_all`, and no record of those keys made after the reply (their
//! records end above the position only if made later, and the reply did
//! not show those). The replay gives each named key back as the reply
//! showed it. What else a command changes is logged under its own key:
//! the keys a write evicts (a `Remove` each), which are recorded here as
//! well, so a `get` that misses an evicted key waits for its removal.
//! What a store drops with no record (an item expired, or killed by a
//! logged delayed `flush_all`, met by a lookup or the sweep) is dead by
//! times the log holds, and a replay finds it as dead.
//!
//! An eventual or causal node's journal notes the versions it logs in the
//! same table, and its reads wait the same way (the argument for its log of
//! versions is point 1 of `cluster/eventual/journal.rs`).
//!
//! A strong cluster's node logs calls, each delivered write's followed by
//! a mark, and a recovery keeps what precedes its last whole mark: a
//! prefix of the one sequence of writes (`store.rs`, "Marks"). So a change
//! counts from the end of the mark after it ([`Shown::changed`],
//! [`Shown::marked`]). A key's state there follows from the writes that
//! named it, the writes that evicted it (the ordered store reports those
//! to the call that made them, as above), flushes and a peer's snapshot
//! installed (every key), and its expiry: a read, served at once or at its
//! place in the order, changes nothing in an ordered store. A recovery up
//! to the mark after the last of those gives it back as the read showed
//! it: the writes after that mark, up to the read, left it alone, and a
//! replay of them would too. A write's reply waits for its own mark, which
//! ends after everything appended before it, as before positions were
//! noted. Replies made before an install's mark (its records dropped by a
//! recovery until then) wait for the whole log, as they did.
//!
//! Keys are noted by a hash into a fixed table of positions, each the
//! highest end of the keys hashing there: two keys in one place make a
//! reply wait for the other's record too, which is only later, never
//! wrong. `tests` replays the log cut at each reply's position and
//! compares.

/// Places in the table: 128 KiB of positions, so that the few thousand
/// records a loop iteration leaves pending rarely share one.
const PLACES: usize = 1 << 14;

pub struct Shown {
    /// The end of the last record of the keys hashing to each place.
    ends: Box<[u64]>,
    hasher: ahash::RandomState,
    /// The end of the last `flush_all`'s record: every key's state follows
    /// from it.
    flushed: u64,
    /// The highest end the replies made since the last take show.
    shown: u64,
    /// A marked log's: the places of the keys changed since the last mark,
    /// and whether every key was (a flush, a reset), noted at the next.
    pending: Vec<usize>,
    pending_all: bool,
}

impl Default for Shown {
    fn default() -> Shown {
        Shown {
            ends: vec![0; PLACES].into_boxed_slice(),
            hasher: ahash::RandomState::new(),
            flushed: 0,
            shown: 0,
            pending: Vec::new(),
            pending_all: false,
        }
    }
}

impl Shown {
    pub fn new() -> Shown {
        Shown::default()
    }

    fn place(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % self.ends.len()
    }

    /// A record of `key` ends at log position `end`.
    pub fn wrote(&mut self, key: &[u8], end: u64) {
        let place = self.place(key);
        self.ends[place] = self.ends[place].max(end);
    }

    /// A marked log's record of a change of `key` is appended: a recovery
    /// keeps it only with the mark that follows it, so it counts from
    /// that mark's end ([`Shown::marked`]).
    pub fn changed(&mut self, key: &[u8]) {
        let place = self.place(key);
        self.pending.push(place);
    }

    /// The same for a change of every key: a flush, or a peer's snapshot
    /// replacing the store.
    pub fn changed_all(&mut self) {
        self.pending_all = true;
    }

    /// A marked log's mark ends at `end`: the changes since the last one
    /// count from there, and the reply of the write that made them (taken
    /// next) shows them.
    pub fn marked(&mut self, end: u64) {
        if self.pending.is_empty() && !self.pending_all {
            return;
        }
        for place in self.pending.drain(..) {
            self.ends[place] = self.ends[place].max(end);
        }
        if std::mem::take(&mut self.pending_all) {
            self.flushed = self.flushed.max(end);
        }
        self.shown = self.shown.max(end);
    }

    /// A `flush_all`'s record ends at `end`; its reply shows it.
    pub fn flushed(&mut self, end: u64) {
        self.wrote_flush(end);
        self.shown = self.shown.max(end);
    }

    /// A `flush_all`'s record ends at `end` (a peer's, whose reply is not
    /// made here): every later reply shows it.
    pub fn wrote_flush(&mut self, end: u64) {
        self.flushed = self.flushed.max(end);
    }

    /// A reply shows the state of `key`.
    pub fn show(&mut self, key: &[u8]) {
        let end = self.ends[self.place(key)].max(self.flushed);
        self.shown = self.shown.max(end);
    }

    /// How far into the log the replies since the last take show.
    pub fn take(&mut self) -> u64 {
        std::mem::take(&mut self.shown)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use mio::Waker;

    use super::super::tests::Rng;
    use super::super::{recover, Recovering};
    use crate::config::{ClusterConfig, Fsync};
    use crate::protocol::{Keys, Limits, StorageMode};
    use crate::store::memory::MemoryStore;
    use crate::store::{Entry, Expiry, KeysRef, Store, UnixTime, VersionedStore, Write};

    const NOW: UnixTime = 1_700_000_000;
    const KEYS: u64 = 60;

    fn random_key(rng: &mut Rng) -> Vec<u8> {
        format!("k{}", rng.below(KEYS)).into_bytes()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let name = format!("mckv-shown-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// What `store` holds of each of `keys` at `now`: entry and cas unique.
    fn states(
        store: &mut dyn VersionedStore,
        keys: &[Vec<u8>],
        now: UnixTime,
    ) -> Vec<Option<(Entry, u64)>> {
        let state = |key: &Vec<u8>| store.export_record(key, now).unwrap();
        let record = |r: crate::store::Record| (r.entry, r.cas);
        keys.iter().map(state).map(|r| r.map(record)).collect()
    }

    /// What a `get` of each of `keys` shows at `now`: an ordered store
    /// lends dead items too (its replicas hold them).
    fn gets(store: &mut dyn Store, keys: &[Vec<u8>], now: UnixTime) -> Vec<Option<(Entry, u64)>> {
        let mut shown = vec![None; keys.len()];
        let packed = Keys::from_iter(keys.iter().map(|k| k.as_slice()));
        let found = &mut |i: usize, item: crate::store::ItemRef<'_>| {
            let entry = Entry {
                flags: item.flags,
                expiry: item.expiry,
                value: item.value.to_vec(),
            };
            shown[i] = Some((entry, item.cas));
        };
        store
            .retrieve(KeysRef::Packed(&packed), None, now, found)
            .unwrap();
        shown
    }

    /// One random command on `store` at `now`, writing unique `cas`; the
    /// keys its reply names (none for a `flush_all`), and whether it is a
    /// write (a plain `get` is not).
    fn random_command(
        rng: &mut Rng,
        store: &mut dyn Store,
        now: UnixTime,
        cas: u64,
    ) -> (Vec<Vec<u8>>, bool) {
        let key = random_key(rng);
        let expiry = match rng.below(5) {
            0 => Expiry::At(now + rng.below(30)),
            _ => Expiry::Never,
        };
        let _ = match rng.below(12) {
            0..=4 => {
                let keys: Vec<Vec<u8>> = (0..1 + rng.below(3)).map(|_| random_key(rng)).collect();
                let packed = Keys::from_iter(keys.iter().map(|k| k.as_slice()));
                let touch = (rng.below(6) == 0).then_some(expiry);
                let keys_ref = KeysRef::Packed(&packed);
                let _ = store.retrieve(keys_ref, touch, now, &mut |_, _| {});
                return (keys, touch.is_some());
            }
            5..=7 => {
                let mode = [
                    StorageMode::Set,
                    StorageMode::Add,
                    StorageMode::Append,
                    StorageMode::Cas(cas - (1 << 16) * rng.below(3)),
                ][rng.below(4) as usize];
                let value = vec![b'0' + rng.below(10) as u8; rng.below(400) as usize];
                let write = Write {
                    mode,
                    key: &key,
                    flags: rng.below(3) as u32,
                    expiry,
                    value: &value,
                    cas,
                };
                store.store(write, now).map(drop)
            }
            8 => store.delete(&key, now).map(drop),
            9 => store.arith(&key, true, 1, cas, now).map(drop),
            10 => store.touch(&key, expiry, now).map(drop),
            _ => {
                let at = (rng.below(2) == 0).then_some(now + rng.below(5));
                if rng.below(16) == 0 {
                    let _ = store.flush_all(at, now);
                    return (Vec::new(), true);
                }
                let set = Write {
                    mode: StorageMode::Set,
                    key: &key,
                    flags: 0,
                    expiry: Expiry::Never,
                    value: b"41",
                    cas,
                };
                store.store(set, now).map(drop)
            }
        };
        (vec![key], true)
    }

    /// The store cap of the marked tests: writes of a few hundred bytes
    /// evict.
    const MARKED_CAP: u64 = 3_000;

    /// A strong cluster's config for the marked tests.
    fn marked_cluster() -> ClusterConfig {
        ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: u64::MAX,
            memory_limit_bytes: MARKED_CAP,
            ..ClusterConfig::default()
        }
    }

    /// An ordered store under the marked tests' cap.
    fn ordered() -> MemoryStore {
        MemoryStore::new(MARKED_CAP, Limits::default()).ordered()
    }

    /// A strong cluster node's durable store recovered from `dir`, logging.
    fn start_marked(
        dir: &std::path::Path,
    ) -> (crate::durability::Durable, crate::durability::DurableStore) {
        let store = Box::new(ordered().keeping_evicted());
        let recovering = Recovering::open_marked(dir, 0, &marked_cluster(), store).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        recovering.start_logging(waker).unwrap()
    }

    /// Random commands on a strong cluster node's marked store, its
    /// ordered store small enough to evict, each write followed by its
    /// mark as the replica makes it, its writer writing as it goes: the log
    /// cut where a read's reply waits (the mark after the last change of
    /// each key it names: its write, or one that evicted it, or a flush)
    /// recovers each of those keys as the read showed it; a write's reply
    /// waits for its own mark; and most reads need not wait for every
    /// record appended before them.
    #[test]
    fn a_marked_log_cut_where_a_read_waits_gives_back_what_it_showed() {
        use crate::durability::record::Under;
        for seed in 1..=4u64 {
            let dir = temp_dir(&format!("marked-{seed}"));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (durable, mut store) = start_marked(&dir);
            // Recovery counts expiry from the wall clock.
            let (mut now, mut cas) = (crate::store::unix_now(), 1u64 << 16);
            let (mut reads, mut early, steps) = (Vec::new(), 0, 2_000);
            for step in 0..steps {
                now += u64::from(step % 50 == 0);
                cas += 1 << 16;
                let (keys, wrote) = random_command(&mut rng, &mut store, now, cas);
                if wrote {
                    store.mark_delivered(cas);
                }
                let shown = store.take_shown().expect("a marked log tells");
                let appended = durable.shared.appended.load(Ordering::Acquire);
                assert!(shown <= appended, "seed {seed}, step {step}");
                if wrote {
                    assert_eq!(shown, appended, "seed {seed}, step {step}: a write's reply");
                } else {
                    early += usize::from(shown < appended);
                    if step % 3 == 0 {
                        let held = gets(&mut store, &keys, now);
                        reads.push((step, shown, now, keys, held));
                    }
                }
                if rng.below(4) == 0 {
                    store.end_batch();
                }
            }
            let evicted = store.stats().events.evicted;
            assert!(evicted > 100, "seed {seed}: {evicted} evicted");
            let appended = durable.shared.appended.load(Ordering::Acquire);
            drop(store);
            drop(durable);
            let log = std::fs::read(dir.join("log")).unwrap();
            assert_eq!(log.len() as u64, appended, "the log holds every record");
            let count = reads.len();
            assert!(early > count / 2, "seed {seed}: {early} of {count} reads");
            for (step, shown, now, keys, held) in reads {
                let cut = temp_dir(&format!("marked-cut-{seed}"));
                std::fs::create_dir_all(&cut).unwrap();
                std::fs::copy(dir.join("snapshot"), cut.join("snapshot")).unwrap();
                std::fs::write(cut.join("log"), &log[..shown as usize]).unwrap();
                let mut recovered = ordered();
                let under = Under {
                    cap: MARKED_CAP,
                    policy: recovered.policy(),
                };
                recover::recover_marked(&cut, &mut recovered, under, now).unwrap();
                let got = gets(&mut recovered, &keys, now);
                assert!(
                    got == held,
                    "seed {seed}, step {step}: {keys:?} came back otherwise: {:?} not {:?}",
                    got.iter()
                        .map(|g| g.as_ref().map(|(e, c)| (e.value.len(), *c, e.expiry)))
                        .collect::<Vec<_>>(),
                    held.iter()
                        .map(|g| g.as_ref().map(|(e, c)| (e.value.len(), *c, e.expiry)))
                        .collect::<Vec<_>>()
                );
                let _ = std::fs::remove_dir_all(&cut);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A marked log replays its calls under the cap they were made under,
    /// so its replay evicts: those keys are recovered gone, and a read of
    /// one does not wait for the first write after the start (found on
    /// rereading: the replay's evictions were noted at that write's mark).
    #[test]
    fn what_a_marked_replay_evicted_is_not_noted_at_the_first_mark() {
        let dir = temp_dir("marked-replay-evicts");
        let now = crate::store::unix_now();
        let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("k{i}").into_bytes()).collect();
        let (durable, mut store) = start_marked(&dir);
        let value = vec![b'v'; 200];
        for (i, key) in keys.iter().enumerate() {
            let cas = (i as u64 + 1) << 16;
            let set = Write {
                mode: StorageMode::Set,
                key,
                flags: 0,
                expiry: Expiry::Never,
                value: &value,
                cas,
            };
            store.store(set, now).unwrap();
            store.mark_delivered(cas);
        }
        drop(store);
        drop(durable);
        let (durable, mut store) = start_marked(&dir);
        let gone = keys
            .iter()
            .find(|key| gets(&mut store, &[key.to_vec()], now)[0].is_none())
            .expect("the replay evicted")
            .clone();
        store.take_shown();
        let set = Write {
            mode: StorageMode::Set,
            key: b"new",
            flags: 0,
            expiry: Expiry::Never,
            value: b"n",
            cas: 100 << 16,
        };
        store.store(set, now).unwrap();
        store.mark_delivered(100 << 16);
        store.take_shown();
        gets(&mut store, &[gone], now);
        let shown = store.take_shown().expect("a marked log tells");
        let appended = durable.shared.appended.load(Ordering::Acquire);
        assert!(
            shown < appended,
            "a read of what the replay evicted waits for the new write"
        );
        drop(store);
        drop(durable);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Random commands on a durable store small enough to evict, its
    /// writer writing as it goes: the log cut where any reply's position
    /// says (the end of the last record of each key it names, and of the
    /// last `flush_all`) recovers each of those keys as the reply showed
    /// it, so a crash that kept that much of the log takes back nothing
    /// the reply showed. And most replies' positions are below what was
    /// appended: they need not wait for every other key's write.
    #[test]
    fn the_log_cut_where_a_reply_waits_gives_back_what_it_showed() {
        // About 10 items of 200 bytes: writes evict other keys.
        let cluster = ClusterConfig {
            fsync: Fsync::No,
            snapshot_every: u64::MAX,
            memory_limit_bytes: 3_000,
            ..ClusterConfig::default()
        };
        for seed in 1..=4u64 {
            let dir = temp_dir(&format!("log-{seed}"));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut now, mut cas) = (NOW, 1u64 << 16);
            let small = MemoryStore::new(u64::MAX, Limits::default()).keeping_evicted();
            let recovering = Recovering::open_at(&dir, 0, &cluster, Box::new(small), now).unwrap();
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (durable, mut store) = recovering.start_logging(waker).unwrap();
            let (mut replies, mut early, steps) = (Vec::new(), 0, 2_000);
            for step in 0..steps {
                now += u64::from(step % 50 == 0);
                cas += 1 << 16;
                let (keys, _) = random_command(&mut rng, &mut store, now, cas);
                let shown = store.take_shown().expect("an unmarked log tells");
                let appended = durable.shared.appended.load(Ordering::Acquire);
                assert!(shown <= appended, "seed {seed}, step {step}");
                early += usize::from(shown < appended);
                if step % 5 == 0 {
                    let held = states(&mut store, &keys, now);
                    replies.push((step, shown, now, keys, held));
                }
                if rng.below(4) == 0 {
                    store.end_batch();
                }
            }
            let appended = durable.shared.appended.load(Ordering::Acquire);
            let evicted = store.stats().events.evicted;
            assert!(evicted > 100, "seed {seed}: {evicted} evicted");
            drop(store);
            drop(durable);
            let log = std::fs::read(dir.join("log")).unwrap();
            assert_eq!(log.len() as u64, appended, "the log holds every record");
            assert!(early > steps / 2, "seed {seed}: {early} of {steps} replies");
            for (step, shown, now, keys, held) in replies {
                let cut = temp_dir(&format!("cut-{seed}"));
                std::fs::create_dir_all(&cut).unwrap();
                std::fs::write(cut.join("log"), &log[..shown as usize]).unwrap();
                let mut recovered = MemoryStore::new(u64::MAX, Limits::default());
                recover::recover(&cut, &mut recovered, now).unwrap();
                let got = states(&mut recovered, &keys, now);
                assert!(
                    got == held,
                    "seed {seed}, step {step}: {keys:?} came back otherwise"
                );
                let _ = std::fs::remove_dir_all(&cut);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
