//! Where a node keeps its data: the [`Store`] trait, one method per command,
//! and its two implementations, [`memory::MemoryStore`] (embedded, default)
//! and [`memcache::MemcacheStore`] (a real memcached server of the node's own).
//!
//! [`crate::backend`] decides where a store runs: the memory store never
//! blocks and runs inline on the reactor thread; the memcached store blocks
//! on every call and runs on the backend worker thread. [`execute`] turns a
//! protocol request into store calls and composes memcached's reply bytes.
//!
//! Eventual mode replicates versions by value: a [`VersionedStore`] (both
//! stores are one) exports a key's [`Entry`] and imports a peer's exactly.
//! The version log that decides which entries to import and push lives with
//! the rest of eventual mode, in `cluster/eventual/`: the cluster depends
//! on the store, never the other way. The strong modes hand a node that
//! fell behind a snapshot through the same trait: the keys listed, then a
//! [`Record`] each; the receiver resets its store and imports them. A node
//! with a data directory writes its snapshots through
//! [`VersionedStore::export_below`] instead, a slice of the table at a time.

pub mod counters;
pub mod dense;
pub mod execute;
pub mod executor;
pub mod key_image;
pub mod memcache;
pub mod memory;
pub mod meta;
mod slot;
mod text_connection;

pub use counters::{Counter, KeyPrefixes, StoreCounters};
pub use execute::{execute, Executed, Outcome};
pub use executor::Executor;
pub use memory::table_slots;
pub use slot::malloc_chunk;

use crate::protocol::{Key, StorageMode};
/// Packed keys are the protocol's (a multi-get carries them); listings use them too.
pub use crate::protocol::{Keys, KeysRef};

/// Seconds since the unix epoch: the one clock stores read.
pub type UnixTime = u64;

/// Seconds after which memcached reads an exptime as an absolute unix time.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// When an item stops being visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(UnixTime),
}

impl Expiry {
    /// memcached's `realtime()`: 0 is never, negative is already expired,
    /// up to 30 days is relative to `now`, beyond that an absolute unix time.
    pub fn from_exptime(exptime: i32, now: UnixTime) -> Expiry {
        let exptime = i64::from(exptime);
        match exptime {
            0 => Expiry::Never,
            e if e < 0 => Expiry::At(0),
            e if e > REALTIME_MAXDELTA => Expiry::At(e as u64),
            e => Expiry::At(now + e as u64),
        }
    }

    pub fn has_passed(self, now: UnixTime) -> bool {
        matches!(self, Expiry::At(at) if at <= now)
    }
}

/// What a full store does to make room for a write (`eviction` in
/// `[cluster]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Drop the least recently used items, as memcached does by default.
    Lru,
    /// Refuse the write (`SERVER_ERROR out of memory storing object`), as
    /// memcached started with `-M` does.
    None,
}

impl Eviction {
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::None => "none",
        }
    }
}

impl std::str::FromStr for Eviction {
    type Err = String;
    fn from_str(s: &str) -> Result<Eviction, String> {
        match s {
            "lru" => Ok(Eviction::Lru),
            "none" => Ok(Eviction::None),
            other => Err(format!("{other:?} is not lru or none")),
        }
    }
}

/// What a full store and its dead items are left to: `eviction` and
/// `expiry_sweep` in `[cluster]`. A strong replica's log records it with
/// the memory limit, so that a replay evicts and sweeps as the logged
/// writes did, whatever the configuration says at the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub eviction: Eviction,
    /// The expiry sweep runs (memcached's LRU crawler).
    pub sweep: bool,
}

/// A stored value as a `get` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub flags: u32,
    pub value: Vec<u8>,
    pub cas: u64,
    /// When it stops being visible (meta commands report its time to live).
    pub expiry: Expiry,
}

/// A stored value as a store lends it to a `get`: its bytes in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRef<'a> {
    pub flags: u32,
    pub value: &'a [u8],
    pub cas: u64,
    pub expiry: Expiry,
}

impl ItemRef<'_> {
    /// A copy of its own.
    pub fn to_item(&self) -> Item {
        Item {
            flags: self.flags,
            value: self.value.to_vec(),
            cas: self.cas,
            expiry: self.expiry,
        }
    }
}

impl Item {
    pub fn as_item_ref(&self) -> ItemRef<'_> {
        ItemRef {
            flags: self.flags,
            value: &self.value,
            cas: self.cas,
            expiry: self.expiry,
        }
    }
}

/// A key's stored entry as a replica exports or imports it: flags, absolute
/// expiry, value bytes; no cas unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub flags: u32,
    pub expiry: Expiry,
    pub value: Vec<u8>,
}

/// A storage command with its expiry made absolute and the cas unique the
/// value it writes will carry.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub mode: StorageMode,
    pub key: &'a [u8],
    pub flags: u32,
    pub expiry: Expiry,
    pub value: &'a [u8],
    pub cas: u64,
}

/// The outcome of a storage command, named after memcached's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// The outcome of `incr`/`decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOutcome {
    Value(u64),
    NotFound,
    NonNumeric,
}

/// Why a store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The memory cap is reached (`SERVER_ERROR out of memory storing object`).
    OutOfMemory,
    /// The backing server failed; the text says how. The operation may or may
    /// not have been applied.
    Backend(String),
    /// This store can never hold that (a key or value the backing server
    /// cannot take); trying again changes nothing.
    Refused(String),
    /// The data directory refuses the log (a full disk): the write was
    /// refused before it changed anything.
    Disk(String),
}

/// What a store says of itself for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub items: u64,
    pub bytes: u64,
    pub limit_bytes: u64,
    /// Slots of the key table (memcached's hash buckets), and the bytes
    /// they take; 0 for a store whose table is elsewhere (a memcached
    /// backend).
    pub table_slots: u64,
    pub table_bytes: u64,
    /// An expiry sweep pass is under way (`lru_crawler_running`).
    pub sweeping: bool,
    /// What the store has met since it started.
    pub events: StoreEvents,
}

/// Running totals of what a store met while working, for memcached's
/// counters of the same name; a store that cannot tell keeps them at 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreEvents {
    /// Lookups that found their item expired (`get_expired`).
    pub expired_found: u64,
    /// Lookups that found their item invalidated by a delayed `flush_all`
    /// (`get_flushed`).
    pub flushed_found: u64,
    /// Dead items dropped to make room for a write (`reclaimed`).
    pub reclaimed: u64,
    /// Of those, the ones never found by a `get`, `gat` or `touch`
    /// (`expired_unfetched`).
    pub reclaimed_unfetched: u64,
    /// Walks over the store for dead items made by a write that found it
    /// full (`direct_reclaims`).
    pub reclaim_walks: u64,
    /// Entries the expiry sweep checked (`crawler_items_checked`).
    pub sweep_checked: u64,
    /// Dead items the expiry sweep dropped (`crawler_reclaimed`).
    pub swept: u64,
    /// Of those, the expired ones no `get`, `gat` or `touch` had found
    /// (memcached adds them to `expired_unfetched`; flushed ones it does
    /// not count there).
    pub swept_unfetched: u64,
    /// Passes of the expiry sweep begun (`lru_crawler_starts`).
    pub sweep_passes: u64,
    /// Live items dropped to make room for a write (`evictions`).
    pub evicted: u64,
    /// Of those, the ones no `get`, `gat` or `touch` had found
    /// (`evicted_unfetched`).
    pub evicted_unfetched: u64,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A node's data, with memcached's semantics for each command. Writes are
/// given the cas unique to use (derived from the operation's stamp), so
/// replicas that apply the same operations hold the same items.
pub trait Store: Send {
    /// Looks up each key in order and lends every live item to `found`,
    /// with the index of its key (a missing or expired key is skipped), so
    /// a reply is composed from the stored bytes without copying them.
    /// With `touch` (`gat`), each hit takes that expiry first.
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()>;
    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus>;
    /// Whether the key existed.
    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool>;
    /// `incr`/`decr`; the new value carries the cas unique `cas`.
    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome>;
    /// Whether the key existed.
    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool>;
    /// Invalidates every item stored before `at` once `at` has come.
    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()>;
    /// `cache_memlimit`: the memory cap from now on. Items already stored
    /// stay even when they pass it; writes are refused until they fit.
    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()>;
    fn stats(&self) -> StoreStats;

    /// What the store has met since it started: [`StoreStats::events`]
    /// alone, which the executor reads around every command.
    fn events(&self) -> StoreEvents {
        self.stats().events
    }
}

/// Stores whose entries eventual mode can read and set exactly, so versions
/// can be replicated by value.
pub trait VersionedStore: Store {
    /// The key's live entry with its expiry, for eventual mode's replication.
    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Entry>>;

    /// [`VersionedStore::export`] of each of `keys`, in order; a store with a
    /// round trip per call reads them in batches.
    fn export_many(&mut self, keys: &[&[u8]], now: UnixTime) -> StoreResult<Vec<Option<Entry>>> {
        keys.iter().map(|key| self.export(key, now)).collect()
    }

    /// Sets `key` to exactly `entry` (or removes it), with cas unique `cas`.
    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()>;

    /// What a node rejoining a strong-mode cluster is handed: every key
    /// the store holds and its pending delayed `flush_all`, as of now. A
    /// store that cannot list its keys fails.
    fn snapshot_keys(&mut self) -> StoreResult<Listing>;

    /// What a snapshot of the store taken now carries before its records.
    fn head(&self) -> Head;

    /// The key's live entry and its cas unique, for a snapshot (an ordered
    /// store gives a dead one too: see [`VersionedStore::install`]).
    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Record>>;

    /// [`VersionedStore::export_record`] lent to `out` rather than copied
    /// (a durable store encodes every change's record so); a store that
    /// does not hold its items in this process copies it first.
    fn lend_record(
        &mut self,
        key: &[u8],
        now: UnixTime,
        out: &mut dyn FnMut(Option<RecordRef<'_>>),
    ) -> StoreResult<()> {
        let record = self.export_record(key, now)?;
        out(record.as_ref().map(Record::lend));
        Ok(())
    }

    /// Lists the store a slice at a time, for a snapshot taken while
    /// writes go on: from the end of its table down, it visits the
    /// entries at places below `below` (all of them from `usize::MAX`),
    /// hands `out` the record of each live one (an ordered store's dead
    /// ones too, as [`VersionedStore::export_record`]), and stops after
    /// `max` entries or when `out` says so (returns `false`). Where the
    /// next slice starts: 0 when the listing is done. It removes nothing.
    /// A store that cannot list its items by place fails.
    fn export_below(
        &mut self,
        _below: usize,
        _max: usize,
        _now: UnixTime,
        _out: &mut dyn FnMut(Record) -> bool,
    ) -> StoreResult<usize> {
        Err(StoreError::Refused(
            "this store cannot list its items a slice at a time".into(),
        ))
    }

    /// Freezes an image of the store as it is now, kept whatever it does
    /// next until [`VersionedStore::thaw`], for a listing in order
    /// ([`VersionedStore::export_in_order`]), and says where that starts;
    /// if an image is frozen already, that one. `None` if this store does
    /// not list itself so.
    fn freeze_in_order(&mut self) -> Option<OrderListing> {
        None
    }

    /// The listing of the image frozen now, if any.
    fn frozen_listing(&self) -> Option<OrderListing> {
        None
    }

    /// Freezes an image of a store listed by key (a memcached backend's):
    /// the keys it holds now and, until [`VersionedStore::thaw`], each
    /// one's record as it is now, whatever the store does next (read with
    /// [`VersionedStore::export_listed`]); if one is frozen already, that
    /// one's listing. `None` if this store keeps no such image.
    fn freeze_keys(&mut self) -> StoreResult<Option<Listing>> {
        Ok(None)
    }

    /// The records of `keys`, listed by key, in order (`None`: expired or
    /// gone): as the image [`VersionedStore::freeze_keys`] froze has them,
    /// if one is kept, else as they are now.
    fn export_listed(&mut self, keys: &[&[u8]], now: UnixTime) -> StoreResult<Vec<Option<Record>>> {
        keys.iter()
            .map(|key| self.export_record(key, now))
            .collect()
    }

    /// Drops the frozen image; how many items it had to copy to keep it
    /// (those changed since it was frozen).
    fn thaw(&mut self) -> usize {
        0
    }

    /// Lists the image an ordered store (a replica of a strong mode) froze
    /// ([`VersionedStore::freeze_in_order`]) in its table's order a slice
    /// at a time, for a snapshot handed to a rejoining member: from place
    /// `from` up, it hands `out` the record of every entry, dead ones too,
    /// and stops after `max` entries or when `out` says so (returns
    /// `false`). Where the next slice starts; `None` when the listing is
    /// done. It removes nothing, and the store may take writes between
    /// slices: the slices together are the store as it was when frozen.
    /// A store that cannot list by place fails, and is listed by key
    /// ([`VersionedStore::snapshot_keys`]).
    fn export_in_order(
        &mut self,
        _from: usize,
        _max: usize,
        _out: &mut dyn FnMut(Record) -> bool,
    ) -> StoreResult<Option<usize>> {
        Err(StoreError::Refused(
            "this store cannot list its items in order".into(),
        ))
    }

    /// Empties the store and takes what a snapshot's head says (its pending
    /// delayed `flush_all`, where its housekeeping stands), before the
    /// snapshot's records are installed.
    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()>;

    /// Takes a snapshot's record as the source held it. An ordered store
    /// (a replica of a strong mode, whose evictions and sweep must pick the
    /// same items on every replica) holds it exactly, dead or alive, where
    /// the source did: records come in the source's order. Others import
    /// it as of `now`.
    fn install(&mut self, record: &Record, now: UnixTime) -> StoreResult<()> {
        self.import(&record.key, Some(&record.entry), record.cas, now)
    }

    /// Installs each of `records` (a snapshot's chunk), in order.
    fn install_many(&mut self, records: &[Record], now: UnixTime) -> StoreResult<()> {
        records
            .iter()
            .try_for_each(|record| self.install(record, now))
    }

    /// The [`Policy`] it runs under; none for a store that has none of
    /// its own (a memcached backend evicts as memcached does).
    fn policy(&self) -> Option<Policy> {
        None
    }

    /// Runs under `policy` from now on. Refused by a store whose policy
    /// cannot change: a memcached backend's, and a store with a data
    /// directory (its log records the policy at a generation's start only).
    fn set_policy(&mut self, _policy: Policy) -> StoreResult<()> {
        Err(StoreError::Refused(
            "this store's eviction policy and expiry sweep cannot change".into(),
        ))
    }

    /// Marks in the log (a store with a data directory) that the store now
    /// holds exactly the writes of a strong mode's delivery sequence up to
    /// the one with cas unique `upto`. Other stores keep no log.
    fn mark_delivered(&mut self, _upto: u64) {}

    /// The keys this store evicted since last asked, for a store told to
    /// keep them (eventual mode makes each a replicated delete).
    fn take_evicted(&mut self) -> Vec<Key> {
        Vec::new()
    }

    /// A new, empty store with this one's settings, to fill out of sight
    /// and then take this one's place (causal mode stages a big sync answer
    /// so: `cluster/eventual/replica.rs`); none from a store that cannot
    /// make one (a memcached backend, a store with a data directory).
    fn empty_like(&self) -> Option<Box<dyn VersionedStore>> {
        None
    }

    /// Housekeeping the reactor asks for from time to time (a durable
    /// store writes a snapshot a slice at a time); whether more is waiting,
    /// to be asked again soon. Nothing for most stores.
    fn maintain(&mut self, _now: UnixTime) -> StoreResult<bool> {
        Ok(false)
    }

    /// How far into its log the replies to the commands since the last
    /// call show the store, for a store that logs its changes key by key
    /// (`durability/shown.rs`): the reactor holds a reply until the log is
    /// there. `None`: this store does not tell, and a reply waits for all
    /// that is logged.
    fn take_shown(&mut self) -> Option<u64> {
        None
    }

    /// The reactor's loop iteration ends: a store that gathers work for
    /// another thread (a durable store's log records) hands it over.
    fn end_batch(&mut self) {}
}

/// The keys a snapshot will carry, listed at its start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub keys: Keys,
    /// About how many bytes of keys and values they hold (items that
    /// expire before they are read are counted, then skipped).
    pub bytes: u64,
    /// What goes with the first records.
    pub head: Head,
}

/// Where a listing of an ordered store's frozen image in its table's
/// order starts ([`VersionedStore::freeze_in_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderListing {
    /// What goes with the first records.
    pub head: Head,
    /// The bytes of keys and values the listing will carry.
    pub bytes: u64,
    /// Which image the store froze for it: a listing reads only that one.
    pub image: u64,
}

/// What a snapshot carries before its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// The pending delayed `flush_all`.
    pub flush_at: Option<UnixTime>,
    pub housekeeping: Housekeeping,
}

/// Where an ordered store's sweep and eviction stand, so a replica that
/// installs its snapshot goes on from the same place (zeros elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// The entry the expiry sweep checks next, while a pass is under way.
    pub sweep_cursor: Option<u64>,
    /// When the last pass began.
    pub sweep_began: UnixTime,
    /// The entry the eviction clock looks at next.
    pub hand: u64,
    /// When a full store last walked for dead items.
    pub last_reclaim: UnixTime,
}

/// One key's entry and cas unique, as a snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub entry: Entry,
    pub cas: u64,
    /// When it was stored (a delayed `flush_all` kills what came before).
    pub stored_at: UnixTime,
    /// Used since the eviction clock last passed it.
    pub referenced: bool,
}

impl Record {
    /// The bytes a snapshot's progress counts for it: key and value.
    pub fn size(&self) -> u64 {
        (self.key.len() + self.entry.value.len()) as u64
    }

    pub fn lend(&self) -> RecordRef<'_> {
        RecordRef {
            key: &self.key,
            flags: self.entry.flags,
            expiry: self.entry.expiry,
            value: &self.entry.value,
            cas: self.cas,
            stored_at: self.stored_at,
            referenced: self.referenced,
        }
    }
}

/// A [`Record`] as a store lends it: its key and value in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub key: &'a [u8],
    pub flags: u32,
    pub expiry: Expiry,
    pub value: &'a [u8],
    pub cas: u64,
    pub stored_at: UnixTime,
    pub referenced: bool,
}

impl RecordRef<'_> {
    /// A copy of its own.
    pub fn to_record(&self) -> Record {
        Record {
            key: self.key.to_vec(),
            entry: Entry {
                flags: self.flags,
                expiry: self.expiry,
                value: self.value.to_vec(),
            },
            cas: self.cas,
            stored_at: self.stored_at,
            referenced: self.referenced,
        }
    }
}

/// The clock stores run on.
pub fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// memcached's `incr`/`decr` on a stored value: the value must read as an
/// unsigned number; `incr` wraps at 2^64, `decr` stops at 0. A result no
/// longer than the old value is written in place, padded with spaces to the
/// old length, as memcached does.
pub fn apply_delta(old: &[u8], incr: bool, delta: u64) -> Option<(u64, Vec<u8>)> {
    let current = crate::protocol::number::parse_u64(old)?;
    let next = if incr {
        current.wrapping_add(delta)
    } else {
        current.saturating_sub(delta)
    };
    let mut text = next.to_string().into_bytes();
    if text.len() <= old.len() {
        text.resize(old.len(), b' ');
    }
    Some((next, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_follows_memcached_realtime() {
        assert_eq!(Expiry::from_exptime(0, 1000), Expiry::Never);
        assert!(Expiry::from_exptime(-1, 1000).has_passed(1000));
        assert_eq!(Expiry::from_exptime(10, 1000), Expiry::At(1010));
        assert_eq!(
            Expiry::from_exptime(2_592_001, 5_000_000),
            Expiry::At(2_592_001)
        );
        assert!(!Expiry::Never.has_passed(u64::MAX));
    }

    #[test]
    fn delta_pads_in_place_and_wraps() {
        assert_eq!(apply_delta(b"100", false, 1), Some((99, b"99 ".to_vec())));
        assert_eq!(apply_delta(b"99", true, 1), Some((100, b"100".to_vec())));
        assert_eq!(apply_delta(b"18446744073709551615", true, 1).unwrap().0, 0);
        assert_eq!(apply_delta(b"5", false, 10).unwrap().0, 0);
        assert_eq!(apply_delta(b"12abc", true, 1), None);
        assert_eq!(apply_delta(b"", true, 1), None);
        assert_eq!(apply_delta(b" 7", true, 1), Some((8, b"8 ".to_vec())));
    }
}
