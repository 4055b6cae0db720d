//! What the store side counts for `stats`, kept where the reactor reads it
//! at any time without waiting: memcached's command counters (`cmd_get`,
//! `get_hits`, `cas_badval`, ...), the store's size as last published, and
//! the key-prefix counters of `stats detail`.
//!
//! ```text
//!  Executor (reactor or worker thread) ── add / publish ──► StoreCounters (atomics)
//!  reactor: `stats`, `stats detail dump` ◄── get ───────────┘   `stats reset` zeroes
//! ```
//!
//! A client's command is counted where it executes with a reply: on the
//! node that took the request. Another node's write applied here (the
//! strong modes apply every write on every node) changes this node's store
//! and its item counts, but counts as no command, no hit and no miss, so
//! the counters of the nodes of a cluster add up to the cluster's traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::StoreStats;
use crate::protocol::reply;

/// One of memcached's counters of store work, named in [`Counter::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Keys looked up by `get`/`gets` (memcached counts `gat` as touches).
    CmdGet,
    /// Storage commands that reached the store, whatever they answered;
    /// not the ones refused as too large or for lack of memory.
    CmdSet,
    CmdFlush,
    /// `touch` commands and keys looked up by `gat`/`gats`.
    CmdTouch,
    GetHits,
    GetMisses,
    /// Lookups, by any command, that found their item expired.
    GetExpired,
    /// Lookups, by any command, that found their item invalidated by a
    /// delayed `flush_all`. A `flush_all` that takes effect at once drops
    /// the items there and then, so no later lookup finds them.
    GetFlushed,
    DeleteMisses,
    DeleteHits,
    IncrMisses,
    IncrHits,
    DecrMisses,
    DecrHits,
    CasMisses,
    CasHits,
    CasBadval,
    TouchHits,
    TouchMisses,
    StoreTooLarge,
    StoreNoMemory,
    /// Items stored by storage commands.
    TotalItems,
    /// Dead items the store dropped to make room for a write (memcached's
    /// `reclaimed`: memory of expired items taken for new ones).
    Reclaimed,
    /// Of those, the ones no `get`, `gat` or `touch` had found.
    ExpiredUnfetched,
    /// Walks of the whole store to drop dead items, each made by a write
    /// that found the store full (memcached's `direct_reclaims`: a worker
    /// thread reclaiming memory itself).
    DirectReclaims,
    /// Entries the expiry sweep checked (memcached's LRU crawler's
    /// `crawler_items_checked`).
    CrawlerItemsChecked,
    /// Dead items the expiry sweep dropped (`crawler_reclaimed`); their
    /// unfetched expired ones count in `expired_unfetched` too.
    CrawlerReclaimed,
    /// Passes of the expiry sweep begun (`lru_crawler_starts`).
    LruCrawlerStarts,
    /// Live items dropped to make room for a write (`evictions`).
    Evictions,
    /// Of those, the ones no `get`, `gat` or `touch` had found.
    EvictedUnfetched,
}

impl Counter {
    const COUNT: usize = Counter::EvictedUnfetched as usize + 1;

    /// memcached's name for it in `stats`.
    pub fn name(self) -> &'static str {
        match self {
            Counter::CmdGet => "cmd_get",
            Counter::CmdSet => "cmd_set",
            Counter::CmdFlush => "cmd_flush",
            Counter::CmdTouch => "cmd_touch",
            Counter::GetHits => "get_hits",
            Counter::GetMisses => "get_misses",
            Counter::GetExpired => "get_expired",
            Counter::GetFlushed => "get_flushed",
            Counter::DeleteMisses => "delete_misses",
            Counter::DeleteHits => "delete_hits",
            Counter::IncrMisses => "incr_misses",
            Counter::IncrHits => "incr_hits",
            Counter::DecrMisses => "decr_misses",
            Counter::DecrHits => "decr_hits",
            Counter::CasMisses => "cas_misses",
            Counter::CasHits => "cas_hits",
            Counter::CasBadval => "cas_badval",
            Counter::TouchHits => "touch_hits",
            Counter::TouchMisses => "touch_misses",
            Counter::StoreTooLarge => "store_too_large",
            Counter::StoreNoMemory => "store_no_memory",
            Counter::TotalItems => "total_items",
            Counter::Reclaimed => "reclaimed",
            Counter::ExpiredUnfetched => "expired_unfetched",
            Counter::DirectReclaims => "direct_reclaims",
            Counter::CrawlerItemsChecked => "crawler_items_checked",
            Counter::CrawlerReclaimed => "crawler_reclaimed",
            Counter::LruCrawlerStarts => "lru_crawler_starts",
            Counter::Evictions => "evictions",
            Counter::EvictedUnfetched => "evicted_unfetched",
        }
    }
}

/// The counters the store side keeps and the reactor reads for `stats`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    counts: [AtomicU64; Counter::COUNT],
    items: AtomicU64,
    bytes: AtomicU64,
    limit_bytes: AtomicU64,
    table_slots: AtomicU64,
    table_bytes: AtomicU64,
    sweeping: AtomicBool,
    /// Heap bytes of eventual mode's version log (`mckv_version_log_bytes`).
    version_log_bytes: AtomicU64,
    /// `stats detail on`: count gets, sets and deletes per key prefix.
    detail: AtomicBool,
    prefixes: Mutex<KeyPrefixes>,
}

impl StoreCounters {
    pub fn add(&self, counter: Counter, n: u64) {
        if n > 0 {
            self.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize].load(Ordering::Relaxed)
    }

    /// The store's size as last published.
    pub fn store_stats(&self) -> StoreStats {
        StoreStats {
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            limit_bytes: self.limit_bytes.load(Ordering::Relaxed),
            table_slots: self.table_slots.load(Ordering::Relaxed),
            table_bytes: self.table_bytes.load(Ordering::Relaxed),
            sweeping: self.sweeping.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }

    /// Publishes the store's size.
    pub fn publish(&self, stats: &StoreStats) {
        self.items.store(stats.items, Ordering::Relaxed);
        self.bytes.store(stats.bytes, Ordering::Relaxed);
        self.limit_bytes.store(stats.limit_bytes, Ordering::Relaxed);
        self.table_slots.store(stats.table_slots, Ordering::Relaxed);
        self.table_bytes.store(stats.table_bytes, Ordering::Relaxed);
        self.sweeping.store(stats.sweeping, Ordering::Relaxed);
    }

    /// Publishes the heap bytes of eventual mode's version log.
    pub fn publish_version_log_bytes(&self, bytes: u64) {
        self.version_log_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The version log's heap bytes as last published (0 outside eventual mode).
    pub fn version_log_bytes(&self) -> u64 {
        self.version_log_bytes.load(Ordering::Relaxed)
    }

    /// `stats reset`: every counter and the prefix counts start again; what
    /// describes the store now (items, bytes, limit) stays.
    pub fn reset(&self) {
        for count in &self.counts {
            count.store(0, Ordering::Relaxed);
        }
        self.prefixes().clear();
    }

    /// `stats detail on|off`.
    pub fn set_detail(&self, on: bool) {
        self.detail.store(on, Ordering::Relaxed);
    }

    pub fn detail_enabled(&self) -> bool {
        self.detail.load(Ordering::Relaxed)
    }

    /// The prefix counts, to record into or to dump. Only the store side
    /// (while `stats detail` is on) and the reactor's `stats detail`
    /// replies take the lock.
    pub fn prefixes(&self) -> std::sync::MutexGuard<'_, KeyPrefixes> {
        // A panic while holding it leaves plain counts behind: still usable.
        self.prefixes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// memcached's per-prefix counts (`stats detail`): a key's prefix is what
/// comes before its first `:` (memcached's default `-D` delimiter); a key
/// without one is not counted.
#[derive(Debug, Default)]
pub struct KeyPrefixes {
    by_prefix: BTreeMap<Vec<u8>, PrefixCounts>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCounts {
    pub gets: u64,
    pub hits: u64,
    pub sets: u64,
    pub deletes: u64,
}

impl KeyPrefixes {
    /// memcached's `stat_key_prefix` default.
    pub const DELIMITER: u8 = b':';

    /// A lookup of `key` by a retrieval; `hit` if it found the item.
    pub fn record_get(&mut self, key: &[u8], hit: bool) {
        if let Some(counts) = self.counts(key) {
            counts.gets += 1;
            counts.hits += u64::from(hit);
        }
    }

    /// A storage command for `key`, whatever it answered.
    pub fn record_set(&mut self, key: &[u8]) {
        if let Some(counts) = self.counts(key) {
            counts.sets += 1;
        }
    }

    /// A `delete` of `key`, found or not.
    pub fn record_delete(&mut self, key: &[u8]) {
        if let Some(counts) = self.counts(key) {
            counts.deletes += 1;
        }
    }

    fn counts(&mut self, key: &[u8]) -> Option<&mut PrefixCounts> {
        let end = memchr::memchr(Self::DELIMITER, key)?;
        let prefix = &key[..end];
        if !self.by_prefix.contains_key(prefix) {
            self.by_prefix
                .insert(prefix.to_vec(), PrefixCounts::default());
        }
        self.by_prefix.get_mut(prefix)
    }

    pub fn clear(&mut self) {
        self.by_prefix.clear();
    }

    /// `stats detail dump`: a `PREFIX` line per prefix, then `END`. memcached
    /// lists them in the order of its hash table; here they are sorted.
    pub fn dump(&self, out: &mut Vec<u8>) {
        for (prefix, c) in &self.by_prefix {
            reply::prefix_counts(out, prefix, [c.gets, c.hits, c.sets, c.deletes]);
        }
        out.extend_from_slice(reply::END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_count_up_to_the_first_delimiter_and_skip_keys_without_one() {
        let mut p = KeyPrefixes::default();
        p.record_get(b"user:1", true);
        p.record_get(b"user:2", false);
        p.record_set(b"user:1:name");
        p.record_delete(b"a:b");
        p.record_get(b"plain", true);
        p.record_set(b":empty");
        let mut out = Vec::new();
        p.dump(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PREFIX  get 0 hit 0 set 1 del 0\r\n\
             PREFIX a get 0 hit 0 set 0 del 1\r\n\
             PREFIX user get 2 hit 1 set 1 del 0\r\n\
             END\r\n"
        );
    }

    #[test]
    fn reset_zeroes_counters_but_keeps_the_store_size() {
        let c = StoreCounters::default();
        c.add(Counter::GetHits, 3);
        c.publish(&StoreStats {
            items: 2,
            ..StoreStats::default()
        });
        c.prefixes().record_set(b"a:1");
        c.reset();
        assert_eq!(c.get(Counter::GetHits), 0);
        assert_eq!(c.store_stats().items, 2);
        let mut out = Vec::new();
        c.prefixes().dump(&mut out);
        assert_eq!(out, b"END\r\n");
    }
}
