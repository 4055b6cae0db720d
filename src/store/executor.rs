//! A node's store with what all store work needs around it: the counters
//! `stats` reads without waiting, reply buffers kept for reuse, and the
//! clock the store runs on. It runs wherever the store lives (inline on the
//! reactor for the memory store, on the worker thread for memcached); each
//! mode's store side ([`crate::cluster::Replica`]) works through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{execute, unix_now, StoreStats, UnixTime, VersionedStore};
use crate::protocol::{Command, Request};

/// Counters the store side keeps and the reactor reads for `stats`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub items: AtomicU64,
    pub bytes: AtomicU64,
    pub limit_bytes: AtomicU64,
}

impl StoreCounters {
    pub fn store_stats(&self) -> StoreStats {
        StoreStats {
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            limit_bytes: self.limit_bytes.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.get_hits.store(0, Ordering::Relaxed);
        self.get_misses.store(0, Ordering::Relaxed);
    }
}

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
}

impl Executor {
    pub fn new(store: Box<dyn VersionedStore>, counters: Arc<StoreCounters>) -> Executor {
        Executor {
            store,
            counters,
            spare: Vec::new(),
            clock: unix_now,
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

    /// The wall time store work is done at.
    pub fn now(&self) -> UnixTime {
        (self.clock)()
    }

    /// Executes `request` (its expiry times read against `now`), giving
    /// anything it writes the cas unique `cas`: its reply, and whether it
    /// changed the store.
    pub fn execute(&mut self, request: &Request, now: UnixTime, cas: u64) -> (Vec<u8>, bool) {
        let mut reply = self.spare.pop().unwrap_or_default();
        let executed = execute(self.store.as_mut(), request, now, cas, &mut reply);
        if let Command::Get(get) = &request.command {
            self.counters
                .get_hits
                .fetch_add(executed.hits, Ordering::Relaxed);
            let misses = (get.keys.len() as u64).saturating_sub(executed.hits);
            self.counters
                .get_misses
                .fetch_add(misses, Ordering::Relaxed);
        }
        (reply, executed.changed)
    }

    /// Takes a reply buffer back for the next reply.
    pub fn keep(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_REPLIES && buffer.capacity() <= SPARE_CAPACITY {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// Publishes the store's item counts for `stats`.
    pub fn publish_counters(&self) {
        let stats = self.store.stats();
        self.counters.items.store(stats.items, Ordering::Relaxed);
        self.counters.bytes.store(stats.bytes, Ordering::Relaxed);
        self.counters
            .limit_bytes
            .store(stats.limit_bytes, Ordering::Relaxed);
    }
}
