//! A one-node cluster with a data directory, through the real binary: what
//! was acknowledged survives kill -9 under load (fsync = always and
//! everysec), a restarted node never hands out a cas unique twice, a torn
//! log tail is dropped and said, a corrupt snapshot, or a log corrupt in
//! the middle, stops the start, a directory in use is refused, snapshots
//! are written under load (a kill while one is listed loses no key that
//! moved in the table), a full disk refuses writes with the reason,
//! keeps serving reads and recovers by itself once there is room, and a
//! read waits for the disk only when it shows a write that does.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    connect, free_port, maybe_applied_or_unanswered, poll, request, spawn, stat, wait_for_exit,
    wait_for_server, FailingFsync, ProcessGuard, TempDir,
};

/// A node's config, data directory and log, kept across its restarts.
struct Durable {
    dir: TempDir,
    port: u16,
}

impl Durable {
    fn new(cluster_keys: &str) -> Durable {
        Durable::in_dir(TempDir::new("durable"), &None, cluster_keys)
    }

    /// A node whose data directory is `data` (default: inside its own).
    fn in_dir(dir: TempDir, data: &Option<PathBuf>, cluster_keys: &str) -> Durable {
        let port = free_port();
        let data = data.clone().unwrap_or_else(|| dir.0.join("data"));
        let config = format!(
            "[cluster]\nname = d\nsecret = s\n{cluster_keys}\n\n[node.0]\n\
             client = 127.0.0.1:{port}\npeer = 127.0.0.1:{}\ndata_dir = {}\n",
            free_port(),
            data.display()
        );
        std::fs::write(dir.0.join("config.ini"), config).unwrap();
        Durable { dir, port }
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mckv"));
        cmd.arg("server")
            .arg("--config")
            .arg(self.dir.0.join("config.ini"))
            .arg("--log-file")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("node.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn start(&self) -> ProcessGuard {
        self.start_with(|_| {})
    }

    /// [`Durable::start`], with `setup` applied to the command first.
    fn start_with(&self, setup: impl FnOnce(&mut Command)) -> ProcessGuard {
        let mut command = self.command();
        setup(&mut command);
        let child = spawn(&mut command).expect("start mckv");
        let mut process = ProcessGuard {
            child,
            port: self.port,
        };
        wait_for_server(&mut process, &self.log_path());
        process
    }

    /// Starts the node expecting it to refuse to start; returns its exit.
    fn start_refused(&self) -> std::process::ExitStatus {
        let mut child = spawn(&mut self.command()).expect("start mckv");
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "the node kept running".to_string())
        })
    }
}

fn terminate(mut process: ProcessGuard) {
    process.signal("TERM");
    let status = process.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The cas unique of `key` (`gets`), if it is there.
fn unique(c: &mut TcpStream, key: &str) -> Option<u64> {
    let reply = request(c, format!("gets {key}\r\n").as_bytes());
    reply.lines().next()?.split(' ').nth(4)?.parse().ok()
}

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 20;

/// One writer's closed loop until the node dies or `stop`: `set` of its
/// own keys with rising sequence numbers; returns, per key, the last
/// sequence number acknowledged, and the highest unique it saw.
fn writer(port: u16, id: usize, stop: &AtomicBool) -> (HashMap<String, u64>, u64) {
    let mut acked = HashMap::new();
    let mut highest = 0;
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (acked, highest);
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    for seq in 0..100_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{id}k{}", seq as usize % KEYS_PER_WRITER);
        let value = format!("{seq}");
        let set = format!("set {key} 0 0 {}\r\n{value}\r\ngets {key}\r\n", value.len());
        if stream.write_all(set.as_bytes()).is_err() {
            break;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 && line == "STORED\r\n" => {
                acked.insert(key, seq);
            }
            _ => break,
        }
        // The gets: VALUE line, value, END.
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) {
            break;
        }
        if let Some(u) = header.split(' ').nth(4).and_then(|u| u.trim().parse().ok()) {
            highest = highest.max(u);
        }
        let (mut v, mut end) = (String::new(), String::new());
        if reader.read_line(&mut v).is_err() || reader.read_line(&mut end).is_err() {
            break;
        }
    }
    (acked, highest)
}

/// Writers load the node while it is killed with SIGKILL; restarted, it
/// holds every acknowledged write (or a later one of the same key), and
/// hands out only uniques above every unique seen before.
fn acknowledged_writes_survive_a_kill(fsync: &str) {
    let node = Durable::new(&format!("fsync = {fsync}\nsnapshot_every = 200000"));
    let process = node.start();
    let stop = AtomicBool::new(false);
    let (acked, highest) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                let stop = &stop;
                s.spawn(move || writer(node.port, id, stop))
            })
            .collect();
        // Kill once the writers are well under way (bounded by count).
        poll(
            Duration::from_secs(20),
            Duration::from_millis(10),
            || match stat(node.port, "cmd_set") >= 2_000 {
                true => Ok(()),
                false => Err("the writers never got going".to_string()),
            },
        );
        process.signal("KILL");
        stop.store(true, Ordering::Relaxed);
        let mut acked = HashMap::new();
        let mut highest = 0;
        for w in writers {
            let (a, h) = w.join().unwrap();
            acked.extend(a);
            highest = highest.max(h);
        }
        (acked, highest)
    });
    drop(process);
    assert!(acked.len() >= WRITERS, "{acked:?}");
    let restarted = node.start();
    let mut c = connect(node.port);
    for (key, seq) in &acked {
        let got = request(&mut c, format!("get {key}\r\n").as_bytes());
        let value: u64 = got
            .lines()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{fsync}: {key} (acknowledged {seq}) is gone: {got:?}"));
        assert!(
            value >= *seq,
            "{fsync}: {key} went back from {seq} to {value}"
        );
    }
    assert_eq!(request(&mut c, b"set fresh 0 0 1\r\nx\r\n"), "STORED\r\n");
    let fresh = unique(&mut c, "fresh").expect("fresh");
    assert!(
        fresh > highest,
        "{fsync}: unique {fresh} after restart, {highest} before"
    );
    eprintln!(
        "{fsync}: {} keys checked, {} bytes replayed",
        acked.len(),
        stat(node.port, "mckv_recovered_bytes")
    );
    terminate(restarted);
}

#[test]
fn with_fsync_always_acknowledged_writes_survive_kill_9_under_load() {
    acknowledged_writes_survive_a_kill("always");
}

#[test]
fn with_fsync_everysec_a_process_crash_loses_no_acknowledged_write() {
    acknowledged_writes_survive_a_kill("everysec");
}

/// A snapshot is written while writes go on; everything is there after a
/// restart, from the snapshot and the log after it.
#[test]
fn snapshots_are_written_under_load_and_recovered_from() {
    let node = Durable::new("fsync = no\nsnapshot_every = 50000");
    let process = node.start();
    let mut c = connect(node.port);
    let value = "v".repeat(500);
    for i in 0..2_000 {
        let set = format!("set s{i} {i} 0 500 noreply\r\n{value}\r\n");
        c.write_all(set.as_bytes()).unwrap();
    }
    assert_eq!(request(&mut c, b"set last 0 0 1\r\nx\r\n"), "STORED\r\n");
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        // The start wrote the first (what it recovered: nothing).
        || match stat(node.port, "mckv_snapshots_written") {
            0 | 1 => Err("no snapshot was written under load".to_string()),
            _ => Ok(()),
        },
    );
    terminate(process);
    let _restarted = node.start();
    // The start wrote what it recovered as one snapshot, and says so.
    assert_eq!(stat(node.port, "mckv_snapshots_written"), 1);
    assert!(stat(node.port, "mckv_snapshot_bytes") > 2_000 * 500);
    assert!(stat(node.port, "mckv_snapshot_time") > 0);
    let mut c = connect(node.port);
    for i in (0..2_000).step_by(97) {
        let got = request(&mut c, format!("get s{i}\r\n").as_bytes());
        assert_eq!(got, format!("VALUE s{i} {i} 500\r\n{value}\r\nEND\r\n"));
    }
    assert!(stat(node.port, "mckv_recovered_bytes") > 2_000 * 500);
}

/// Snapshots are listed a slice at a time while deletes move the last
/// entry of the store's table into each hole; a node killed with SIGKILL
/// while a snapshot is being written comes back with every key it held
/// that no command touched since it was loaded, and without every key
/// whose delete was acknowledged. The keys that move are exactly the
/// untouched ones (the last loaded), which only a snapshot holds once the
/// log it replaces is gone.
#[test]
fn a_kill_during_snapshots_listed_while_deletes_move_entries_loses_no_key() {
    const LOADED: usize = 50_000;
    const REWRITTEN: usize = 100;
    let node = Durable::new("fsync = no\nsnapshot_every = 200000");
    let process = node.start();
    let mut c = connect(node.port);
    // The rewritten keys first: the loaded ones are at the table's end.
    let value = "r".repeat(200);
    for i in 0..REWRITTEN {
        let set = format!("set r{i} 0 0 200 noreply\r\n{value}\r\n");
        c.write_all(set.as_bytes()).unwrap();
    }
    for i in 0..LOADED {
        let set = format!("set p{i} {i} 0 1 noreply\r\nv\r\n");
        c.write_all(set.as_bytes()).unwrap();
    }
    // Its reply waits for every change before it on this connection.
    assert_eq!(request(&mut c, b"set loaded 0 0 1\r\nx\r\n"), "STORED\r\n");
    let stop = AtomicBool::new(false);
    let acknowledged = AtomicUsize::new(0);
    // Keys whose delete was sent, and those acknowledged.
    let (sent, deleted) = std::thread::scope(|s| {
        let deleter = s.spawn(|| {
            let (mut sent, mut deleted) = (Vec::new(), Vec::new());
            let mut c = connect(node.port);
            for n in 0..LOADED {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Every loaded key once, in an order all over the table.
                let key = format!("p{}", n * 7_919 % LOADED);
                sent.push(key.clone());
                let rewrite = format!("set r{} 0 0 200\r\n{value}\r\n", n % REWRITTEN);
                let both = format!("delete {key}\r\n{rewrite}");
                if c.write_all(both.as_bytes()).is_err() {
                    break;
                }
                let mut reply = [0u8; 17]; // DELETED, STORED
                if std::io::Read::read_exact(&mut c, &mut reply).is_err() {
                    break;
                }
                assert_eq!(&reply, b"DELETED\r\nSTORED\r\n");
                deleted.push(key);
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            (sent, deleted)
        });
        let data = node.data();
        poll(Duration::from_secs(30), Duration::from_millis(1), || {
            let written = stat(node.port, "mckv_snapshots_written");
            let deletes = acknowledged.load(Ordering::Relaxed);
            // The start's own snapshot counts too; enough deletes have
            // moved entries whatever the machine's speed.
            match deletes > 1_000 && written >= 4 && data.join("snapshot.tmp").exists() {
                true => Ok(()),
                false => Err(format!(
                    "{deletes} deletes, {written} snapshots written, none under way"
                )),
            }
        });
        process.signal("KILL");
        stop.store(true, Ordering::Relaxed);
        deleter.join().unwrap()
    });
    drop(process);
    assert!(deleted.len() > 1_000, "{} deletes", deleted.len());
    let _restarted = node.start();
    let mut c = connect(node.port);
    let sent: std::collections::HashSet<String> = sent.into_iter().collect();
    let deleted: std::collections::HashSet<String> = deleted.into_iter().collect();
    let keys: Vec<String> = (0..LOADED).map(|i| format!("p{i}")).collect();
    let (mut lost, mut back) = (Vec::new(), Vec::new());
    for chunk in keys.chunks(500) {
        let got = request(&mut c, format!("get {}\r\n", chunk.join(" ")).as_bytes());
        for key in chunk {
            let there = got.contains(&format!("VALUE {key} "));
            if !there && !sent.contains(key) {
                lost.push(key.clone());
            }
            if there && deleted.contains(key) {
                back.push(key.clone());
            }
        }
    }
    eprintln!(
        "{} deletes acknowledged, {} bytes replayed at the restart",
        deleted.len(),
        stat(node.port, "mckv_recovered_bytes")
    );
    assert!(
        lost.is_empty(),
        "{} untouched keys lost: {lost:?}",
        lost.len()
    );
    assert!(
        back.is_empty(),
        "{} deleted keys came back: {back:?}",
        back.len()
    );
}

/// A full store evicts; the log says so, so a node killed with SIGKILL
/// comes back holding exactly what it held (a failed `set`, which drops
/// the old value as on memcached, too): no evicted value comes back, no
/// other item is evicted in its place, with and without snapshots.
#[test]
fn a_full_store_recovers_exactly_what_it_held_after_evictions() {
    const KEYS: usize = 3_000;
    for snapshot_every in ["1000000000", "200000"] {
        let node = Durable::new(&format!(
            "fsync = always\nmemory_limit_mb = 1\nitem_size_max = 2097152\n\
             snapshot_every = {snapshot_every}"
        ));
        let mut process = node.start();
        let mut c = connect(node.port);
        let value = "v".repeat(1_000);
        for i in 0..KEYS {
            let set = format!("set e{i} 0 0 1000\r\n{value}\r\n");
            assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
            if i % 3 == 0 {
                request(&mut c, format!("get e{}\r\n", i / 2).as_bytes());
            }
        }
        // Larger than the cap: refused, and the old e2999 goes with it.
        let huge = format!("set e2999 0 0 1500000\r\n{}\r\n", "h".repeat(1_500_000));
        c.write_all(huge.as_bytes()).unwrap();
        let refused = request(&mut c, b"");
        assert_eq!(refused, "SERVER_ERROR out of memory storing object\r\n");
        assert!(stat(node.port, "evictions") > 1_000);
        let held = |c: &mut TcpStream| -> Vec<String> {
            let keys: Vec<String> = (0..KEYS).map(|i| format!("e{i}")).collect();
            keys.chunks(500)
                .map(|chunk| request(c, format!("gets {}\r\n", chunk.join(" ")).as_bytes()))
                .collect()
        };
        let before = held(&mut c);
        assert!(!before.concat().contains("VALUE e2999 "));
        assert!(before.concat().contains("VALUE e2998 "));
        process.signal("KILL");
        let _ = process.child.wait();
        let _restarted = node.start();
        let after = held(&mut connect(node.port));
        assert!(
            before == after,
            "snapshot_every = {snapshot_every}: the recovered store differs"
        );
    }
}

/// A record cut short (a crash in the middle of a write) is dropped, the
/// node says so in its log and `stats`, and everything before it is there.
#[test]
fn a_torn_log_tail_is_dropped_and_said() {
    let node = Durable::new("fsync = always");
    let process = node.start();
    let mut c = connect(node.port);
    for i in 0..10 {
        let set = format!("set t{i} 0 0 2\r\nv{i}\r\n");
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }
    terminate(process);
    let log = node.data().join("log");
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();
    let _restarted = node.start();
    let mut c = connect(node.port);
    assert_eq!(
        request(&mut c, b"get t8\r\n"),
        "VALUE t8 0 2\r\nv8\r\nEND\r\n"
    );
    assert_eq!(request(&mut c, b"get t9\r\n"), "END\r\n");
    assert!(stat(node.port, "mckv_recovered_dropped_bytes") > 0);
    assert!(node.log().contains("torn or corrupt"), "{}", node.log());
}

/// The files of a data directory, by name, byte for byte.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
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

/// A flipped bit in the middle of the log, with acknowledged writes after
/// it, is not a torn tail: the start stops, names the file and the byte,
/// and changes nothing; the log cut at that byte as the reason says, the
/// node starts with the writes before it.
#[test]
fn a_log_corrupt_in_the_middle_stops_the_start_until_cut_where_it_says() {
    const SETS: usize = 200;
    let node = Durable::new("fsync = always");
    let mut process = node.start();
    let mut c = connect(node.port);
    for i in 0..SETS {
        let set = format!("set m{i} 0 0 6\r\nv{i:05}\r\n");
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }
    process.signal("KILL");
    let _ = process.child.wait();
    drop(process);
    let log = node.data().join("log");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    std::fs::write(&log, &bytes).unwrap();
    let before = files(&node.data());

    let exit = node.start_refused();
    assert!(!exit.success(), "{exit}");
    let said = node.log();
    let named = format!("{}: corrupt record at byte ", log.display());
    let at: u64 = said
        .split(&named)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|at| at.parse().ok())
        .unwrap_or_else(|| panic!("no {named:?} in {said}"));
    assert!(at <= middle as u64 && middle as u64 - at < 100, "byte {at}");
    let cut = format!("truncate -s {at} {}", log.display());
    assert!(said.contains(&cut), "{said}");
    assert_eq!(
        files(&node.data()),
        before,
        "the refused start changed files"
    );

    let truncated = Command::new("truncate")
        .args(["-s", &at.to_string()])
        .arg(&log)
        .status()
        .unwrap();
    assert!(truncated.success());
    let restarted = node.start();
    let mut c = connect(node.port);
    let held: Vec<usize> = (0..SETS)
        .filter(|i| {
            let got = request(&mut c, format!("get m{i}\r\n").as_bytes());
            match got.as_str() {
                "END\r\n" => false,
                _ => {
                    assert_eq!(got, format!("VALUE m{i} 0 6\r\nv{i:05}\r\nEND\r\n"));
                    true
                }
            }
        })
        .collect();
    let kept = held.len();
    assert!(kept > SETS / 3 && kept < SETS, "{kept} writes kept");
    assert_eq!(
        held,
        (0..kept).collect::<Vec<_>>(),
        "not the writes before it"
    );
    terminate(restarted);
}

#[test]
fn a_corrupt_snapshot_stops_the_start_with_the_reason() {
    let node = Durable::new("");
    let process = node.start();
    assert_eq!(
        request(&mut connect(node.port), b"set k 0 0 1\r\nv\r\n"),
        "STORED\r\n"
    );
    terminate(process);
    // A start compacts the log into the snapshot.
    terminate(node.start());
    let snapshot = node.data().join("snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snapshot, bytes).unwrap();
    let exit = node.start_refused();
    assert!(!exit.success());
    assert!(node.log().contains("corrupt"), "{}", node.log());
}

#[test]
fn a_data_dir_in_use_by_another_node_is_refused() {
    let first = Durable::new("");
    let _running = first.start();
    let second = Durable::in_dir(TempDir::new("durable"), &Some(first.data()), "");
    let exit = second.start_refused();
    assert!(!exit.success());
    assert!(
        second.log().contains("in use by another node"),
        "{}",
        second.log()
    );
}

/// A `data_dir` that is a regular file stops the start with the path
/// named, not the address the node would have served.
#[test]
fn a_data_dir_that_is_a_file_is_refused_with_its_path() {
    let dir = TempDir::new("durable");
    let file = dir.0.join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let node = Durable::in_dir(dir, &Some(file.clone()), "");
    let exit = node.start_refused();
    assert!(!exit.success());
    let refusal = format!("data directory {}: not a directory", file.display());
    assert!(node.log().contains(&refusal), "{}", node.log());
    assert!(!node.log().contains("stopped serving"), "{}", node.log());
}

/// A small tmpfs, all but a little of it taken by a filler file: the node
/// fills the rest, then refuses writes with the reason (nothing applied),
/// serves reads, and takes writes again once the filler is gone. Needs
/// root (for mount); says so and passes elsewhere.
#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    let Some(tmpfs) = common::mount_tmpfs("1m") else {
        eprintln!("cannot mount a tmpfs (not root?): not checked");
        return;
    };
    let mount = &tmpfs.dir;
    let filler = mount.0.join("filler");
    std::fs::write(&filler, vec![0u8; 700 << 10]).unwrap();
    let node = Durable::in_dir(
        TempDir::new("durable"),
        &Some(mount.0.join("data")),
        "fsync = always\nbackend_timeout_ms = 500\nsnapshot_every = 100000000",
    );
    let _process = node.start();
    let mut c = connect(node.port);
    assert_eq!(request(&mut c, b"set kept 0 0 4\r\nkept\r\n"), "STORED\r\n");
    let value = "x".repeat(10_000);
    let refusal = poll(Duration::from_secs(20), Duration::ZERO, || {
        let set = format!("set big 0 0 {}\r\n{value}\r\n", value.len());
        match request(&mut c, set.as_bytes()) {
            stored if stored == "STORED\r\n" => Err("the disk never filled".to_string()),
            refused => Ok(refused),
        }
    });
    // The write the disk failed under may time out; the next are refused.
    let refused = request(&mut c, b"set after 0 0 1\r\nx\r\n");
    assert!(
        refused.starts_with("SERVER_ERROR data directory: ")
            && refused.ends_with("; not applied\r\n"),
        "{refusal:?} then {refused:?}"
    );
    assert_eq!(
        request(&mut c, b"get kept\r\n"),
        "VALUE kept 0 4\r\nkept\r\nEND\r\n"
    );
    assert_eq!(request(&mut c, b"get after\r\n"), "END\r\n");
    assert_eq!(stat(node.port, "mckv_log_failed"), 1);
    // The write the disk failed under was answered (timed out, or refused
    // on a retry): nothing is kept for it while the disk stays full.
    assert_eq!(stat(node.port, "mckv_replies_held"), 0, "{refusal:?}");
    std::fs::remove_file(&filler).unwrap();
    poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match request(&mut c, b"set after 0 0 1\r\ny\r\n").as_str() {
            "STORED\r\n" => Ok(()),
            other => Err(format!("never took writes again: {other:?}")),
        },
    );
    assert_eq!(stat(node.port, "mckv_log_failed"), 0);
    assert!(node.log().contains("writes are refused"), "{}", node.log());
}

/// With `fsync = always`, a write's reply waits for its fsync, and so does
/// a read of the same key (it would show what a power cut could take
/// back); a read of a key no waiting write touched is answered meanwhile.
#[test]
fn a_read_of_another_key_is_answered_while_a_write_waits_for_its_fsync() {
    let disk = FailingFsync::build();
    let node = Durable::new("fsync = always\nbackend_timeout_ms = 20000");
    let _process = node.start_with(|cmd| disk.preload(cmd));
    let mut c = connect(node.port);
    assert_eq!(
        request(&mut c, b"set other 0 0 5\r\nother\r\n"),
        "STORED\r\n"
    );
    disk.check_a_read_of_another_key_goes_on_while_a_write_waits(node.port);
}

/// A failed fsync (the disk could not write back what the kernel held, and
/// the kernel may have dropped it) stops the node with the reason, as etcd
/// and PostgreSQL stop: past it nothing can be promised on disk, nor
/// served (the write under way never reached the disk, and a read of it
/// would show what a restart may not have). Restarted on a disk that
/// works, the node holds every write it acknowledged.
#[test]
fn a_failed_fsync_stops_the_node_and_a_restart_keeps_every_acknowledged_write() {
    let disk = FailingFsync::build();
    let node = Durable::new("fsync = always\nbackend_timeout_ms = 500");
    let mut process = node.start_with(|cmd| disk.preload(cmd));
    let mut c = connect(node.port);
    assert_eq!(request(&mut c, b"set kept 0 0 4\r\nkept\r\n"), "STORED\r\n");
    disk.fail();
    // Its record never reaches the disk: the client is told it may have
    // been applied, or, once the node stopped, nothing.
    let reply = request(&mut c, b"set lost 0 0 4\r\nlost\r\n");
    assert!(maybe_applied_or_unanswered(&reply), "{reply:?}");
    let exited = wait_for_exit(
        &mut process.child,
        "the node kept running after its fsync failed",
    );
    assert!(!exited.success(), "{exited}");
    assert!(node.log().contains("an fsync failed"), "{}", node.log());
    let process = node.start();
    let mut c = connect(node.port);
    assert_eq!(
        request(&mut c, b"get kept\r\n"),
        "VALUE kept 0 4\r\nkept\r\nEND\r\n"
    );
    terminate(process);
}

/// A node restarted on a disk without room for the snapshot its start
/// writes (what it recovered, as one file) stops with the reason, naming
/// the directory, and leaves no part of that snapshot behind to take the
/// room; once there is room it starts, holding every write. Needs root
/// (for mount); says so and passes elsewhere.
#[test]
fn a_start_without_room_for_its_snapshot_says_so_and_leaves_the_room() {
    let Some(tmpfs) = common::mount_tmpfs("1m") else {
        eprintln!("cannot mount a tmpfs (not root?): not checked");
        return;
    };
    let data = tmpfs.dir.0.join("data");
    let node = Durable::in_dir(
        TempDir::new("durable"),
        &Some(data.clone()),
        "fsync = always",
    );
    let mut process = node.start();
    let mut c = connect(node.port);
    let value = "v".repeat(100_000);
    for i in 0..6 {
        let set = format!("set k{i} 0 0 {}\r\n{value}\r\n", value.len());
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }
    process.signal("KILL");
    let _ = process.child.wait();
    let status = node.start_refused();
    assert!(!status.success(), "{status}");
    let log = node.log();
    assert!(
        log.contains(&format!("data directory {}", data.display()))
            && log.contains("as one snapshot")
            && log.contains("nothing is lost"),
        "{log}"
    );
    assert!(
        !data.join("snapshot.tmp").exists(),
        "its part was left behind"
    );
    let remount = common::status(
        Command::new("mount")
            .args(["-o", "remount,size=4m"])
            .arg(&tmpfs.dir.0),
    );
    assert!(remount.is_ok_and(|s| s.success()), "remount");
    let process = node.start();
    let mut c = connect(node.port);
    for i in 0..6 {
        let got = request(&mut c, format!("get k{i}\r\n").as_bytes());
        assert_eq!(
            got,
            format!("VALUE k{i} 0 {}\r\n{value}\r\nEND\r\n", value.len())
        );
    }
    terminate(process);
}
