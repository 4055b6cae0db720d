//! The strong modes' store side: applies each delivered operation, in
//! delivery order, with the cas unique its stamp gives, replying to the
//! client if the operation was this node's; and hands a rejoining member
//! the store's state as of a view's start (a snapshot, in chunks), or takes
//! one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::engine::{Done, Replica, ReplyTo};
use crate::cluster::message::Op;
use crate::cluster::NodeId;
use crate::durability::ReportWait;
use crate::store::{Executor, Head, Keys, OrderListing, Record, UnixTime};

/// A snapshot chunk holds at most about this many bytes of keys and
/// values, and at most this many entries (keys, listed by key): about ten
/// milliseconds of the event loop at most (measured: README, "Durability").
/// A frame carries one chunk, so they also bound how much a thin link
/// must pass between two of the failure detector's heartbeats.
const CHUNK_BYTES: usize = 1 << 20;
pub(super) const CHUNK_ENTRIES: usize = 1 << 16;

/// Keys of a store listed by key read at once for a chunk.
const KEY_BATCH: usize = 100;

/// Apply `op` to the local store with `cas` as the unique of anything it
/// writes; reply to `reply_to` if set (`None` for another node's write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    pub op: Arc<Op>,
    pub cas: u64,
    pub reply_to: Option<ReplyTo>,
    /// A write of a node with a data directory: once applied, its stamp
    /// (`cas`) is marked in the log as the last write the store holds,
    /// before any reply, so the reply waits for the mark too.
    pub mark_delivered: bool,
}

/// Store work the strong modes ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Apply(Apply),
    /// The next chunk of this store's snapshot for member `to` (`start`:
    /// the first, taken of the store as it is now).
    Dump {
        to: NodeId,
        start: bool,
        /// Tags the report, which may come back after the engine moved on.
        tag: u64,
    },
    /// The snapshots being handed ended (every member took its own, or a
    /// view change): forget them, and drop the image they were read from.
    EndDumps,
    /// Part of a snapshot from a peer: with `reset`, empty the store first
    /// and take that head; then install `records`.
    Install {
        reset: Option<Head>,
        records: Vec<Record>,
        /// When the source read them: imported as of then, so a delayed
        /// `flush_all` judges them here as it does there.
        read_at: UnixTime,
        last: bool,
        /// One per snapshot taken: tags its report.
        tag: u64,
        /// With the last part, on a node with a data directory: the cas
        /// unique of the last write the snapshot holds, to mark in the log
        /// once it is installed.
        mark_delivered: Option<u64>,
    },
}

/// What the strong modes' store work reports back to the engine, with the
/// tag of the work it answers: a store on a worker thread answers late, so
/// a report may be for a snapshot a view change has since ended.
#[derive(Debug)]
pub enum Report {
    /// A chunk of the snapshot for `to`; its head with the first.
    Chunk {
        tag: u64,
        to: NodeId,
        records: Vec<Record>,
        /// When they were read.
        read_at: UnixTime,
        first: Option<Head>,
        last: bool,
        /// About how many bytes the whole snapshot carries.
        total: u64,
        /// It is read from an image the store keeps while it takes writes
        /// (an ordered memory store's, a memcached backend's), not from the
        /// store as it is.
        frozen: bool,
    },
    /// A chunk of a snapshot other than its last is installed (the
    /// member's `Took` waits for it: module doc, step 4).
    ChunkInstalled { tag: u64 },
    /// The last chunk of a snapshot is installed.
    Installed { tag: u64 },
    /// The store cannot take or give a snapshot, and why.
    SnapshotFailed { tag: u64, why: String },
}

#[derive(Debug)]
pub struct TotalOrderReplica {
    /// Per member being handed a snapshot: how far its listing is.
    dumps: HashMap<NodeId, Dump>,
    /// Entries a chunk lists at most.
    chunk_entries: usize,
}

impl Default for TotalOrderReplica {
    fn default() -> TotalOrderReplica {
        TotalOrderReplica::with_chunk_entries(CHUNK_ENTRIES)
    }
}

#[derive(Debug)]
struct Dump {
    next: Next,
    /// About how many bytes of keys and values the snapshot carries.
    bytes: u64,
    /// Records and chunks read so far, the longest read, and when the
    /// first began, for the log.
    records: u64,
    chunks: u64,
    longest: Duration,
    began: Instant,
}

impl Dump {
    fn new(next: Next, bytes: u64) -> Dump {
        Dump {
            next,
            bytes,
            records: 0,
            chunks: 0,
            longest: Duration::ZERO,
            began: Instant::now(),
        }
    }
}

/// Where a snapshot's listing goes on.
#[derive(Debug)]
enum Next {
    /// At this place of the image an ordered store froze, listed in its
    /// table's order a chunk at a time (`VersionedStore::export_in_order`):
    /// the listing's start costs nothing however big the store, and the
    /// store takes writes meanwhile. `image` is the image it lists, which
    /// must still be frozen at each chunk: should it have been thawed (the
    /// snapshots ended) and another frozen since, the snapshot fails and
    /// its source starts over.
    Place {
        place: usize,
        image: OrderListing,
    },
    /// At this key of every key listed at the start (a store that lists
    /// by key only: a memcached backend). `frozen`: read from the image
    /// the store keeps of them as they were then, while it takes writes
    /// (`VersionedStore::freeze_keys`), else as each key is when read.
    Key {
        keys: Keys,
        sent: usize,
        frozen: bool,
    },
    Done,
}

impl Replica for TotalOrderReplica {
    type Work = Work;
    type Done = Report;

    fn perform(
        &mut self,
        work: Work,
        executor: &mut Executor,
        emit: &mut impl FnMut(Done<Report>),
    ) {
        match work {
            Work::Apply(apply) => {
                let (request, now) = (&apply.op.request, apply.op.now);
                match apply.reply_to {
                    Some(to) => {
                        let (reply, _) = executor.execute(request, now, apply.cas);
                        if apply.mark_delivered {
                            executor.store().mark_delivered(apply.cas);
                        }
                        let shows = executor.store().take_shown();
                        emit(Done::Reply { to, reply, shows })
                    }
                    // Another node's write: applied, counted where it was taken.
                    None => {
                        executor.apply_replicated(request, now, apply.cas);
                        if apply.mark_delivered {
                            executor.store().mark_delivered(apply.cas);
                        }
                        // No reply here shows it: the next one would wait
                        // for it too.
                        executor.store().take_shown();
                    }
                }
            }
            Work::Dump { to, start, tag } => {
                let report = self.dump(to, start, tag, executor).unwrap_or_else(|why| {
                    self.dumps.remove(&to);
                    Report::SnapshotFailed { tag, why }
                });
                emit(Done::Engine(report))
            }
            Work::EndDumps => {
                self.dumps.clear();
                let copied = executor.store().thaw();
                if copied > 0 {
                    log::info!("snapshots handed: {copied} items written meanwhile were copied");
                }
            }
            Work::Install {
                reset,
                records,
                read_at,
                last,
                tag,
                mark_delivered,
            } => {
                let now = read_at;
                let store = executor.store();
                let installed = reset
                    .map_or(Ok(()), |head| store.reset(&head, now))
                    .and_then(|()| store.install_many(&records, now));
                match installed {
                    Err(e) => emit(Done::Engine(Report::SnapshotFailed {
                        tag,
                        why: format!("{e:?}"),
                    })),
                    Ok(()) if last => {
                        if let Some(upto) = mark_delivered {
                            store.mark_delivered(upto);
                        }
                        emit(Done::Engine(Report::Installed { tag }))
                    }
                    Ok(()) => emit(Done::Engine(Report::ChunkInstalled { tag })),
                }
            }
        }
    }

    /// A snapshot's first chunk waits until this node's log holds what its
    /// store held when the chunk was read: the member it goes to replaces
    /// its own store, and what its log gives back, with it (module doc of
    /// `total_order`, "Data directories"). Other reports may pass it while
    /// it waits: the next chunk for that member is read only once the
    /// engine heard this one, and the image it is read from is dropped
    /// only once no member is handed anything (`EndDumps`).
    fn report_waits(report: &Report) -> ReportWait {
        match report {
            Report::Chunk { first: Some(_), .. } => ReportWait::Logged,
            _ => ReportWait::Nothing,
        }
    }
}

impl TotalOrderReplica {
    pub fn with_chunk_entries(entries: usize) -> TotalOrderReplica {
        TotalOrderReplica {
            dumps: HashMap::new(),
            chunk_entries: entries.max(1),
        }
    }

    /// The next chunk of the snapshot for `to`: records (an ordered
    /// store's dead ones too) up to about [`CHUNK_BYTES`] of keys and
    /// values, or [`CHUNK_ENTRIES`] entries.
    fn dump(
        &mut self,
        to: NodeId,
        start: bool,
        tag: u64,
        executor: &mut Executor,
    ) -> Result<Report, String> {
        let (now, started) = (executor.now(), Instant::now());
        let store = executor.store();
        let mut first = None;
        if start {
            let (head, dump) = match store.freeze_in_order() {
                Some(image) => {
                    let next = Next::Place { place: 0, image };
                    (image.head, Dump::new(next, image.bytes))
                }
                None => {
                    let failed = |e| format!("{e:?}");
                    let (listing, frozen) = match store.freeze_keys().map_err(failed)? {
                        Some(listing) => (listing, true),
                        None => (store.snapshot_keys().map_err(failed)?, false),
                    };
                    let (keys, bytes) = (listing.keys, listing.bytes);
                    let next = Next::Key {
                        keys,
                        sent: 0,
                        frozen,
                    };
                    (listing.head, Dump::new(next, bytes))
                }
            };
            self.dumps.insert(to, dump);
            first = Some(head);
        }
        let Some(dump) = self.dumps.get_mut(&to) else {
            return Err("no snapshot under way".into());
        };
        let (mut records, mut bytes) = (Vec::new(), 0);
        let frozen = match dump.next {
            Next::Key { frozen, .. } => frozen,
            Next::Place { .. } | Next::Done => store.frozen_listing().is_some(),
        };
        match &mut dump.next {
            Next::Place { place, image } => {
                if store.frozen_listing() != Some(*image) {
                    return Err("the store's image was dropped while it was listed".into());
                }
                let mut take = |record: Record| {
                    bytes += record.size() as usize;
                    records.push(record);
                    bytes < CHUNK_BYTES
                };
                let next = store.export_in_order(*place, self.chunk_entries, &mut take);
                dump.next = match next.map_err(|e| format!("{e:?}"))? {
                    Some(next) => Next::Place {
                        place: next,
                        image: *image,
                    },
                    None => Next::Done,
                };
            }
            Next::Key { keys, sent, .. } => {
                // Read a few keys to a request (one each would take a
                // memcached's round trip each), as many as the chunk's room
                // holds at the listing's average size, at most [`KEY_BATCH`].
                let average = (dump.bytes / keys.len().max(1) as u64).max(1) as usize;
                let end = keys.len().min(*sent + self.chunk_entries);
                while *sent < end && bytes < CHUNK_BYTES {
                    let room = ((CHUNK_BYTES - bytes) / average).clamp(1, KEY_BATCH);
                    let room = room.min(end - *sent);
                    let batch: Vec<&[u8]> = (*sent..keys.len().min(*sent + room))
                        .map(|i| keys.get(i))
                        .collect();
                    let read = store.export_listed(&batch, now);
                    // None: expired or reclaimed since the keys were listed.
                    for record in read.map_err(|e| format!("{e:?}"))?.into_iter().flatten() {
                        bytes += record.size() as usize;
                        records.push(record);
                    }
                    *sent += batch.len();
                }
                if *sent == keys.len() {
                    dump.next = Next::Done;
                }
            }
            Next::Done => {}
        }
        dump.records += records.len() as u64;
        dump.chunks += 1;
        dump.longest = dump.longest.max(started.elapsed());
        let (last, total) = (matches!(dump.next, Next::Done), dump.bytes);
        if last {
            log::info!(
                "snapshot for node {to} read: {} records in {} chunks, the longest {:?}, \
                 {:?} from the first to the last",
                dump.records,
                dump.chunks,
                dump.longest,
                dump.began.elapsed()
            );
            self.dumps.remove(&to);
        }
        Ok(Report::Chunk {
            tag,
            to,
            records,
            read_at: now,
            first,
            last,
            total,
            frozen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Limits, StorageMode};
    use crate::store::memory::MemoryStore;
    use crate::store::{Expiry, StoreCounters, Write};

    const T: UnixTime = 1_700_000_000;

    fn executor(clock: fn() -> UnixTime) -> Executor {
        let store = Box::new(MemoryStore::new(1 << 20, Limits::default()));
        Executor::new(store, Arc::new(StoreCounters::default())).with_clock(clock)
    }

    fn perform(
        replica: &mut TotalOrderReplica,
        work: Work,
        executor: &mut Executor,
    ) -> Vec<Report> {
        let mut reports = Vec::new();
        replica.perform(work, executor, &mut |done| {
            if let Done::Engine(report) = done {
                reports.push(report);
            }
        });
        reports
    }

    /// An executor on an ordered store (a strong mode's replica) that
    /// holds `keys`.
    fn ordered_source(keys: &[&[u8]]) -> Executor {
        let store = MemoryStore::new(1 << 20, Limits::default()).ordered();
        let mut source =
            Executor::new(Box::new(store), Arc::new(StoreCounters::default())).with_clock(|| T);
        for key in keys {
            put(source.store(), key);
        }
        source
    }

    fn put(store: &mut dyn crate::store::VersionedStore, key: &[u8]) {
        let write = Write {
            mode: StorageMode::Set,
            key,
            flags: 0,
            expiry: Expiry::Never,
            value: b"v",
            cas: 1,
        };
        store.store(write, T).unwrap();
    }

    /// An ordered store is listed by place a chunk at a time, from the
    /// image it froze at the first: writes between chunks (a removal that
    /// moves the last entry to a place already listed, a key added, one
    /// not listed yet overwritten) change the store, not what is handed,
    /// which is the store as it was, in its order.
    #[test]
    fn a_store_written_between_chunks_hands_its_image_as_frozen() {
        let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
        let (mut source, mut unchanged) = (ordered_source(&keys), ordered_source(&keys));
        let mut replica = TotalOrderReplica::with_chunk_entries(1);
        let (mut member, mut into_member) = (ordered_source(&[]), TotalOrderReplica::default());
        for (tag, start) in [(1, true), (2, false), (3, false)] {
            let dump = Work::Dump { to: 2, start, tag };
            let to = (&mut into_member, &mut member);
            let (frozen, _) = hand_chunk(&mut replica, dump, &mut source, to);
            assert!(frozen, "read from an image");
            if start {
                source.store().delete(b"a", T).unwrap();
                put(source.store(), b"d");
                source.store().delete(b"c", T).unwrap();
                put(source.store(), b"c");
            }
        }
        assert!(perform(&mut replica, Work::EndDumps, &mut source).is_empty());
        assert_eq!(source.store().frozen_listing(), None, "thawed");
        assert_eq!(in_order(&mut member), in_order(&mut unchanged));
        assert_ne!(in_order(&mut source), in_order(&mut unchanged));
    }

    /// Reads the chunk `dump` asks of `source` and installs it through the
    /// replica and executor of `member` (as the snapshot tagged 7 there):
    /// whether it was read from a frozen image, and what the install
    /// reported.
    fn hand_chunk(
        replica: &mut TotalOrderReplica,
        dump: Work,
        source: &mut Executor,
        (into_member, member): (&mut TotalOrderReplica, &mut Executor),
    ) -> (bool, Vec<Report>) {
        let read = perform(replica, dump, source);
        let Ok(
            [Report::Chunk {
                records,
                read_at,
                first,
                last,
                frozen,
                ..
            }],
        ) = <[Report; 1]>::try_from(read)
        else {
            panic!("one chunk");
        };
        let install = Work::Install {
            reset: first,
            records,
            read_at,
            last,
            tag: 7,
            mark_delivered: None,
        };
        (frozen, perform(into_member, install, member))
    }

    /// Every record of an ordered store, in its table's order.
    fn in_order(executor: &mut Executor) -> Vec<Record> {
        let store = executor.store();
        assert!(store.frozen_listing().is_none());
        store.freeze_in_order().expect("an ordered store");
        let mut records = Vec::new();
        let listed = store.export_in_order(0, usize::MAX, &mut |r| {
            records.push(r);
            true
        });
        assert_eq!(listed.unwrap(), None, "all of it");
        store.thaw();
        records
    }

    /// A snapshot a view change ended is forgotten, and its image with
    /// it: no later chunk of it is read.
    #[test]
    fn ended_snapshots_are_forgotten() {
        let mut source = ordered_source(&[b"a", b"b"]);
        let mut replica = TotalOrderReplica::with_chunk_entries(1);
        let dump = |start, tag| Work::Dump { to: 2, start, tag };
        let first = perform(&mut replica, dump(true, 1), &mut source);
        assert!(
            matches!(&first[..], [Report::Chunk { last: false, .. }]),
            "{first:?}"
        );
        assert!(perform(&mut replica, Work::EndDumps, &mut source).is_empty());
        let after = perform(&mut replica, dump(false, 2), &mut source);
        assert!(
            matches!(&after[..], [Report::SnapshotFailed { tag: 2, .. }]),
            "{after:?}"
        );
    }

    /// Every chunk's install is reported, so that the member says it took
    /// the chunk only once its store holds it: the last as `Installed`,
    /// the others as `ChunkInstalled`, each with its snapshot's tag.
    #[test]
    fn each_installed_chunk_is_reported() {
        let mut source = ordered_source(&[b"a", b"b"]);
        let mut replica = TotalOrderReplica::with_chunk_entries(1);
        let mut member = ordered_source(&[]);
        let mut into_member = TotalOrderReplica::default();
        let mut reported = Vec::new();
        for start in [true, false] {
            let dump = Work::Dump {
                to: 2,
                start,
                tag: 1,
            };
            let to = (&mut into_member, &mut member);
            reported.extend(hand_chunk(&mut replica, dump, &mut source, to).1);
        }
        assert!(
            matches!(
                &reported[..],
                [
                    Report::ChunkInstalled { tag: 7 },
                    Report::Installed { tag: 7 }
                ]
            ),
            "{reported:?}"
        );
    }

    /// A delayed `flush_all` comes due while a snapshot is on its way: a
    /// record read before it must die here at its time, as it does at the
    /// source, however late it is installed.
    #[test]
    fn a_record_read_before_a_delayed_flush_dies_with_it_wherever_installed() {
        let mut source = executor(|| T + 5);
        let store = source.store();
        let write = Write {
            mode: StorageMode::Set,
            key: b"k",
            flags: 0,
            expiry: Expiry::Never,
            value: b"v",
            cas: 1,
        };
        store.store(write, T).unwrap();
        store.flush_all(Some(T + 10), T).unwrap();
        let dump = Work::Dump {
            to: 2,
            start: true,
            tag: 1,
        };
        let [Report::Chunk {
            records,
            read_at,
            first,
            last: true,
            ..
        }] = &perform(&mut TotalOrderReplica::default(), dump, &mut source)[..]
        else {
            panic!("one chunk");
        };
        assert_eq!(records.len(), 1, "live when read");
        let mut late = executor(|| T + 20);
        let install = Work::Install {
            reset: *first,
            records: records.clone(),
            read_at: *read_at,
            last: true,
            tag: 2,
            mark_delivered: None,
        };
        perform(&mut TotalOrderReplica::default(), install, &mut late);
        assert_eq!(source.store().export_record(b"k", T + 20).unwrap(), None);
        assert_eq!(late.store().export_record(b"k", T + 20).unwrap(), None);
    }
}
