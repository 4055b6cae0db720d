//! The embedded store: a hash map with memcached's semantics (expiry, cas
//! uniques, delayed `flush_all`) and a memory cap. A write past the cap
//! makes room as memcached does by default, dropping the dead items its
//! eviction clock meets and evicting live ones in about least-recently-used
//! order ([`Eviction::Lru`]); with [`Eviction::None`], like memcached
//! started with `-M`, it reclaims every dead item, then refuses the write
//! with `SERVER_ERROR out of memory storing object` if it still does not fit.
//!
//! It counts what memcached counts of the same events ([`StoreEvents`]):
//! lookups that find an item expired or flushed, the dead items a full
//! store drops to make room, what the expiry sweep checks and drops, and
//! evictions.
//!
//! **Eviction** is a clock (second chance), the usual one-bit stand-in for
//! LRU: each entry has a `referenced` bit, set when it is stored and when a
//! command uses it (a hit, a touch, an overwrite); a full store moves a
//! hand round the entries, dropping dead ones, clearing set bits, and
//! evicting the first live entry whose bit is clear. So an item survives at
//! least one turn of the hand after it was stored or last used, and a
//! stream of new keys keeps the newest. memcached's LRU is approximate too
//! (an item is bumped at most once a minute); the clock costs one bit per
//! item and no list to keep in order on every hit. One write clears at most
//! `SECOND_CHANCES` bits before it evicts at the hand regardless, so a
//! store whose every item was read since the hand passed costs it no more
//! than a sweep slice.
//!
//! The expiry sweep is mckv's LRU crawler: the reactor asks for one slice
//! of it per timer tick ([`MemoryStore::sweep`], through
//! `VersionedStore::maintain`), each slice visiting at most
//! [`SWEEP_SLICE`] entries from where the last one stopped, so a store
//! full of expired items frees their memory without a write having to find
//! the store full, and no tick holds the loop for longer than a slice.
//!
//! ```text
//!  entries: [ a | b | c | d | e | f | g ]   (dense, in a DenseTable)
//!                       ^ cursor: a..c checked this pass
//!  dead d: swap_remove(3) moves g to 3, checked next; the cursor stays
//!  live d: cursor + 1        end of the vector: the pass is over
//! ```
//!
//! The sweep removes only items that are already dead (expired by their
//! absolute time, or invalidated by a delayed `flush_all`), which no read,
//! write or export can see any more: every command and
//! `export`/`export_record` treat a dead item exactly as a missing one, at
//! the time they are given. It changes no cas unique (it touches no live
//! item and takes none). In eventual mode the version log's `since()`
//! sends the same thing for a swept key as for one that merely expired: a
//! missing value whose recorded expiry has passed goes out as a tombstone
//! with the value's own stamp, which can undo nothing newer; the log's
//! stamps are not touched, so nothing is resurrected. There the sweep is
//! not replicated: each replica frees its own memory. An eviction is no
//! such non-event: the store keeps the keys it evicts
//! ([`MemoryStore::keeping_evicted`]) and eventual mode deletes each on
//! every replica.
//!
//! **Ordered stores.** In a strong mode of several nodes every replica
//! applies the same writes in the same order, and whether a write fits,
//! and what it evicts, must come out the same on each: it depends on
//! what the store holds, dead items included, on the map's order (the
//! clock's), and on the hand and the sweep's cursor. So an ordered store
//! ([`MemoryStore::ordered`]) lets only the ordered writes change any of
//! that, all of them at the time of the operation (the same on every
//! replica): a read (served at once, or at this node's own time) removes
//! nothing it finds dead and sets no bit; the sweep runs a few entries
//! (`ORDERED_SWEEP_SLICE`) with each write instead of on the timer (so an
//! idle cluster keeps its dead items until writes come); its snapshot
//! carries every entry, dead ones too, with its stored time and bit, in
//! the map's order, and the hand, the cursor and the last reclaim, which
//! [`VersionedStore::install`] puts back as they were; and its memory limit
//! is the cluster's (a node of several refuses `cache_memlimit`, and peers
//! prove in each handshake that they share it, the eviction policy, the
//! sweep and [`HOUSEKEEPING`]). The unit tests apply
//! the same writes to two ordered stores that read at other times and run
//! timer sweeps, and to one that installed the other's snapshot, and
//! compare the entries, bits and bytes; a negative control shows unordered
//! stores drift apart.
//!
//! It runs on the reactor thread for every request, so the common paths look
//! a key up once (a `get`) or twice (a `set` of a key that exists: read, then
//! write in place), and a value overwritten by one of the same length (a
//! counter, a fixed-size record) is written over the old bytes.
//!
//! **Memory.** Each item is one allocation, header, key and value
//! (`store/slot.rs`), in a dense table of 16-byte pointers with a 32-bit
//! hash each, found through a hash index of 4-byte positions
//! (`store/dense.rs`). The cap charges an item what that really allocates
//! (`slot::cost`: the malloc chunk, the pointer and hash, and an
//! average share of the index), so `memory_limit_mb` bounds the heap the
//! items take. README's "Memory per item" has the measurements against
//! memcached (`cargo bench --bench load -- --memory`): about 0.98 of its
//! RSS per item for 1M items of 30-byte keys and 100-byte values and 0.89
//! for 10M of 10 bytes, where the layout before (an `IndexMap` of `Vec`
//! keys to entries holding a `Vec` value) took 1.44 and 1.62.

use std::collections::HashSet;

use super::dense::DenseTable;
use super::slot::{self, Meta, Slot};
use super::{
    apply_delta, ArithOutcome, Eviction, Expiry, Head, Housekeeping, ItemRef, Keys, KeysRef,
    Listing, OrderListing, Policy, Record, RecordRef, Store, StoreError, StoreEvents, StoreResult,
    StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};
use crate::protocol::{Key, Limits, StorageMode};

/// Entries one sweep slice checks at most. Measured over 1M items of 100
/// bytes (release build, this 2-core machine): a slice took at most 0.11 ms
/// when none was dead and 0.58 ms when half were (with the layout before
/// `slot.rs`, where each drop freed a key and a value; now it frees one
/// allocation); a pass is 245 slices.
pub const SWEEP_SLICE: usize = 4_096;

/// Entries an ordered store's sweep checks with each write it applies
/// (about 0.5 µs of work; a pass over a million items every 64k writes).
const ORDERED_SWEEP_SLICE: usize = 16;

/// How this store evicts and sweeps, as the replicas of a strong mode must
/// all do it alike: proven in every peer handshake, so that nodes whose
/// clock or sweep differ (another mckv version) never link.
pub const HOUSEKEEPING: &str = "clock-v2";

/// Referenced entries one write's eviction passes over at most, before it
/// evicts whatever is at the hand: as many as a sweep slice checks (about
/// 0.1 ms), so a store whose bits are all set (every item read since the
/// hand passed) costs a write no more, at the price of recency: the hand
/// then turns fast, and gives a second chance only for a few writes.
const SECOND_CHANCES: usize = SWEEP_SLICE;

/// Bytes of its surplus a store above its cap evicts with each write, on
/// top of the write's own growth (a few hundred small items at most).
const SURPLUS_PER_WRITE: u64 = 64 << 10;

/// Why an entry is no longer visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// A delayed `flush_all` came after it was stored.
    Flushed,
    Expired,
}

/// Why the slot is dead at `now`, if it is; flushed first, as memcached
/// checks.
fn death(slot: &Slot, flush_at: Option<UnixTime>, now: UnixTime) -> Option<Death> {
    if matches!(flush_at, Some(at) if at <= now && slot.stored_at() < at) {
        Some(Death::Flushed)
    } else if slot.expiry().has_passed(now) {
        Some(Death::Expired)
    } else {
        None
    }
}

/// What an item of `value_len` bytes under `key` is charged: see
/// [`slot::cost`].
fn cost(key: &[u8], value_len: usize) -> u64 {
    slot::cost(key.len(), value_len)
}

/// A value about to be stored.
struct Fresh<'a> {
    flags: u32,
    value: &'a [u8],
    expiry: Expiry,
    cas: u64,
}

impl Fresh<'_> {
    fn meta(&self, stored_at: UnixTime) -> Meta {
        Meta {
            flags: self.flags,
            cas: self.cas,
            expiry: self.expiry,
            stored_at,
        }
    }
}

/// What a storage command will write, worked out from the live entry.
struct Resolved<'a> {
    flags: u32,
    expiry: Expiry,
    value: NewValue<'a>,
    /// Length of the live value it replaces, if any.
    old_len: Option<usize>,
}

enum NewValue<'a> {
    /// The client's bytes as they are (`set`, `add`, `replace`, `cas`).
    Given(&'a [u8]),
    /// `append`/`prepend`: the old value joined with the client's bytes.
    Joined(Vec<u8>),
}

impl NewValue<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            NewValue::Given(bytes) => bytes,
            NewValue::Joined(bytes) => bytes,
        }
    }
}

/// Where the expiry sweep is.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    /// `expiry_sweep = off` (memcached's `-o no_lru_crawler`): never.
    on: bool,
    /// The next entry index to check, while a pass is under way.
    cursor: Option<usize>,
    /// When the last pass began: a pass begins at most once a second (dead
    /// items appear at whole seconds).
    began: UnixTime,
}

/// The embedded in-memory store.
///
/// The entries live in a `DenseTable`: a hash index over a dense vector
/// of one-allocation `Slot`s, so the sweep keeps its place as a plain
/// index into the vector and each slice costs what it checks, not the size
/// of the map (std's `HashMap` has no position that survives an insert or
/// remove: resuming would mean skipping the entries already seen, or
/// copying every key at each pass). Removing is `swap_remove`, O(1): the
/// last entry takes the removed one's place. An entry moved from the end to
/// below the cursor by a command's removal is missed by this pass and
/// checked by the next; entries added during a pass are checked by it.
#[derive(Debug)]
pub struct MemoryStore {
    entries: DenseTable,
    used_bytes: u64,
    /// Bytes of keys and values in the table, dead items' too (how far a
    /// snapshot's transfer has come is counted in them).
    payload_bytes: u64,
    /// The listing in order a snapshot reads, while the table keeps its
    /// frozen image for it ([`VersionedStore::freeze_in_order`]).
    frozen: Option<OrderListing>,
    /// Images frozen so far: names each listing.
    images: u64,
    /// Places of the frozen image whose entry was referenced then, and
    /// only had that bit cleared since (the eviction clock's hand): the
    /// image keeps the bit here rather than a copy of the item.
    image_referenced: HashSet<usize>,
    limit_bytes: u64,
    limits: Limits,
    /// A pending `flush_all <delay>`: items stored before it die when it comes.
    flush_at: Option<UnixTime>,
    last_reclaim: UnixTime,
    sweep: Sweep,
    eviction: Eviction,
    /// The entry the eviction clock looks at next.
    hand: usize,
    /// Every replica applies the same ordered writes (a strong mode of
    /// several nodes), so only those may change what the store holds.
    ordered: bool,
    /// The keys evicted since last taken, when someone takes them.
    evicted: Option<Vec<Key>>,
    events: StoreEvents,
}

impl MemoryStore {
    pub fn new(limit_bytes: u64, limits: Limits) -> MemoryStore {
        MemoryStore {
            entries: DenseTable::default(),
            used_bytes: 0,
            payload_bytes: 0,
            frozen: None,
            images: 0,
            image_referenced: HashSet::new(),
            limit_bytes,
            limits,
            flush_at: None,
            last_reclaim: 0,
            sweep: Sweep {
                on: true,
                cursor: None,
                began: 0,
            },
            eviction: Eviction::Lru,
            hand: 0,
            ordered: false,
            evicted: None,
            events: StoreEvents::default(),
        }
    }

    /// The same, with the expiry sweep on or off (on by default).
    pub fn with_sweep(mut self, on: bool) -> MemoryStore {
        self.sweep.on = on;
        self
    }

    /// The same, with this eviction policy (LRU by default).
    pub fn with_eviction(mut self, eviction: Eviction) -> MemoryStore {
        self.eviction = eviction;
        self
    }

    /// The same, as a replica of a strong mode: see the module doc.
    pub fn ordered(mut self) -> MemoryStore {
        self.ordered = true;
        self
    }

    /// The same, keeping the keys it evicts, and those whose value a `set`
    /// refused for memory dropped, for [`VersionedStore::take_evicted`].
    pub fn keeping_evicted(mut self) -> MemoryStore {
        self.evicted = Some(Vec::new());
        self
    }

    /// Runs `f` on the live entry for `key` (one lookup); a dead one is
    /// removed on the way and gives `None`.
    fn with_live<R>(
        &mut self,
        key: &[u8],
        now: UnixTime,
        f: impl FnOnce(&mut Slot) -> R,
    ) -> Option<R> {
        self.with_live_as(key, now, true, f)
    }

    /// [`MemoryStore::with_live`], removing a dead entry only if `removes`.
    fn with_live_as<R>(
        &mut self,
        key: &[u8],
        now: UnixTime,
        removes: bool,
        f: impl FnOnce(&mut Slot) -> R,
    ) -> Option<R> {
        let flush_at = self.flush_at;
        // A read that removes nothing changes no bit an image carries.
        let slot = match removes {
            true => self.entries.get_mut(key),
            false => self.entries.get_mut_unimaged(key),
        };
        let death = match slot {
            Some(slot) => match death(slot, flush_at, now) {
                None => return Some(f(slot)),
                death => death,
            },
            None => None,
        };
        if let Some(death) = death {
            match death {
                Death::Flushed => self.events.flushed_found += 1,
                Death::Expired => self.events.expired_found += 1,
            }
            if removes {
                self.remove(key);
            }
        }
        None
    }

    /// An ordered store sweeps a few entries with each write it applies,
    /// not on a timer: the same entries at the same point on every replica.
    fn step(&mut self, now: UnixTime) {
        if self.ordered && self.sweep.on {
            self.sweep(now, ORDERED_SWEEP_SLICE);
        }
    }

    /// An item of `key` and `value_len` bytes of value enters the table.
    fn count(&mut self, key: &[u8], value_len: usize) {
        self.used_bytes += cost(key, value_len);
        self.payload_bytes += (key.len() + value_len) as u64;
    }

    /// One leaves it.
    fn uncount(&mut self, key: &[u8], value_len: usize) {
        self.used_bytes -= cost(key, value_len);
        self.payload_bytes -= (key.len() + value_len) as u64;
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.swap_remove(key) {
            Some(slot) => {
                self.uncount(key, slot.value().len());
                true
            }
            None => false,
        }
    }

    /// Removes the entry at position `i` (the last one takes its place).
    /// Every removal is one of these or [`MemoryStore::remove`], and both
    /// move only the last entry, and only down: what a durable snapshot's
    /// listing from the end down counts on ([`VersionedStore::export_below`]).
    fn remove_at(&mut self, i: usize) -> Slot {
        let slot = self.entries.swap_remove_index(i).expect("in range");
        self.uncount(slot.key(), slot.value().len());
        slot
    }

    /// Keeps `key` for whoever takes what the store dropped by itself
    /// ([`VersionedStore::take_evicted`]), if anyone does.
    fn report_dropped(&mut self, key: &[u8]) {
        if let Some(evicted) = &mut self.evicted {
            evicted.push(key.to_vec());
        }
    }

    /// Drops every dead item, at most once a second (it walks the whole
    /// map): not again at a time no later than the last walk's, which
    /// dropped all that was dead then (a node's writes and its peers' may
    /// come with times a second apart, one after the other).
    fn reclaim(&mut self, now: UnixTime) {
        if now <= self.last_reclaim {
            return;
        }
        self.last_reclaim = now;
        self.events.reclaim_walks += 1;
        let flush_at = self.flush_at;
        for fetched in self.remove_where(|s| death(s, flush_at, now).is_some()) {
            self.events.reclaimed += 1;
            self.events.reclaimed_unfetched += u64::from(!fetched);
        }
    }

    /// Removes every item `dead` picks, in one walk of the table; whether
    /// each was fetched.
    fn remove_where(&mut self, dead: impl Fn(&Slot) -> bool) -> Vec<bool> {
        let dead: Vec<(Key, bool)> = self
            .entries
            .iter()
            .filter(|s| dead(s))
            .map(|s| (s.key().to_vec(), s.fetched()))
            .collect();
        let mut fetched = Vec::with_capacity(dead.len());
        for (key, was_fetched) in dead {
            self.remove(&key);
            fetched.push(was_fetched);
        }
        fetched
    }

    /// Drops what a delayed `flush_all` at `came`, now past, killed, before
    /// another replaces it: those items stay dead (memcached would revive
    /// the ones no lookup or crawler had removed yet, so what a client
    /// sees would hang on lookups, which a replay of the log does not
    /// make). A walk of the whole table, as an immediate `flush_all` is.
    fn drop_flushed(&mut self, came: UnixTime) {
        self.remove_where(|s| s.stored_at() < came);
    }

    /// One slice of the expiry sweep: checks at most `slice` entries from
    /// where the last slice stopped and drops the dead ones, counting them
    /// as memcached's crawler does (`crawler_items_checked`,
    /// `crawler_reclaimed`, and `expired_unfetched` for an expired item no
    /// command had found; a flushed one is not "expired"). A new pass
    /// begins at most once a second. Whether the pass goes on: the caller
    /// asks again soon if so.
    pub fn sweep(&mut self, now: UnixTime, slice: usize) -> bool {
        let mut cursor = match self.sweep.cursor {
            Some(cursor) => cursor,
            None if self.sweep.began == now => return false,
            None => {
                self.sweep.began = now;
                self.events.sweep_passes += 1;
                0
            }
        };
        let flush_at = self.flush_at;
        let mut checked = 0;
        while checked < slice {
            let Some(slot) = self.entries.get_index(cursor) else {
                break;
            };
            checked += 1;
            let Some(death) = death(slot, flush_at, now) else {
                cursor += 1;
                continue;
            };
            // The last entry moves here: the cursor stays to check it.
            let slot = self.remove_at(cursor);
            self.events.swept += 1;
            let unfetched = death == Death::Expired && !slot.fetched();
            self.events.swept_unfetched += u64::from(unfetched);
        }
        self.events.sweep_checked += checked as u64;
        let going_on = cursor < self.entries.len();
        self.sweep.cursor = going_on.then_some(cursor);
        going_on
    }

    /// Whether replacing the live value of `old_len` bytes under `key` (if
    /// any) by one of `new_len` bytes fits the cap, once dead items are
    /// dropped and, with LRU eviction, live ones.
    fn fits(&mut self, key: &[u8], old_len: Option<usize>, new_len: usize, now: UnixTime) -> bool {
        let old = old_len.map_or(0, |len| cost(key, len));
        let new = cost(key, new_len);
        if self.used_bytes - old + new <= self.limit_bytes {
            return true;
        }
        if new > self.limit_bytes {
            return false; // nothing dropped could make room
        }
        // Dropping others leaves `key`'s live entry where it is, so `old` still holds.
        let need = self.used_bytes - old + new - self.limit_bytes;
        match self.eviction {
            Eviction::None => {
                self.reclaim(now);
                self.used_bytes - old + new <= self.limit_bytes
            }
            // A store above its cap (the cap was lowered, or a replay held
            // more) drains the surplus a bounded amount a write, so no write
            // stalls the loop evicting it all; the write goes in if it does
            // not grow the store.
            Eviction::Lru if self.used_bytes > self.limit_bytes => {
                let before = self.used_bytes;
                self.evict(
                    key,
                    need.min(new.saturating_sub(old) + SURPLUS_PER_WRITE),
                    now,
                );
                self.used_bytes - old + new <= before
            }
            Eviction::Lru => {
                self.evict(key, need, now);
                self.used_bytes - old + new <= self.limit_bytes
            }
        }
    }

    /// Frees at least `need` bytes, sparing `key`, as a clock does: the
    /// hand goes round the entries, drops a dead one, gives a referenced
    /// one a second chance (clears its bit) and evicts the first live one
    /// with its bit clear, like memcached's LRU evicts from the cold end.
    /// A new entry starts referenced, and swap-removing at the hand moves
    /// the newest entry under it, which the hand then goes past: new
    /// entries are not the next victims. One write
    /// gives at most [`SECOND_CHANCES`] chances, then evicts at the hand
    /// whatever its bit, so no write walks a store whose bits are all set.
    /// It visits entries in the map's order, which an ordered store's
    /// replicas share, so they evict the same keys.
    fn evict(&mut self, key: &[u8], need: u64, now: UnixTime) {
        let (flush_at, goal) = (self.flush_at, self.used_bytes.saturating_sub(need));
        // The last entry is the newest: a hand that reaches it goes round
        // to the oldest first, leaving its bit (once a call, so a store of
        // two makes progress), else the item written just before a hand
        // passing the end would lose its chance at once.
        let (mut chances, mut newest_skip) = (SECOND_CHANCES, true);
        let only_key_left =
            |entries: &DenseTable| entries.len() == 1 && entries.position(key).is_some();
        while self.used_bytes > goal && !self.entries.is_empty() && !only_key_left(&self.entries) {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let newest = self.hand + 1 == self.entries.len() && self.entries.len() > 1;
            let slot = self.entries.get_index(self.hand).expect("in range");
            let death = death(slot, flush_at, now);
            if newest && death.is_none() && std::mem::take(&mut newest_skip) {
                self.hand = 0;
                continue;
            }
            let spared = death.is_none() && slot.referenced() && chances > 0;
            if slot.key() == key || spared {
                chances = chances.saturating_sub(usize::from(spared));
                self.clear_referenced(self.hand);
                self.hand += 1;
                continue;
            }
            // The last entry, the newest, moves here: the hand goes past it,
            // so it keeps its chance until the hand comes round again.
            let slot = self.remove_at(self.hand);
            self.hand += 1;
            let unfetched = u64::from(!slot.fetched());
            match death {
                Some(_) => {
                    self.events.reclaimed += 1;
                    self.events.reclaimed_unfetched += unfetched;
                }
                None => {
                    self.events.evicted += 1;
                    self.events.evicted_unfetched += unfetched;
                    self.report_dropped(slot.key());
                }
            }
        }
    }

    /// Clears the eviction bit of the entry at `i`. A frozen image keeps
    /// the bit it had rather than a copy of the item: the hand passes up to
    /// [`SECOND_CHANCES`] entries a write, and copying each would cost the
    /// image about the whole store.
    fn clear_referenced(&mut self, i: usize) {
        if !self.entries.get_index(i).is_some_and(Slot::referenced) {
            return;
        }
        if !self.entries.keeps(i) {
            self.image_referenced.insert(i);
        }
        let slot = self.entries.get_index_mut_unimaged(i).expect("in range");
        slot.set_referenced(false);
    }

    /// Stores `item` under `key` in place of the live value of `old_len`
    /// bytes (if any), in the entry already there; refused if it would pass
    /// the cap.
    fn put(
        &mut self,
        key: &[u8],
        old_len: Option<usize>,
        item: Fresh<'_>,
        now: UnixTime,
    ) -> StoreResult<()> {
        check_key(key)?;
        if !self.fits(key, old_len, item.value.len(), now) {
            return Err(StoreError::OutOfMemory);
        }
        match self.entries.get_mut(key) {
            Some(slot) => {
                let old_len = slot.value().len();
                slot.overwrite(item.value, item.meta(now));
                slot.set_referenced(true);
                self.uncount(key, old_len);
            }
            None => {
                let mut slot = Slot::new(key, item.value, item.meta(now));
                // New: it lives at least one turn of the eviction clock.
                slot.set_referenced(true);
                self.entries.push(slot);
            }
        }
        self.count(key, item.value.len());
        Ok(())
    }

    /// What a write would leave, or the status that refuses it.
    fn resolve<'w>(
        &mut self,
        write: &Write<'w>,
        now: UnixTime,
    ) -> Result<Resolved<'w>, StoreStatus> {
        let limits = self.limits;
        let fresh = |old_len| Resolved {
            flags: write.flags,
            expiry: write.expiry,
            value: NewValue::Given(write.value),
            old_len,
        };
        let live = self.with_live(write.key, now, |slot| {
            let old = slot.value();
            let old_len = Some(old.len());
            match write.mode {
                StorageMode::Set | StorageMode::Replace => Ok(fresh(old_len)),
                StorageMode::Add => Err(StoreStatus::NotStored),
                StorageMode::Cas(unique) if unique != slot.cas() => Err(StoreStatus::Exists),
                StorageMode::Cas(_) => Ok(fresh(old_len)),
                StorageMode::Append | StorageMode::Prepend => {
                    let joined_len = old.len() + write.value.len();
                    if !limits.item_fits(write.key.len(), slot.flags(), joined_len) {
                        return Err(StoreStatus::NotStored);
                    }
                    let joined = if write.mode == StorageMode::Append {
                        [old, write.value].concat()
                    } else {
                        [write.value, old].concat()
                    };
                    Ok(Resolved {
                        flags: slot.flags(),
                        expiry: slot.expiry(),
                        value: NewValue::Joined(joined),
                        old_len,
                    })
                }
            }
        });
        match (live, write.mode) {
            (Some(resolved), _) => resolved,
            (None, StorageMode::Set | StorageMode::Add) => Ok(fresh(None)),
            (None, StorageMode::Cas(_)) => Err(StoreStatus::NotFound),
            (None, _) => Err(StoreStatus::NotStored),
        }
    }
}

impl Store for MemoryStore {
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        // An ordered store's reads are not ordered: they change nothing
        // the replicas must agree on (fetched only feeds counters).
        let read_only = self.ordered && touch.is_none();
        if !read_only {
            self.step(now);
        }
        for (index, key) in keys.iter().enumerate() {
            self.with_live_as(key, now, !read_only, |slot| {
                if let Some(expiry) = touch {
                    slot.set_expiry(expiry);
                }
                slot.set_fetched(true);
                if !read_only {
                    slot.set_referenced(true);
                }
                found(index, slot.item());
            });
        }
        Ok(())
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        self.step(now);
        let resolved = match self.resolve(&write, now) {
            Ok(resolved) => resolved,
            Err(status) => return Ok(status),
        };
        let item = Fresh {
            flags: resolved.flags,
            value: resolved.value.bytes(),
            expiry: resolved.expiry,
            cas: write.cas,
        };
        if let Err(e) = self.put(write.key, resolved.old_len, item, now) {
            // memcached drops the old value of a failed `set` so it cannot
            // go stale; whoever takes evicted keys must hear of it too.
            if write.mode == StorageMode::Set && self.remove(write.key) {
                self.report_dropped(write.key);
            }
            return Err(e);
        }
        Ok(StoreStatus::Stored)
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        self.step(now);
        Ok(self.with_live(key, now, |_| ()).is_some() && self.remove(key))
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        self.step(now);
        let computed = self.with_live(key, now, |slot| {
            let (flags, expiry, old_len) = (slot.flags(), slot.expiry(), Some(slot.value().len()));
            apply_delta(slot.value(), incr, delta).map(|next| (next, flags, expiry, old_len))
        });
        let Some(computed) = computed else {
            return Ok(ArithOutcome::NotFound);
        };
        let Some(((number, text), flags, expiry, old_len)) = computed else {
            return Ok(ArithOutcome::NonNumeric);
        };
        let item = Fresh {
            flags,
            value: &text,
            expiry,
            cas,
        };
        self.put(key, old_len, item, now)?;
        Ok(ArithOutcome::Value(number))
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        self.step(now);
        let touched = self.with_live(key, now, |slot| {
            slot.set_expiry(expiry);
            slot.set_fetched(true);
            slot.set_referenced(true);
        });
        Ok(touched.is_some())
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        match at {
            Some(at) if at > now => {
                if let Some(came) = self.flush_at.filter(|&came| came <= now) {
                    self.drop_flushed(came);
                }
                self.flush_at = Some(at);
            }
            _ => {
                self.entries.clear();
                self.sweep.cursor = None;
                self.hand = 0;
                self.used_bytes = 0;
                self.payload_bytes = 0;
                self.flush_at = None;
            }
        }
        Ok(())
    }

    fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
        self.limit_bytes = limit_bytes;
        Ok(())
    }

    fn events(&self) -> StoreEvents {
        self.events
    }

    fn stats(&self) -> StoreStats {
        let (index_capacity, _) = self.entries.capacity();
        StoreStats {
            items: self.entries.len() as u64,
            bytes: self.used_bytes,
            limit_bytes: self.limit_bytes,
            table_slots: table_slots(index_capacity),
            table_bytes: self.entries.heap_bytes(),
            sweeping: self.sweep.cursor.is_some(),
            events: self.events,
        }
    }
}

/// A key a slot can hold: clients cannot send a longer one than
/// memcached's 250 bytes, but a peer's version, a snapshot or a log record
/// names its key by a length of its own.
fn check_key(key: &[u8]) -> StoreResult<()> {
    if key.len() > Limits::MAX_KEY_LEN {
        let why = format!(
            "a key of {} bytes (at most {})",
            key.len(),
            Limits::MAX_KEY_LEN
        );
        return Err(StoreError::Refused(why));
    }
    Ok(())
}

/// The slots of a hash table that holds `capacity` entries: hashbrown
/// keeps a power of two of them, at most 7/8 full (below 8 slots, one is
/// kept free).
pub fn table_slots(capacity: usize) -> u64 {
    match capacity {
        0 => 0,
        c if c < 7 => (c as u64 + 1).next_power_of_two(),
        c => (c as u64 * 8 / 7).next_power_of_two(),
    }
}

/// The entry a replica exports: the slot's fields and a copy of its value.
fn exported(slot: &Slot) -> super::Entry {
    super::Entry {
        flags: slot.flags(),
        expiry: slot.expiry(),
        value: slot.value().to_vec(),
    }
}

/// The record a snapshot carries of the slot.
fn recorded(slot: &Slot) -> Record {
    lent(slot).to_record()
}

/// [`recorded`], in place.
fn lent(slot: &Slot) -> RecordRef<'_> {
    RecordRef {
        key: slot.key(),
        flags: slot.flags(),
        expiry: slot.expiry(),
        value: slot.value(),
        cas: slot.cas(),
        stored_at: slot.stored_at(),
        referenced: slot.referenced(),
    }
}

/// Entries leave and arrive as [`super::Entry`]; a `Slot` is how the
/// table holds an item.
impl VersionedStore for MemoryStore {
    fn policy(&self) -> Option<Policy> {
        Some(Policy {
            eviction: self.eviction,
            sweep: self.sweep.on,
        })
    }

    fn set_policy(&mut self, policy: Policy) -> StoreResult<()> {
        self.eviction = policy.eviction;
        self.sweep.on = policy.sweep;
        Ok(())
    }

    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<super::Entry>> {
        Ok(self.with_live(key, now, |slot| exported(slot)))
    }

    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&super::Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        let Some(entry) = entry else {
            self.remove(key);
            return Ok(());
        };
        let old_len = self.with_live(key, now, |slot| slot.value().len());
        let fresh = Fresh {
            flags: entry.flags,
            value: &entry.value,
            expiry: entry.expiry,
            cas,
        };
        self.put(key, old_len, fresh, now)
    }

    fn snapshot_keys(&mut self) -> StoreResult<Listing> {
        let bytes = self.entries.iter();
        let bytes = bytes.map(|slot| (slot.key().len() + slot.value().len()) as u64);
        Ok(Listing {
            keys: {
                let mut keys = Keys::with_capacity(self.entries.len(), self.entries.len() * 16);
                self.entries.iter().for_each(|slot| keys.push(slot.key()));
                keys
            },
            bytes: bytes.sum(),
            head: self.head(),
        })
    }

    fn head(&self) -> Head {
        Head {
            flush_at: self.flush_at,
            housekeeping: Housekeeping {
                sweep_cursor: self.sweep.cursor.map(|c| c as u64),
                sweep_began: self.sweep.began,
                hand: self.hand as u64,
                last_reclaim: self.last_reclaim,
            },
        }
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Record>> {
        let mut record = None;
        self.lend_record(key, now, &mut |lent| {
            record = lent.map(|r| r.to_record());
        })?;
        Ok(record)
    }

    fn lend_record(
        &mut self,
        key: &[u8],
        now: UnixTime,
        out: &mut dyn FnMut(Option<RecordRef<'_>>),
    ) -> StoreResult<()> {
        let found = match self.ordered {
            // Dead ones too, and nothing removed: the snapshot is the store
            // as its replicas hold it.
            true => self.entries.get(key).map(|slot| out(Some(lent(slot)))),
            false => self.with_live(key, now, |slot| out(Some(lent(slot)))),
        };
        if found.is_none() {
            out(None);
        }
        Ok(())
    }

    /// Reads by place in the table, which every write may change: see
    /// `durability/store.rs` for why a listing from the end down misses no
    /// entry that was there when it began and that no write touched.
    fn export_below(
        &mut self,
        below: usize,
        max: usize,
        now: UnixTime,
        out: &mut dyn FnMut(Record) -> bool,
    ) -> StoreResult<usize> {
        let flush_at = self.flush_at;
        let mut next = below.min(self.entries.len());
        let mut visited = 0;
        while next > 0 && visited < max {
            next -= 1;
            visited += 1;
            let slot = self.entries.get_index(next).expect("below the length");
            if !self.ordered && death(slot, flush_at, now).is_some() {
                continue;
            }
            if !out(recorded(slot)) {
                break;
            }
        }
        Ok(next)
    }

    fn freeze_in_order(&mut self) -> Option<OrderListing> {
        if !self.ordered {
            return None;
        }
        if self.frozen.is_none() {
            self.entries.freeze();
            self.images += 1;
            self.frozen = Some(OrderListing {
                head: self.head(),
                bytes: self.payload_bytes,
                image: self.images,
            });
        }
        self.frozen
    }

    fn frozen_listing(&self) -> Option<OrderListing> {
        self.frozen
    }

    fn thaw(&mut self) -> usize {
        self.frozen = None;
        self.image_referenced = HashSet::new();
        self.entries.thaw()
    }

    fn export_in_order(
        &mut self,
        from: usize,
        max: usize,
        out: &mut dyn FnMut(Record) -> bool,
    ) -> StoreResult<Option<usize>> {
        if !self.ordered {
            return Err(StoreError::Refused(
                "only an ordered store lists its items in order for a peer".into(),
            ));
        }
        let Some(len) = self.entries.frozen_len() else {
            return Err(StoreError::Refused("no image is frozen to list".into()));
        };
        let mut next = from;
        while next < len.min(from.saturating_add(max)) {
            let slot = self.entries.frozen_at(next).expect("below the length");
            let mut record = recorded(slot);
            record.referenced |= self.image_referenced.contains(&next);
            next += 1;
            if !out(record) {
                break;
            }
        }
        Ok((next < len).then_some(next))
    }

    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        self.flush_all(None, now)?;
        // Exactly, even passed: whether an imported item outlived it is up
        // to the time it is imported with.
        self.flush_at = head.flush_at;
        let housekeeping = head.housekeeping;
        self.sweep.cursor = housekeeping.sweep_cursor.map(|c| c as usize);
        self.sweep.began = housekeeping.sweep_began;
        self.hand = housekeeping.hand as usize;
        self.last_reclaim = housekeeping.last_reclaim;
        Ok(())
    }

    fn install(&mut self, record: &Record, now: UnixTime) -> StoreResult<()> {
        if !self.ordered {
            return self.import(&record.key, Some(&record.entry), record.cas, now);
        }
        check_key(&record.key)?;
        let meta = Meta {
            flags: record.entry.flags,
            cas: record.cas,
            expiry: record.entry.expiry,
            stored_at: record.stored_at,
        };
        let mut slot = Slot::new(&record.key, &record.entry.value, meta);
        slot.set_referenced(record.referenced);
        if let Some(old) = self.entries.insert(slot) {
            self.uncount(&record.key, old.value().len());
        }
        self.count(&record.key, record.entry.value.len());
        Ok(())
    }

    /// One slice of the expiry sweep, if it is on (an ordered store sweeps
    /// as it applies writes instead).
    fn maintain(&mut self, now: UnixTime) -> StoreResult<bool> {
        Ok(self.sweep.on && !self.ordered && self.sweep(now, SWEEP_SLICE))
    }

    fn take_evicted(&mut self) -> Vec<Key> {
        self.evicted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn empty_like(&self) -> Option<Box<dyn VersionedStore>> {
        let mut store = MemoryStore::new(self.limit_bytes, self.limits)
            .with_sweep(self.sweep.on)
            .with_eviction(self.eviction);
        store.ordered = self.ordered;
        store.evicted = self.evicted.as_ref().map(|_| Vec::new());
        Some(Box::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Item;

    const NOW: UnixTime = 1_000_000;

    fn store() -> MemoryStore {
        MemoryStore::new(1 << 20, Limits::default())
    }

    fn write<'a>(mode: StorageMode, key: &'a [u8], value: &'a [u8]) -> Write<'a> {
        let cas = NEXT_CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Write {
            mode,
            key,
            flags: 7,
            expiry: Expiry::Never,
            value,
            cas,
        }
    }

    static NEXT_CAS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    fn get(s: &mut MemoryStore, key: &[u8], now: UnixTime) -> Option<Item> {
        let mut hit = None;
        s.retrieve(KeysRef::One(key), None, now, &mut |_, item| {
            hit = Some(item.to_item())
        })
        .unwrap();
        hit
    }

    #[test]
    fn conditional_writes_follow_memcached() {
        let mut s = store();
        assert_eq!(
            s.store(write(StorageMode::Replace, b"k", b"a"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StorageMode::Append, b"k", b"a"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StorageMode::Cas(1), b"k", b"a"), NOW),
            Ok(StoreStatus::NotFound)
        );
        assert_eq!(
            s.store(write(StorageMode::Add, b"k", b"a"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(
            s.store(write(StorageMode::Add, b"k", b"b"), NOW),
            Ok(StoreStatus::NotStored)
        );
        assert_eq!(
            s.store(write(StorageMode::Append, b"k", b"z"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(
            s.store(write(StorageMode::Prepend, b"k", b"<"), NOW),
            Ok(StoreStatus::Stored)
        );
        let item = get(&mut s, b"k", NOW).unwrap();
        assert_eq!(item.value, b"<az");
        assert_eq!(
            s.store(write(StorageMode::Cas(item.cas + 1), b"k", b"c"), NOW),
            Ok(StoreStatus::Exists)
        );
        assert_eq!(
            s.store(write(StorageMode::Cas(item.cas), b"k", b"c"), NOW),
            Ok(StoreStatus::Stored)
        );
        assert_ne!(get(&mut s, b"k", NOW).unwrap().cas, item.cas);
    }

    #[test]
    fn expired_items_vanish() {
        let mut s = store();
        let mut w = write(StorageMode::Set, b"k", b"v");
        w.expiry = Expiry::At(NOW + 2);
        s.store(w, NOW).unwrap();
        assert!(get(&mut s, b"k", NOW + 1).is_some());
        assert!(get(&mut s, b"k", NOW + 2).is_none());
        assert_eq!(s.stats().items, 0);
    }

    #[test]
    fn delayed_flush_spares_later_writes() {
        let mut s = store();
        s.store(write(StorageMode::Set, b"old", b"v"), NOW).unwrap();
        s.flush_all(Some(NOW + 5), NOW).unwrap();
        assert!(get(&mut s, b"old", NOW + 4).is_some());
        s.store(write(StorageMode::Set, b"new", b"v"), NOW + 6)
            .unwrap();
        assert!(get(&mut s, b"old", NOW + 6).is_none());
        assert!(get(&mut s, b"new", NOW + 6).is_some());
    }

    /// A delayed `flush_all` that came stays come when another replaces it:
    /// what it killed is not alive again until the later one (memcached
    /// revives what no lookup or crawler has removed yet, so it would
    /// depend on lookups, which a replay of the log does not make).
    #[test]
    fn a_delayed_flush_that_came_is_not_undone_by_a_later_one() {
        let mut s = store();
        s.store(write(StorageMode::Set, b"old", b"v"), NOW).unwrap();
        s.flush_all(Some(NOW + 2), NOW).unwrap();
        s.flush_all(Some(NOW + 10), NOW + 3).unwrap();
        assert!(get(&mut s, b"old", NOW + 4).is_none());
        assert_eq!(s.stats().items, 0);
    }

    #[test]
    fn the_cap_refuses_and_a_failed_set_drops_the_old_value() {
        let mut s = MemoryStore::new(400, Limits::default()).with_eviction(Eviction::None);
        s.store(write(StorageMode::Set, b"a", &[b'x'; 200]), NOW)
            .unwrap();
        assert_eq!(
            s.store(write(StorageMode::Set, b"b", &[b'x'; 200]), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert_eq!(
            s.store(write(StorageMode::Set, b"a", &[b'x'; 500]), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert!(get(&mut s, b"a", NOW).is_none());
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn overwrites_keep_the_byte_count_exact() {
        let mut s = store();
        let cost = |key: &[u8], len: usize| cost(key, len);
        for len in [10_000, 3, 0, 200, 199] {
            s.store(write(StorageMode::Set, b"k", &vec![b'v'; len]), NOW)
                .unwrap();
            assert_eq!(s.stats().bytes, cost(b"k", len));
            assert_eq!(get(&mut s, b"k", NOW).unwrap().value.len(), len);
            // The allocation holds the header, the key and the value, no more.
            let held = s.entries.get_mut(b"k").unwrap().allocated_len();
            assert_eq!(held, slot::HEADER + 1 + len, "{held} bytes held for {len}");
        }
        s.store(write(StorageMode::Append, b"k", b"xy"), NOW)
            .unwrap();
        s.arith(b"k", true, 1, 5, NOW).unwrap();
        s.store(write(StorageMode::Set, b"n", b"9"), NOW).unwrap();
        s.arith(b"n", true, 1, 6, NOW).unwrap();
        assert_eq!(get(&mut s, b"n", NOW).unwrap().value, b"10");
        assert_eq!(s.stats().bytes, cost(b"k", 201) + cost(b"n", 2));
        s.touch(b"k", Expiry::At(NOW + 1), NOW).unwrap();
        s.store(write(StorageMode::Set, b"n", b"1"), NOW + 1)
            .unwrap();
        assert!(get(&mut s, b"k", NOW + 1).is_none());
        assert_eq!(s.stats().bytes, cost(b"n", 1));
        assert_eq!(s.stats().items, 1);
    }

    #[test]
    fn lookups_count_what_they_find_dead_like_memcached() {
        let mut s = store();
        let mut w = write(StorageMode::Set, b"e", b"v");
        w.expiry = Expiry::At(NOW);
        s.store(w, NOW).unwrap();
        // A write over an expired item finds it too, as memcached's does.
        s.store(write(StorageMode::Add, b"e", b"v"), NOW).unwrap();
        s.store(write(StorageMode::Set, b"f", b"v"), NOW).unwrap();
        s.flush_all(Some(NOW + 1), NOW).unwrap();
        assert!(get(&mut s, b"f", NOW + 1).is_none());
        assert!(!s.delete(b"missing", NOW).unwrap());
        let events = s.stats().events;
        assert_eq!((events.expired_found, events.flushed_found), (1, 1));
    }

    #[test]
    fn a_full_store_reclaims_dead_items_and_counts_the_unfetched() {
        let mut s = MemoryStore::new(600, Limits::default()).with_eviction(Eviction::None);
        for (key, expiry) in [(&b"a"[..], NOW + 1), (b"b", NOW + 1), (b"c", NOW + 100)] {
            let mut w = write(StorageMode::Set, key, &[b'x'; 100]);
            w.expiry = Expiry::At(expiry);
            s.store(w, NOW).unwrap();
        }
        assert!(get(&mut s, b"a", NOW).is_some());
        // At NOW + 1 "a" and "b" are dead; the big write takes their room.
        s.store(write(StorageMode::Set, b"d", &[b'x'; 250]), NOW + 1)
            .unwrap();
        let events = s.stats().events;
        assert_eq!(
            (
                events.reclaim_walks,
                events.reclaimed,
                events.reclaimed_unfetched
            ),
            (1, 2, 1)
        );
        assert_eq!(events.expired_found, 0, "a walk is not a lookup");
    }

    /// Stores `key` with `expiry`, 10 value bytes.
    fn put_expiring(s: &mut MemoryStore, key: &[u8], expiry: Expiry, now: UnixTime) {
        let mut w = write(StorageMode::Set, key, &[b'x'; 10]);
        w.expiry = expiry;
        assert_eq!(s.store(w, now), Ok(StoreStatus::Stored));
    }

    #[test]
    fn sweep_slices_check_at_most_their_size_and_reclaim_every_dead_item_and_no_live_one() {
        let mut s = MemoryStore::new(64 << 20, Limits::default());
        let key = |i: usize| format!("key:{i}").into_bytes();
        let (mut dead, mut alive) = (Vec::new(), Vec::new());
        for i in 0..10_000 {
            let expiry = match i % 4 {
                0 | 1 => Expiry::At(NOW + 1),
                2 => Expiry::At(NOW + 100),
                _ => Expiry::Never,
            };
            put_expiring(&mut s, &key(i), expiry, NOW);
            match i % 4 {
                0 | 1 => dead.push(key(i)),
                _ => alive.push(key(i)),
            }
        }
        // Half of the doomed ones were read while alive: not "unfetched".
        for k in dead.iter().step_by(2) {
            assert!(get(&mut s, k, NOW).is_some());
        }
        let cost = |k: &[u8]| cost(k, 10);
        let alive_bytes: u64 = alive.iter().map(|k| cost(k)).sum();
        assert!(s.stats().bytes > alive_bytes);

        // Nothing is dead yet: a pass checks everything and drops nothing.
        let mut slices = 0;
        while s.sweep(NOW, 1000) {
            slices += 1;
        }
        assert_eq!(slices + 1, 10, "10,000 entries in slices of 1,000");
        assert_eq!(s.stats().events.swept, 0);
        assert_eq!(s.stats().events.sweep_checked, 10_000);
        assert!(!s.sweep(NOW, 1000), "one pass a second");

        // At NOW + 1 half are dead. Between slices, commands delete live
        // keys (the last entry moves into their place) and add new ones.
        let mut checked = s.stats().events.sweep_checked;
        let (mut deleted, mut added) = (0, Vec::new());
        loop {
            let going_on = s.sweep(NOW + 1, 1000);
            let now_checked = s.stats().events.sweep_checked;
            assert!(
                now_checked - checked <= 1000,
                "a slice checked {}",
                now_checked - checked
            );
            checked = now_checked;
            if !going_on {
                break;
            }
            let victim = alive.remove(deleted * 7 % alive.len());
            assert!(s.delete(&victim, NOW + 1).unwrap());
            deleted += 1;
            let fresh = format!("new:{deleted}").into_bytes();
            put_expiring(&mut s, &fresh, Expiry::Never, NOW + 1);
            added.push(fresh);
        }
        // Each delete moved at most one entry behind the cursor: only those
        // can wait for the next pass.
        let first_pass = s.stats().events.swept;
        assert!(
            first_pass + deleted as u64 >= dead.len() as u64,
            "{first_pass} swept"
        );
        while s.sweep(NOW + 2, 1000) {}
        let events = s.stats().events;
        assert_eq!(events.swept, dead.len() as u64);
        assert_eq!(events.swept_unfetched, dead.len() as u64 / 2);
        assert_eq!(events.sweep_passes, 3);
        assert_eq!(events.expired_found, 0, "a sweep is not a lookup");
        alive.extend(added);
        assert_eq!(s.stats().items, alive.len() as u64);
        assert_eq!(s.stats().bytes, alive.iter().map(|k| cost(k)).sum::<u64>());
        for k in &alive {
            assert!(get(&mut s, k, NOW + 2).is_some());
        }
    }

    #[test]
    fn a_listing_by_place_goes_down_from_the_end_in_bounded_slices_and_skips_the_dead() {
        let mut s = store();
        for key in ["a", "b", "c", "d", "e"] {
            let expiry = match key {
                "c" => Expiry::At(NOW + 1),
                _ => Expiry::Never,
            };
            put_expiring(&mut s, key.as_bytes(), expiry, NOW);
        }
        let slice = |s: &mut MemoryStore, below, max, wanted: usize| {
            let mut keys = Vec::new();
            let next = s.export_below(below, max, NOW + 1, &mut |r| {
                keys.push(String::from_utf8(r.key).unwrap());
                keys.len() < wanted
            });
            (next.unwrap(), keys)
        };
        assert_eq!(
            slice(&mut s, usize::MAX, 2, 9),
            (3, vec!["e".into(), "d".into()])
        );
        assert_eq!(slice(&mut s, 3, 2, 9), (1, vec!["b".into()]), "c is dead");
        assert_eq!(slice(&mut s, 1, 2, 9), (0, vec!["a".into()]), "done");
        assert_eq!(
            slice(&mut s, 9, 9, 1),
            (4, vec!["e".into()]),
            "stopped by out"
        );
        assert_eq!(s.stats().items, 5, "nothing removed: no entry moves");
    }

    #[test]
    fn a_sweep_frees_the_memory_a_write_needs() {
        let mut s = MemoryStore::new(1000, Limits::default()).with_eviction(Eviction::None);
        for key in [&b"a"[..], b"b", b"c"] {
            let mut w = write(StorageMode::Set, key, &[b'x'; 250]);
            w.expiry = Expiry::At(NOW + 1);
            s.store(w, NOW).unwrap();
        }
        while s.maintain(NOW + 1).unwrap() {}
        assert_eq!((s.stats().items, s.stats().bytes), (0, 0));
        s.store(write(StorageMode::Set, b"d", &[b'x'; 900]), NOW + 1)
            .unwrap();
        let events = s.stats().events;
        assert_eq!((events.swept, events.swept_unfetched), (3, 3));
        assert_eq!(events.reclaim_walks, 0, "the write found room");
    }

    #[test]
    fn a_sweep_drops_flushed_items_without_counting_them_unfetched() {
        let mut s = store();
        put_expiring(&mut s, b"old", Expiry::Never, NOW);
        s.flush_all(Some(NOW + 5), NOW).unwrap();
        put_expiring(&mut s, b"new", Expiry::Never, NOW + 5);
        while s.sweep(NOW + 5, SWEEP_SLICE) {}
        let events = s.stats().events;
        assert_eq!((events.swept, events.swept_unfetched), (1, 0));
        assert!(get(&mut s, b"new", NOW + 5).is_some());
    }

    #[test]
    fn a_store_with_the_sweep_off_keeps_dead_items_until_met() {
        let mut s = store().with_sweep(false);
        put_expiring(&mut s, b"k", Expiry::At(NOW + 1), NOW);
        assert!(!s.maintain(NOW + 1).unwrap());
        assert_eq!(s.stats().items, 1);
        assert_eq!(s.stats().events.sweep_checked, 0);
    }

    #[test]
    fn a_new_memory_limit_refuses_writes_past_it_and_keeps_what_is_stored() {
        let mut s = store().with_eviction(Eviction::None);
        s.store(write(StorageMode::Set, b"a", &[b'x'; 500]), NOW)
            .unwrap();
        s.set_memory_limit(300).unwrap();
        assert_eq!(s.stats().limit_bytes, 300);
        assert!(get(&mut s, b"a", NOW).is_some());
        assert_eq!(
            s.store(write(StorageMode::Set, b"b", b"v"), NOW),
            Err(StoreError::OutOfMemory)
        );
        s.set_memory_limit(1 << 20).unwrap();
        assert_eq!(
            s.store(write(StorageMode::Set, b"b", b"v"), NOW),
            Ok(StoreStatus::Stored)
        );
    }

    /// A store with room for `items` items of `key:N` with 100-byte values.
    fn small(items: u64) -> MemoryStore {
        MemoryStore::new(items * room_per_item(), Limits::default())
    }

    /// What an item of `key:N` (N < 10) and 100 bytes is charged, and a byte.
    fn room_per_item() -> u64 {
        cost(b"key:1", 100) + 1
    }

    fn set(s: &mut MemoryStore, key: &str, now: UnixTime) -> StoreResult<StoreStatus> {
        s.store(write(StorageMode::Set, key.as_bytes(), &[b'x'; 100]), now)
    }

    fn held(s: &MemoryStore) -> Vec<String> {
        let keys = s.entries.iter();
        keys.map(|s| String::from_utf8_lossy(s.key()).into_owned())
            .collect()
    }

    #[test]
    fn a_full_store_evicts_what_was_not_used_since_the_clock_passed_and_spares_the_rest() {
        let key = |i: usize| format!("k:{i:02}");
        let mut s = MemoryStore::new(10 * cost(b"k:00", 100) + 1, Limits::default());
        for i in 0..10 {
            assert_eq!(set(&mut s, &key(i), NOW), Ok(StoreStatus::Stored));
        }
        // All new: the hand clears every bit but the newest's, then takes
        // the oldest.
        assert_eq!(set(&mut s, &key(10), NOW), Ok(StoreStatus::Stored));
        assert!(!held(&s).contains(&key(0)));
        // k:05 is read since the hand passed it: spared while the others
        // nobody used go, oldest first.
        assert!(get(&mut s, key(5).as_bytes(), NOW).is_some());
        for i in 11..16 {
            assert_eq!(set(&mut s, &key(i), NOW), Ok(StoreStatus::Stored));
        }
        let kept = held(&s);
        assert!(kept.contains(&key(5)), "{kept:?}");
        for gone in [0, 1, 2, 3, 4, 6] {
            assert!(!kept.contains(&key(gone)), "{} held: {kept:?}", key(gone));
        }
        let events = s.stats().events;
        assert_eq!((events.evicted, events.evicted_unfetched), (6, 6));
        assert!(s.stats().bytes <= s.stats().limit_bytes);
    }

    /// Four writers' batches of 10 kB values interleaved at random (a
    /// seed each run), reading older keys as they go, fill an 8 MB store
    /// ten times over; then 300 more writes: all 300 are held, whatever the
    /// hand's place when each came (the first rule lost one when the hand
    /// passed the end just after it was written).
    #[test]
    fn after_interleaved_writers_the_newest_writes_are_all_held() {
        let value = vec![b'v'; 10_000];
        for seed in 0..20u64 {
            let mut s = MemoryStore::new(8 << 20, Limits::default());
            let put = |s: &mut MemoryStore, k: usize| {
                let key = format!("key:{k}");
                let mut w = write(StorageMode::Set, key.as_bytes(), &value);
                w.flags = 0;
                s.store(w, NOW).unwrap();
                if k.is_multiple_of(2) {
                    get(s, format!("key:{}", k / 2).as_bytes(), NOW);
                }
            };
            let mut next = [0, 2000, 4000, 6000];
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            while (0..4).any(|t| next[t] < (t + 1) * 2000) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let t = (rng % 4) as usize;
                let end = (next[t] + 50).min((t + 1) * 2000);
                (next[t]..end).for_each(|k| put(&mut s, k));
                next[t] = end;
            }
            (8000..8300).for_each(|k| put(&mut s, k));
            let lost = (8000..8300)
                .filter(|k| s.entries.position(format!("key:{k}").as_bytes()).is_none());
            assert_eq!(lost.count(), 0, "seed {seed}");
        }
    }

    #[test]
    fn a_stream_of_new_keys_keeps_the_newest() {
        let mut s = small(100);
        // Six-byte keys, as `small` counts them.
        let key = |i: usize| format!("k:{i:04}");
        for i in 0..300 {
            assert_eq!(set(&mut s, &key(i), NOW), Ok(StoreStatus::Stored));
        }
        let kept = held(&s);
        assert_eq!(kept.len(), 100);
        for i in 250..300 {
            assert!(kept.contains(&key(i)), "{} was evicted", key(i));
        }
    }

    #[test]
    fn a_write_passes_over_a_bounded_number_of_referenced_items() {
        let mut s = small(2 * SECOND_CHANCES as u64);
        let key = |i: usize| format!("k:{i:04}");
        // More than fit, then every one held is read: every bit is set.
        let written = 2 * SECOND_CHANCES + 100;
        for i in 0..written {
            set(&mut s, &key(i), NOW).unwrap();
        }
        for i in 0..written {
            get(&mut s, key(i).as_bytes(), NOW);
        }
        let evicted = s.stats().events.evicted;
        assert!(evicted > 0 && s.entries.iter().all(|e| e.referenced()));
        set(&mut s, &key(written), NOW).unwrap();
        let cleared = s.entries.iter().filter(|e| !e.referenced()).count();
        assert_eq!(cleared, SECOND_CHANCES, "one write cleared {cleared} bits");
        assert_eq!(s.stats().events.evicted, evicted + 1);
    }

    #[test]
    fn a_store_above_a_lowered_cap_drains_it_a_bounded_amount_per_write() {
        let mut s = small(2_000);
        let key = |i: usize| format!("k:{i:04}");
        for i in 0..2_000 {
            set(&mut s, &key(i), NOW).unwrap();
        }
        s.set_memory_limit(500 * room_per_item()).unwrap();
        let per_write = (SURPLUS_PER_WRITE / cost(b"k:0000", 100)) as usize + 2;
        let mut i = 2_000;
        while s.stats().bytes > s.stats().limit_bytes {
            let (before, evicted) = (s.stats().bytes, s.stats().events.evicted);
            assert_eq!(set(&mut s, &key(i), NOW), Ok(StoreStatus::Stored));
            let this_write = (s.stats().events.evicted - evicted) as usize;
            assert!(this_write <= per_write, "one write evicted {this_write}");
            assert!(s.stats().bytes <= before, "the store grew above its cap");
            i += 1;
        }
        assert!(i - 2_000 < 2_000, "{} writes to drain", i - 2_000);
    }

    #[test]
    fn a_key_longer_than_memcacheds_from_a_peer_or_a_snapshot_is_refused_not_a_panic() {
        let long = vec![b'k'; 300];
        let entry = super::super::Entry {
            flags: 0,
            expiry: Expiry::Never,
            value: b"v".to_vec(),
        };
        let mut s = store();
        assert!(matches!(
            s.import(&long, Some(&entry), 1, NOW),
            Err(StoreError::Refused(_))
        ));
        let record = Record {
            key: long,
            entry,
            cas: 1,
            stored_at: NOW,
            referenced: false,
        };
        let mut ordered = store().ordered();
        assert!(matches!(
            ordered.install(&record, NOW),
            Err(StoreError::Refused(_))
        ));
        let longest = vec![b'k'; Limits::MAX_KEY_LEN];
        let fits = Record {
            key: longest,
            ..record
        };
        assert_eq!(ordered.install(&fits, NOW), Ok(()));
        assert_eq!(s.stats().items + ordered.stats().items, 1);
    }

    #[test]
    fn a_set_refused_for_memory_reports_the_value_it_dropped() {
        let mut s = small(2).keeping_evicted();
        set(&mut s, "key:1", NOW).unwrap();
        let huge = vec![b'x'; 1000];
        assert_eq!(
            s.store(write(StorageMode::Set, b"key:1", &huge), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert!(get(&mut s, b"key:1", NOW).is_none());
        assert_eq!(s.take_evicted(), [b"key:1".to_vec()]);
        assert_eq!(s.stats().events.evicted, 0, "not an eviction");
    }

    #[test]
    fn the_clock_drops_the_dead_items_it_meets_and_never_the_key_being_written() {
        let mut s = small(2);
        let mut w = write(StorageMode::Set, b"dies", &[b'x'; 100]);
        w.expiry = Expiry::At(NOW + 1);
        s.store(w, NOW).unwrap();
        assert_eq!(set(&mut s, "key:1", NOW), Ok(StoreStatus::Stored));
        assert_eq!(set(&mut s, "key:2", NOW + 1), Ok(StoreStatus::Stored));
        assert_eq!(held(&s), ["key:1", "key:2"]);
        let events = s.stats().events;
        assert_eq!((events.reclaimed, events.evicted), (1, 0));
        // Growing key:2 past what is left evicts key:1, not key:2 itself.
        let big = [b'y'; 150];
        assert_eq!(
            s.store(write(StorageMode::Set, b"key:2", &big), NOW + 1),
            Ok(StoreStatus::Stored)
        );
        assert_eq!(held(&s), ["key:2"]);
        assert_eq!(get(&mut s, b"key:2", NOW + 1).unwrap().value, big);
    }

    #[test]
    fn a_value_larger_than_the_cap_is_refused_without_evicting_anything() {
        let mut s = small(2);
        set(&mut s, "key:1", NOW).unwrap();
        let huge = vec![b'x'; 1000];
        assert_eq!(
            s.store(write(StorageMode::Set, b"huge", &huge), NOW),
            Err(StoreError::OutOfMemory)
        );
        assert_eq!(held(&s), ["key:1"]);
        assert_eq!(s.stats().events.evicted, 0);
    }

    #[test]
    fn eviction_none_refuses_where_lru_evicts() {
        let mut s = small(1).with_eviction(Eviction::None);
        set(&mut s, "key:1", NOW).unwrap();
        assert_eq!(set(&mut s, "key:2", NOW), Err(StoreError::OutOfMemory));
        assert_eq!(held(&s), ["key:1"]);
    }

    #[test]
    fn evicted_keys_are_kept_for_the_engine_when_asked() {
        let mut s = small(1).keeping_evicted();
        set(&mut s, "key:1", NOW).unwrap();
        set(&mut s, "key:2", NOW).unwrap();
        assert_eq!(s.take_evicted(), [b"key:1".to_vec()]);
        assert!(s.take_evicted().is_empty());
        let mut plain = small(1);
        set(&mut plain, "key:1", NOW).unwrap();
        set(&mut plain, "key:2", NOW).unwrap();
        assert!(
            plain.take_evicted().is_empty(),
            "nobody takes them: none kept"
        );
    }

    /// What two replicas must agree on: each entry, in the map's order,
    /// with its cas unique, eviction bit, store time and expiry; the bytes
    /// counted; where the hand and the sweep stand; the last reclaim; the
    /// pending flush.
    fn layout(s: &MemoryStore) -> String {
        let entries: Vec<_> = s
            .entries
            .iter()
            .map(|e| {
                (
                    e.key().to_vec(),
                    e.cas(),
                    e.referenced(),
                    e.stored_at(),
                    e.expiry(),
                )
            })
            .collect();
        format!(
            "{entries:?} bytes {} hand {} sweep {:?}/{} reclaim {} flush {:?}",
            s.used_bytes, s.hand, s.sweep.cursor, s.sweep.began, s.last_reclaim, s.flush_at
        )
    }

    /// Applies the same writes (some expiring, at clocks that go back and
    /// forth as different nodes' do) to `a` and `b`, with reads of every key
    /// at a later local time and timer sweeps on `a` only, as a replica
    /// serving clients does between writes.
    /// Returns the first write the two answered differently, if any.
    fn replicate(a: &mut MemoryStore, b: &mut MemoryStore, writes: u64) -> Option<u64> {
        let mut differed = None;
        for i in 0..writes {
            let now = NOW + i / 10 + (i % 3);
            let key = format!("key:{}", i * 7 % 23);
            if apply(a, &key, i, now) != apply(b, &key, i, now) {
                differed = differed.or(Some(i));
            }
            for k in 0..23 {
                get(a, format!("key:{k}").as_bytes(), now + 5);
            }
            a.maintain(now + 5).unwrap();
        }
        differed
    }

    /// The `i`th write of [`replicate`] to `key` at `now`: mostly sets, some
    /// expiring, and now and then a touch, a `gat`, an append, a delete or
    /// a delayed `flush_all`; what it answered.
    fn apply(s: &mut MemoryStore, key: &str, i: u64, now: UnixTime) -> String {
        let expiring = |w: &mut Write<'_>| {
            w.cas = i + 1;
            if i.is_multiple_of(4) {
                w.expiry = Expiry::At(now + 2);
            }
        };
        let key = key.as_bytes();
        let answer = match i % 29 {
            5 => format!("{:?}", s.touch(key, Expiry::At(now + 1), now)),
            9 => {
                let mut hit = false;
                let touch = Some(Expiry::At(now + 3));
                let done = s.retrieve(KeysRef::One(key), touch, now, &mut |_, _| hit = true);
                format!("{done:?} {hit}")
            }
            13 => {
                let mut w = write(StorageMode::Append, key, &[b'y'; 30]);
                expiring(&mut w);
                format!("{:?}", s.store(w, now))
            }
            17 => format!("{:?}", s.delete(key, now)),
            23 => format!("{:?}", s.flush_all(Some(now + 2), now)),
            _ => {
                let mut w = write(StorageMode::Set, key, &[b'x'; 100]);
                expiring(&mut w);
                format!("{:?}", s.store(w, now))
            }
        };
        answer
    }

    #[test]
    fn ordered_replicas_evict_and_sweep_the_same_items_whatever_they_read() {
        let (mut a, mut b) = (small(8).ordered(), small(8).ordered());
        assert_eq!(replicate(&mut a, &mut b, 400), None, "answered differently");
        assert!(a.stats().events.evicted > 50);
        assert!(a.stats().events.swept + a.stats().events.reclaimed > 0);
        assert_eq!(layout(&a), layout(&b));
    }

    #[test]
    fn negative_control_unordered_replicas_that_read_differently_evict_differently() {
        let (mut a, mut b) = (small(8), small(8));
        let differed = replicate(&mut a, &mut b, 400);
        assert!(differed.is_some(), "no write was answered differently");
        assert_ne!(layout(&a), layout(&b));
    }

    /// A snapshot of `from` (its head and every record, in its order)
    /// installed into `to`, as the strong modes hand one over.
    fn hand_over(from: &mut MemoryStore, to: &mut MemoryStore, now: UnixTime) {
        let listing = from.snapshot_keys().unwrap();
        to.reset(&listing.head, now).unwrap();
        for key in listing.keys.iter() {
            let record = from.export_record(key, now).unwrap().expect("listed");
            to.install(&record, now).unwrap();
        }
    }

    /// Two ordered replicas take writes; `hand` then hands the first's
    /// snapshot to a third holding a stale item, read well after the
    /// writes (some of what it carries is dead). The third must hold what
    /// the first does, and go on evicting as it does.
    fn a_replica_handed_over_goes_on_like_its_source(
        hand: impl FnOnce(&mut MemoryStore, &mut MemoryStore, UnixTime),
    ) {
        let (mut a, mut b) = (small(8).ordered(), small(8).ordered());
        assert_eq!(replicate(&mut a, &mut b, 100), None);
        let mut c = small(8).ordered();
        put_expiring(&mut c, b"stale", Expiry::Never, NOW);
        hand(&mut a, &mut c, NOW + 1000);
        assert_eq!(layout(&a), layout(&c));
        assert_eq!(replicate(&mut a, &mut c, 300), None, "answered differently");
        assert_eq!(layout(&a), layout(&c));
        assert!(a.stats().events.evicted > 50);
    }

    #[test]
    fn an_ordered_snapshot_makes_a_replica_that_goes_on_evicting_like_its_source() {
        a_replica_handed_over_goes_on_like_its_source(hand_over);
    }

    /// The same, listed in the table's order a few entries at a time, as
    /// the strong modes hand a snapshot of an ordered store over; returns
    /// the bytes the listing said it would carry and those it carried.
    fn hand_over_in_order(
        from: &mut MemoryStore,
        to: &mut MemoryStore,
        now: UnixTime,
    ) -> (u64, u64) {
        let listing = from
            .freeze_in_order()
            .expect("an ordered store lists in order");
        let carried = install_image(from, to, now, |_| {});
        from.thaw();
        (listing.bytes, carried)
    }

    /// Installs the whole image `from` froze into `to` at `now`, two
    /// entries at a time, running `meanwhile` on `from` between them; the
    /// bytes of keys and values it carried.
    fn install_image(
        from: &mut MemoryStore,
        to: &mut MemoryStore,
        now: UnixTime,
        mut meanwhile: impl FnMut(&mut MemoryStore),
    ) -> u64 {
        let listing = from.frozen_listing().expect("frozen");
        to.reset(&listing.head, now).unwrap();
        let (mut next, mut carried) = (Some(0), 0);
        while let Some(place) = next {
            let mut records = Vec::new();
            next = from
                .export_in_order(place, 2, &mut |r| {
                    records.push(r);
                    true
                })
                .unwrap();
            for record in records {
                carried += record.size();
                to.install(&record, now).unwrap();
            }
            meanwhile(from);
        }
        carried
    }

    /// An image frozen for a listing in order stays the store as it was
    /// when frozen, whatever the store does next: writes, evictions, its
    /// sweep, delayed and immediate flushes, keys added at places others
    /// left. Listed a few entries at a time between writes, it makes a
    /// replica that goes on like one that stopped at the freeze.
    #[test]
    fn a_frozen_image_lists_the_store_as_it_was_while_writes_go_on() {
        let (mut a, mut stopped) = (small(8).ordered(), small(8).ordered());
        assert_eq!(replicate(&mut a, &mut stopped, 100), None);
        let frozen = a.freeze_in_order().expect("an ordered store");
        let mut c = small(8).ordered();
        let mut i = 100;
        install_image(&mut a, &mut c, NOW + 1000, |a| {
            for _ in 0..7 {
                apply(a, &format!("key:{}", i * 7 % 23), i, NOW + i / 10);
                let (key, expiry) = (format!("key:{}", i % 23), Expiry::At(NOW + 900));
                a.touch(key.as_bytes(), expiry, NOW + i / 10).unwrap();
                i += 1;
            }
        });
        assert_ne!(layout(&a), layout(&stopped));
        assert_eq!(layout(&c), layout(&stopped));
        a.flush_all(None, NOW + 100).unwrap();
        assert_eq!(
            a.freeze_in_order(),
            Some(frozen),
            "the same image until thawed"
        );
        let mut d = small(8).ordered();
        install_image(&mut a, &mut d, NOW + 1000, |_| {});
        assert_eq!(layout(&d), layout(&stopped), "after the table was cleared");
        assert!(a.thaw() > 0, "it copied what changed");
        assert_eq!(a.frozen_listing(), None);
        assert_eq!(
            replicate(&mut stopped, &mut c, 300),
            None,
            "answered differently"
        );
        assert_eq!(layout(&stopped), layout(&c));
    }

    /// The eviction clock's hand clears the bits of up to thousands of
    /// entries a write: a frozen image keeps those bits, not copies of the
    /// items. A few writes to a full store whose every entry is referenced
    /// copy about the items they evict and move, and the image still lists
    /// the store as it was, bits included.
    #[test]
    fn a_frozen_image_keeps_the_bits_the_hand_clears_without_copying_items() {
        let put = |s: &mut MemoryStore, i: u64| {
            let key = format!("key:{i}");
            let mut w = write(StorageMode::Set, key.as_bytes(), &[b'x'; 100]);
            w.cas = i + 1;
            s.store(w, NOW).unwrap();
        };
        let (mut a, mut stopped) = (small(200).ordered(), small(200).ordered());
        for i in 0..300 {
            put(&mut a, i);
            put(&mut stopped, i);
        }
        for i in 0..300 {
            let key = format!("key:{i}");
            for s in [&mut a, &mut stopped] {
                s.touch(key.as_bytes(), Expiry::Never, NOW).unwrap();
            }
        }
        let items = a.stats().items;
        assert!(
            a.stats().events.evicted > 0 && items > 100,
            "{items} items, full"
        );
        a.freeze_in_order().expect("an ordered store");
        for i in 300..310 {
            put(&mut a, i);
        }
        let mut c = small(200).ordered();
        install_image(&mut a, &mut c, NOW + 1000, |_| {});
        assert_eq!(layout(&c), layout(&stopped));
        let copied = a.thaw();
        assert!(
            copied <= 40,
            "{copied} of {items} items copied for 10 writes"
        );
    }

    #[test]
    fn an_ordered_snapshot_listed_in_order_makes_a_replica_that_goes_on_like_its_source() {
        a_replica_handed_over_goes_on_like_its_source(|from, to, now| {
            let (said, carried) = hand_over_in_order(from, to, now);
            assert_eq!(said, carried);
        });
        assert!(
            small(8).freeze_in_order().is_none(),
            "an unordered store lists by key"
        );
    }

    #[test]
    fn table_slots_are_what_the_map_allocates() {
        assert_eq!(table_slots(0), 0);
        assert_eq!(table_slots(3), 4);
        assert_eq!(table_slots(7), 8);
        assert_eq!(table_slots(14), 16);
        assert_eq!(table_slots(896), 1024);
    }

    #[test]
    fn arith_keeps_flags_and_pads() {
        let mut s = store();
        s.store(write(StorageMode::Set, b"n", b"100"), NOW).unwrap();
        assert_eq!(
            s.arith(b"n", false, 1, 77, NOW),
            Ok(ArithOutcome::Value(99))
        );
        let item = get(&mut s, b"n", NOW).unwrap();
        assert_eq!(
            (item.flags, item.value.as_slice(), item.cas),
            (7, &b"99 "[..], 77)
        );
        assert_eq!(
            s.arith(b"missing", true, 1, 78, NOW),
            Ok(ArithOutcome::NotFound)
        );
    }
}
