//! The strong modes' store side: applies each delivered operation, in
//! delivery order, with the cas unique its stamp gives, replying to the
//! client if the operation was this node's; and hands a rejoining member
//! the store's state as of a view's start (a snapshot, in chunks), or takes
//! one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cluster::engine::{Done, Replica, ReplyTo};
use crate::cluster::message::Op;
use crate::cluster::NodeId;
use crate::store::{Executor, Head, Keys, Record, UnixTime};

/// A snapshot chunk holds at most about this many bytes of values.
const CHUNK_BYTES: usize = 1 << 20;

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
    },
    /// The last chunk of a snapshot is installed.
    Installed { tag: u64 },
    /// The store cannot take or give a snapshot, and why.
    SnapshotFailed { tag: u64, why: String },
}

#[derive(Debug, Default)]
pub struct TotalOrderReplica {
    /// Per member being handed a snapshot: its keys and how many were sent.
    dumps: HashMap<NodeId, Dump>,
}

#[derive(Debug)]
struct Dump {
    keys: Keys,
    sent: usize,
    bytes: u64,
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
                        emit(Done::Reply { to, reply })
                    }
                    // Another node's write: applied, counted where it was taken.
                    None => {
                        executor.apply_replicated(request, now, apply.cas);
                        if apply.mark_delivered {
                            executor.store().mark_delivered(apply.cas);
                        }
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
                    .and_then(|()| records.iter().try_for_each(|r| store.install(r, now)));
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
                    Ok(()) => {}
                }
            }
        }
    }
}

impl TotalOrderReplica {
    /// The next chunk of the snapshot for `to`: live records up to about
    /// [`CHUNK_BYTES`] of values.
    fn dump(
        &mut self,
        to: NodeId,
        start: bool,
        tag: u64,
        executor: &mut Executor,
    ) -> Result<Report, String> {
        let now = executor.now();
        let mut first = None;
        if start {
            let listing = executor
                .store()
                .snapshot_keys()
                .map_err(|e| format!("{e:?}"))?;
            let dump = Dump {
                keys: listing.keys,
                sent: 0,
                bytes: listing.bytes,
            };
            self.dumps.insert(to, dump);
            first = Some(listing.head);
        }
        let Some(dump) = self.dumps.get_mut(&to) else {
            return Err("no snapshot under way".into());
        };
        let (mut records, mut bytes) = (Vec::new(), 0);
        while dump.sent < dump.keys.len() && bytes < CHUNK_BYTES {
            let record = executor
                .store()
                .export_record(dump.keys.get(dump.sent), now);
            // None: expired or reclaimed since the keys were listed.
            if let Some(record) = record.map_err(|e| format!("{e:?}"))? {
                bytes += record.size() as usize;
                records.push(record);
            }
            dump.sent += 1;
        }
        let (last, total) = (dump.sent == dump.keys.len(), dump.bytes);
        if last {
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
