//! A node's store with what all store work needs around it: the counters
//! `stats` reads without waiting ([`StoreCounters`]), reply buffers kept for
//! reuse, and the clock the store runs on. It runs wherever the store lives
//! (inline on the reactor for the memory store, on the worker thread for
//! memcached); each mode's store side ([`crate::cluster::Replica`]) works
//! through it.
//!
//! A client's command runs through [`Executor::execute`], which counts it
//! as memcached would; another node's write applied here runs through
//! [`Executor::apply_replicated`], which changes the store and counts
//! nothing (see [`super::counters`]).

use std::sync::Arc;

use super::execute::{execute_noting_hits, Outcome};
use super::{unix_now, Counter, StoreCounters, StoreEvents, StoreStatus, UnixTime, VersionedStore};
use crate::protocol::{Command, Meta, MetaOp, Request, StorageMode};

/// Reply buffers kept for reuse, and the largest kept (a giant value's
/// buffer is given back to the allocator).
const SPARE_REPLIES: usize = 256;
pub const SPARE_CAPACITY: usize = 16 * 1024;

pub struct Executor {
    store: Box<dyn VersionedStore>,
    counters: Arc<StoreCounters>,
    /// Empty reply buffers to write the next replies into.
    spare: Vec<Vec<u8>>,
    clock: fn() -> UnixTime,
    /// The store's event totals already added to the counters.
    seen: StoreEvents,
    /// The keys a retrieval found, while `stats detail` wants to know.
    found_keys: Vec<usize>,
}

impl Executor {
    pub fn new(store: Box<dyn VersionedStore>, counters: Arc<StoreCounters>) -> Executor {
        let seen = store.stats().events;
        Executor {
            store,
            counters,
            spare: Vec::new(),
            clock: unix_now,
            seen,
            found_keys: Vec::new(),
        }
    }

    /// The same, on a clock of the caller's (the simulator's fixed time).
    pub fn with_clock(mut self, clock: fn() -> UnixTime) -> Executor {
        self.clock = clock;
        self
    }

    pub fn store(&mut self) -> &mut dyn VersionedStore {
        self.store.as_mut()
    }

    /// Puts `store` in the place of the store, which it gives back; what
    /// `store` met before (evictions, reclaims) is counted now.
    pub fn swap_store(&mut self, store: Box<dyn VersionedStore>) -> Box<dyn VersionedStore> {
        self.absorb_events(self.store.events(), false);
        self.seen = StoreEvents::default();
        let old = std::mem::replace(&mut self.store, store);
        self.absorb_events(self.store.events(), false);
        old
    }

    /// The wall time store work is done at.
    pub fn now(&self) -> UnixTime {
        (self.clock)()
    }

    /// Executes a client's `request` on the node that took it (its expiry
    /// times read against `now`), giving anything it writes the cas unique
    /// `cas`, and counts it: its reply, and whether it changed the store.
    pub fn execute(&mut self, request: &Request, now: UnixTime, cas: u64) -> (Vec<u8>, bool) {
        // What other work met since (a sync, another node's write) is not
        // this command's.
        self.absorb_events(self.store.events(), false);
        let mut reply = self.spare.pop().unwrap_or_default();
        let detail = self.counters.detail_enabled();
        self.found_keys.clear();
        let found_keys = detail.then_some(&mut self.found_keys);
        let executed = execute_noting_hits(
            self.store.as_mut(),
            request,
            now,
            cas,
            &mut reply,
            found_keys,
        );
        self.count(&request.command, executed.outcome);
        if detail {
            self.record_prefixes(&request.command);
        }
        self.absorb_events(self.store.events(), true);
        (reply, executed.changed)
    }

    /// Applies another node's write (the strong modes apply every write on
    /// every node): the store changes, no command is counted here.
    pub fn apply_replicated(&mut self, request: &Request, now: UnixTime, cas: u64) {
        let mut reply = self.spare.pop().unwrap_or_default();
        execute_noting_hits(self.store.as_mut(), request, now, cas, &mut reply, None);
        self.keep(reply);
    }

    /// Adds a client's command to memcached's counters, as memcached counts
    /// it (`proto_text.c`): `gat` keys are touches, not gets; a storage
    /// command refused as too large or for memory is not a `cmd_set`.
    fn count(&self, command: &Command, outcome: Outcome) {
        let c = &self.counters;
        let hit_or_miss = |hit: Counter, miss: Counter| {
            if let Outcome::Found(found) = outcome {
                c.add(if found { hit } else { miss }, 1);
            }
        };
        match command {
            Command::Get(get) => {
                let keys = get.keys.len() as u64;
                let (cmd, hit, miss) = match get.touch {
                    Some(_) => (Counter::CmdTouch, Counter::TouchHits, Counter::TouchMisses),
                    None => (Counter::CmdGet, Counter::GetHits, Counter::GetMisses),
                };
                c.add(cmd, keys);
                if let Outcome::Retrieved { hits } = outcome {
                    c.add(hit, hits);
                    c.add(miss, keys.saturating_sub(hits));
                }
            }
            Command::Storage(storage) => match outcome {
                Outcome::OutOfMemory => c.add(Counter::StoreNoMemory, 1),
                Outcome::Stored(status) => {
                    c.add(Counter::CmdSet, 1);
                    if status == StoreStatus::Stored {
                        c.add(Counter::TotalItems, 1);
                    }
                    if let StorageMode::Cas(_) = storage.mode {
                        let counter = match status {
                            StoreStatus::Stored => Counter::CasHits,
                            StoreStatus::Exists => Counter::CasBadval,
                            StoreStatus::NotFound | StoreStatus::NotStored => Counter::CasMisses,
                        };
                        c.add(counter, 1);
                    }
                }
                _ => c.add(Counter::CmdSet, 1),
            },
            Command::TooLarge { .. } => c.add(Counter::StoreTooLarge, 1),
            Command::Delete { .. } => hit_or_miss(Counter::DeleteHits, Counter::DeleteMisses),
            Command::Arith(arith) if arith.incr => {
                hit_or_miss(Counter::IncrHits, Counter::IncrMisses)
            }
            Command::Arith(_) => hit_or_miss(Counter::DecrHits, Counter::DecrMisses),
            Command::Touch { .. } => {
                c.add(Counter::CmdTouch, 1);
                hit_or_miss(Counter::TouchHits, Counter::TouchMisses);
            }
            Command::FlushAll { .. } => c.add(Counter::CmdFlush, 1),
            Command::Meta(meta) => self.count_meta(meta, outcome),
        }
    }

    /// Counts a meta command as memcached counts the classic command it
    /// stands for (`mg` with `T` as a touch).
    fn count_meta(&self, meta: &Meta, outcome: Outcome) {
        let c = &self.counters;
        match (&meta.op, outcome) {
            (MetaOp::Get, Outcome::Retrieved { hits }) => {
                let (cmd, hit, miss) = match meta.touches() {
                    true => (Counter::CmdTouch, Counter::TouchHits, Counter::TouchMisses),
                    false => (Counter::CmdGet, Counter::GetHits, Counter::GetMisses),
                };
                c.add(cmd, 1);
                c.add(if hits > 0 { hit } else { miss }, 1);
            }
            (MetaOp::Set(set), Outcome::Stored(status)) => {
                c.add(Counter::CmdSet, 1);
                if status == StoreStatus::Stored {
                    c.add(Counter::TotalItems, 1);
                }
                if let StorageMode::Cas(_) = set.mode {
                    let counter = match status {
                        StoreStatus::Stored => Counter::CasHits,
                        StoreStatus::Exists => Counter::CasBadval,
                        StoreStatus::NotFound | StoreStatus::NotStored => Counter::CasMisses,
                    };
                    c.add(counter, 1);
                }
            }
            (MetaOp::Set(_), Outcome::OutOfMemory) => c.add(Counter::StoreNoMemory, 1),
            (MetaOp::Delete { .. }, Outcome::Found(found)) => c.add(
                if found {
                    Counter::DeleteHits
                } else {
                    Counter::DeleteMisses
                },
                1,
            ),
            (MetaOp::Arith(_), Outcome::Stored(StoreStatus::Stored)) => {
                c.add(Counter::TotalItems, 1)
            }
            (MetaOp::Arith(arith), Outcome::Found(found)) => {
                let counter = match (arith.incr, found) {
                    (true, true) => Counter::IncrHits,
                    (true, false) => Counter::IncrMisses,
                    (false, true) => Counter::DecrHits,
                    (false, false) => Counter::DecrMisses,
                };
                c.add(counter, 1);
            }
            _ => {}
        }
    }

    /// `stats detail`: memcached counts every key a retrieval looks up,
    /// every storage command and every `delete`, by key prefix.
    fn record_prefixes(&self, command: &Command) {
        let mut prefixes = self.counters.prefixes();
        match command {
            Command::Get(get) => {
                for (index, key) in get.keys.iter().enumerate() {
                    prefixes.record_get(key, self.found_keys.contains(&index));
                }
            }
            Command::Storage(storage) => prefixes.record_set(&storage.key),
            Command::TooLarge { key, .. } => prefixes.record_set(key),
            Command::Delete { key } => prefixes.record_delete(key),
            // memcached 1.6.18 counts no meta command by prefix.
            Command::Meta(_)
            | Command::Arith(_)
            | Command::Touch { .. }
            | Command::FlushAll { .. } => {}
        }
    }

    /// Adds what the store met since last asked (its totals are `now`) to
    /// the counters. Lookups that found items dead count only for a
    /// client's command (`client`); the store's upkeep counts whoever
    /// caused it.
    fn absorb_events(&mut self, now: StoreEvents, client: bool) {
        let seen = std::mem::replace(&mut self.seen, now);
        let c = &self.counters;
        if client {
            c.add(Counter::GetExpired, now.expired_found - seen.expired_found);
            c.add(Counter::GetFlushed, now.flushed_found - seen.flushed_found);
        }
        c.add(Counter::Reclaimed, now.reclaimed - seen.reclaimed);
        c.add(
            Counter::ExpiredUnfetched,
            (now.reclaimed_unfetched - seen.reclaimed_unfetched)
                + (now.swept_unfetched - seen.swept_unfetched),
        );
        c.add(
            Counter::DirectReclaims,
            now.reclaim_walks - seen.reclaim_walks,
        );
        c.add(
            Counter::CrawlerItemsChecked,
            now.sweep_checked - seen.sweep_checked,
        );
        c.add(Counter::CrawlerReclaimed, now.swept - seen.swept);
        c.add(
            Counter::LruCrawlerStarts,
            now.sweep_passes - seen.sweep_passes,
        );
        c.add(Counter::Evictions, now.evicted - seen.evicted);
        c.add(
            Counter::EvictedUnfetched,
            now.evicted_unfetched - seen.evicted_unfetched,
        );
    }

    /// Takes a reply buffer back for the next reply.
    pub fn keep(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_REPLIES && buffer.capacity() <= SPARE_CAPACITY {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// `cache_memlimit`: whether the store took the new memory limit.
    pub fn set_memory_limit(&mut self, limit_bytes: u64) -> bool {
        let taken = self.store.set_memory_limit(limit_bytes).is_ok();
        self.publish_counters();
        taken
    }

    /// Publishes the heap bytes of the version log kept beside the store
    /// (eventual mode), for `stats`.
    pub fn publish_version_log_bytes(&self, bytes: u64) {
        self.counters.publish_version_log_bytes(bytes);
    }

    /// Publishes the store's size and upkeep for `stats`.
    pub fn publish_counters(&mut self) {
        let stats = self.store.stats();
        self.absorb_events(stats.events, false);
        self.counters.publish(&stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Action, Limits};
    use crate::store::memory::MemoryStore;

    fn executor() -> (Executor, Arc<StoreCounters>) {
        let counters = Arc::new(StoreCounters::default());
        let store = Box::new(MemoryStore::new(1 << 20, Limits::default()));
        (Executor::new(store, counters.clone()), counters)
    }

    fn request(line: &[u8]) -> Request {
        match parse(line, &Limits::default()).map(|p| p.action) {
            Ok(Action::Execute(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    fn run(executor: &mut Executor, line: &[u8]) {
        executor.execute(&request(line), 1000, 1);
    }

    #[test]
    fn client_commands_count_as_memcached_counts_them() {
        let (mut e, c) = executor();
        for line in [
            &b"set a 0 0 1\r\n1\r\n"[..],
            b"get a b c\r\n",
            b"gat 0 a b\r\n",
            b"touch a 0\r\n",
            b"touch z 0\r\n",
            b"incr a 1\r\n",
            b"incr z 1\r\n",
            b"decr a 1\r\n",
            b"set s 0 0 1\r\nx\r\n",
            b"incr s 1\r\n",
            b"cas a 0 0 1 999\r\nx\r\n",
            b"cas z 0 0 1 1\r\nx\r\n",
            b"add a 0 0 1\r\nx\r\n",
            b"delete a\r\n",
            b"delete a\r\n",
            b"set e 0 -1 1\r\nx\r\n",
            b"get e\r\n",
            b"flush_all\r\n",
        ] {
            run(&mut e, line);
        }
        let got: Vec<(&str, u64)> = [
            Counter::CmdGet,
            Counter::CmdSet,
            Counter::CmdFlush,
            Counter::CmdTouch,
            Counter::GetHits,
            Counter::GetMisses,
            Counter::GetExpired,
            Counter::DeleteMisses,
            Counter::DeleteHits,
            Counter::IncrMisses,
            Counter::IncrHits,
            Counter::DecrMisses,
            Counter::DecrHits,
            Counter::CasMisses,
            Counter::CasHits,
            Counter::CasBadval,
            Counter::TouchHits,
            Counter::TouchMisses,
            Counter::TotalItems,
        ]
        .into_iter()
        .map(|counter| (counter.name(), c.get(counter)))
        .collect();
        // The values memcached 1.6.18 reports after the same commands.
        let want = [
            ("cmd_get", 4),
            ("cmd_set", 6),
            ("cmd_flush", 1),
            ("cmd_touch", 4),
            ("get_hits", 1),
            ("get_misses", 3),
            ("get_expired", 1),
            ("delete_misses", 1),
            ("delete_hits", 1),
            ("incr_misses", 1),
            ("incr_hits", 1),
            ("decr_misses", 0),
            ("decr_hits", 1),
            ("cas_misses", 1),
            ("cas_hits", 0),
            ("cas_badval", 1),
            ("touch_hits", 2),
            ("touch_misses", 2),
            ("total_items", 3),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn an_item_ma_creates_counts_as_an_item_and_not_as_a_miss() {
        let (mut e, c) = executor();
        run(&mut e, b"ma n N0 J5 v\r\n");
        run(&mut e, b"ma n v\r\n");
        run(&mut e, b"ma z v\r\n");
        // memcached 1.6.18 after the same commands.
        assert_eq!(c.get(Counter::TotalItems), 1);
        assert_eq!(c.get(Counter::IncrHits), 1);
        assert_eq!(c.get(Counter::IncrMisses), 1);
    }

    #[test]
    fn another_nodes_write_changes_the_store_and_counts_nothing() {
        let (mut e, c) = executor();
        e.apply_replicated(&request(b"set a 0 0 1\r\n1\r\n"), 1000, 1);
        e.apply_replicated(&request(b"get a\r\n"), 1000, 1);
        e.publish_counters();
        assert_eq!(c.get(Counter::CmdSet), 0);
        assert_eq!(c.get(Counter::GetHits), 0);
        assert_eq!(c.store_stats().items, 1);
    }

    #[test]
    fn too_large_and_out_of_memory_are_not_sets() {
        let counters = Arc::new(StoreCounters::default());
        let store = Box::new(MemoryStore::new(200, Limits::default()));
        let mut e = Executor::new(store, counters.clone());
        let too_large = Command::TooLarge {
            key: b"big".to_vec(),
            is_set: true,
        };
        let request = Request {
            command: too_large,
            noreply: false,
        };
        e.execute(&request, 1000, 1);
        let big = [&b"set k 0 0 300\r\n"[..], &[b'x'; 300], b"\r\n"].concat();
        run(&mut e, &big);
        assert_eq!(counters.get(Counter::StoreTooLarge), 1);
        assert_eq!(counters.get(Counter::StoreNoMemory), 1);
        assert_eq!(counters.get(Counter::CmdSet), 0);
    }

    #[test]
    fn detail_counts_gets_sets_and_deletes_by_prefix() {
        let (mut e, c) = executor();
        run(&mut e, b"set u:1 0 0 1\r\n1\r\n");
        c.set_detail(true);
        run(&mut e, b"set u:2 0 0 1\r\n1\r\n");
        run(&mut e, b"get u:1 u:3 plain\r\n");
        run(&mut e, b"delete u:9\r\n");
        run(&mut e, b"incr u:1 1\r\n");
        c.set_detail(false);
        run(&mut e, b"get u:1\r\n");
        let mut out = Vec::new();
        c.prefixes().dump(&mut out);
        assert_eq!(out, b"PREFIX u get 2 hit 1 set 1 del 1\r\nEND\r\n");
    }
}
