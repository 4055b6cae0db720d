//! Eventual mode's bookkeeping beside the store: the stamp of every key's
//! current version, tombstones, and the order keys last changed in (each
//! change numbered, the keys listed oldest to newest), so a peer's
//! `sync request <since>` is answered with only the keys that changed since
//! `since` (the cost follows the changes, not the store's size), in parts
//! of about a byte budget: a prefix of those changes in change order.
//!
//! It lives with the rest of eventual mode in `cluster/eventual/`, owned by
//! eventual mode's store side ([`super::EventualReplica`]), which runs
//! beside the store, on the store's thread (see [`crate::backend`]), and
//! lends it the store as a
//! [`VersionedStore`]: local writes are read back as [`Entry`]s, and peers'
//! versions are imported exactly.
//!
//! ```text
//!  local write ──► store ──► record (stamp, seq) ──► Version pushed to peers
//!  remote Version ──► newer than what we hold? ──► import into store, record
//!  sync request since s ──► changes after s, a prefix within the budget
//!                       ──► current Versions + complete(upto, last)
//! ```

use std::cell::Cell;
use std::collections::HashMap;

use super::log_key::LogKey;
use super::origins::{Cause, Coverage, Origin};
use super::version::{approximate_len, State, Version};
use crate::cluster::{NodeId, Stamp};
use crate::protocol::Command;
use crate::store::dense::{DenseTable, Keyed};
use crate::store::{Entry, Expiry, StoreResult, UnixTime, VersionedStore};

/// What the log knows of a key, in 40 bytes (a `Stamp`, a `Held`, a
/// `Cause` and the rest as they are would take 64): the stamp as its two
/// fields, [`Held`] as a tag and an expiry in 32-bit seconds, as the store
/// keeps it (`store/slot.rs`: good until 2106, a later time held as the
/// last that fits), and the write's origin as an index into the log's
/// table of origins.
#[derive(Debug, Clone, Copy)]
struct Known {
    ts: u64,
    seq: u64,
    /// The number of the write among its origin's (`origins.rs`).
    origin_seq: u64,
    node: NodeId,
    /// The length of the value it recorded (0 for a tombstone or a value
    /// it could not read back), so a sync answer is cut to its budget
    /// before anything is read from the store.
    value_len: u32,
    /// [`Held::Present`]'s expiry, if it has one.
    expires_at: u32,
    /// Its origin's index in [`VersionLog::origins`], or [`NO_ORIGIN`].
    origin: u16,
    held: HeldTag,
}

/// A version whose origin is not known (a local write not numbered yet).
const NO_ORIGIN: u16 = u16::MAX;

/// Who made a key's version: an index into the log's origins, and the
/// write's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    origin: u16,
    seq: u64,
}

const UNWRITTEN: Written = Written {
    origin: NO_ORIGIN,
    seq: 0,
};

/// [`Held`] without its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldTag {
    Deleted,
    PresentNever,
    PresentUntil,
    Unknown,
}

impl Known {
    fn new(stamp: Stamp, seq: u64, held: Held, value_len: u32, written: Written) -> Known {
        let (held, expires_at) = match held {
            Held::Deleted => (HeldTag::Deleted, 0),
            Held::Present(Expiry::Never) => (HeldTag::PresentNever, 0),
            Held::Present(Expiry::At(at)) => {
                (HeldTag::PresentUntil, u32::try_from(at).unwrap_or(u32::MAX))
            }
            Held::Unknown => (HeldTag::Unknown, 0),
        };
        Known {
            ts: stamp.ts,
            seq,
            origin_seq: written.seq,
            node: stamp.node,
            value_len,
            expires_at,
            origin: written.origin,
            held,
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            ts: self.ts,
            node: self.node,
        }
    }

    fn held(&self) -> Held {
        match self.held {
            HeldTag::Deleted => Held::Deleted,
            HeldTag::PresentNever => Held::Present(Expiry::Never),
            HeldTag::PresentUntil => Held::Present(Expiry::At(u64::from(self.expires_at))),
            HeldTag::Unknown => Held::Unknown,
        }
    }
}

/// What the store should hold for a key, as far as the log knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// A tombstone.
    Deleted,
    /// A value, until its expiry: if the store misses it before then, the
    /// store lost it (a memcached that evicted or restarted), which is no
    /// delete.
    Present(Expiry),
    /// A local write whose result could not be read back.
    Unknown,
}

fn held(state: &State) -> Held {
    match state {
        State::Present(item) => Held::Present(item.expiry),
        State::Deleted | State::Flushed => Held::Deleted,
    }
}

fn value_len(state: &State) -> u32 {
    match state {
        State::Present(item) => u32::try_from(item.value.len()).unwrap_or(u32::MAX),
        State::Deleted | State::Flushed => 0,
    }
}

/// A prefix of the changes after some change number, as current versions:
/// a sync answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub versions: Vec<Version>,
    /// The change number they bring the asker up to: every change at or
    /// below it is in `versions` (or superseded by a later change).
    pub upto: u64,
    /// The last change number when they were collected; `upto` is below it
    /// when the budget left changes for the next answer.
    pub last: u64,
    /// Who made the versions the store no longer had (lost before their
    /// expiry, as by a memcached that evicts on its own): not sent, so this
    /// replica must not claim to hold them (`origins.rs`).
    pub lost: Vec<Cause>,
}

/// A key's entry in the log's table: the key (in place, when short: see
/// `log_key.rs`), what is known of it, and its neighbours in change order
/// (places in the table, or [`NONE`]), in 80 bytes.
#[derive(Debug, Clone)]
struct KnownKey {
    key: LogKey,
    known: Known,
    older: u32,
    newer: u32,
}

/// No neighbour: the end of the change order.
const NONE: u32 = u32::MAX;

/// A change in change order: a key's (at its place in the table), or the
/// last `flush_all`.
#[derive(Debug, Clone, Copy)]
enum Change {
    Key(u32),
    Flush,
}

impl Keyed for KnownKey {
    fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The versions a replica holds, and the order they changed in.
///
/// The change order is a list through the table's entries, oldest to
/// newest (`KnownKey::older`, `newer`): a key changed again moves to the
/// newest end, so each key is in it once, at its latest change, and the
/// changes after a number are a tail of it, found from a note of where
/// the last answers stopped, or by a walk back. It costs 8 bytes an entry,
/// where a log of `(number, key)` beside the table took 24 for each
/// change (current or stale, up to twice the keys) and needed the key in
/// an allocation shared by both (16 bytes of reference counts).
#[derive(Debug)]
pub struct VersionLog {
    /// The store's dense table (a vector of entries found through an index
    /// of 4-byte positions): a third of the bytes of a `HashMap` holding
    /// the same entries at its load factor.
    table: DenseTable<KnownKey>,
    /// The places of the keys changed first and last, or [`NONE`].
    oldest: u32,
    newest: u32,
    /// Where the changes after a number start, for the numbers the next
    /// requests will likely name (where the last answers stopped): the
    /// number, and the place of the oldest entry changed after it, or
    /// [`NONE`]; kept so as entries move (see [`VersionLog::first_after`]).
    notes: Cell<[Option<(u64, u32)>; NOTES]>,
    /// Heap bytes of the keys too long to be held in place (see
    /// [`VersionLog::heap_bytes`]).
    key_bytes: u64,
    last_seq: u64,
    /// The newest `flush_all`: versions stamped below it are gone.
    flushed: Option<(Stamp, u64)>,
    /// The origins of the versions held, indexed by `Known::origin`
    /// (one per node run that wrote: a few, more after many restarts).
    origins: Vec<Origin>,
    /// Each origin's index in `origins`, so noting a write finds it in one
    /// lookup whatever their number. Both grow only in [`Self::written`].
    origin_at: HashMap<Origin, u16, ahash::RandomState>,
}

/// Answers started at once without a walk: the next one to each peer of a
/// cluster of up to eight nodes and the journal's snapshot, all at once.
const NOTES: usize = 8;

impl Default for VersionLog {
    fn default() -> VersionLog {
        VersionLog {
            table: DenseTable::default(),
            oldest: NONE,
            newest: NONE,
            notes: Cell::new([None; NOTES]),
            key_bytes: 0,
            last_seq: 0,
            flushed: None,
            origins: Vec::new(),
            origin_at: HashMap::default(),
        }
    }
}

impl VersionLog {
    pub fn new() -> VersionLog {
        VersionLog::default()
    }

    fn entry(&self, place: u32) -> &KnownKey {
        self.table
            .get_index(place as usize)
            .expect("a listed place")
    }

    fn entry_mut(&mut self, place: u32) -> &mut KnownKey {
        let entry = self.table.get_index_mut_unimaged(place as usize);
        entry.expect("a listed place")
    }

    /// Takes the entry at `place` out of the change order.
    fn unlink(&mut self, place: u32) {
        let KnownKey { older, newer, .. } = *self.entry(place);
        // The oldest change after a noted number, if it was this one, is
        // the next one now.
        self.renote(place, newer);
        self.set_newer_of(older, newer);
        self.set_older_of(newer, older);
    }

    /// Makes `to` the next newer of the entry at `place` (of nothing: the
    /// oldest).
    fn set_newer_of(&mut self, place: u32, to: u32) {
        match place {
            NONE => self.oldest = to,
            place => self.entry_mut(place).newer = to,
        }
    }

    /// Makes `to` the next older of the entry at `place` (of nothing: the
    /// newest).
    fn set_older_of(&mut self, place: u32, to: u32) {
        match place {
            NONE => self.newest = to,
            place => self.entry_mut(place).older = to,
        }
    }

    /// Puts the entry at `place`, out of the change order, at its newest end.
    fn link_newest(&mut self, place: u32) {
        // The first change after a noted number that had none.
        self.renote(NONE, place);
        let older = self.newest;
        let entry = self.entry_mut(place);
        (entry.older, entry.newer) = (older, NONE);
        self.set_newer_of(older, place);
        self.newest = place;
    }

    /// Removes the entry at `place`; the table's last entry takes its place,
    /// and its neighbours are told.
    fn remove_at(&mut self, place: u32) -> KnownKey {
        self.unlink(place);
        let removed = self.table.swap_remove_index(place as usize);
        let removed = removed.expect("a listed place");
        if (place as usize) < self.table.len() {
            self.renote(self.table.len() as u32, place);
            let KnownKey { older, newer, .. } = *self.entry(place);
            self.set_newer_of(older, place);
            self.set_older_of(newer, place);
        }
        removed
    }

    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    fn note(&mut self, key: &[u8], stamp: Stamp, state: &State, cause: Option<&Cause>) {
        let written = self.written(cause);
        self.note_held(key, stamp, held(state), value_len(state), written);
    }

    fn note_held(
        &mut self,
        key: &[u8],
        stamp: Stamp,
        held: Held,
        value_len: u32,
        written: Written,
    ) {
        let seq = self.next_seq();
        let fresh = Known::new(stamp, seq, held, value_len, written);
        let place = match self.table.position(key) {
            Some(place) => {
                let place = place as u32;
                self.unlink(place);
                self.entry_mut(place).known = fresh;
                place
            }
            None => {
                let key = LogKey::new(key);
                self.key_bytes += key.heap_bytes();
                self.table.push(KnownKey {
                    key,
                    known: fresh,
                    older: NONE,
                    newer: NONE,
                });
                (self.table.len() - 1) as u32
            }
        };
        self.link_newest(place);
    }

    /// Drops the versions at `places`, given in descending order: a removal
    /// moves the table's last entry into the hole, so taken from the highest
    /// place down, no place still to go is the one moved.
    fn remove_descending(&mut self, places: Vec<u32>) {
        for place in places {
            let removed = self.remove_at(place);
            self.key_bytes -= removed.key.heap_bytes();
        }
    }

    /// `cause` as the log keeps it.
    fn written(&mut self, cause: Option<&Cause>) -> Written {
        let Some(cause) = cause else {
            return UNWRITTEN;
        };
        let at = match self.origin_at.get(&cause.origin) {
            Some(&at) => at,
            None if self.origins.len() < usize::from(NO_ORIGIN) => {
                let at = self.origins.len() as u16;
                self.origins.push(cause.origin);
                self.origin_at.insert(cause.origin, at);
                at
            }
            None => return UNWRITTEN, // only ever sent whole
        };
        Written {
            origin: at,
            seq: cause.seq,
        }
    }

    /// Records who made the versions of local writes, once numbered: what
    /// a sync answer may leave out.
    pub fn note_causes(&mut self, versions: &[Version]) {
        for version in versions {
            let written = self.written(version.cause.as_ref());
            if let Some(entry) = self.table.get_mut(&version.key) {
                if entry.known.stamp() == version.stamp {
                    entry.known.origin = written.origin;
                    entry.known.origin_seq = written.seq;
                }
            }
        }
    }

    /// Who made `known`'s version, if the log knows.
    fn cause_of(&self, known: &Known) -> Option<Cause> {
        let origin = *self.origins.get(usize::from(known.origin))?;
        Some(Cause {
            origin,
            seq: known.origin_seq,
            deps: None,
        })
    }

    /// Whether an asker with `covered` holds `known`'s version or a newer one.
    fn is_covered(&self, known: &Known, covered: &Coverage) -> bool {
        known.origin_seq > 0
            && self
                .origins
                .get(usize::from(known.origin))
                .is_some_and(|origin| covered.get(*origin) >= known.origin_seq)
    }

    /// What the log knows of `key`.
    fn known(&self, key: &[u8]) -> Option<&Known> {
        self.table.get(key).map(|entry| &entry.known)
    }

    /// About the heap bytes the log holds: its key table (index and
    /// entries, each a [`LogKey`], a [`Known`] and its neighbours in
    /// change order), and the keys too long for their entry.
    pub fn heap_bytes(&self) -> u64 {
        self.table.heap_bytes() + self.key_bytes
    }

    /// The place of the oldest key change numbered above `seq`, or
    /// [`NONE`]: noted, if an answer noted `seq` (where it stopped, so the
    /// next request names it); else the oldest end, for a number before
    /// every change; else a walk back from the newest end over the changes
    /// after `seq` (those the answer then sends, if they fit its budget).
    fn first_after(&self, seq: u64) -> u32 {
        let mut noted = self.notes.get().into_iter().flatten();
        if let Some((_, place)) = noted.find(|&(after, _)| after == seq) {
            return place;
        }
        if self.oldest == NONE || self.entry(self.oldest).known.seq > seq {
            return self.oldest;
        }
        let mut first = NONE;
        let mut place = self.newest;
        while place != NONE && self.entry(place).known.seq > seq {
            first = place;
            place = self.entry(place).older;
        }
        first
    }

    /// Notes that the oldest key change after `seq` is at `place` (or that
    /// there is none: [`NONE`]); the oldest note makes room.
    fn note_first_after(&self, seq: u64, place: u32) {
        let mut notes = self.notes.get();
        match notes
            .iter()
            .position(|n| n.is_some_and(|(after, _)| after == seq))
        {
            Some(i) => notes[i] = Some((seq, place)),
            None => {
                notes.rotate_right(1);
                notes[0] = Some((seq, place));
            }
        }
        self.notes.set(notes);
    }

    /// The notes that said `from` say `to`: what each note says stays
    /// true as entries move (the one it named left the order, or moved).
    fn renote(&self, from: u32, to: u32) {
        let mut notes = self.notes.get();
        for (_, place) in notes.iter_mut().flatten() {
            if *place == from {
                *place = to;
            }
        }
        self.notes.set(notes);
    }

    fn is_flushed(&self, stamp: Stamp) -> bool {
        self.flushed.is_some_and(|(f, _)| stamp < f)
    }

    /// Records what a local write stamped `stamp` left under `key`, and
    /// returns it as the version to push. If the store cannot say (a
    /// memcached that stopped answering), the key is still recorded as
    /// changed, so the next sync answer reads it again; nothing is pushed.
    fn record_local(
        &mut self,
        store: &mut dyn VersionedStore,
        key: &[u8],
        stamp: Stamp,
        now: UnixTime,
    ) -> Option<Version> {
        let read_back = store.export(key, now);
        self.record_read_back(key, stamp, read_back)
    }

    fn record_read_back(
        &mut self,
        key: &[u8],
        stamp: Stamp,
        read_back: StoreResult<Option<Entry>>,
    ) -> Option<Version> {
        let state = match read_back {
            Ok(Some(item)) => State::Present(item),
            Ok(None) => State::Deleted,
            Err(e) => {
                log::warn!("cannot read back a local write to push it: {e:?}");
                self.note_held(key, stamp, Held::Unknown, 0, UNWRITTEN);
                return None;
            }
        };
        self.note(key, stamp, &state, None);
        Some(Version {
            key: key.to_vec(),
            stamp,
            state,
            cause: None,
        })
    }

    /// Records what a client's write stamped `stamp`, just executed and
    /// found to have changed the store, left; returns the versions to push.
    pub fn record_write(
        &mut self,
        store: &mut dyn VersionedStore,
        command: &Command,
        stamp: Stamp,
        now: UnixTime,
    ) -> Vec<Version> {
        let key = match command {
            Command::FlushAll { .. } => return vec![self.record_flush(stamp)],
            Command::Get(get) => {
                // `gat`: the hits got a new expiry.
                let mut keys: Vec<&[u8]> = get.keys.iter().collect();
                keys.sort();
                keys.dedup();
                let mut versions = Vec::new();
                for key in keys {
                    match store.export(key, now) {
                        Ok(Some(item)) => {
                            versions.extend(self.record_read_back(key, stamp, Ok(Some(item))))
                        }
                        Ok(None) => {} // a miss: nothing changed
                        // Not recorded: a miss recorded as unknown could go
                        // out as a delete. The new expiry is not replicated.
                        Err(e) => log::warn!("cannot read back a gat hit to push it: {e:?}"),
                    }
                }
                return versions;
            }
            Command::Storage(s) => &s.key,
            Command::Arith(a) => &a.key,
            Command::Meta(m) => &m.key,
            Command::TooLarge { key, .. }
            | Command::Delete { key }
            | Command::Touch { key, .. } => key,
        };
        self.record_local(store, key, stamp, now)
            .into_iter()
            .collect()
    }

    /// Records that the store evicted `key` to make room (or dropped it
    /// with a `set` refused for memory, as memcached does), as a delete
    /// stamped `stamp`, and returns it to push: every replica drops the key
    /// then, so they converge on its absence. `stamp` is newer than every
    /// version this replica held when the work began (the engine's clock
    /// has seen them all), so the delete beats the evicted value; a newer
    /// write of the key, anywhere, beats the delete. A key the same work
    /// stored again after evicting it (a later version in one batch) is
    /// held, and recorded as such: no delete.
    pub fn record_eviction(
        &mut self,
        store: &mut dyn VersionedStore,
        key: &[u8],
        stamp: Stamp,
        now: UnixTime,
    ) -> StoreResult<Option<Version>> {
        let stored_again = store.export(key, now)?.is_some();
        let newer = self.known(key).is_some_and(|known| known.stamp() >= stamp);
        if stored_again || newer {
            return Ok(None);
        }
        Ok(Some(self.record_local_delete(key, stamp)))
    }

    /// Records a delete of `key` this replica made itself (the store has
    /// dropped the key), stamped `stamp`, and returns it to push.
    fn record_local_delete(&mut self, key: &[u8], stamp: Stamp) -> Version {
        self.note_held(key, stamp, Held::Deleted, 0, UNWRITTEN);
        Version {
            key: key.to_vec(),
            stamp,
            state: State::Deleted,
            cause: None,
        }
    }

    /// Causal mode: the store could not keep `refused`, a peer's version,
    /// so its key becomes a delete stamped `stamp` (above every version
    /// held, as for an eviction), removed here and returned to push: no
    /// replica then shows what followed that write without it. Nothing if
    /// the log holds a version newer than the refused one (that write is
    /// superseded here).
    pub fn record_unkept(
        &mut self,
        store: &mut dyn VersionedStore,
        refused: &Version,
        stamp: Stamp,
        now: UnixTime,
    ) -> StoreResult<Option<Version>> {
        let key = &refused.key[..];
        if self
            .known(key)
            .is_some_and(|known| known.stamp() > refused.stamp)
        {
            return Ok(None);
        }
        store.delete(key, now)?;
        Ok(Some(self.record_local_delete(key, stamp)))
    }

    /// Records a local `flush_all` stamped `stamp` (the store already did it).
    fn record_flush(&mut self, stamp: Stamp) -> Version {
        self.apply_flush(stamp);
        Version {
            key: Vec::new(),
            stamp,
            state: State::Flushed,
            cause: None,
        }
    }

    /// The places of the versions a flush stamped `stamp` removes, in
    /// ascending order.
    fn older_than(&self, stamp: Stamp) -> impl Iterator<Item = u32> + '_ {
        let places = 0..self.table.len() as u32;
        places.filter(move |&place| self.entry(place).known.stamp() < stamp)
    }

    fn apply_flush(&mut self, stamp: Stamp) {
        let seq = self.next_seq();
        self.flushed = Some((stamp, seq));
        let mut gone: Vec<u32> = self.older_than(stamp).collect();
        gone.reverse();
        self.remove_descending(gone);
        self.table.shrink_if_sparse();
    }

    /// Applies a peer's version if it is newer than what this replica holds
    /// (last writer wins). Returns whether it changed anything; a store
    /// error leaves the version unrecorded, to be applied when it comes
    /// again, and `Refused` (this store can never hold it) too: the store
    /// side decides what that means for its mode.
    pub fn apply_remote(
        &mut self,
        store: &mut dyn VersionedStore,
        version: &Version,
        now: UnixTime,
    ) -> StoreResult<bool> {
        if self.is_flushed(version.stamp) {
            return Ok(false);
        }
        if version.key.is_empty() && version.state != State::Flushed {
            // The empty key names the flush in the change log; no client
            // can write it, so no peer can have a version of it.
            log::warn!("a peer sent a version of the empty key; ignored");
            return Ok(false);
        }
        if version.state == State::Flushed {
            if self.flushed.is_some_and(|(held, _)| version.stamp <= held) {
                return Ok(false); // the same flush again, or an older one
            }
            // Removed from the store first: a failure leaves the flush
            // unrecorded, so all of it is applied again.
            for place in self.older_than(version.stamp) {
                store.delete(&self.entry(place).key, now)?;
            }
            self.apply_flush(version.stamp);
            return Ok(true);
        }
        if self
            .known(&version.key)
            .is_some_and(|k| k.stamp() >= version.stamp)
        {
            return Ok(false);
        }
        let item = match &version.state {
            State::Present(item) => Some(item),
            _ => None,
        };
        store.import(&version.key, item, version.stamp.cas_unique(), now)?;
        self.note(
            &version.key,
            version.stamp,
            &version.state,
            version.cause.as_ref(),
        );
        Ok(true)
    }

    /// The changes numbered above `since`, in change order, with their
    /// numbers: each key's (its latest), and the flush among them.
    fn changes_after(&self, since: u64) -> impl Iterator<Item = (u64, Change)> + '_ {
        let mut place = self.first_after(since);
        let mut flush = self.flushed.map(|(_, seq)| seq).filter(|&seq| seq > since);
        std::iter::from_fn(move || {
            let key = (place != NONE).then(|| (self.entry(place).known.seq, place));
            match (key, flush) {
                (Some((seq, _)), Some(flushed)) if flushed < seq => {
                    flush = None;
                    Some((flushed, Change::Flush))
                }
                (None, Some(flushed)) => {
                    flush = None;
                    Some((flushed, Change::Flush))
                }
                (Some((seq, at)), _) => {
                    place = self.entry(at).newer;
                    Some((seq, Change::Key(at)))
                }
                (None, None) => None,
            }
        })
    }

    /// The changes after `since`, as current versions, but for those an
    /// asker with `covered` holds already (`origins.rs`): a prefix of them
    /// in change order within about `budget` bytes of keys and values (at
    /// least one), and the change number it brings the asker up to: the
    /// one before the first change left out, or the last if none is. Only
    /// a prefix lets `upto` say the asker holds every change up to it.
    /// Fails if the store cannot be read: an answer must never turn an
    /// unreadable value into a tombstone.
    pub fn since(
        &self,
        store: &mut dyn VersionedStore,
        since: u64,
        budget: usize,
        covered: &Coverage,
        now: UnixTime,
    ) -> StoreResult<Changes> {
        let mut upto = self.last_seq;
        let mut used = 0;
        let mut versions = Vec::new();
        // Values are read from the store together: one round trip per batch
        // on a memcached backend, not one per key.
        let mut to_read: Vec<(&[u8], Known)> = Vec::new();
        for (seq, change) in self.changes_after(since) {
            let len = match change {
                Change::Flush => approximate_len(0, 0),
                Change::Key(place) => {
                    let KnownKey { key, known, .. } = self.entry(place);
                    if self.is_covered(known, covered) {
                        continue;
                    }
                    approximate_len(key.len(), known.value_len as usize)
                }
            };
            if used > 0 && used + len > budget {
                upto = seq - 1;
                if let Change::Key(place) = change {
                    self.note_first_after(upto, place);
                }
                break;
            }
            used += len;
            match change {
                // Rare: always sent, without its origin.
                Change::Flush => versions.extend(self.flushed.map(|(stamp, _)| Version {
                    key: Vec::new(),
                    stamp,
                    state: State::Flushed,
                    cause: None,
                })),
                Change::Key(place) => {
                    let KnownKey { key, known, .. } = self.entry(place);
                    match known.held() {
                        Held::Deleted => versions.push(Version {
                            key: key.to_vec(),
                            stamp: known.stamp(),
                            state: State::Deleted,
                            cause: self.cause_of(known),
                        }),
                        _ => to_read.push((key, *known)),
                    }
                }
            }
        }
        if upto == self.last_seq {
            self.note_first_after(upto, NONE); // the asker's next request names it
        }
        let mut lost = Vec::new();
        let keys: Vec<&[u8]> = to_read.iter().map(|&(key, _)| key).collect();
        let stored = store.export_many(&keys, now)?;
        for ((key, known), stored) in to_read.into_iter().zip(stored) {
            let state = match (known.held(), stored) {
                (_, Some(item)) => State::Present(item),
                // Expired since (at the same second on every replica): gone,
                // as a tombstone of the same stamp.
                (Held::Present(expiry), None) if expiry.has_passed(now) => State::Deleted,
                (Held::Unknown | Held::Deleted, None) => State::Deleted,
                (Held::Present(_), None) => {
                    // A tombstone would undo the value on every replica.
                    log::warn!(
                        "key {} is missing from the store before its expiry (evicted?); \
                         not sent",
                        String::from_utf8_lossy(key)
                    );
                    lost.extend(self.cause_of(&known));
                    continue;
                }
            };
            versions.push(Version {
                key: key.to_vec(),
                stamp: known.stamp(),
                state,
                cause: self.cause_of(&known),
            });
        }
        Ok(Changes {
            versions,
            upto,
            last: self.last_seq,
            lost,
        })
    }

    /// Forgets tombstones every peer has synced past (changed at or below
    /// `synced`), except those of keys `keep` holds on to.
    pub fn forget_tombstones(&mut self, synced: u64, keep: impl Fn(&[u8]) -> bool) {
        let mut dead = Vec::new();
        let mut place = self.oldest;
        while place != NONE {
            let entry = self.entry(place);
            if entry.known.seq > synced {
                break;
            }
            if entry.known.held() == Held::Deleted && !keep(&entry.key) {
                dead.push(place);
            }
            place = entry.newer;
        }
        dead.sort_unstable_by(|a, b| b.cmp(a));
        self.remove_descending(dead);
        // A peer back after long: the tombstones kept for it go, and so
        // does their room.
        self.table.shrink_if_sparse();
    }

    /// The number of the last change recorded.
    /// Numbers every change anew, above `last`, in change order (the
    /// flush first, which removes by stamp whatever its place): a log
    /// filled out of sight takes the place of one whose changes peers have
    /// synced up to numbers at most `last`, so each of its own must be news
    /// to them, and the numbers must go on from where the old one was.
    pub fn renumber_after(&mut self, last: u64) {
        self.last_seq = last;
        if let Some((stamp, _)) = self.flushed {
            let seq = self.next_seq();
            self.flushed = Some((stamp, seq));
        }
        let mut place = self.oldest;
        while place != NONE {
            let seq = self.next_seq();
            let entry = self.entry_mut(place);
            entry.known.seq = seq;
            place = entry.newer;
        }
        self.notes.set([None; NOTES]);
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Keys with a version (tombstones included), for tests and stats.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The stamp of `key`'s current version.
    pub fn stamp(&self, key: &[u8]) -> Option<Stamp> {
        self.known(key).map(|k| k.stamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::KeysRef;
    use crate::protocol::Limits;
    use crate::store::memory::MemoryStore;
    use crate::store::StoreError;
    use crate::store::{Expiry, Store};
    use std::collections::BTreeMap;

    const NOW: UnixTime = 1_700_000_000;
    /// A budget no answer here reaches.
    const WHOLE: usize = usize::MAX;

    fn stamp(ts: u64, node: u32) -> Stamp {
        Stamp { ts, node }
    }

    /// A `flush_all` stamped `ts` by `node`.
    fn flush(ts: u64, node: u32) -> Version {
        Version {
            key: Vec::new(),
            stamp: stamp(ts, node),
            state: State::Flushed,
            cause: None,
        }
    }

    fn put(key: &str, ts: u64, node: u32, value: &str) -> Version {
        Version {
            key: key.as_bytes().to_vec(),
            stamp: stamp(ts, node),
            state: State::Present(Entry {
                flags: 0,
                expiry: Expiry::Never,
                value: value.as_bytes().to_vec(),
            }),
            cause: None,
        }
    }

    fn value(store: &mut MemoryStore, key: &str) -> Option<Vec<u8>> {
        store.export(key.as_bytes(), NOW).unwrap().map(|i| i.value)
    }

    fn store() -> MemoryStore {
        MemoryStore::new(1 << 20, Limits::default())
    }

    #[test]
    fn a_known_key_takes_80_bytes_of_table_entry() {
        assert_eq!(std::mem::size_of::<Known>(), 40);
        assert_eq!(std::mem::size_of::<KnownKey>(), 80);
    }

    /// The change order lists every entry once, oldest to newest by
    /// number, and each link has its partner.
    fn assert_ordered(log: &VersionLog) {
        let (mut listed, mut place, mut older, mut seq) = (0, log.oldest, NONE, 0);
        while place != NONE {
            let entry = log.entry(place);
            assert_eq!(entry.older, older, "place {place}: its older neighbour");
            assert!(entry.known.seq > seq, "place {place}: out of order");
            (seq, older, place) = (entry.known.seq, place, entry.newer);
            listed += 1;
        }
        assert_eq!(log.newest, older);
        assert_eq!(listed, log.len(), "every entry listed once");
        for (after, place) in log.notes.get().into_iter().flatten() {
            let mut first = log.oldest;
            while first != NONE && log.entry(first).known.seq <= after {
                first = log.entry(first).newer;
            }
            assert_eq!(place, first, "the note of what follows {after}");
        }
    }

    /// Puts, deletes, flushes and forgotten tombstones at random, against a
    /// model of each key's latest change: the change order stays whole, and
    /// an answer since any number, whole or in parts of one change (each
    /// resumed where the last stopped, three askers taking turns), sends
    /// the changes after it, in order.
    #[test]
    fn answers_since_any_change_follow_the_change_order_through_removals() {
        for seed in 1..=20u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let (mut s, mut log) = (store(), VersionLog::new());
            // Each key's latest change: its number and its version.
            let mut model: BTreeMap<Vec<u8>, (u64, Version)> = BTreeMap::new();
            for ts in 1..=400u64 {
                let key = format!("k{}", next(40));
                match next(20) {
                    0 => {
                        let synced = next(log.last_seq() + 1);
                        log.forget_tombstones(synced, |_| false);
                        model.retain(|_, (seq, v)| *seq > synced || v.state != State::Deleted);
                    }
                    1 => {
                        let flush = flush(ts, 0);
                        log.apply_remote(&mut s, &flush, NOW).unwrap();
                        model.clear();
                    }
                    n => {
                        let mut version = put(&key, ts, 0, "v");
                        if n < 8 {
                            version.state = State::Deleted;
                        }
                        assert!(log.apply_remote(&mut s, &version, NOW).unwrap());
                        model.insert(key.into_bytes(), (log.last_seq(), version));
                    }
                }
                assert_ordered(&log);
            }
            let flushed = log.flushed.map(|(_, seq)| seq).unwrap_or(0);
            let mut ts = 1_000;
            for since in 0..=log.last_seq() {
                let mut want: Vec<(u64, Vec<u8>)> = model
                    .iter()
                    .filter(|(_, (seq, _))| *seq > since)
                    .map(|(key, (seq, _))| (*seq, key.clone()))
                    .collect();
                if flushed > since {
                    want.push((flushed, Vec::new()));
                }
                want.sort();
                let whole = log
                    .since(&mut s, since, WHOLE, &Coverage::default(), NOW)
                    .unwrap();
                let mut got: Vec<Vec<u8>> = whole.versions.iter().map(|v| v.key.clone()).collect();
                let mut wanted: Vec<Vec<u8>> = want.iter().map(|(_, k)| k.clone()).collect();
                got.sort();
                wanted.sort();
                assert_eq!(got, wanted, "seed {seed}, since {since}");
                assert_eq!(whole.upto, log.last_seq());
                // In parts of one change each, three askers in turn, with
                // keys changed again and tombstones forgotten between parts
                // (entries move to the newest end, or into a removed one's
                // place): each asker gets changes in ascending numbers, and
                // ends with every key's latest change after `since`.
                let mut askers = [since; 3];
                let mut got: [Vec<(u64, Vec<u8>)>; 3] = Default::default();
                let mut changes_left = 30;
                while askers.iter().any(|&a| a < log.last_seq()) {
                    for (asker, got) in askers.iter_mut().zip(&mut got) {
                        if *asker >= log.last_seq() {
                            continue;
                        }
                        let answer = log
                            .since(&mut s, *asker, 1, &Coverage::default(), NOW)
                            .unwrap();
                        for v in &answer.versions {
                            let seq = match v.key.is_empty() {
                                true => log.flushed.unwrap().1,
                                false => log.known(&v.key).unwrap().seq,
                            };
                            assert!(seq <= answer.upto, "seed {seed}: past upto");
                            got.push((seq, v.key.clone()));
                        }
                        assert!(answer.versions.len() <= 1, "seed {seed}: a part of 1");
                        assert!(answer.upto > *asker, "seed {seed}: no progress");
                        *asker = answer.upto;
                        if changes_left > 0 && next(2) == 0 {
                            changes_left -= 1;
                            ts += 1;
                            let key = format!("k{}", next(40));
                            let newer = put(&key, ts, 0, "w");
                            assert!(log.apply_remote(&mut s, &newer, NOW).unwrap());
                            model.insert(key.into_bytes(), (log.last_seq(), put("", 0, 0, "")));
                            let synced = next(log.last_seq() + 1);
                            log.forget_tombstones(synced, |_| false);
                            model.retain(|k, (seq, _)| *seq > synced || log.known(k).is_some());
                            assert_ordered(&log);
                        }
                    }
                }
                for got in got {
                    let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
                    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seed {seed}: order");
                    let latest: BTreeMap<&[u8], u64> =
                        got.iter().map(|(seq, k)| (&k[..], *seq)).collect();
                    for (key, (seq, _)) in model.iter().filter(|(_, (seq, _))| *seq > since) {
                        assert_eq!(latest.get(&key[..]), Some(seq), "seed {seed}: {key:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn what_is_held_reads_back_as_noted() {
        let held = [
            Held::Deleted,
            Held::Unknown,
            Held::Present(Expiry::Never),
            Held::Present(Expiry::At(0)),
            Held::Present(Expiry::At(NOW)),
        ];
        for held in held {
            let known = Known::new(stamp(7, 3), 9, held, 100, UNWRITTEN);
            assert_eq!((known.held(), known.stamp()), (held, stamp(7, 3)));
            assert_eq!((known.seq, known.value_len), (9, 100));
        }
    }

    #[test]
    fn heap_bytes_count_each_key_once_however_often_it_changes_and_drop_it_when_flushed() {
        let (mut s, mut log) = (store(), VersionLog::new());
        let empty = log.heap_bytes();
        let long = |i: u64| format!("key:{i:040}");
        for ts in 1..=10 {
            log.apply_remote(&mut s, &put(&long(0), ts, 0, "v"), NOW)
                .unwrap();
        }
        let one_long = crate::store::malloc_chunk(44);
        assert_eq!(log.key_bytes, one_long);
        for i in 0..1000 {
            let key = format!("key:{i:026}");
            log.apply_remote(&mut s, &put(&key, 1, 0, "v"), NOW)
                .unwrap();
        }
        // Keys of 30 bytes are held in their entries.
        assert_eq!(log.key_bytes, one_long);
        // The table: at least a key and a stamp per key.
        assert!(log.heap_bytes() > empty + one_long + 1001 * (32 + 40));
        let flush = flush(100, 1);
        log.apply_remote(&mut s, &flush, NOW).unwrap();
        assert_eq!(log.key_bytes, 0);
    }

    /// Tombstones kept for a peer that was down go once it synced past
    /// them, and so does the room they took.
    #[test]
    fn forgotten_tombstones_give_their_room_back() {
        let mut s = MemoryStore::new(64 << 20, Limits::default());
        let mut log = VersionLog::new();
        for i in 0..100_000u64 {
            let mut version = put(&format!("key:{i:026}"), i + 1, 0, "v");
            if i >= 10_000 {
                version.state = State::Deleted;
            }
            log.apply_remote(&mut s, &version, NOW).unwrap();
        }
        let full = log.heap_bytes();
        log.forget_tombstones(log.last_seq(), |_| false);
        assert_eq!(log.len(), 10_000);
        assert!(
            log.heap_bytes() < full / 5,
            "{} of {full} bytes",
            log.heap_bytes()
        );
        let key = format!("key:{:026}", 9_999);
        assert_eq!(log.stamp(key.as_bytes()), Some(stamp(10_000, 0)));
        assert!(log.stamp(b"key:00000000000000000000010000").is_none());
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
                log.apply_remote(&mut s, &versions[i], NOW).unwrap();
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
            cause: None,
        };
        assert!(log.apply_remote(&mut s, &delete, NOW).unwrap());
        assert!(!log
            .apply_remote(&mut s, &put("k", 3, 1, "old"), NOW)
            .unwrap());
        assert_eq!(value(&mut s, "k"), None);
        assert!(log
            .apply_remote(&mut s, &put("k", 6, 1, "new"), NOW)
            .unwrap());
        assert_eq!(value(&mut s, "k"), Some(b"new".to_vec()));
    }

    #[test]
    fn flush_removes_what_is_older_and_refuses_late_old_writes() {
        let (mut s, mut log) = (store(), VersionLog::new());
        log.apply_remote(&mut s, &put("a", 1, 0, "x"), NOW).unwrap();
        log.apply_remote(&mut s, &put("b", 9, 0, "y"), NOW).unwrap();
        let flush = flush(5, 1);
        log.apply_remote(&mut s, &flush, NOW).unwrap();
        assert_eq!(value(&mut s, "a"), None);
        assert_eq!(value(&mut s, "b"), Some(b"y".to_vec()));
        assert!(!log
            .apply_remote(&mut s, &put("c", 2, 2, "late"), NOW)
            .unwrap());
        assert_eq!(value(&mut s, "c"), None);
    }

    /// A log renumbered above 1,000 answers a request since any number up
    /// to there with all it holds, the flush first, in its change order,
    /// and goes on numbering above.
    #[test]
    fn a_renumbered_log_is_all_news_to_an_asker_of_the_old_numbers() {
        let (mut s, mut log) = (store(), VersionLog::new());
        log.apply_remote(&mut s, &put("a", 9, 0, "x"), NOW).unwrap();
        let flush = flush(5, 1);
        log.apply_remote(&mut s, &flush, NOW).unwrap();
        log.apply_remote(&mut s, &put("b", 7, 0, "y"), NOW).unwrap();
        log.apply_remote(&mut s, &put("a", 10, 0, "z"), NOW)
            .unwrap();
        log.renumber_after(1_000);
        assert_ordered(&log);
        for since in [0, 3, 1_000] {
            let all = log
                .since(&mut s, since, WHOLE, &Coverage::default(), NOW)
                .unwrap();
            let keys: Vec<&[u8]> = all.versions.iter().map(|v| &v.key[..]).collect();
            assert_eq!(keys, [&b""[..], b"b", b"a"], "since {since}");
            assert_eq!((all.upto, all.last), (1_003, 1_003));
        }
        log.apply_remote(&mut s, &put("c", 11, 0, "w"), NOW)
            .unwrap();
        assert_eq!(log.last_seq(), 1_004);
    }

    #[test]
    fn since_returns_only_what_changed() {
        let (mut s, mut log) = (store(), VersionLog::new());
        for i in 0..100 {
            log.apply_remote(&mut s, &put(&format!("k{i}"), 1, 0, "v"), NOW)
                .unwrap();
        }
        let all = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .unwrap();
        assert_eq!((all.versions.len(), all.upto, all.last), (100, 100, 100));
        log.apply_remote(&mut s, &put("k7", 2, 0, "w"), NOW)
            .unwrap();
        let changed = log
            .since(&mut s, all.upto, WHOLE, &Coverage::default(), NOW)
            .unwrap();
        assert_eq!(changed.versions, vec![put("k7", 2, 0, "w")]);
        assert_eq!(changed.upto, 101);
    }

    /// Answers within a budget, each asked from where the one before
    /// stopped: each keeps to the budget, and together they carry exactly
    /// what one whole answer carries.
    #[test]
    fn answers_within_a_budget_add_up_to_the_whole_answer() {
        let (mut s, mut log) = (store(), VersionLog::new());
        let value = "v".repeat(100);
        for i in 0..20 {
            log.apply_remote(&mut s, &put(&format!("k{i:02}"), 1, 0, &value), NOW)
                .unwrap();
        }
        // Stale changes amid the range: a key written again, one deleted.
        log.apply_remote(&mut s, &put("k03", 2, 0, "w"), NOW)
            .unwrap();
        let delete = Version {
            key: b"k05".to_vec(),
            stamp: stamp(2, 0),
            state: State::Deleted,
            cause: None,
        };
        log.apply_remote(&mut s, &delete, NOW).unwrap();
        let whole = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .unwrap();
        let budget = 3 * put("k00", 1, 0, &value).approximate_len();
        let (mut parts, mut since) = (Vec::new(), 0);
        while since < whole.last {
            let part = log
                .since(&mut s, since, budget, &Coverage::default(), NOW)
                .unwrap();
            let bytes: usize = part.versions.iter().map(Version::approximate_len).sum();
            assert!(bytes <= budget && !part.versions.is_empty(), "{part:?}");
            assert_eq!(part.last, whole.last);
            since = part.upto;
            parts.extend(part.versions);
        }
        let by_key = |mut versions: Vec<Version>| {
            versions.sort_by(|a, b| a.key.cmp(&b.key));
            versions
        };
        assert_eq!(by_key(parts), by_key(whole.versions));
    }

    #[test]
    fn a_part_carries_one_change_at_least_and_completes_up_to_the_next() {
        let (mut s, mut log) = (store(), VersionLog::new());
        for key in ["a", "b", "c"] {
            log.apply_remote(&mut s, &put(key, 1, 0, "value"), NOW)
                .unwrap(); // seq 1, 2, 3
        }
        log.apply_remote(&mut s, &put("a", 2, 0, "again"), NOW)
            .unwrap(); // seq 4: seq 1 is stale
        let answers: Vec<Changes> = [0, 2, 3]
            .into_iter()
            .map(|since| {
                log.since(&mut s, since, 1, &Coverage::default(), NOW)
                    .unwrap()
            })
            .collect();
        let want = [
            (put("b", 1, 0, "value"), 2),
            (put("c", 1, 0, "value"), 3),
            (put("a", 2, 0, "again"), 4),
        ];
        for (answer, (version, upto)) in answers.into_iter().zip(want) {
            assert_eq!(answer.versions, vec![version]);
            assert_eq!((answer.upto, answer.last), (upto, 4));
        }
        // Each answer noted where the next one starts, so it needs no walk.
        let place = |key: &[u8]| log.table.position(key).unwrap() as u32;
        let noted: Vec<_> = log.notes.get().into_iter().take(3).collect();
        let notes = [(4, NONE), (3, place(b"a")), (2, place(b"c"))];
        assert_eq!(noted, notes.map(Some));
        // A change after the last number: its note names it.
        log.apply_remote(&mut s, &put("d", 1, 0, "value"), NOW)
            .unwrap();
        let d = log.table.position(b"d").unwrap() as u32;
        assert_eq!(log.notes.get()[0], Some((4, d)));
    }

    /// A memory store that fails every call while `broken` (a memcached
    /// that stopped answering).
    struct Flaky {
        inner: MemoryStore,
        broken: bool,
        /// Refuses every import for good (a key the store cannot take).
        refusing: bool,
    }

    impl Flaky {
        fn check(&self) -> StoreResult<()> {
            match self.broken {
                true => Err(crate::store::StoreError::Backend("down".into())),
                false => Ok(()),
            }
        }
    }

    impl Store for Flaky {
        fn retrieve(
            &mut self,
            keys: KeysRef<'_>,
            touch: Option<Expiry>,
            now: UnixTime,
            found: &mut dyn FnMut(usize, crate::store::ItemRef<'_>),
        ) -> StoreResult<()> {
            self.check()?;
            self.inner.retrieve(keys, touch, now, found)
        }
        fn store(
            &mut self,
            write: crate::store::Write<'_>,
            now: UnixTime,
        ) -> StoreResult<crate::store::StoreStatus> {
            self.check()?;
            self.inner.store(write, now)
        }
        fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
            self.check()?;
            self.inner.delete(key, now)
        }
        fn arith(
            &mut self,
            key: &[u8],
            incr: bool,
            delta: u64,
            cas: u64,
            now: UnixTime,
        ) -> StoreResult<crate::store::ArithOutcome> {
            self.check()?;
            self.inner.arith(key, incr, delta, cas, now)
        }
        fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
            self.check()?;
            self.inner.touch(key, expiry, now)
        }
        fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
            self.check()?;
            self.inner.flush_all(at, now)
        }
        fn set_memory_limit(&mut self, limit_bytes: u64) -> StoreResult<()> {
            self.inner.set_memory_limit(limit_bytes)
        }
        fn stats(&self) -> crate::store::StoreStats {
            self.inner.stats()
        }
    }

    impl VersionedStore for Flaky {
        fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Entry>> {
            self.check()?;
            self.inner.export(key, now)
        }
        fn import(
            &mut self,
            key: &[u8],
            entry: Option<&Entry>,
            cas: u64,
            now: UnixTime,
        ) -> StoreResult<()> {
            self.check()?;
            if self.refusing {
                return Err(StoreError::Refused("cannot take it".into()));
            }
            self.inner.import(key, entry, cas, now)
        }
        fn snapshot_keys(&mut self) -> StoreResult<crate::store::Listing> {
            self.inner.snapshot_keys()
        }
        fn head(&self) -> crate::store::Head {
            self.inner.head()
        }
        fn export_record(
            &mut self,
            key: &[u8],
            now: UnixTime,
        ) -> StoreResult<Option<crate::store::Record>> {
            self.inner.export_record(key, now)
        }
        fn reset(&mut self, head: &crate::store::Head, now: UnixTime) -> StoreResult<()> {
            self.inner.reset(head, now)
        }
    }

    fn flaky() -> Flaky {
        Flaky {
            inner: store(),
            broken: false,
            refusing: false,
        }
    }

    #[test]
    fn a_version_the_store_cannot_keep_is_not_recorded() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        s.broken = true;
        assert!(log.apply_remote(&mut s, &put("k", 1, 0, "v"), NOW).is_err());
        assert_eq!(log.stamp(b"k"), None, "so it is taken when it comes again");
        s.broken = false;
        assert_eq!(
            log.apply_remote(&mut s, &put("k", 1, 0, "v"), NOW),
            Ok(true)
        );
        assert_eq!(value(&mut s.inner, "k"), Some(b"v".to_vec()));
    }

    #[test]
    fn a_version_the_store_can_never_keep_is_refused_unrecorded() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        s.refusing = true;
        let refused = log.apply_remote(&mut s, &put("k", 1, 0, "v"), NOW);
        assert!(
            matches!(refused, Err(StoreError::Refused(_))),
            "{refused:?}"
        );
        assert_eq!(log.stamp(b"k"), None);
    }

    #[test]
    fn each_origin_is_kept_once_however_many_writes_name_it() {
        let (mut s, mut log) = (store(), VersionLog::new());
        let origins = [Origin { node: 0, run: 3 }, Origin { node: 1, run: 5 }];
        for i in 0..1_000u64 {
            let origin = origins[i as usize % 2];
            let mut pushed = put(&format!("k{i}"), i + 1, origin.node, "v");
            pushed.cause = Some(Cause {
                origin,
                seq: i / 2 + 1,
                deps: None,
            });
            log.apply_remote(&mut s, &pushed, NOW).unwrap();
        }
        assert_eq!(log.origins, origins);
        let known = log.known(b"k7").copied().unwrap();
        let cause = log.cause_of(&known).unwrap();
        assert_eq!((cause.origin, cause.seq), (origins[1], 4));
    }

    #[test]
    fn an_answer_names_who_made_what_the_store_lost() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        let mut pushed = put("k", 1, 0, "v");
        pushed.cause = Some(Cause {
            origin: Origin { node: 0, run: 3 },
            seq: 4,
            deps: None,
        });
        log.apply_remote(&mut s, &pushed, NOW).unwrap();
        s.inner.delete(b"k", NOW).unwrap(); // as a memcached evicting on its own
        let changes = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .unwrap();
        assert!(changes.versions.is_empty());
        assert_eq!(changes.lost, [pushed.cause.unwrap()]);
    }

    #[test]
    fn an_unkept_version_leaves_a_newer_delete_of_its_key() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        log.apply_remote(&mut s, &put("k", 1, 0, "old"), NOW)
            .unwrap();
        let deleted = log
            .record_unkept(&mut s, &put("k", 5, 1, "big"), stamp(9, 2), NOW)
            .unwrap();
        assert_eq!(
            deleted.map(|v| (v.stamp, v.state)),
            Some((stamp(9, 2), State::Deleted))
        );
        assert_eq!(value(&mut s.inner, "k"), None);
        assert_eq!(log.stamp(b"k"), Some(stamp(9, 2)));
        let older = log
            .record_unkept(&mut s, &put("k", 6, 1, "big"), stamp(10, 2), NOW)
            .unwrap();
        assert_eq!(older, None, "the delete of stamp 9 supersedes it");
    }

    #[test]
    fn an_unreadable_store_gives_no_sync_answer_rather_than_tombstones() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        log.apply_remote(&mut s, &put("k", 1, 0, "v"), NOW).unwrap();
        s.broken = true;
        assert!(log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .is_err());
        s.broken = false;
        let versions = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .unwrap()
            .versions;
        assert_eq!(versions, vec![put("k", 1, 0, "v")]);
    }

    #[test]
    fn a_local_write_that_cannot_be_read_back_is_synced_later() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        s.inner
            .import(b"k", Some(&item("v")), stamp(3, 0).cas_unique(), NOW)
            .unwrap();
        s.broken = true;
        let set = crate::protocol::Storage {
            mode: crate::protocol::StorageMode::Set,
            key: b"k".to_vec(),
            flags: 0,
            exptime: 0,
            value: b"v".to_vec(),
        };
        assert!(log
            .record_write(&mut s, &Command::Storage(set), stamp(3, 0), NOW)
            .is_empty());
        s.broken = false;
        let versions = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .unwrap()
            .versions;
        assert_eq!(
            versions,
            vec![put("k", 3, 0, "v")],
            "read back at the next sync"
        );
    }

    #[test]
    fn a_flush_that_cannot_delete_everything_is_applied_again() {
        let (mut s, mut log) = (flaky(), VersionLog::new());
        log.apply_remote(&mut s, &put("a", 1, 0, "x"), NOW).unwrap();
        let flush = flush(5, 1);
        s.broken = true;
        assert!(log.apply_remote(&mut s, &flush, NOW).is_err());
        s.broken = false;
        assert_eq!(log.apply_remote(&mut s, &flush, NOW), Ok(true));
        assert_eq!(value(&mut s.inner, "a"), None);
    }

    fn item(value: &str) -> Entry {
        Entry {
            flags: 0,
            expiry: Expiry::Never,
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_value_the_store_lost_is_not_sent_as_a_delete_but_an_expired_one_is() {
        let (mut s, mut log) = (store(), VersionLog::new());
        log.apply_remote(&mut s, &put("lost", 1, 0, "v"), NOW)
            .unwrap();
        let mut expiring = put("brief", 2, 0, "w");
        if let State::Present(item) = &mut expiring.state {
            item.expiry = Expiry::At(NOW + 10);
        }
        log.apply_remote(&mut s, &expiring, NOW).unwrap();
        s.delete(b"lost", NOW).unwrap(); // as a memcached evicts
        let versions = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW + 20)
            .unwrap()
            .versions;
        let tombstone = Version {
            key: b"brief".to_vec(),
            stamp: stamp(2, 0),
            state: State::Deleted,
            cause: None,
        };
        assert_eq!(versions, vec![tombstone]);
    }

    /// The embedded store's expiry sweep drops expired items behind the
    /// log's back: anti-entropy must send for a swept key exactly what it
    /// sends for one that merely expired, and take back nothing older.
    #[test]
    fn a_swept_expired_key_syncs_as_an_unswept_one_and_nothing_older_comes_back() {
        let mut expiring = put("brief", 2, 0, "w");
        if let State::Present(item) = &mut expiring.state {
            item.expiry = Expiry::At(NOW + 10);
        }
        let mut twins = [(store(), VersionLog::new()), (store(), VersionLog::new())];
        for (s, log) in &mut twins {
            log.apply_remote(s, &put("kept", 1, 0, "v"), NOW).unwrap();
            log.apply_remote(s, &expiring, NOW).unwrap();
        }
        let (swept, _) = &mut twins[0];
        while swept.sweep(NOW + 10, 1) {}
        assert_eq!(swept.stats().items, 1, "only the expired item is dropped");
        let mut sent = Vec::new();
        for (s, log) in &mut twins {
            sent.push(
                log.since(s, 0, WHOLE, &Coverage::default(), NOW + 10)
                    .unwrap()
                    .versions,
            );
            let older = put("brief", 1, 3, "stale");
            assert!(!log.apply_remote(s, &older, NOW + 10).unwrap());
            assert!(!log.apply_remote(s, &expiring, NOW + 10).unwrap());
            assert_eq!(s.export(b"brief", NOW + 10).unwrap(), None);
            assert_eq!(log.stamp(b"brief"), Some(stamp(2, 0)));
        }
        assert_eq!(sent[0], sent[1]);
        assert!(sent[0].contains(&Version {
            key: b"brief".to_vec(),
            stamp: stamp(2, 0),
            state: State::Deleted,
            cause: None,
        }));
    }

    #[test]
    fn tombstones_are_forgotten_only_once_synced_past() {
        let (mut s, mut log) = (store(), VersionLog::new());
        log.apply_remote(&mut s, &put("k", 1, 0, "v"), NOW).unwrap();
        let delete = Version {
            key: b"k".to_vec(),
            stamp: stamp(2, 0),
            state: State::Deleted,
            cause: None,
        };
        log.apply_remote(&mut s, &delete, NOW).unwrap();
        log.forget_tombstones(1, |_| false);
        assert_eq!(log.len(), 1, "the tombstone (seq 2) is not synced past yet");
        log.forget_tombstones(2, |_| false);
        assert!(log.is_empty());
    }

    #[test]
    fn a_version_of_the_empty_key_is_ignored() {
        let (mut s, mut log) = (store(), VersionLog::new());
        assert!(!log.apply_remote(&mut s, &put("", 1, 0, "v"), NOW).unwrap());
        assert!(log.is_empty());
        assert_eq!(
            log.since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
                .unwrap()
                .versions,
            vec![]
        );
    }

    #[test]
    fn a_key_changed_again_is_judged_by_its_latest_change() {
        let (mut s, mut log) = (store(), VersionLog::new());
        let delete = |ts| Version {
            key: b"k".to_vec(),
            stamp: stamp(ts, 0),
            state: State::Deleted,
            cause: None,
        };
        for i in 0..10 {
            // seq 1..=10: enough current changes that k's stale ones stay.
            log.apply_remote(&mut s, &put(&format!("a{i}"), 1, 0, "v"), NOW)
                .unwrap();
        }
        log.apply_remote(&mut s, &delete(1), NOW).unwrap(); // seq 11
        log.apply_remote(&mut s, &put("k", 2, 0, "v"), NOW).unwrap(); // seq 12
        log.apply_remote(&mut s, &delete(3), NOW).unwrap(); // seq 13

        // The tombstone of seq 11 was synced past, but k's current one was not.
        log.forget_tombstones(12, |_| false);
        assert_eq!(log.stamp(b"k"), Some(stamp(3, 0)));
        let changed = log
            .since(&mut s, 10, WHOLE, &Coverage::default(), NOW)
            .unwrap()
            .versions;
        assert_eq!(changed, vec![delete(3)], "one current version per key");

        // Many rewrites of a few keys: the log keeps what is current, in order.
        for ts in 10..1_000 {
            log.apply_remote(&mut s, &put(&format!("r{}", ts % 3), ts, 0, "x"), NOW)
                .unwrap();
        }
        assert_ordered(&log);
        let recent = log
            .since(&mut s, 0, WHOLE, &Coverage::default(), NOW)
            .unwrap()
            .versions;
        let stamps: Vec<u64> = recent.iter().map(|v| v.stamp.ts).collect();
        // Tombstones first, then values read from the store in log order.
        let want: Vec<u64> = [3].into_iter().chain([1; 10]).chain(997..1_000).collect();
        assert_eq!(stamps, want);
    }
}
