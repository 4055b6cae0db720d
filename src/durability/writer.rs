//! The log's own thread: it appends what the store side queued, commits in
//! groups (one fsync covers every record queued since the last), writes
//! snapshots, and says how far the log is on disk. Nothing here runs on the
//! reactor.
//!
//! ```text
//!  reactor (DurableStore) ── Job::Append / Snapshot* / Sync ──► writer
//!  reactor ◄── spare buffers ◄── the Append buffers it has written
//!  reactor ◄── Waker::wake ◄── LogShared.durable advanced, or the disk failed
//! ```
//!
//! A loop iteration's records go to the writer in one buffer
//! ([`LogQueue::append`]); the writer writes that buffer as it came (no
//! copy, unless records from an earlier one still wait) and hands it back
//! empty, so the next iteration's records go into memory already allocated
//! rather than a new buffer grown a doubling at a time.
//!
//! Positions count the bytes appended to the log since the node started.
//! `written` is the position handed to the kernel (every batch, at once);
//! `durable` the position fsynced: with `fsync = always` every batch is,
//! with `everysec` once a second, with `no` never (the kernel writes it
//! back in its own time), except that a [`Job::Sync`] (a clock
//! reservation, or a claim an eventual node makes to its peers) and the
//! end of a snapshot are fsynced at once under every policy.
//!
//! Files in the data directory: `snapshot` (the last whole snapshot),
//! `log` (what came after it), and while a snapshot is being written,
//! `log.old` (the log it replaces) and `snapshot.tmp`. Recovery reads
//! `snapshot`, `log.old`, `log` in that order (see `recover.rs` for why
//! that order is right at every crash point).
//!
//! A failed write (a full disk) marks the log failed: the store side
//! refuses writes until it recovers, the unwritten bytes are kept, the file
//! is cut back to its last whole write, and the writer tries again every
//! second; the log counts as recovered once nothing is left pending. A
//! failed fsync is not retried: the kernel may have dropped what it could
//! not write, so the log stays failed, and the node stops
//! (`Durable::must_stop`) for a restart to replay what the disk holds.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;

use crate::config::Fsync;
use crate::store::unix_now;

/// How long a failed log waits before it tries the disk again.
const RETRY: Duration = Duration::from_secs(1);

/// Written buffers the writer hands back at most at once, and the largest
/// it hands back: one a big value grew is freed rather than kept.
const SPARE_BUFFERS: usize = 4;
const SPARE_CAPACITY: usize = 1 << 20;

/// The store side's end of the writer's queue: jobs go to the writer, and
/// the buffers of records it has written come back to be filled again.
#[derive(Clone)]
pub struct LogQueue {
    jobs: Sender<Job>,
    spares: Receiver<Vec<u8>>,
}

/// The writer's end of it.
pub struct LogIntake {
    jobs: Receiver<Job>,
    spares: Sender<Vec<u8>>,
}

/// A queue to a log writer, both ends.
pub fn log_queue() -> (LogQueue, LogIntake) {
    let (jobs, queue) = crossbeam_channel::unbounded();
    let (spent, spares) = crossbeam_channel::bounded(SPARE_BUFFERS);
    let queue_end = LogQueue { jobs, spares };
    (
        queue_end,
        LogIntake {
            jobs: queue,
            spares: spent,
        },
    )
}

impl LogQueue {
    pub fn send(&self, job: Job) {
        // The writer ends only after every `LogQueue` is dropped.
        let _ = self.jobs.send(job);
    }

    /// Hands the records in `batch` to the writer in one job, if there are
    /// any; `batch` is left empty, a buffer the writer handed back if one
    /// is there.
    pub fn append(&self, batch: &mut Vec<u8>) {
        if !batch.is_empty() {
            let spare = self.spares.try_recv().unwrap_or_default();
            self.send(Job::Append(std::mem::replace(batch, spare)));
        }
    }
}

/// What the store side asks of the writer.
#[derive(Debug)]
pub enum Job {
    /// Encoded records for the log.
    Append(Vec<u8>),
    /// Make everything appended so far durable now, whatever the policy.
    Sync,
    /// A snapshot begins: the log so far becomes `log.old`, a new `log`
    /// starts, and records for `snapshot.tmp` follow.
    BeginSnapshot,
    /// Encoded records of the snapshot being written.
    Snapshot(Vec<u8>),
    /// The snapshot's last record: once the log appended before it is on
    /// disk, it is made durable and replaces the last one, and `log.old`
    /// goes. Its parts were taken at different times and stand only with
    /// that log: without it a power cut could keep a later write of one
    /// key and lose an earlier one of another (or, in eventual mode, a
    /// write's cause).
    EndSnapshot(Vec<u8>),
}

/// What the writer tells the reactor and `stats`.
#[derive(Debug, Default)]
pub struct LogShared {
    /// Log position appended by the store side (it counts; the writer reads).
    pub appended: AtomicU64,
    /// Log position handed to the kernel (a crash of the process loses
    /// nothing before it).
    pub written: AtomicU64,
    /// Log position fsynced.
    pub durable: AtomicU64,
    /// Log position a reply that hands out a new clock reservation waits for.
    pub must_sync: AtomicU64,
    /// Snapshot bytes handed to the writer, and written by it.
    pub snapshot_queued: AtomicU64,
    pub snapshot_written: AtomicU64,
    /// The disk refused the last write or fsync (the writer's view).
    pub failed: AtomicBool,
    /// An fsync failed: nothing counts as durable again until a restart.
    pub fsync_failed: AtomicBool,
    /// The store side refuses writes: `failed` as it was at the end of the
    /// reactor's last loop iteration, so that the writes a loop iteration
    /// takes and the replies it holds agree on it.
    pub refusing: AtomicBool,
    pub failure: Mutex<Option<String>>,
    pub fsyncs: AtomicU64,
    /// Bytes in the current `log` file.
    pub log_bytes: AtomicU64,
    /// The last whole snapshot: its size and when it was done (unix time).
    pub snapshot_bytes: AtomicU64,
    pub snapshot_at: AtomicU64,
    pub snapshots: AtomicU64,
}

impl LogShared {
    /// The shared state of a log whose start just wrote what it recovered
    /// as one snapshot in `dir` (`recover.rs`): counted as the last one.
    pub fn after_start(dir: &Path) -> LogShared {
        let shared = LogShared::default();
        if let Ok(snapshot) = std::fs::metadata(dir.join("snapshot")) {
            shared
                .snapshot_bytes
                .store(snapshot.len(), Ordering::Relaxed);
            shared.snapshot_at.store(unix_now(), Ordering::Relaxed);
            shared.snapshots.store(1, Ordering::Relaxed);
        }
        shared
    }

    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Why the store side refuses writes, if it does.
    pub fn refusal(&self) -> Option<String> {
        if !self.refusing.load(Ordering::Acquire) {
            return None;
        }
        let why = self.failure.lock().ok().and_then(|f| f.clone());
        Some(why.unwrap_or_else(|| "the disk refused the log".into()))
    }

    /// Every reply made from now on waits until what is appended so far is
    /// fsynced (a clock reservation is among it); the caller asks the
    /// writer for that fsync.
    pub fn hold_replies_for_appended(&self) {
        let upto = self.appended.load(Ordering::Acquire);
        self.must_sync.store(upto, Ordering::Release);
    }
}

pub struct Writer {
    dir: PathBuf,
    policy: Fsync,
    shared: Arc<LogShared>,
    waker: Arc<Waker>,
    log: File,
    /// Bytes of `log` known whole on disk (or in the kernel).
    log_len: u64,
    /// Bytes queued for the log, not yet written (the buffer of the first
    /// `Job::Append` taken since the last write, and what followed it).
    pending: Vec<u8>,
    /// Where written buffers go back to the store side.
    spares: Sender<Vec<u8>>,
    /// Log position written (pending is after it).
    written: u64,
    snapshot: Option<File>,
    snapshot_len: u64,
    sync_asked: bool,
    last_fsync: Instant,
    /// An fsync failed: nothing counts as durable until a restart.
    fsync_failed: bool,
}

impl Writer {
    /// Starts the writer on the (recovered and compacted) files of `dir`,
    /// appending to `log`.
    pub fn spawn(
        dir: &Path,
        policy: Fsync,
        shared: Arc<LogShared>,
        waker: Arc<Waker>,
        intake: LogIntake,
    ) -> io::Result<JoinHandle<()>> {
        let writer = Writer::open(dir, policy, shared, waker, intake.spares)?;
        std::thread::Builder::new()
            .name("mckv-log".into())
            .spawn(move || writer.run(intake.jobs))
    }

    /// The writer of `dir`'s files, appending to `log`, before it runs.
    fn open(
        dir: &Path,
        policy: Fsync,
        shared: Arc<LogShared>,
        waker: Arc<Waker>,
        spares: Sender<Vec<u8>>,
    ) -> io::Result<Writer> {
        let log = open_append(&dir.join("log"))?;
        let log_len = log.metadata()?.len();
        shared.log_bytes.store(log_len, Ordering::Relaxed);
        Ok(Writer {
            dir: dir.to_path_buf(),
            policy,
            shared,
            waker,
            log,
            log_len,
            pending: Vec::new(),
            spares,
            written: 0,
            snapshot: None,
            snapshot_len: 0,
            sync_asked: false,
            last_fsync: Instant::now(),
            fsync_failed: false,
        })
    }

    fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let wait = match (self.policy, self.failed()) {
                (_, true) => RETRY,
                (Fsync::EverySec, false) => Duration::from_secs(1)
                    .saturating_sub(self.last_fsync.elapsed())
                    .max(Duration::from_millis(1)),
                _ => Duration::from_secs(3600),
            };
            match jobs.recv_timeout(wait) {
                Ok(job) => self.take(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync_asked = true;
                    self.commit();
                    return;
                }
            }
            // Group commit: everything queued meanwhile goes in this write.
            while let Ok(job) = jobs.try_recv() {
                self.take(job);
            }
            self.commit();
        }
    }

    fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Append(bytes) if self.pending.is_empty() => self.pending = bytes,
            Job::Append(bytes) => {
                self.pending.extend_from_slice(&bytes);
                self.hand_back(bytes);
            }
            Job::Sync => self.sync_asked = true,
            Job::BeginSnapshot => {
                let begun = self.flush_log().and_then(|()| self.begin_snapshot());
                self.note_failure(begun);
            }
            Job::Snapshot(bytes) => {
                let written = self.write_snapshot(&bytes);
                self.note_failure(written);
            }
            Job::EndSnapshot(bytes) => {
                let ended = self
                    .write_snapshot(&bytes)
                    .and_then(|()| self.sync_log())
                    .and_then(|()| self.end_snapshot());
                self.note_failure(ended);
            }
        }
    }

    /// Writes what is pending and fsyncs as the policy says; publishes how
    /// far the log is.
    fn commit(&mut self) {
        let fsync_due = match self.policy {
            Fsync::Always => true,
            Fsync::EverySec => self.last_fsync.elapsed() >= Duration::from_secs(1),
            Fsync::No => false,
        };
        let mut result = self.flush_log();
        let behind = self.shared.durable.load(Ordering::Acquire) < self.written;
        if result.is_ok() && (fsync_due || self.sync_asked) && behind && !self.fsync_failed {
            result = self.log.sync_data();
            match &result {
                Ok(()) => {
                    self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.shared.durable.store(self.written, Ordering::Release);
                }
                // The kernel may have dropped the pages it could not write:
                // a later fsync could succeed without them. Nothing is
                // durable from here until a restart replays what is on disk.
                Err(e) => {
                    self.note_fsync_failed();
                    log::error!("fsync failed ({e}): restart the node to recover");
                }
            }
        }
        if result.is_ok() && (fsync_due || self.sync_asked) {
            self.sync_asked = false;
            self.last_fsync = Instant::now();
        }
        match result {
            Ok(()) if self.pending.is_empty() && !self.fsync_failed => self.note_recovered(),
            Ok(()) => {}
            Err(e) => self.note_failure(Err(e)),
        }
        if let Err(e) = self.waker.wake() {
            log::error!("log writer cannot wake the reactor: {e}");
        }
    }

    /// An fsync failed: nothing counts as durable until a restart. Said to
    /// the store side at once, before the failure `note_failure` reports
    /// (which lets reads go on while the disk refuses the log), so that no
    /// reply leaves on the strength of what the kernel may have dropped.
    fn note_fsync_failed(&mut self) {
        self.fsync_failed = true;
        self.shared.fsync_failed.store(true, Ordering::Release);
    }

    /// Writes the pending bytes to `log`. On an error the file is cut back
    /// to its last whole write, so no torn record stays in the middle.
    fn flush_log(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.log.write_all(&self.pending) {
            Ok(()) => {
                self.log_len += self.pending.len() as u64;
                self.written += self.pending.len() as u64;
                self.shared.written.store(self.written, Ordering::Release);
                self.shared.log_bytes.store(self.log_len, Ordering::Relaxed);
                let written = std::mem::take(&mut self.pending);
                self.hand_back(written);
                Ok(())
            }
            Err(e) => {
                let _ = self.log.set_len(self.log_len);
                Err(e)
            }
        }
    }

    /// Hands a buffer of records back to the store side, emptied, unless it
    /// has enough spares or the buffer is too big to keep.
    fn hand_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() <= SPARE_CAPACITY {
            buffer.clear();
            let _ = self.spares.try_send(buffer);
        }
    }

    /// `log` becomes `log.old` (appended to one an aborted snapshot left),
    /// and a new `log` starts.
    fn begin_snapshot(&mut self) -> io::Result<()> {
        // As in `commit`: a failed fsync may have dropped pages, and after
        // one nothing counts as durable until a restart.
        self.log
            .sync_data()
            .inspect_err(|_| self.note_fsync_failed())?;
        if !self.fsync_failed {
            self.shared.durable.store(self.written, Ordering::Release);
        }
        let (log, old) = (self.dir.join("log"), self.dir.join("log.old"));
        if old.exists() {
            let kept = append_whole(&log, &old)?;
            kept.sync_data().inspect_err(|_| self.note_fsync_failed())?;
        } else {
            std::fs::rename(&log, &old)?;
        }
        // Emptied, then opened to append as the first `log` is: a write cut
        // short by a full disk is cut back with `set_len`, which moves no
        // file offset, so only an appending file writes the retry at the
        // new end rather than past a hole of zeros.
        File::create(&log)?;
        self.log = open_append(&log)?;
        self.log_len = 0;
        self.shared.log_bytes.store(0, Ordering::Relaxed);
        sync_dir(&self.dir)?;
        self.snapshot = Some(File::create(self.dir.join("snapshot.tmp"))?);
        self.snapshot_len = 0;
        Ok(())
    }

    fn write_snapshot(&mut self, bytes: &[u8]) -> io::Result<()> {
        let written = match &mut self.snapshot {
            Some(file) => file.write_all(bytes),
            // An earlier failure ended this snapshot: its rest is dropped.
            None => Ok(()),
        };
        self.snapshot_len += bytes.len() as u64;
        self.shared
            .snapshot_written
            .fetch_add(bytes.len() as u64, Ordering::Release);
        written
    }

    /// Writes what is pending to `log` and fsyncs it, whatever the policy.
    fn sync_log(&mut self) -> io::Result<()> {
        self.flush_log()?;
        if self.fsync_failed {
            // The kernel may have dropped pages: nothing is durable until a
            // restart (see `commit`), and no snapshot may stand on them.
            return Err(io::Error::other(
                "an earlier fsync failed; restart the node",
            ));
        }
        // As in `commit`: a failed fsync may have dropped pages.
        self.log
            .sync_data()
            .inspect_err(|_| self.note_fsync_failed())?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.shared.durable.store(self.written, Ordering::Release);
        Ok(())
    }

    /// The snapshot is whole: on disk, in place of the last, and the log it
    /// replaces goes.
    fn end_snapshot(&mut self) -> io::Result<()> {
        let Some(file) = self.snapshot.take() else {
            return Ok(());
        };
        file.sync_all()?;
        std::fs::rename(self.dir.join("snapshot.tmp"), self.dir.join("snapshot"))?;
        sync_dir(&self.dir)?;
        std::fs::remove_file(self.dir.join("log.old"))?;
        let shared = &self.shared;
        shared
            .snapshot_bytes
            .store(self.snapshot_len, Ordering::Relaxed);
        shared.snapshot_at.store(unix_now(), Ordering::Relaxed);
        shared.snapshots.fetch_add(1, Ordering::Relaxed);
        log::info!("snapshot of {} bytes written", self.snapshot_len);
        Ok(())
    }

    /// The log is whole on disk again (nothing pending, no fsync lost):
    /// writes are taken again.
    fn note_recovered(&mut self) {
        if self.failed() {
            log::warn!("data directory writable again: writes are taken again");
            self.shared.failed.store(false, Ordering::Release);
        }
    }

    /// Publishes a failed attempt (a snapshot's ends that snapshot); logs
    /// it once.
    fn note_failure(&mut self, result: io::Result<()>) {
        let was_failed = self.failed();
        match result {
            Ok(()) => {}
            Err(e) => {
                if self.snapshot.take().is_some() {
                    let _ = std::fs::remove_file(self.dir.join("snapshot.tmp"));
                }
                if !was_failed {
                    log::error!(
                        "data directory {}: {e}; writes are refused",
                        self.dir.display()
                    );
                }
                if let Ok(mut failure) = self.shared.failure.lock() {
                    *failure = Some(e.to_string());
                }
                self.shared.failed.store(true, Ordering::Release);
            }
        }
    }
}

/// Appends the file at `from` to the one at `to`, or, if that fails part
/// way (a full disk), leaves `to` as it was, as `flush_log` does: a torn
/// record left in the middle of `log.old`, with the next attempt's whole
/// ones after it, would read as corruption at the next start.
fn append_whole(from: &Path, to: &Path) -> io::Result<File> {
    let mut kept = open_append(to)?;
    let whole = kept.metadata()?.len();
    io::copy(&mut File::open(from)?, &mut kept).inspect_err(|_| {
        let _ = kept.set_len(whole);
    })?;
    Ok(kept)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tmpfs of `size` on a new directory named after `tag`, unmounted
    /// when dropped; `None` when it cannot be mounted (not root).
    struct Tmpfs(std::path::PathBuf);

    impl Tmpfs {
        fn mount(size: &str, tag: &str) -> Option<Tmpfs> {
            let name = format!("mckv-writer-{tag}-{}", std::process::id());
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&dir).ok()?;
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(Tmpfs(dir))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// A `log` appended to `log.old` on a disk that fills part way leaves
    /// `log.old` as it was.
    #[test]
    fn an_append_cut_short_by_a_full_disk_leaves_the_file_as_it_was() {
        let Some(disk) = Tmpfs::mount("64k", "append") else {
            eprintln!("cannot mount a tmpfs (not root?): not checked");
            return;
        };
        let (from, to) = (disk.0.join("log"), disk.0.join("log.old"));
        std::fs::write(&to, vec![1u8; 8 << 10]).unwrap();
        std::fs::write(&from, vec![2u8; 32 << 10]).unwrap();
        std::fs::write(disk.0.join("filler"), vec![0u8; 8 << 10]).unwrap();
        let failed = append_whole(&from, &to);
        assert!(failed.is_err(), "the disk had room for the whole log");
        assert_eq!(std::fs::read(&to).unwrap(), vec![1u8; 8 << 10]);
    }

    fn puts(n: usize, tag: &str) -> Vec<u8> {
        use crate::durability::record::Record;
        let mut out = Vec::new();
        for i in 0..n {
            Record::Put {
                now: 1_700_000_000,
                key: format!("{tag}{i}").into_bytes(),
                entry: crate::store::Entry {
                    flags: 0,
                    expiry: crate::store::Expiry::Never,
                    value: vec![b'v'; 1000],
                },
                cas: i as u64 + 1,
            }
            .encode(&mut out);
        }
        out
    }

    /// A write cut short by a full disk after a snapshot began (which opens
    /// a new `log`) is cut back, and its retry once there is room lands
    /// right after what was whole: the log holds exactly what was written.
    /// Found by review: the new `log` was not opened to append, `set_len`
    /// moved no file offset, and the retry wrote past a hole of zeros,
    /// which a restart read as a torn tail, dropping every write after it.
    #[test]
    fn a_write_cut_short_after_a_snapshot_began_leaves_no_hole() {
        let Some(disk) = Tmpfs::mount("256k", "hole") else {
            eprintln!("cannot mount a tmpfs (not root?): not checked");
            return;
        };
        let dir = disk.0.clone();
        std::fs::write(dir.join("log"), puts(4, "old")).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (_queue, intake) = log_queue();
        let shared = Arc::new(LogShared::default());
        let mut w = Writer::open(&dir, Fsync::Always, shared, waker, intake.spares).unwrap();
        w.begin_snapshot().unwrap();
        // About 40 KiB left free, and 100 KiB to log.
        let used: u64 = ["log.old", "log", "snapshot.tmp"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum();
        let filler = (256u64 << 10) - used - (40 << 10);
        std::fs::write(dir.join("filler"), vec![0u8; filler as usize]).unwrap();
        w.pending = puts(100, "new");
        let want = w.pending.clone();
        assert!(w.flush_log().is_err(), "the disk had room");
        assert_eq!(
            std::fs::metadata(dir.join("log")).unwrap().len(),
            0,
            "cut back"
        );
        std::fs::remove_file(dir.join("filler")).unwrap();
        w.flush_log().unwrap();
        assert!(
            std::fs::read(dir.join("log")).unwrap() == want,
            "a hole in the log"
        );
    }
}
