//! Recovery at start, before the node serves anything: the last snapshot,
//! then `log.old` (there while a snapshot was being written), then `log`,
//! replayed into the store; then the files are compacted into one fresh
//! snapshot and an empty log, so the node starts from a clean layout.
//!
//! Why replaying `snapshot`, `log.old`, `log` in that order is right at
//! every crash point of a snapshot (see `writer.rs`): records state a key's
//! whole state, so a replay ends with each key as its last record left it.
//! Before the new snapshot's rename, `snapshot` is the old one and
//! `log.old` then `log` hold everything after it, in order. After it,
//! `snapshot` is the new one, taken while writes went on (each key as it
//! was at some moment after `log` began); `log.old` then sets keys back to
//! how they were when `log` began, and `log` replays every write since:
//! each key ends as its last write left it, and a key no write touched
//! since `log` began was the same in all three.
//!
//! A torn tail of a log is dropped (and said); a log corrupt in the middle
//! (a bad record with valid ones after it, see `record.rs` for how the two
//! are told apart) and a corrupt snapshot stop the start, since the writes
//! they hold would be lost: the reason names the file and the byte, and
//! how to start without them knowingly. Every file is read and judged
//! before anything in the directory changes (not even `snapshot.tmp` goes
//! first), so a refused start leaves it as the crash did; the logs'
//! records wait in memory meanwhile, while the snapshot is read.
//!
//! A node of a strong cluster of several marks its log after each
//! delivered write ([`Record::Delivered`]): its store must come back
//! holding exactly a prefix of the delivery sequence, so the records
//! after the last mark (the calls of a write, or of a snapshot install,
//! whose mark the crash lost) are dropped too ([`recover_marked`]). Its
//! log holds calls, which must replay once each, on the image they
//! followed (`call.rs`). Its snapshot is the image at a mark, and says the
//! generation of the log that began with it; each `log` starts with its
//! own. So a log of an older generation than the snapshot (`log.old`
//! after the new snapshot's rename, before its removal) is held by the
//! snapshot and skipped; before the rename, the old snapshot, `log.old`
//! (the logs since, one after another, an abandoned snapshot's included)
//! and `log` are the image and every call after it, in order.
//!
//! The store it gives back is a replica's exact image ([`Recovered::exact`])
//! if it was rebuilt by calls from a reset (a snapshot's, a peer's
//! install, or the empty store of a new directory); a log an older build
//! wrote holds key states, which give back the keys but not their places,
//! and that store stays inexact until a peer's snapshot is installed.

use std::io;
use std::path::Path;

use super::call::Call;
use super::record::{self, Record, Tail, Under};
use super::writer::sync_dir;
use super::Journaled;
use crate::store::{Head, Policy, UnixTime, VersionedStore};

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes of records replayed, and of torn or corrupt tails dropped.
    pub replayed: u64,
    pub dropped: u64,
    /// The highest cas unique recovered or reserved: the node hands out
    /// only higher ones.
    pub highest_cas: u64,
    /// A marked log (a strong cluster of several) in a directory the node
    /// ran with before: the cas unique of the last delivered write its
    /// store holds (0: none). `None`: a new directory, or an unmarked log.
    pub delivered: Option<u64>,
    /// A marked log: the number of the log that follows the snapshot.
    pub generation: u64,
    /// A marked log: the store recovered is the exact image a replica
    /// held at the last mark, not one rebuilt from key states (see
    /// `call.rs`).
    pub exact: bool,
}

/// Replays the data directory `dir` into the empty `store`, then rewrites
/// it as one snapshot (taken at `now`) and an empty log.
pub fn recover(dir: &Path, store: &mut dyn VersionedStore, now: UnixTime) -> io::Result<Recovered> {
    let mut highest_cas = 0;
    let (replayed, dropped) =
        read_files(dir, &mut |record| replay(store, record, &mut highest_cas))?;
    compact(dir, store, now, highest_cas, None)?;
    Ok(Recovered {
        replayed,
        dropped,
        highest_cas,
        delivered: None,
        generation: 0,
        exact: false,
    })
}

/// Replays the marked log of a node of a strong cluster of several in
/// `dir` into the empty `store`, up to its last [`Record::Delivered`],
/// then rewrites it as one snapshot ending with that mark.
///
/// The records after a mark wait in memory for the next one: at most one
/// write's changes, or one snapshot install's (the whole store, once, if
/// a crash interrupted one). Calls replay under the memory limit and
/// policy their log says they were made under, so that they evict and
/// sweep as they did; key states without a limit (see
/// `Recovering::replay`). The store is left `configured`, and so is the
/// log that follows.
pub fn recover_marked(
    dir: &Path,
    store: &mut dyn VersionedStore,
    configured: Under,
    now: UnixTime,
) -> io::Result<Recovered> {
    let existed = ["snapshot", "log.old", "log"]
        .iter()
        .any(|name| dir.join(name).exists());
    let mut replay = MarkedReplay::new(store, configured);
    let (replayed, mut dropped) = read_files(dir, &mut |record| replay.take(record))?;
    replay.run_under(configured)?;
    let MarkedReplay {
        highest_cas,
        delivered,
        unmarked,
        generations,
        exact,
        ..
    } = replay;
    let items = |r: &Record| matches!(r, Record::Put { .. } | Record::Remove { .. });
    if delivered.is_none() && unmarked.iter().any(items) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it was written by a one-node cluster; move it away to start without it",
        ));
    }
    if !unmarked.is_empty() {
        let bytes: usize = unmarked.iter().map(Record::encoded_len).sum();
        log::warn!(
            "{}: dropped {} records ({bytes} bytes) after the last delivered write's mark",
            dir.display(),
            unmarked.len()
        );
        dropped += bytes as u64;
    }
    let delivered = existed.then(|| delivered.unwrap_or(0));
    // A new directory's store is empty, as every replica's at the
    // cluster's first start (a node that joins later installs a snapshot).
    let exact = exact || !existed;
    let generation = generations.map_or(1, |(_, current)| current + 1);
    let marked = Marked {
        delivered: delivered.unwrap_or(0),
        generation,
        exact,
    };
    compact_marked(dir, store, now, highest_cas, (marked, configured))?;
    Ok(Recovered {
        replayed,
        dropped,
        highest_cas,
        delivered,
        generation,
        exact,
    })
}

/// Where a marked log's replay stands (see `recover_marked`).
struct MarkedReplay<'a> {
    store: &'a mut dyn VersionedStore,
    highest_cas: u64,
    /// The last mark replayed.
    delivered: Option<u64>,
    /// Records since the last mark, replayed at the next.
    unmarked: Vec<Record>,
    /// The first generation read (the snapshot's: it holds everything
    /// before that log) and the current one; `None` before any (a
    /// directory an older version wrote, whose records of key states
    /// replay in any number).
    generations: Option<(u64, u64)>,
    /// Whether the store replayed so far is a replica's exact image: since
    /// the last reset (a snapshot's, or a peer's installed), only calls.
    exact: bool,
    /// What the calls of the current log were made under.
    under: Under,
    /// The policy the node is configured with now: an earlier build's
    /// log, which records none, was made under it (as far as it knows).
    configured_policy: Option<Policy>,
}

impl<'a> MarkedReplay<'a> {
    fn new(store: &'a mut dyn VersionedStore, configured: Under) -> MarkedReplay<'a> {
        MarkedReplay {
            store,
            highest_cas: 0,
            delivered: None,
            unmarked: Vec::new(),
            generations: None,
            exact: false,
            under: configured,
            configured_policy: configured.policy,
        }
    }

    /// Takes the next record of `snapshot`, `log.old`, `log`.
    fn take(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Generation { n, under } => {
                let first = self.generations.map_or(*n, |(first, _)| first);
                self.generations = Some((first, *n));
                // This log's calls were made under it, whatever the
                // configuration says now (the replay's end sets that back).
                self.under = Under {
                    policy: under.policy.or(self.configured_policy),
                    ..*under
                };
                self.run_under(self.under)
            }
            // A log the snapshot holds already: `log.old` after the new
            // snapshot's rename, before its removal (`writer.rs`).
            _ if self
                .generations
                .is_some_and(|(first, current)| current < first) =>
            {
                Ok(())
            }
            Record::Delivered { upto } => {
                self.delivered = Some(*upto);
                std::mem::take(&mut self.unmarked)
                    .iter()
                    .try_for_each(|r| self.apply(r))
            }
            Record::SnapshotEnd => Ok(()),
            Record::Journal(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it was written by a node of an eventual or causal cluster; move it away to \
                 start without it",
            )),
            _ => {
                self.unmarked.push(record.clone());
                Ok(())
            }
        }
    }

    /// Applies a record of a marked group.
    fn apply(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Call(payload) => {
                let call = Call::decode(payload).expect("checked as it was read");
                self.highest_cas = self.highest_cas.max(call.cas());
                if matches!(call, Call::Reset { .. }) {
                    self.exact = true;
                    self.limit(self.under.cap)?;
                }
                // What the call answered, a refusal included, is its
                // outcome, the same as it had: only a store that fails on
                // its own (none of an ordered store's errors) would differ.
                let _ = call.apply(self.store);
                Ok(())
            }
            Record::Inexact => {
                self.exact = false;
                Ok(())
            }
            Record::Put { .. } | Record::Remove { .. } | Record::SnapshotBegin { .. } => {
                self.exact = false;
                self.limit(u64::MAX)?;
                replay(self.store, record, &mut self.highest_cas)
            }
            _ => replay(self.store, record, &mut self.highest_cas),
        }
    }

    fn run_under(&mut self, under: Under) -> io::Result<()> {
        if let Some(policy) = under.policy {
            self.store
                .set_policy(policy)
                .map_err(|e| io::Error::other(format!("policy: {e:?}")))?;
        }
        self.limit(under.cap)
    }

    fn limit(&mut self, bytes: u64) -> io::Result<()> {
        self.store
            .set_memory_limit(bytes)
            .map_err(|e| io::Error::other(format!("memory limit: {e:?}")))
    }
}

/// Replays the data directory `dir` of a store side that logs its own
/// records (`journaled`) into it and the empty `store`, then rewrites it as
/// one snapshot of what `journaled` then holds and an empty log.
pub fn recover_journaled(
    dir: &Path,
    store: &mut dyn VersionedStore,
    journaled: &mut dyn Journaled,
    now: UnixTime,
) -> io::Result<Recovered> {
    let (replayed, dropped) = read_files(dir, &mut |record| match record {
        Record::Journal(payload) => journaled.replay(store, payload, now),
        Record::SnapshotBegin { .. } | Record::SnapshotEnd => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it was written by a node of a one-node, linearizable or sequential cluster; \
             move it away to start without it",
        )),
    })?;
    let mut out = Vec::new();
    Record::SnapshotBegin { flush_at: None }.encode(&mut out);
    journaled.recovered(store, now, &mut out)?;
    Record::SnapshotEnd.encode(&mut out);
    install_snapshot(dir, &out)?;
    Ok(Recovered {
        replayed,
        dropped,
        highest_cas: 0,
        delivered: None,
        generation: 0,
        exact: false,
    })
}

/// Hands `apply` every record of `snapshot`, `log.old` and `log`, in that
/// order; the bytes replayed, and those of torn tails dropped.
///
/// Every file is read and judged before anything in `dir` changes, so a
/// start refused (a corrupt snapshot, a log corrupt in the middle) leaves
/// the directory byte for byte as it found it.
fn read_files(
    dir: &Path,
    apply: &mut dyn FnMut(&Record) -> io::Result<()>,
) -> io::Result<(u64, u64)> {
    let mut logs = Vec::new();
    for name in ["log.old", "log"] {
        let path = dir.join(name);
        if let Some(bytes) = read_file(&path)? {
            let read = record::read(&bytes);
            check_log(&path, &bytes, &read)?;
            logs.push((path, read));
        }
    }
    let snapshot = match read_file(&dir.join("snapshot"))? {
        Some(bytes) => {
            let read = record::read(&bytes);
            let whole = matches!(read.records.last(), Some(Record::SnapshotEnd));
            if read.dropped > 0 || !whole {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: corrupt after byte {}; move it away to start without it",
                        dir.join("snapshot").display(),
                        read.valid
                    ),
                ));
            }
            Some(read)
        }
        None => None,
    };
    let _ = std::fs::remove_file(dir.join("snapshot.tmp"));
    let (mut replayed, mut dropped) = (0, 0);
    if let Some(read) = snapshot {
        replayed += read.valid as u64;
        in_table_order(read.records)
            .iter()
            .try_for_each(&mut *apply)?;
    }
    for (path, read) in logs {
        if read.dropped > 0 {
            log::warn!(
                "{}: dropped {} bytes of torn or corrupt records after byte {}",
                path.display(),
                read.dropped,
                read.valid
            );
        }
        read.records.iter().try_for_each(&mut *apply)?;
        replayed += read.valid as u64;
        dropped += read.dropped as u64;
    }
    Ok((replayed, dropped))
}

/// Refuses the log at `path` (`bytes`, as [`record::read`] read it) if
/// what it dropped is not a torn tail but a corrupt record with valid ones
/// after it: acknowledged writes the start would lose. The reason says
/// where, and how to start without them knowingly.
fn check_log(path: &Path, bytes: &[u8], read: &record::Read) -> io::Result<()> {
    let (at, path) = (read.valid, path.display());
    let after = match record::tail(bytes, at) {
        Tail::Clean | Tail::Torn => return Ok(()),
        Tail::Corrupt { next: Some(next) } => {
            format!("followed by valid records from byte {next}")
        }
        Tail::Corrupt { next: None } => {
            "followed by bytes the start could not tell from valid records".to_string()
        }
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{path}: corrupt record at byte {at}, {after} ({} bytes to the end); \
             the writes after it would be lost: truncate the file to {at} bytes \
             (truncate -s {at} {path}) to start without them, or restore it",
            bytes.len() - at
        ),
    ))
}

/// A snapshot lists the table from its end down (see `store.rs`): its
/// items replayed last first go back in the order they had, which the
/// eviction clock goes round in (oldest first, not newest).
fn in_table_order(mut records: Vec<Record>) -> Vec<Record> {
    let items = |r: &Record| matches!(r, Record::Put { .. });
    if let Some(first) = records.iter().position(items) {
        let end = first + records[first..].iter().take_while(|r| items(r)).count();
        records[first..end].reverse();
    }
    records
}

fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replays one record of a one-node cluster's store into `store`.
fn replay(
    store: &mut dyn VersionedStore,
    record: &Record,
    highest_cas: &mut u64,
) -> io::Result<()> {
    let applied = match record {
        Record::Put {
            now,
            key,
            entry,
            cas,
        } => {
            *highest_cas = (*highest_cas).max(*cas);
            store.import(key, Some(entry), *cas, *now)
        }
        Record::Remove { key } => store.import(key, None, 0, 0),
        Record::Flush { now, at } => store.flush_all(*at, *now),
        Record::Clock { reserved } => {
            *highest_cas = (*highest_cas).max(*reserved);
            Ok(())
        }
        // The store is empty here: this sets its delayed flush exactly.
        Record::SnapshotBegin { flush_at } => {
            let head = Head {
                flush_at: *flush_at,
                ..Head::default()
            };
            store.reset(&head, 0)
        }
        Record::SnapshotEnd => Ok(()),
        Record::Delivered { .. }
        | Record::Generation { .. }
        | Record::Inexact
        | Record::Call(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it was written by a node of a linearizable or sequential \
                     cluster of several; move it away to start without it",
            ))
        }
        Record::Journal(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it was written by a node of an eventual or causal \
                     cluster; move it away to start without it",
            ))
        }
    };
    applied.map_err(|e| io::Error::other(format!("replaying the log: {e:?}")))
}

/// Writes the store as `snapshot` (through `snapshot.tmp` and a rename),
/// ending with the mark `delivered` for a marked log, and empties the logs.
fn compact(
    dir: &Path,
    store: &mut dyn VersionedStore,
    now: UnixTime,
    highest_cas: u64,
    delivered: Option<u64>,
) -> io::Result<()> {
    let mut out = Vec::new();
    Record::Clock {
        reserved: highest_cas,
    }
    .encode(&mut out);
    let flush_at = store.head().flush_at;
    Record::SnapshotBegin { flush_at }.encode(&mut out);
    // The whole table in one slice, in the order a running node lists it.
    let listed = store.export_below(usize::MAX, usize::MAX, now, &mut |r| {
        Record::put(now, r).encode(&mut out);
        true
    });
    listed.map_err(|e| io::Error::other(format!("listing the store: {e:?}")))?;
    if let Some(upto) = delivered {
        Record::Delivered { upto }.encode(&mut out);
    }
    Record::SnapshotEnd.encode(&mut out);
    install_snapshot(dir, &out)
}

/// What a marked snapshot ends with and says of its store.
#[derive(Debug, Clone, Copy)]
pub struct Marked {
    /// The mark it ends with.
    pub delivered: u64,
    /// The log that follows it.
    pub generation: u64,
    /// Whether the store it lists is a replica's exact image.
    pub exact: bool,
}

/// Writes a marked store as `snapshot`, empties the logs; the calls of
/// the log that follows will be made `under` that memory limit and policy.
fn compact_marked(
    dir: &Path,
    store: &mut dyn VersionedStore,
    now: UnixTime,
    highest_cas: u64,
    (marked, under): (Marked, Under),
) -> io::Result<()> {
    let Some(image) = store.freeze_in_order() else {
        return compact(dir, store, now, highest_cas, Some(marked.delivered));
    };
    let mut out = Vec::new();
    marked_snapshot_head(&mut out, (marked, under), highest_cas, image.head, now);
    let listed = store.export_in_order(0, usize::MAX, &mut |record| {
        Call::Install {
            now,
            record: record.lend(),
        }
        .encode(&mut out);
        true
    });
    store.thaw();
    listed.map_err(|e| io::Error::other(format!("listing the store: {e:?}")))?;
    marked_snapshot_end(&mut out, marked);
    install_snapshot(dir, &out)
}

/// The head of a marked snapshot of an ordered store's image: its
/// generation (and what that log's calls are made under), the clock
/// reservation, and the reset its items follow.
pub fn marked_snapshot_head(
    out: &mut Vec<u8>,
    (marked, under): (Marked, Under),
    reserved: u64,
    head: Head,
    now: UnixTime,
) {
    let n = marked.generation;
    Record::Generation { n, under }.encode(out);
    Record::Clock { reserved }.encode(out);
    Call::Reset { now, head }.encode(out);
    if !marked.exact {
        Record::Inexact.encode(out);
    }
}

/// The end of a marked snapshot: its mark, then its end.
pub fn marked_snapshot_end(out: &mut Vec<u8>, marked: Marked) {
    Record::Delivered {
        upto: marked.delivered,
    }
    .encode(out);
    Record::SnapshotEnd.encode(out);
}

/// Writes `snapshot` (through `snapshot.tmp` and a rename) with `bytes`,
/// whole records ending in [`Record::SnapshotEnd`], and empties the logs.
fn install_snapshot(dir: &Path, out: &[u8]) -> io::Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let written = std::fs::write(&tmp, out).and_then(|()| std::fs::File::open(&tmp)?.sync_all());
    if let Err(e) = written {
        // What is left of it would only take the room the next start needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::new(
            e.kind(),
            format!(
                "writing what it recovered as one snapshot ({} bytes) failed: {e}; \
                 nothing is lost (the files it was to replace are as they were): \
                 make room and start again",
                out.len()
            ),
        ));
    }
    std::fs::rename(&tmp, dir.join("snapshot"))?;
    // The new snapshot is in place before the logs it holds go.
    sync_dir(dir)?;
    for name in ["log.old", "log"] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;
    use crate::store::memory::MemoryStore;
    use crate::store::{Entry, Expiry, RecordRef};

    const NOW: UnixTime = 1_700_000_000;

    /// A log's calls made under a limit of 1 MiB, by an earlier build.
    const MIB: Under = Under {
        cap: 1 << 20,
        policy: None,
    };

    fn put(key: &str, value: &str, cas: u64) -> Record {
        Record::Put {
            now: NOW,
            key: key.as_bytes().to_vec(),
            entry: Entry {
                flags: 0,
                expiry: Expiry::Never,
                value: value.as_bytes().to_vec(),
            },
            cas,
        }
    }

    fn file(dir: &Path, name: &str, records: &[Record]) {
        let mut out = Vec::new();
        records.iter().for_each(|r| r.encode(&mut out));
        std::fs::write(dir.join(name), out).unwrap();
    }

    fn end() -> Record {
        Record::SnapshotEnd
    }

    fn recovered(dir: &Path) -> Vec<(String, String)> {
        let mut store = MemoryStore::new(1 << 20, Limits::default());
        recover(dir, &mut store, NOW).unwrap();
        let mut found = Vec::new();
        for key in ["a", "b", "c"] {
            if let Some(r) = store.export_record(key.as_bytes(), NOW).unwrap() {
                found.push((key.to_string(), String::from_utf8(r.entry.value).unwrap()));
            }
        }
        found
    }

    /// A snapshot taken while writes went on, at each point a crash can
    /// stop it: before its rename (the old snapshot and both logs count)
    /// and after it (the new snapshot, then the old log, then the new).
    #[test]
    fn a_crash_at_any_point_of_a_snapshot_recovers_the_last_writes() {
        let dir = std::env::temp_dir().join(format!("mckv-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old_snapshot = [put("a", "1", 1), put("b", "1", 2), end()];
        // Before the snapshot began: a=2, c=1; after: b=3, a deleted.
        let old_log = [put("a", "2", 3), put("c", "1", 4)];
        let new_log = [put("b", "3", 5), Record::Remove { key: b"a".to_vec() }];
        let want = vec![("b".into(), "3".into()), ("c".into(), "1".into())];
        // Taken while the new log grew: a as it was, b after its write.
        let new_snapshot = [put("a", "2", 3), put("b", "3", 5), put("c", "1", 4), end()];

        file(&dir, "snapshot", &old_snapshot);
        file(&dir, "log.old", &old_log);
        file(&dir, "log", &new_log);
        file(&dir, "snapshot.tmp", &new_snapshot[..2]);
        assert_eq!(recovered(&dir), want, "before the rename");
        assert!(!dir.join("snapshot.tmp").exists() && !dir.join("log.old").exists());

        file(&dir, "snapshot", &new_snapshot);
        file(&dir, "log.old", &old_log);
        file(&dir, "log", &new_log);
        assert_eq!(recovered(&dir), want, "after the rename");
        // Compacted: the snapshot alone holds it now.
        assert_eq!(recovered(&dir), want, "again, from the compacted files");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn mark(upto: u64) -> Record {
        Record::Delivered { upto }
    }

    /// `dir` recovered as a marked log: the values of a, b, c, and the last
    /// mark (or the error).
    /// Keys and values, in key order.
    type Values = Vec<(String, String)>;

    fn recovered_marked(dir: &Path) -> io::Result<(Values, Option<u64>)> {
        let mut store = MemoryStore::new(1 << 20, Limits::default()).ordered();
        let found = recover_marked(dir, &mut store, MIB, NOW)?;
        let mut values = Vec::new();
        for key in ["a", "b", "c"] {
            if let Some(r) = store.export_record(key.as_bytes(), NOW).unwrap() {
                values.push((key.to_string(), String::from_utf8(r.entry.value).unwrap()));
            }
        }
        Ok((values, found.delivered))
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mckv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A call of a marked log as its record.
    fn call(call: Call<'_>) -> Record {
        let mut out = Vec::new();
        call.encode(&mut out);
        record::read(&out).records.remove(0)
    }

    /// A crash after a snapshot's rename, before `log.old` went: the calls
    /// `log.old` holds are in the snapshot already (its generation is
    /// older), and replayed again an `incr` would count twice; the calls of
    /// `log` (the snapshot's generation) come after it. Before the rename,
    /// the old snapshot takes both logs.
    #[test]
    fn a_log_the_snapshot_holds_is_not_replayed_again() {
        let dir = temp_dir("generations");
        let incr = |cas| {
            let key = b"a".as_slice();
            let (incr, delta) = (true, 1);
            let now = NOW;
            call(Call::Arith {
                now,
                key,
                incr,
                delta,
                cas,
            })
        };
        let value = |v: &'static [u8]| RecordRef {
            key: b"a",
            flags: 0,
            expiry: Expiry::Never,
            value: v,
            cas: 1,
            stored_at: NOW,
            referenced: false,
        };
        let snapshot = |n, v, upto| {
            let head = Head::default();
            let (now, record) = (NOW, value(v));
            vec![
                Record::Generation { n, under: MIB },
                call(Call::Reset { now, head }),
                call(Call::Install { now, record }),
                mark(upto),
                end(),
            ]
        };
        // After the rename (the snapshot holds `log.old`), then before it.
        for snapshot in [snapshot(2, b"1", 2), snapshot(1, b"0", 1)] {
            file(
                &dir,
                "log.old",
                &[Record::Generation { n: 1, under: MIB }, incr(2), mark(2)],
            );
            file(
                &dir,
                "log",
                &[Record::Generation { n: 2, under: MIB }, incr(3), mark(3)],
            );
            file(&dir, "snapshot", &snapshot);
            let want = vec![("a".to_string(), "2".to_string())];
            assert_eq!(recovered_marked(&dir).unwrap(), (want, Some(3)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Cut anywhere, a marked log comes back as of its last whole mark:
    /// the changes of a write (two records here: an eviction, then the
    /// write) or of an install (a reset, then items) count only with their
    /// mark. Compacted, it comes back the same, at the same mark.
    #[test]
    fn a_marked_log_cut_anywhere_comes_back_at_its_last_mark() {
        let dir = temp_dir("marked");
        let log = [
            put("a", "1", 1),
            mark(1),
            Record::Remove { key: b"a".to_vec() },
            put("b", "1", 2),
            mark(2),
            Record::Flush { now: NOW, at: None },
            put("c", "9", 9),
            put("a", "9", 8),
            mark(9),
        ];
        let states: [(Values, u64); 4] = [
            (vec![], 0),
            (vec![("a".into(), "1".into())], 1),
            (vec![("b".into(), "1".into())], 2),
            (vec![("a".into(), "9".into()), ("c".into(), "9".into())], 9),
        ];
        let mut bytes = Vec::new();
        let mut ends = vec![0];
        for record in &log {
            record.encode(&mut bytes);
            ends.push(bytes.len());
        }
        for cut in 0..=bytes.len() {
            // As a node's first start left it: an empty store, marked.
            file(&dir, "snapshot", &[mark(0), end()]);
            std::fs::write(dir.join("log"), &bytes[..cut]).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            let marks = log[..whole]
                .iter()
                .filter(|r| matches!(r, Record::Delivered { .. }))
                .count();
            let (values, upto) = &states[marks];
            let want = (values.clone(), Some(*upto));
            assert_eq!(recovered_marked(&dir).unwrap(), want, "cut at byte {cut}");
            assert_eq!(
                recovered_marked(&dir).unwrap(),
                want,
                "compacted, cut {cut}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new directory says so (a node's first start); a one-node
    /// cluster's log, which has no marks, is not taken for an empty one,
    /// nor a marked one by a one-node cluster (it would replay a half
    /// installed snapshot after the last mark).
    #[test]
    fn a_new_directory_holds_nothing_and_a_log_of_the_other_kind_is_refused() {
        let dir = temp_dir("marked-new");
        assert_eq!(recovered_marked(&dir).unwrap(), (vec![], None));
        assert_eq!(recovered_marked(&dir).unwrap(), (vec![], Some(0)));
        let mut store = MemoryStore::new(1 << 20, Limits::default());
        let err = recover(&dir, &mut store, NOW).unwrap_err();
        assert!(
            err.to_string().contains("linearizable or sequential"),
            "{err}"
        );
        let _ = std::fs::remove_file(dir.join("snapshot"));
        file(&dir, "log", &[put("a", "1", 1)]);
        let err = recovered_marked(&dir).unwrap_err();
        assert!(err.to_string().contains("one-node"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The files of `dir`, by name, byte for byte.
    fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// A flipped byte in a record with valid records after it (in `log`,
    /// in `log.old`, in a marked log) stops the start with the file and
    /// the byte, and leaves every file as it was; cut there, as the reason
    /// says, the log starts with the writes before it.
    #[test]
    fn a_log_corrupt_in_the_middle_stops_the_start_and_changes_nothing() {
        let dir = temp_dir("corrupt-middle");
        let mut log = Vec::new();
        put("a", "1", 1).encode(&mut log);
        let bad = log.len();
        put("b", "1", 2).encode(&mut log);
        put("c", "1", 3).encode(&mut log);
        log[bad + 12] ^= 0x04;
        for name in ["log", "log.old"] {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            file(&dir, "snapshot", &[put("c", "0", 1), end()]);
            file(&dir, "snapshot.tmp", &[put("c", "2", 1)]);
            std::fs::write(dir.join(name), &log).unwrap();
            let before = contents(&dir);
            let mut store = MemoryStore::new(1 << 20, Limits::default());
            let err = recover(&dir, &mut store, NOW).unwrap_err().to_string();
            let path = dir.join(name).display().to_string();
            let want = format!("{path}: corrupt record at byte {bad}, followed by valid records");
            assert!(err.starts_with(&want), "{err}");
            assert!(err.contains(&format!("truncate -s {bad} {path}")), "{err}");
            assert_eq!(contents(&dir), before, "{name}");

            std::fs::write(dir.join(name), &log[..bad]).unwrap();
            let want = vec![("a".into(), "1".into()), ("c".into(), "0".into())];
            assert_eq!(recovered(&dir), want, "{name} cut at the byte");
        }

        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut marked = Vec::new();
        for record in [put("a", "1", 1), mark(1), put("b", "1", 2), mark(2)] {
            record.encode(&mut marked);
        }
        marked[3] ^= 0x01;
        std::fs::write(dir.join("log"), &marked).unwrap();
        let before = contents(&dir);
        let err = recovered_marked(&dir).unwrap_err().to_string();
        assert!(err.contains("corrupt record at byte 0,"), "{err}");
        assert_eq!(contents(&dir), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_log_tail_is_dropped_and_a_corrupt_snapshot_stops_the_start() {
        let dir = std::env::temp_dir().join(format!("mckv-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = Vec::new();
        put("a", "1", 1).encode(&mut log);
        put("b", "1", 2).encode(&mut log);
        let whole = log.len();
        put("c", "1", 3).encode(&mut log);
        std::fs::write(dir.join("log"), &log[..whole + 5]).unwrap();
        let mut store = MemoryStore::new(1 << 20, Limits::default());
        let found = recover(&dir, &mut store, NOW).unwrap();
        assert_eq!((found.replayed, found.dropped), (whole as u64, 5));
        assert!(store.export_record(b"b", NOW).unwrap().is_some());
        assert!(store.export_record(b"c", NOW).unwrap().is_none());

        let mut snapshot = std::fs::read(dir.join("snapshot")).unwrap();
        snapshot[10] ^= 1;
        std::fs::write(dir.join("snapshot"), snapshot).unwrap();
        let mut store = MemoryStore::new(1 << 20, Limits::default());
        let err = recover(&dir, &mut store, NOW).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
