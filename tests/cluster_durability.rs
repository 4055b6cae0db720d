//! Clusters whose nodes keep a data directory, through the real binary:
//! the whole cluster killed with SIGKILL at once under writes (`fsync =
//! always`) comes back holding every acknowledged write, in every mode; a
//! key deleted while one node was cut off stays deleted after every node
//! restarts; and a node restarted with its data is sent only what it
//! missed, not the store, in eventual and linearizable mode; a strong
//! cluster restarted with another eviction policy holds what it held.
//! Every wait is a bounded poll; nothing is asserted on timing.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    cluster_config_with, connect, launch_cluster_text, launch_cluster_text_with,
    maybe_applied_or_unanswered, poll, request, start_cluster_node, stat, wait_for_exit, Cluster,
    FailingFsync, TempDir,
};

/// A cluster of three in `mode`, each node with a data directory in `data`.
fn durable_cluster(mode: &str, data: &TempDir, cluster_keys: &str) -> Cluster {
    let (text, ports) = durable_config(mode, data, cluster_keys);
    launch_cluster_text(text, ports)
}

/// [`durable_cluster`] with node `i`'s fsyncs going through `disks[i]`
/// (the nodes past them through the real disk).
fn durable_cluster_on(disks: &[&FailingFsync], mode: &str, data: &TempDir, keys: &str) -> Cluster {
    let (text, ports) = durable_config(mode, data, keys);
    launch_cluster_text_with(text, ports, |id, cmd| {
        if let Some(disk) = disks.get(id) {
            disk.preload(cmd);
        }
    })
}

fn durable_config(mode: &str, data: &TempDir, cluster_keys: &str) -> (String, Vec<u16>) {
    let data = data.0.clone();
    cluster_config_with(3, mode, cluster_keys, |id| {
        format!("data_dir = {}", data.join(format!("d{id}")).display())
    })
}

/// Node `id` again, after it was killed.
fn restart(cluster: &mut Cluster, id: usize) {
    // Reaped first (it was killed, or stopped by itself): a node still
    // dying holds its ports, could answer the new one's readiness check,
    // and the new one would fail to bind them and exit.
    let _ = cluster.nodes[id].child.wait();
    let port = cluster.port(id);
    cluster.nodes[id] = start_cluster_node(&cluster.config, &cluster.dir.0, id, port);
}

/// One writer's closed loop on `port` until the node dies or `stop`: `set`
/// of its own keys with rising numbers; per key, the last number
/// acknowledged.
fn writer(port: u16, name: &str, stop: &AtomicBool) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return acked;
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
        let key = format!("{name}k{}", seq % 20);
        let value = seq.to_string();
        let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        if stream.write_all(set.as_bytes()).is_err() {
            break;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 && line == "STORED\r\n" => acked.insert(key, seq),
            _ => break,
        };
    }
    acked
}

/// `count` keys `old0`, `old1`, ... set to `value` through node 0 (one
/// pipeline of `noreply` sets), once every node holds the last.
fn load_everywhere(cluster: &Cluster, count: usize, value: &str) {
    let mut pipeline = Vec::new();
    for i in 0..count {
        let set = format!("set old{i} 0 0 {} noreply\r\n{value}\r\n", value.len());
        pipeline.extend_from_slice(set.as_bytes());
    }
    connect(cluster.port(0)).write_all(&pipeline).unwrap();
    let last = format!("old{}", count - 1);
    let want = format!("VALUE {last} 0 {}\r\n{value}\r\nEND\r\n", value.len());
    for node in 0..cluster.nodes.len() {
        cluster.wait_for_value(node, &last, &want);
    }
}

/// The number `node` holds for `key`, if any.
fn number(cluster: &Cluster, node: usize, key: &str) -> Option<u64> {
    let got = request(
        &mut connect(cluster.port(node)),
        format!("get {key}\r\n").as_bytes(),
    );
    got.lines().nth(1).and_then(|v| v.parse().ok())
}

/// Writers on every node while the whole cluster is killed with SIGKILL at
/// once, after each node wrote snapshots under the load; restarted, every
/// node holds every acknowledged write, or a later one of the same key.
fn a_whole_cluster_kill_loses_no_acknowledged_write(mode: &str) {
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nsync_interval_ms = 200\nsnapshot_every = 50000";
    let mut cluster = durable_cluster(mode, &data, keys);
    let stop = AtomicBool::new(false);
    let acked = std::thread::scope(|s| {
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (port, stop) = (cluster.port(w % 3), &stop);
                s.spawn(move || writer(port, &format!("w{w}"), stop))
            })
            .collect();
        poll(Duration::from_secs(20), Duration::from_millis(10), || {
            let going = |n| {
                stat(cluster.port(n), "cmd_set") >= 500
                    && stat(cluster.port(n), "mckv_snapshots_written") >= 3
            };
            match (0..3).all(going) {
                true => Ok(()),
                false => Err("the writers never got going, or no snapshot was written".into()),
            }
        });
        for node in &cluster.nodes {
            node.signal("KILL");
        }
        stop.store(true, Ordering::Relaxed);
        let mut acked = HashMap::new();
        writers
            .into_iter()
            .for_each(|w| acked.extend(w.join().unwrap()));
        acked
    });
    assert!(acked.len() >= 6, "{acked:?}");
    for id in 0..3 {
        restart(&mut cluster, id);
    }
    cluster.wait_all_up();
    let keys: Vec<String> = acked.keys().cloned().collect();
    let agreed = cluster.converged(&keys);
    for (key, seq) in &acked {
        for node in 0..3 {
            let held = number(&cluster, node, key)
                .unwrap_or_else(|| panic!("{mode}: node {node} lost {key} (acknowledged {seq})"));
            assert!(
                held >= *seq,
                "{mode}: node {node}: {key} went from {seq} to {held}"
            );
        }
    }
    eprintln!(
        "{mode}: {} keys checked on 3 nodes; node 0 replayed {} bytes; {} bytes agreed",
        acked.len(),
        stat(cluster.port(0), "mckv_recovered_bytes"),
        agreed.len()
    );
}

#[test]
fn eventual_a_whole_cluster_killed_at_once_keeps_every_acknowledged_write() {
    a_whole_cluster_kill_loses_no_acknowledged_write("eventual");
}

#[test]
fn causal_a_whole_cluster_killed_at_once_keeps_every_acknowledged_write() {
    a_whole_cluster_kill_loses_no_acknowledged_write("causal");
}

#[test]
fn linearizable_a_whole_cluster_killed_at_once_keeps_every_acknowledged_write() {
    a_whole_cluster_kill_loses_no_acknowledged_write("linearizable");
}

#[test]
fn sequential_a_whole_cluster_killed_at_once_keeps_every_acknowledged_write() {
    a_whole_cluster_kill_loses_no_acknowledged_write("sequential");
}

/// A strong cluster goes on without node 2 (paused with SIGSTOP) and
/// overwrites `k`; then the three are killed at once. Node 2's log is
/// behind, the others' hold the new value: restarted, the view forms from
/// the longest log, and every node answers the new value.
#[test]
fn a_strong_cluster_restarted_after_a_whole_kill_takes_the_longest_log() {
    for mode in ["linearizable", "sequential"] {
        let data = TempDir::new("cluster-data");
        let keys = "fsync = always\nheartbeat_ms = 50\npeer_timeout_ms = 500";
        let mut cluster = durable_cluster(mode, &data, keys);
        let mut c = connect(cluster.port(0));
        assert_eq!(request(&mut c, b"set k 0 0 3\r\nold\r\n"), "STORED\r\n");
        cluster.wait_for_value(2, "k", "VALUE k 0 3\r\nold\r\nEND\r\n");
        cluster.nodes[2].signal("STOP");
        // Refused or timed out until nodes 0 and 1 form a view without it.
        poll(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || match request(&mut connect(cluster.port(0)), b"set k 0 0 3\r\nnew\r\n").as_str() {
                "STORED\r\n" => Ok(()),
                other => Err(format!("{mode}: node 0 answered {other:?}")),
            },
        );
        for node in &cluster.nodes {
            node.signal("KILL");
        }
        for id in 0..3 {
            restart(&mut cluster, id);
        }
        cluster.wait_all_up();
        for node in 0..3 {
            cluster.wait_for_value(node, "k", "VALUE k 0 3\r\nnew\r\nEND\r\n");
        }
    }
}

/// A node of a strong cluster killed with SIGKILL and restarted with its
/// data directory, after the others wrote without it: its log
/// gives back the exact store it held, so it is handed only the writes it
/// missed (`mckv_missed_received`, no snapshot), and the bytes of frames it
/// receives follow those writes, not the store. Node 1, restarted with its
/// directory emptied, is handed the whole store, for comparison. A kill of
/// the whole cluster after that loses nothing either.
#[test]
fn a_strong_node_restarted_with_its_data_is_handed_only_what_it_missed() {
    for mode in ["linearizable", "sequential"] {
        a_strong_node_restarted_with_its_data_catches_up(mode);
    }
}

fn a_strong_node_restarted_with_its_data_catches_up(mode: &str) {
    const STORE: usize = 3_000;
    const MISSED: usize = 100;
    let value = "v".repeat(100);
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nheartbeat_ms = 50\npeer_timeout_ms = 500";
    let mut cluster = durable_cluster(mode, &data, keys);
    load_everywhere(&cluster, STORE, &value);
    // Node 2 dies; node 1 comes back without its data, to compare.
    let missed_while_down = |cluster: &mut Cluster, node: usize, from: usize| {
        cluster.nodes[node].signal("KILL");
        let mut c = connect(cluster.port(0));
        stored_once_the_view_allows(&mut c, "set k 0 0 1\r\nx\r\n");
        for i in from..from + MISSED {
            let set = format!("set new{i} 0 0 {}\r\n{value}\r\n", value.len());
            assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
        }
        let last = format!("new{}", from + MISSED - 1);
        let want = format!("VALUE {last} 0 {}\r\n{value}\r\nEND\r\n", value.len());
        if node == 1 {
            std::fs::remove_dir_all(data.0.join("d1")).unwrap();
        }
        restart(cluster, node);
        cluster.wait_for_value(node, &last, &want);
        let port = cluster.port(node);
        let stats = [
            "mckv_frame_bytes_received",
            "mckv_snapshots_received",
            "mckv_missed_received",
        ];
        stats.map(|name| stat(port, name))
    };
    let [with_data, snapshots, missed] = missed_while_down(&mut cluster, 2, 0);
    let [emptied, snapshots_1, _] = missed_while_down(&mut cluster, 1, MISSED);
    let store_bytes = (STORE * value.len()) as u64;
    let missed_bytes = (MISSED * value.len()) as u64;
    eprintln!(
        "{mode}, restarted with its data: {with_data} bytes of frames received for {MISSED} missed \
         writes ({missed_bytes} bytes of values); with its directory emptied: {emptied} bytes, \
         a store of {STORE} keys ({store_bytes} bytes of values)"
    );
    assert_eq!(
        (snapshots, missed),
        (0, 1),
        "{mode}: node 2: snapshots, missed writes handed"
    );
    assert_eq!(
        snapshots_1, 1,
        "{mode}: node 1 restarted without its data takes a snapshot"
    );
    assert!(with_data >= missed_bytes, "{with_data}");
    assert!(
        with_data < store_bytes / 4,
        "node 2 received {with_data} bytes for {missed_bytes} bytes missed: the store again"
    );
    assert!(emptied > store_bytes, "{emptied}");
    for node in &cluster.nodes {
        node.signal("KILL");
    }
    for id in 0..3 {
        restart(&mut cluster, id);
    }
    cluster.wait_all_up();
    let keys: Vec<String> = (0..2 * MISSED).map(|i| format!("new{i}")).collect();
    cluster.converged(&keys);
    for node in 0..3 {
        let got = request(&mut connect(cluster.port(node)), b"get old0 new199\r\n");
        let n = value.len();
        let want =
            format!("VALUE old0 0 {n}\r\n{value}\r\nVALUE new199 0 {n}\r\n{value}\r\nEND\r\n");
        assert_eq!(got, want, "{mode}: node {node}");
    }
}

/// A linearizable cluster capped at 1 MB, loaded with 2.4 MB under
/// `eviction = lru`, then killed whole and restarted with `eviction =
/// none`: each node replays its log under the policy its writes were made
/// under, so it holds the very keys it held (an `lru` write that evicted
/// is not refused now), and runs under `none` from then on.
#[test]
fn a_strong_cluster_restarted_with_another_eviction_policy_keeps_what_it_held() {
    const LOADED: usize = 300;
    let value = "v".repeat(8_000);
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nmemory_limit_mb = 1\neviction = lru";
    let mut cluster = durable_cluster("linearizable", &data, keys);
    load_everywhere(&cluster, LOADED, &value);
    let held = |cluster: &Cluster, node: usize| -> Vec<usize> {
        let mut c = connect(cluster.port(node));
        let holds = |i: &usize| request(&mut c, format!("mg old{i}\r\n").as_bytes()) == "HD\r\n";
        (0..LOADED).filter(holds).collect()
    };
    let before = held(&cluster, 0);
    assert!(
        before.len() < LOADED / 2 && before.contains(&(LOADED - 1)),
        "the load evicted: node 0 holds {before:?}"
    );
    for node in &cluster.nodes {
        node.signal("KILL");
    }
    let config = std::fs::read_to_string(&cluster.config).unwrap();
    std::fs::write(
        &cluster.config,
        config.replace("eviction = lru", "eviction = none"),
    )
    .unwrap();
    for id in 0..3 {
        restart(&mut cluster, id);
    }
    cluster.wait_all_up();
    let last = format!("old{}", LOADED - 1);
    let want = format!("VALUE {last} 0 {}\r\n{value}\r\nEND\r\n", value.len());
    for node in 0..3 {
        cluster.wait_for_value(node, &last, &want);
        assert_eq!(held(&cluster, node), before, "node {node}");
        let show = request(&mut connect(cluster.port(node)), b"show\r\n");
        assert!(show.contains("eviction=none"), "node {node}: {show}");
    }
}

/// Node 1 is paused (SIGSTOP) while node 0 deletes `k`, and killed before
/// it hears of it, so it comes back holding the old value; nodes 0 and 2
/// are killed and restarted too. Their logs hold the delete's tombstone,
/// which beats node 1's older value: `k` stays deleted everywhere.
#[test]
fn a_key_deleted_while_a_node_was_cut_off_stays_deleted_after_every_node_restarts() {
    let data = TempDir::new("cluster-data");
    let mut cluster = durable_cluster("eventual", &data, "fsync = always\nsync_interval_ms = 200");
    let mut c = connect(cluster.port(0));
    assert_eq!(request(&mut c, b"set k 0 0 3\r\nold\r\n"), "STORED\r\n");
    for node in 0..3 {
        cluster.wait_for_value(node, "k", "VALUE k 0 3\r\nold\r\nEND\r\n");
    }
    cluster.nodes[1].signal("STOP");
    assert_eq!(request(&mut c, b"delete k\r\n"), "DELETED\r\n");
    cluster.wait_for_value(2, "k", "END\r\n");
    for node in &cluster.nodes {
        node.signal("KILL");
    }
    for id in 0..3 {
        restart(&mut cluster, id);
    }
    cluster.wait_all_up();
    // Node 1 came back with the old value; sync rounds meet it with the
    // tombstone. Two rounds have begun on node 1 since its restart, and
    // `converged` polls until the three agree.
    poll(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || match stat(cluster.port(1), "mckv_sync_rounds") >= 2 {
            true => Ok(()),
            false => Err("node 1 never synced".to_string()),
        },
    );
    let gone = cluster.converged(&["k".to_string()]);
    assert_eq!(gone, "END\r\n", "k came back");
}

/// A node restarted with its data directory is sent what was written while
/// it was down, not the store: the versions it receives follow the writes
/// it missed. It catches up through anti-entropy alone, whose answers and
/// acknowledgements wait for an fsync: with `fsync = no` too, where only
/// they ask for one.
#[test]
fn a_node_restarted_with_its_data_is_sent_only_what_it_missed() {
    for fsync in ["everysec", "no"] {
        a_node_restarted_with_its_data_catches_up(fsync);
    }
}

fn a_node_restarted_with_its_data_catches_up(fsync: &str) {
    const STORE: usize = 3_000;
    const MISSED: usize = 100;
    let data = TempDir::new("cluster-data");
    let keys = format!("sync_interval_ms = 200\nfsync = {fsync}");
    let mut cluster = durable_cluster("eventual", &data, &keys);
    load_everywhere(&cluster, STORE, "value");
    let mut c = connect(cluster.port(0));
    // Node 2 has synced past the store: a round after the last write.
    let rounds = stat(cluster.port(2), "mckv_sync_rounds");
    poll(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || match stat(cluster.port(2), "mckv_sync_rounds") >= rounds + 2 {
            true => Ok(()),
            false => Err("node 2 stopped syncing".to_string()),
        },
    );
    cluster.nodes[2].signal("KILL");
    for i in 0..MISSED {
        let set = format!("set new{i} 0 0 3\r\nnew\r\n");
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }
    restart(&mut cluster, 2);
    let last = format!("new{}", MISSED - 1);
    cluster.wait_for_value(2, &last, &format!("VALUE {last} 0 3\r\nnew\r\nEND\r\n"));
    for i in 0..MISSED {
        assert_eq!(number_of_new(&cluster, i), "new", "new{i} on node 2");
    }
    // Both peers answer its first sync request: each sends what it lacks.
    let received = stat(cluster.port(2), "mckv_versions_received");
    eprintln!(
        "restart with data ({fsync}): node 2 received {received} versions for {MISSED} \
         missed writes, a store of {STORE} keys"
    );
    assert!(received >= MISSED as u64, "{received}");
    assert!(
        received <= 4 * MISSED as u64,
        "node 2 was sent {received} versions for {MISSED} missed writes: the store again"
    );
    let old = request(&mut connect(cluster.port(2)), b"get old0\r\n");
    assert_eq!(old, "VALUE old0 0 5\r\nvalue\r\nEND\r\n");
}

/// A node with a data directory whose peer address is taken fails to
/// start with the reason and exits, as one without: its log's writer does
/// not keep it alive (nor its directory locked).
#[test]
fn a_node_whose_peer_address_is_taken_exits_with_the_reason() {
    let data = TempDir::new("cluster-data");
    let (text, ports) = cluster_config_with(3, "eventual", "", |id| {
        format!("data_dir = {}", data.0.join(format!("d{id}")).display())
    });
    let peer = text
        .lines()
        .filter_map(|l| l.strip_prefix("peer = "))
        .next()
        .expect("node 0's peer address")
        .to_string();
    let _taken = std::net::TcpListener::bind(&peer).expect("take node 0's peer address");
    let config = data.0.join("config.ini");
    std::fs::write(&config, text).unwrap();
    let child = common::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_mckv"))
            .args(["server", "--node", "0", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
    .expect("start mckv");
    // Killed when dropped, should the check fail.
    let mut node = common::ProcessGuard {
        child,
        port: ports[0],
    };
    let exited = poll(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || match node.child.try_wait().expect("wait") {
            Some(status) => Ok(status),
            None => Err("node 0 still running, its peer address taken".to_string()),
        },
    );
    assert!(!exited.success(), "{exited:?}");
    let mut stderr = String::new();
    let pipe = node.child.stderr.as_mut().unwrap();
    std::io::Read::read_to_string(pipe, &mut stderr).unwrap();
    assert!(
        stderr.contains("Address already in use") || stderr.contains("in use"),
        "{stderr}"
    );
}

fn number_of_new(cluster: &Cluster, i: usize) -> String {
    let got = request(
        &mut connect(cluster.port(2)),
        format!("get new{i}\r\n").as_bytes(),
    );
    got.lines().nth(1).unwrap_or_default().to_string()
}

/// A 3-node cluster in some mode whose node 0 keeps its data directory on
/// a 1 MiB tmpfs, filled until node 0 refused a write with the reason;
/// `kept` was stored before. Needs root to mount the tmpfs.
struct FullDisk {
    cluster: Cluster,
    /// A connection to node 0.
    client: TcpStream,
    filler: std::path::PathBuf,
    /// The other nodes' data directories (`d1`, `d2`).
    data: TempDir,
    _tmpfs: common::Tmpfs,
}

impl FullDisk {
    /// `None` (and says so) when no tmpfs can be mounted.
    fn of_node_0(mode: &str, cluster_keys: &str) -> Option<FullDisk> {
        let Some(tmpfs) = common::mount_tmpfs("1m") else {
            eprintln!("cannot mount a tmpfs (not root?): not checked");
            return None;
        };
        let data = TempDir::new("cluster-data");
        let mount = &tmpfs.dir.0;
        let filler = mount.join("filler");
        std::fs::write(&filler, vec![0u8; 700 << 10]).unwrap();
        let keys = format!("fsync = always\nbackend_timeout_ms = 500\n{cluster_keys}");
        let (text, ports) = cluster_config_with(3, mode, &keys, |id| match id {
            0 => format!("data_dir = {}", mount.join("d0").display()),
            _ => format!("data_dir = {}", data.0.join(format!("d{id}")).display()),
        });
        let cluster = launch_cluster_text(text, ports);
        let mut c = connect(cluster.port(0));
        assert_eq!(request(&mut c, b"set kept 0 0 4\r\nkept\r\n"), "STORED\r\n");
        let value = "x".repeat(10_000);
        poll(Duration::from_secs(20), Duration::ZERO, || {
            let set = format!("set big 0 0 {}\r\n{value}\r\n", value.len());
            match request(&mut c, set.as_bytes()) {
                stored if stored == "STORED\r\n" => Err("the disk never filled".to_string()),
                _ => Ok(()),
            }
        });
        let refused = request(&mut c, b"set after 0 0 1\r\nx\r\n");
        assert!(
            refused.starts_with("SERVER_ERROR data directory: ")
                && refused.ends_with("; not applied\r\n"),
            "{refused:?}"
        );
        Some(FullDisk {
            cluster,
            client: c,
            filler,
            data,
            _tmpfs: tmpfs,
        })
    }

    /// Frees the tmpfs and waits until node 0 stores a write again.
    fn make_room(&mut self) {
        std::fs::remove_file(&self.filler).unwrap();
        let c = &mut self.client;
        poll(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || match request(c, b"set after 0 0 1\r\nz\r\n").as_str() {
                "STORED\r\n" => Ok(()),
                other => Err(format!("never took writes again: {other:?}")),
            },
        );
    }
}

/// Node 0's data directory is on a 1 MiB tmpfs that fills: it refuses
/// writes with the reason and serves reads, takes no peer's write meanwhile
/// (its log could not keep it), and once there is room takes writes again
/// and gets what the others were written during the outage through
/// anti-entropy. Needs root to mount the tmpfs; says so and returns
/// otherwise.
#[test]
fn a_node_whose_disk_fills_refuses_writes_then_catches_up() {
    let Some(mut full) = FullDisk::of_node_0("eventual", "sync_interval_ms = 200") else {
        return;
    };
    assert_eq!(
        request(&mut full.client, b"get kept\r\n"),
        "VALUE kept 0 4\r\nkept\r\nEND\r\n"
    );
    // A write elsewhere meanwhile: node 0 does not take it.
    let mut other = connect(full.cluster.port(1));
    assert_eq!(
        request(&mut other, b"set elsewhere 0 0 1\r\ny\r\n"),
        "STORED\r\n"
    );
    full.cluster
        .wait_for_value(2, "elsewhere", "VALUE elsewhere 0 1\r\ny\r\nEND\r\n");
    assert_eq!(request(&mut full.client, b"get elsewhere\r\n"), "END\r\n");
    full.make_room();
    full.cluster
        .wait_for_value(0, "elsewhere", "VALUE elsewhere 0 1\r\ny\r\nEND\r\n");
}

/// Node 0 of a linearizable cluster has its data directory on a 1 MiB
/// tmpfs that fills. It still applies what the cluster delivers (its peers
/// do), but answers nothing its log does not hold: new writes are refused
/// before they are ordered, with the reason; a read of a key written
/// meanwhile waits for the log and times out, while a read of a key its
/// log holds is answered. Its peers serve on. Once there is room, the log
/// catches up and node 0 answers again, with the writes made elsewhere
/// meanwhile. Needs root to mount the tmpfs; says so and returns otherwise.
#[test]
fn a_strong_node_whose_disk_fills_answers_nothing_unlogged_then_catches_up() {
    let Some(mut full) = FullDisk::of_node_0("linearizable", "") else {
        return;
    };
    let mut other = connect(full.cluster.port(1));
    assert_eq!(
        request(&mut other, b"set elsewhere 0 0 1\r\ny\r\n"),
        "STORED\r\n"
    );
    let read = request(&mut full.client, b"get elsewhere\r\n");
    assert!(read.starts_with("SERVER_ERROR timeout"), "{read:?}");
    assert_eq!(
        request(&mut full.client, b"get kept\r\n"),
        "VALUE kept 0 4\r\nkept\r\nEND\r\n"
    );
    full.make_room();
    full.cluster
        .wait_for_value(0, "elsewhere", "VALUE elsewhere 0 1\r\ny\r\nEND\r\n");
    full.cluster
        .wait_for_value(2, "after", "VALUE after 0 1\r\nz\r\nEND\r\n");
}

/// Node 0 of a linearizable cluster has its data directory on a 1 MiB
/// tmpfs that fills, and the cluster goes on taking writes through node 1:
/// 80 MiB of them, past the 64 MiB node 0 keeps for its log. Node 0 stops
/// and exits with the reason rather than hold more; nodes 1 and 2 serve
/// on. Restarted once there is room, node 0 recovers its log and is handed
/// what it missed. Needs root to mount the tmpfs; says so and returns
/// otherwise.
#[test]
fn a_strong_node_whose_disk_stays_full_stops_past_its_backlog_then_rejoins() {
    let Some(mut full) = FullDisk::of_node_0("linearizable", "") else {
        return;
    };
    let mut other = connect(full.cluster.port(1));
    // One key written over and over: the store stays small, the log grows.
    let value = "v".repeat(256 << 10);
    let set = format!("set churn 0 0 {}\r\n{value}\r\n", value.len());
    for _ in 0..320 {
        stored_once_the_view_allows(&mut other, &set);
    }
    let exited = wait_for_exit(
        &mut full.cluster.nodes[0].child,
        "node 0 still running past its log's backlog",
    );
    assert!(!exited.success(), "{exited:?}");
    let log = std::fs::read_to_string(full.cluster.dir.0.join("node0.log")).unwrap();
    assert!(
        log.contains("MiB of delivered writes wait for the log"),
        "node 0's log says nothing of why it stopped"
    );
    // The others serve on without it.
    stored_once_the_view_allows(&mut other, "set without0 0 0 1\r\nw\r\n");
    std::fs::remove_file(&full.filler).unwrap();
    restart(&mut full.cluster, 0);
    full.cluster
        .wait_for_value(0, "without0", "VALUE without0 0 1\r\nw\r\nEND\r\n");
    let got = request(&mut connect(full.cluster.port(0)), b"get churn\r\n");
    assert_eq!(
        got,
        format!("VALUE churn 0 {}\r\n{value}\r\nEND\r\n", value.len())
    );
}

/// Node 0 of a linearizable cluster has its data directory on a 1 MiB
/// tmpfs that fills, and node 2 restarts with its directory emptied; with
/// `catch_up_mb = 0` it must be handed the whole store. Node 0, the lowest
/// node that holds it, could not hand it (a snapshot waits for its
/// source's log), and says its log is refused: node 1 hands it, and node 2
/// serves while node 0's disk is still full. Needs root to mount the
/// tmpfs; says so and returns otherwise.
#[test]
fn a_strong_node_whose_disk_is_full_leaves_a_restarted_peers_snapshot_to_another() {
    // Nothing kept for catching up: the whole store, never the writes missed.
    let Some(mut full) = FullDisk::of_node_0("linearizable", "catch_up_mb = 0") else {
        return;
    };
    let mut cluster = full.cluster;
    let mut other = connect(cluster.port(1));
    assert_eq!(
        request(&mut other, b"set elsewhere 0 0 1\r\ny\r\n"),
        "STORED\r\n"
    );
    // Node 0's engine hears that its log is refused at its next heartbeat
    // (50 ms), long before node 2 is back and a view forms with it.
    cluster.nodes[2].signal("KILL");
    std::fs::remove_dir_all(full.data.0.join("d2")).unwrap();
    restart(&mut cluster, 2);
    cluster.wait_for_value(2, "elsewhere", "VALUE elsewhere 0 1\r\ny\r\nEND\r\n");
    assert_eq!(stat(cluster.port(2), "mckv_snapshots_received"), 1);
    assert_eq!(stat(cluster.port(1), "mckv_snapshots_sent"), 1);
    assert_eq!(stat(cluster.port(0), "mckv_snapshots_sent"), 0);
    let refused = request(&mut full.client, b"set after 0 0 1\r\nx\r\n");
    assert!(
        refused.starts_with("SERVER_ERROR data directory: "),
        "{refused:?}"
    );
}

/// Nodes 0 and 1 of a linearizable cluster with `fsync = always` have
/// their fsyncs stalled (slow disks: their logs do not refuse, they lag)
/// after a write both appended, and node 2 restarts with its directory
/// emptied; with `catch_up_mb = 0` it must be handed the store. A node
/// hands a snapshot only once its log holds what the snapshot holds (the
/// peer replaces its own store and directory with it): node 2 waits for
/// the state and serves nothing while the fsyncs stall, and once they
/// resume it is handed the store, with that write.
#[test]
fn a_strong_node_hands_a_snapshot_only_once_its_log_holds_it() {
    let disks = [FailingFsync::build(), FailingFsync::build()];
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nbackend_timeout_ms = 60000\ncatch_up_mb = 0";
    let mut cluster = durable_cluster_on(&[&disks[0], &disks[1]], "linearizable", &data, keys);
    let mut other = connect(cluster.port(1));
    stored_once_the_view_allows(&mut other, "set before 0 0 1\r\nb\r\n");
    cluster.nodes[2].signal("KILL");
    std::fs::remove_dir_all(data.0.join("d2")).unwrap();
    stored_once_the_view_allows(&mut other, "set view 0 0 1\r\nv\r\n");
    disks.iter().for_each(FailingFsync::stall);
    // Delivered at nodes 0 and 1 and appended to their logs, which cannot
    // sync it: node 1 holds its reply.
    other.write_all(b"set meanwhile 0 0 1\r\nm\r\n").unwrap();
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match stat(cluster.port(1), "mckv_replies_held") {
            1 => Ok(()),
            n => Err(format!("{n} replies held at node 1, not the set's")),
        },
    );
    restart(&mut cluster, 2);
    let mut c = connect(cluster.port(2));
    let role = |c: &mut TcpStream| {
        let stats = request(c, b"stats\r\n");
        let line = stats.lines().find(|l| l.starts_with("STAT mckv_role "));
        line.map(|l| l["STAT mckv_role ".len()..].to_string())
    };
    poll(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || match role(&mut c).as_deref() {
            Some("catching-up" | "member") => Ok(()),
            other => Err(format!("node 2 never joined a view: {other:?}")),
        },
    );
    // Without the wait, the snapshot would be in within milliseconds.
    for _ in 0..20 {
        let got = request(&mut c, b"get meanwhile\r\n");
        assert!(got.starts_with("SERVER_ERROR "), "node 2 served: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stat(cluster.port(2), "mckv_snapshots_received"), 0);
    disks.iter().for_each(FailingFsync::resume);
    cluster.wait_for_value(2, "meanwhile", "VALUE meanwhile 0 1\r\nm\r\nEND\r\n");
    assert_eq!(stat(cluster.port(2), "mckv_snapshots_received"), 1);
    let mut stored = String::new();
    BufReader::new(&mut other).read_line(&mut stored).unwrap();
    assert_eq!(stored, "STORED\r\n");
}

/// As above, but node 1 stays up: node 0's log has taken nothing for a
/// while, so its flush says its log is stuck, and node 1, whose disk takes
/// writes, hands node 2 the store. Node 2 serves the write made meanwhile
/// while node 0's fsyncs still stall (at most a snapshot's patience after
/// a first view that still listed node 0 first).
#[test]
fn a_strong_node_whose_fsyncs_stall_leaves_a_restarted_peers_snapshot_to_another() {
    let disk = FailingFsync::build();
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nbackend_timeout_ms = 500\ncatch_up_mb = 0";
    let mut cluster = durable_cluster_on(&[&disk], "linearizable", &data, keys);
    let mut other = connect(cluster.port(1));
    stored_once_the_view_allows(&mut other, "set before 0 0 1\r\nb\r\n");
    cluster.nodes[2].signal("KILL");
    std::fs::remove_dir_all(data.0.join("d2")).unwrap();
    disk.stall();
    stored_once_the_view_allows(&mut other, "set meanwhile 0 0 1\r\nm\r\n");
    restart(&mut cluster, 2);
    cluster.wait_for_value(2, "meanwhile", "VALUE meanwhile 0 1\r\nm\r\nEND\r\n");
    assert_eq!(stat(cluster.port(2), "mckv_snapshots_received"), 1);
    assert_eq!(stat(cluster.port(1), "mckv_snapshots_sent"), 1);
    assert_eq!(stat(cluster.port(0), "mckv_snapshots_sent"), 0);
    assert_eq!(stat(cluster.port(0), "mckv_log_stalled"), 1);
    let log = cluster.log(0);
    let said = "the disk has taken none of the log for 1 s (stalled?)";
    assert!(log.contains(said), "node 0's log: {log}");
    disk.resume();
}

/// Sends `set` until it is stored, while the cluster refuses it (a view
/// change leaving a node out is under way: not applied, or, for a write
/// under way when it began, may have been applied; a `set` sent again
/// leaves the same value).
fn stored_once_the_view_allows(c: &mut TcpStream, set: &str) {
    let retry = |reply: &str| {
        reply.ends_with("; not applied\r\n") || reply.ends_with("may have been applied\r\n")
    };
    poll(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || match request(c, set.as_bytes()) {
            stored if stored == "STORED\r\n" => Ok(()),
            refused if retry(&refused) => Err(refused),
            other => panic!("{other:?}"),
        },
    );
}

/// Node 0 of an eventual cluster is killed with SIGKILL, with its peers,
/// while it writes a snapshot (its `snapshot.tmp` holds some of it, and is
/// still there after the kill): restarted
/// alone, so that no peer can bring back what its own directory lost, it
/// holds every write it acknowledged, from the old snapshot and the logs
/// the new one was to replace.
#[test]
fn an_eventual_node_killed_while_it_writes_a_snapshot_keeps_every_acknowledged_write() {
    let data = TempDir::new("cluster-data");
    // A snapshot of about 8 MB goes in parts of 1 MiB, one per
    // maintenance tick (5 ms apart while busy): some 40 ms to land in.
    let keys = "fsync = always\nsync_interval_ms = 200\nsnapshot_every = 8000000";
    let mut cluster = durable_cluster("eventual", &data, keys);
    let tmp = data.0.join("d0").join("snapshot.tmp");
    let stop = AtomicBool::new(false);
    let value = |i: u64| format!("{i:0>4096}");
    let (preloaded, written) = std::thread::scope(|s| {
        let (port, stop) = (cluster.port(0), &stop);
        let preload = s.spawn(move || {
            let mut acked = Vec::new();
            let mut c = connect(port);
            for i in 0..20_000u64 {
                let v = value(i);
                let set = format!("set p{i} 0 0 {}\r\n{v}\r\n", v.len());
                if stop.load(Ordering::Relaxed) || c.write_all(set.as_bytes()).is_err() {
                    break;
                }
                let mut reply = [0u8; 8];
                match std::io::Read::read_exact(&mut c, &mut reply) {
                    Ok(()) if &reply == b"STORED\r\n" => acked.push(i),
                    _ => break,
                }
            }
            acked
        });
        let writer = s.spawn(move || writer(port, "w", stop));
        poll(
            Duration::from_secs(30),
            Duration::from_millis(1),
            // Part of the new snapshot is written, not all of it.
            || match std::fs::metadata(&tmp).map(|m| m.len()) {
                Ok(written) if written > 0 => Ok(()),
                _ => Err("node 0 never wrote part of a snapshot".to_string()),
            },
        );
        // SIGKILL at once (no `kill` process to start), node 0 first.
        for node in cluster.nodes.iter_mut() {
            node.child.kill().expect("SIGKILL");
        }
        stop.store(true, Ordering::Relaxed);
        (preload.join().unwrap(), writer.join().unwrap())
    });
    // Reaped, so no killed node still holds its port: a restart's wait for
    // its port could otherwise be answered by the dying node, and the new
    // one fail to bind it.
    for node in cluster.nodes.iter_mut() {
        node.child.wait().expect("reap");
    }
    assert!(tmp.exists(), "the kill came after the snapshot ended");
    assert!(!preloaded.is_empty() && !written.is_empty());
    restart(&mut cluster, 0);
    let mut c = connect(cluster.port(0));
    for i in &preloaded {
        let got = request(&mut c, format!("get p{i}\r\n").as_bytes());
        let v = value(*i);
        assert_eq!(
            got,
            format!("VALUE p{i} 0 {}\r\n{v}\r\nEND\r\n", v.len()),
            "p{i}"
        );
    }
    for (key, seq) in &written {
        let held = number(&cluster, 0, key).unwrap_or_else(|| panic!("lost {key}"));
        assert!(held >= *seq, "{key} went from {seq} to {held}");
    }
    eprintln!(
        "{} values of 4 KiB and {} keys checked; node 0 replayed {} bytes",
        preloaded.len(),
        written.len(),
        stat(cluster.port(0), "mckv_recovered_bytes")
    );
}

/// Node 0 of a cluster in `mode` (every node with a data directory, `fsync
/// = always`) finds its fsyncs failing: it stops with the reason, as a
/// node alone does (`tests/durability.rs`), and its peers serve on.
/// Restarted on a disk that works, it holds what it acknowledged and
/// what was written without it.
fn a_node_whose_fsync_fails_stops_and_rejoins(mode: &str) {
    let disk = FailingFsync::build();
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nbackend_timeout_ms = 500";
    let mut cluster = durable_cluster_on(&[&disk], mode, &data, keys);
    let mut c = connect(cluster.port(0));
    stored_once_the_view_allows(&mut c, "set kept 0 0 4\r\nkept\r\n");
    disk.fail();
    let reply = request(&mut c, b"set lost 0 0 4\r\nlost\r\n");
    assert!(maybe_applied_or_unanswered(&reply), "{reply:?}");
    let exited = wait_for_exit(
        &mut cluster.nodes[0].child,
        "node 0 kept running after its fsync failed",
    );
    assert!(!exited.success(), "{exited:?}");
    let log = cluster.log(0);
    assert!(log.contains("an fsync failed"), "node 0's log: {log}");
    stored_once_the_view_allows(&mut connect(cluster.port(1)), "set without0 0 0 1\r\nw\r\n");
    restart(&mut cluster, 0);
    cluster.wait_for_value(0, "without0", "VALUE without0 0 1\r\nw\r\nEND\r\n");
    cluster.wait_for_value(0, "kept", "VALUE kept 0 4\r\nkept\r\nEND\r\n");
}

#[test]
fn a_linearizable_node_whose_fsync_fails_stops_and_rejoins() {
    a_node_whose_fsync_fails_stops_and_rejoins("linearizable");
}

#[test]
fn an_eventual_node_whose_fsync_fails_stops_and_rejoins() {
    a_node_whose_fsync_fails_stops_and_rejoins("eventual");
}

/// With `fsync = always`, a write's reply on a node of a cluster waits for
/// its record's fsync (its version's, or its mark's), and so does a read of
/// the same key (it would show what a power cut could take back); a read
/// of a key no waiting record touched is answered meanwhile.
fn a_read_of_another_key_is_answered_while_a_write_waits(mode: &str) {
    let disk = FailingFsync::build();
    let data = TempDir::new("cluster-data");
    let keys = "fsync = always\nbackend_timeout_ms = 20000";
    let cluster = durable_cluster_on(&[&disk], mode, &data, keys);
    let port = cluster.port(0);
    let mut c = connect(port);
    stored_once_the_view_allows(&mut c, "set other 0 0 5\r\nother\r\n");
    disk.check_a_read_of_another_key_goes_on_while_a_write_waits(port);
}

#[test]
fn an_eventual_node_answers_a_read_of_another_key_while_a_write_waits_for_its_fsync() {
    a_read_of_another_key_is_answered_while_a_write_waits("eventual");
}

#[test]
fn a_causal_node_answers_a_read_of_another_key_while_a_write_waits_for_its_fsync() {
    a_read_of_another_key_is_answered_while_a_write_waits("causal");
}

#[test]
fn a_linearizable_node_answers_a_read_of_another_key_while_a_write_waits_for_its_fsync() {
    a_read_of_another_key_is_answered_while_a_write_waits("linearizable");
}

/// A node handed another node's data directory (node 1's copied over node
/// 2's, every node stopped) refuses to start, and its log names the
/// directory and both identities: taken, the copy's log could be elected
/// and handed to every member, in place of what node 2 held.
#[test]
fn a_node_given_another_nodes_data_directory_refuses_to_start() {
    let data = TempDir::new("cluster-data");
    let mut cluster = durable_cluster("linearizable", &data, "fsync = always");
    let mut c = connect(cluster.port(0));
    stored_once_the_view_allows(&mut c, "set mine 0 0 1\r\nv\r\n");
    for node in &mut cluster.nodes {
        node.signal("KILL");
        let _ = node.child.wait();
    }
    let (from, to) = (data.0.join("d1"), data.0.join("d2"));
    std::fs::remove_dir_all(&to).unwrap();
    std::fs::create_dir(&to).unwrap();
    for file in std::fs::read_dir(&from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
    let child = common::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_mckv"))
            .args(["server", "--node", "2", "--config"])
            .arg(&cluster.config)
            .arg("--log-file")
            .arg(cluster.dir.0.join("node2.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .expect("start mckv");
    // Killed when dropped, should the check fail.
    let mut node = common::ProcessGuard {
        child,
        port: cluster.port(2),
    };
    let exited = wait_for_exit(&mut node.child, "node 2 serves node 1's directory");
    assert!(!exited.success(), "{exited:?}");
    let log = cluster.log(2);
    let refusal = format!(
        "data directory {}: belongs to node 1 of cluster 'test' (linearizable); this is node 2 \
         of cluster 'test' (linearizable): move it away to start without it",
        to.display()
    );
    assert!(log.contains(&refusal), "{log}");
}
