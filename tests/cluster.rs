//! Real `mckv` clusters on loopback: replication, agreement of
//! read-modify-write commands, failure detection, the peer handshake, and the
//! start/stop scripts.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::start_cluster_over_peer_tls;
use common::{
    cluster_config, connect, poll, read_until, request, roundtrip, start_cluster,
    start_cluster_node, start_cluster_on_memcached, Cluster, TempDir,
};
use proxy::cluster_with_proxied_links;

/// Every key's `gets` reply on every node, which must all be identical now.
fn assert_replicas_identical(cluster: &Cluster, keys: &[String]) {
    let views = cluster.gets_everywhere(keys);
    for (n, view) in views.iter().enumerate() {
        assert_eq!(view, &views[0], "node {n} differs from node 0");
    }
}

#[test]
fn a_write_acknowledged_anywhere_is_read_everywhere_in_linearizable_mode() {
    let cluster = start_cluster(3, "linearizable", "");
    let mut clients: Vec<TcpStream> = (0..3).map(|n| connect(cluster.port(n))).collect();
    for i in 0..60 {
        let writer = i % 3;
        let set = format!(
            "set key{} 0 0 {}\r\nvalue{i}\r\n",
            i % 5,
            format!("value{i}").len()
        );
        assert_eq!(request(&mut clients[writer], set.as_bytes()), "STORED\r\n");
        for reader in (0..3).filter(|&r| r != writer) {
            let got = request(
                &mut clients[reader],
                format!("get key{}\r\n", i % 5).as_bytes(),
            );
            let want = format!(
                "VALUE key{} 0 {}\r\nvalue{i}\r\nEND\r\n",
                i % 5,
                format!("value{i}").len()
            );
            assert_eq!(
                got, want,
                "write {i} on node {writer}, read on node {reader}"
            );
        }
    }
}

/// Concurrent incr, append and cas on the same keys from every node: each
/// node applies them in the same order, so the replicas end identical (cas
/// uniques included) and no increment is lost.
fn read_modify_writes_agree(cluster: Cluster) {
    let mut setup = connect(cluster.port(0));
    for key in ["counter", "log", "token"] {
        assert_eq!(
            request(&mut setup, format!("set {key} 0 0 1\r\n0\r\n").as_bytes()),
            "STORED\r\n"
        );
    }
    const ROUNDS: usize = 40;
    let cas_wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|client| {
                let port = cluster.port(client % 3);
                s.spawn(move || {
                    let mut c = connect(port);
                    let mut wins = 0;
                    for round in 0..ROUNDS {
                        let got = request(&mut c, b"incr counter 1\r\n");
                        assert!(
                            got.trim_end().parse::<u64>().is_ok(),
                            "incr answered {got:?}"
                        );
                        let piece = format!("{client}.{round};");
                        let append = format!("append log 0 0 {}\r\n{piece}\r\n", piece.len());
                        assert_eq!(request(&mut c, append.as_bytes()), "STORED\r\n");
                        let gets = request(&mut c, b"gets token\r\n");
                        let unique = gets
                            .lines()
                            .next()
                            .and_then(|l| l.split(' ').nth(4))
                            .expect("gets line");
                        let cas = format!("cas token 0 0 1 {unique}\r\n{}\r\n", client);
                        match request(&mut c, cas.as_bytes()).as_str() {
                            "STORED\r\n" => wins += 1,
                            "EXISTS\r\n" => {}
                            other => panic!("cas answered {other:?}"),
                        }
                    }
                    wins
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(cas_wins >= 1, "some cas must succeed");
    let keys: Vec<String> = ["counter", "log", "token"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    // An origin replies once it has applied a write; the other replicas
    // apply it about then.
    let state = cluster.converged(&keys);
    let total = (6 * ROUNDS).to_string();
    let counter_line = format!("VALUE counter 0 {} ", total.len());
    assert!(
        state.contains(&counter_line) && state.contains(&format!("\r\n{total}\r\n")),
        "{state}"
    );
    let log_len: usize = (0..6)
        .flat_map(|c| (0..ROUNDS).map(move |r| format!("{c}.{r};").len()))
        .sum();
    assert!(
        state.contains(&format!("VALUE log 0 {} ", log_len + 1)),
        "{state}"
    );
}

/// A meta command's reply, read up to the `mn` sent after it.
fn meta(client: &mut TcpStream, line: &str) -> String {
    let sent = format!("{line}mn\r\n");
    let reply = roundtrip(client, sent.as_bytes(), b"MN\r\n");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    reply.strip_suffix("MN\r\n").unwrap_or(&reply).to_string()
}

/// `ms` on node 0 is read by `mg` on node 2, and `ma` from every node
/// leaves every replica the same number and cas unique (in the strong
/// modes, with no increment lost).
fn meta_commands_replicate(cluster: Cluster, strong: bool) {
    let mut first = connect(cluster.port(0));
    let mut last = connect(cluster.port(2));
    assert_eq!(meta(&mut first, "ms mk 5 F3 T0\r\nhello\r\n"), "HD\r\n");
    poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match meta(&mut last, "mg mk v f k\r\n").as_str() {
            "VA 5 f3 kmk\r\nhello\r\n" => Ok(()),
            other => Err(format!("node 2 read {other:?}")),
        },
    );
    const ROUNDS: usize = 10;
    std::thread::scope(|s| {
        for node in 0..3 {
            let port = cluster.port(node);
            s.spawn(move || {
                let mut c = connect(port);
                for _ in 0..ROUNDS {
                    let got = meta(&mut c, "ma mcount N0 J0 v\r\n");
                    assert!(got.starts_with("VA "), "ma answered {got:?}");
                }
            });
        }
    });
    let views = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let views: Vec<String> = (0..3)
            .map(|n| meta(&mut connect(cluster.port(n)), "mg mcount v c\r\n"))
            .collect();
        match views.iter().all(|v| v == &views[0]) {
            true => Ok(views),
            false => Err(format!("replicas differ: {views:?}")),
        }
    });
    if strong {
        // The first `ma` made the item with 0; every other one added 1.
        let total = (3 * ROUNDS - 1).to_string();
        assert!(views[0].ends_with(&format!("\r\n{total}\r\n")), "{views:?}");
    }
    assert_eq!(meta(&mut last, "md mk q\r\n"), "");
    poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match meta(&mut first, "mg mk v\r\n").as_str() {
            "EN\r\n" => Ok(()),
            other => Err(format!("node 0 read {other:?} after md on node 2")),
        },
    );
}

#[test]
fn meta_commands_replicate_in_linearizable_mode() {
    meta_commands_replicate(start_cluster(3, "linearizable", ""), true);
}

#[test]
fn meta_commands_replicate_in_sequential_mode() {
    meta_commands_replicate(start_cluster(3, "sequential", ""), true);
}

#[test]
fn meta_commands_replicate_in_eventual_mode() {
    meta_commands_replicate(
        start_cluster(3, "eventual", "sync_interval_ms = 200"),
        false,
    );
}

#[test]
fn read_modify_writes_agree_on_every_replica_in_linearizable_mode() {
    read_modify_writes_agree(start_cluster(3, "linearizable", ""));
}

#[test]
fn over_peer_tls_read_modify_writes_agree_on_every_replica() {
    let (cluster, _certs) = start_cluster_over_peer_tls(3, "linearizable", "");
    read_modify_writes_agree(cluster);
}

#[test]
fn over_peer_tls_meta_commands_replicate() {
    let (cluster, _certs) = start_cluster_over_peer_tls(3, "sequential", "");
    meta_commands_replicate(cluster, true);
}

#[test]
fn read_modify_writes_agree_on_every_replica_in_sequential_mode() {
    read_modify_writes_agree(start_cluster(3, "sequential", ""));
}

/// With memcached backends too: mckv, not memcached, gives the cas uniques,
/// so `gets` shows the same on every node even when the memcacheds' own
/// counters differ (here one has served writes before).
#[test]
fn read_modify_writes_agree_on_memcached_backends() {
    let cluster = start_cluster_on_memcached(3, "linearizable", "");
    let mut direct = connect(cluster.backends[0].port);
    let used = b"set before 0 0 1\r\nx\r\nset before 0 0 1\r\ny\r\ndelete before\r\n";
    let reply = roundtrip(&mut direct, used, b"DELETED\r\n");
    assert_eq!(reply, b"STORED\r\nSTORED\r\nDELETED\r\n");
    read_modify_writes_agree(cluster);
}

fn node_state(cluster: &Cluster, observer: usize, node: usize) -> String {
    cluster
        .show(observer)
        .lines()
        .find(|l| l.starts_with(&format!("NODE {node} ")))
        .and_then(|l| l.split(' ').nth(3).map(str::to_string))
        .unwrap_or_default()
}

fn wait_for_state(cluster: &Cluster, observer: usize, node: usize, state: &str) {
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match node_state(cluster, observer, node) == state {
            true => Ok(()),
            false => Err(format!(
                "node {observer} never saw node {node} {state}:\n{}",
                cluster.show(observer)
            )),
        },
    )
}

/// A paused (silent) peer is shown down; the other two form a view without
/// it and serve (a write in between may be refused, saying it was not
/// applied); once it answers again it rejoins, handed the state, and every
/// replica agrees.
#[test]
fn a_silent_peer_is_shown_down_the_others_serve_and_it_rejoins_when_it_answers() {
    silent_peer_rejoins(start_cluster(
        3,
        "linearizable",
        "backend_timeout_ms = 3000",
    ));
}

#[test]
fn over_peer_tls_a_silent_peer_is_shown_down_the_others_serve_and_it_rejoins() {
    let (cluster, _certs) =
        start_cluster_over_peer_tls(3, "linearizable", "backend_timeout_ms = 3000");
    silent_peer_rejoins(cluster);
}

/// Sends `set` on `c` until it is stored, for at most `within`: a refusal
/// that says it was not applied (the cluster changing its view) is tried
/// again; any other answer fails the test.
fn until_stored(c: &mut TcpStream, set: &[u8], within: Duration) {
    poll(within, Duration::from_millis(20), || {
        match request(c, set).as_str() {
            "STORED\r\n" => Ok(()),
            refused if refused.ends_with("; not applied\r\n") => {
                Err(format!("not stored yet: {refused:?}"))
            }
            other => panic!("{other:?}"),
        }
    });
}

/// Node 2 stops (SIGSTOP): the others show it down and serve without it;
/// it continues and rejoins, and every node reads the same.
fn silent_peer_rejoins(cluster: Cluster) {
    let mut c = connect(cluster.port(0));
    assert_eq!(request(&mut c, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");

    cluster.nodes[2].signal("STOP");
    wait_for_state(&cluster, 0, 2, "down");
    assert!(cluster.log(0).contains("node 2 is down"));
    until_stored(&mut c, b"set k 0 0 1\r\nb\r\n", Duration::from_secs(10));

    cluster.nodes[2].signal("CONT");
    wait_for_state(&cluster, 0, 2, "up");
    cluster.wait_all_up();
    assert_eq!(request(&mut c, b"set k 0 0 1\r\nc\r\n"), "STORED\r\n");
    // Node 2 may still be rejoining (a view change, a snapshot) or
    // applying: every node reads the same once it serves.
    let agreed = cluster.converged(&["k".to_string()]);
    assert!(agreed.ends_with("\r\nc\r\nEND\r\n"), "{agreed}");
}

/// Node 2 of a sequential cluster is paused (SIGSTOP) while node 0 writes
/// 100 keys over a store of 2,000: resumed, node 2 is behind by those
/// writes only, and the view's source hands it them rather than its whole
/// store (module doc of `cluster/total_order`, "Catching up").
#[test]
fn a_node_behind_by_a_few_writes_is_handed_them_rather_than_the_store() {
    let cluster = paused_for_100_writes("");
    let sources = [0, 1];
    let handed: u64 = sources
        .iter()
        .map(|&n| stat(&cluster, n, "mckv_missed_writes_handed"))
        .sum();
    let snapshots: u64 = sources
        .iter()
        .map(|&n| stat(&cluster, n, "mckv_snapshots_sent"))
        .sum();
    // The 100 sets (less `m0` when node 2, resumed, could still deliver
    // it in the old view: every member there held it; more if a link broke
    // and the handing started over), not the 2,100 items a snapshot would
    // carry.
    assert!((99..1_000).contains(&handed), "{handed} writes handed");
    assert_eq!(snapshots, 0);
    assert_eq!(stat(&cluster, 2, "mckv_missed_received"), 1);
    let logs = cluster.log(0) + &cluster.log(1);
    let handing = logs.lines().find(|l| l.contains("node 2 missed"));
    eprintln!("{}", handing.expect("the source logs what it hands"));
}

/// The same with `catch_up_mb = 0`: no node keeps the writes it
/// delivered, so node 2 is handed the store.
#[test]
fn a_node_behind_is_handed_the_store_when_no_writes_are_kept_for_it() {
    let cluster = paused_for_100_writes("catch_up_mb = 0");
    let settings = request(&mut connect(cluster.port(0)), b"stats settings\r\n");
    assert!(
        settings.contains("STAT mckv_catch_up_bytes 0\r\n"),
        "{settings}"
    );
    let handed: u64 = [0, 1]
        .iter()
        .map(|&n| stat(&cluster, n, "mckv_missed_writes_handed"))
        .sum();
    assert_eq!(handed, 0);
    assert_eq!(stat(&cluster, 2, "mckv_missed_received"), 0);
    assert_eq!(stat(&cluster, 2, "mckv_snapshots_received"), 1);
}

/// A sequential cluster (with `more_keys`) holding 2,000 items, whose node
/// 2 was paused while node 0 wrote `m0`..`m99`, once node 2 holds them:
/// every node then reads the same.
fn paused_for_100_writes(more_keys: &str) -> Cluster {
    let keys =
        format!("heartbeat_ms = 50\npeer_timeout_ms = 500\nbackend_timeout_ms = 3000\n{more_keys}");
    let cluster = start_cluster(3, "sequential", &keys);
    let mut c = connect(cluster.port(0));
    let mut load = Vec::new();
    for i in 0..2_000 {
        load.extend_from_slice(format!("set key{i} 0 0 5\r\nvalue\r\n").as_bytes());
    }
    c.write_all(&load).unwrap();
    let stored = read_until(&mut c, Duration::from_secs(30), |got| {
        got.windows(8).filter(|w| w == b"STORED\r\n").count() == 2_000
    });
    let stored = String::from_utf8_lossy(&stored);
    assert_eq!(stored.matches("STORED\r\n").count(), 2_000, "{stored}");
    cluster.wait_for_value(2, "key1999", "VALUE key1999 0 5\r\nvalue\r\nEND\r\n");

    cluster.nodes[2].signal("STOP");
    until_stored(&mut c, b"set m0 0 0 1\r\n0\r\n", Duration::from_secs(30));
    for i in 1..100 {
        let set = format!("set m{i} 0 0 1\r\n{}\r\n", i % 10);
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }

    cluster.nodes[2].signal("CONT");
    cluster.wait_for_value(2, "m99", "VALUE m99 0 1\r\n9\r\nEND\r\n");
    let mut checked: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    checked.extend(["key0".to_string(), "key1999".to_string()]);
    assert_replicas_identical(&cluster, &checked);
    cluster
}

#[test]
fn a_request_past_its_deadline_is_answered_with_a_timeout() {
    // The peer is silent far longer than the request may wait, but not long
    // enough to count as down: only the request's deadline can answer.
    let keys = "backend_timeout_ms = 1000\npeer_timeout_ms = 20000";
    let cluster = start_cluster(3, "linearizable", keys);
    let mut c = connect(cluster.port(0));
    assert_eq!(request(&mut c, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");
    assert_eq!(stat(&cluster, 0, "mckv_timeouts"), 0);

    cluster.nodes[2].signal("STOP");
    assert_eq!(
        request(&mut c, b"set k 0 0 1\r\nb\r\n"),
        "SERVER_ERROR timeout; the operation may have been applied\r\n"
    );
    assert_eq!(stat(&cluster, 0, "mckv_timeouts"), 1);

    cluster.nodes[2].signal("CONT");
    assert_eq!(request(&mut c, b"set k 0 0 1\r\nc\r\n"), "STORED\r\n");
    assert_replicas_identical(&cluster, &["k".to_string()]);
    assert_eq!(stat(&cluster, 0, "mckv_timeouts"), 1);
}

/// Node 1's config differs from node 0's by `change`: node 0 refuses each
/// of its hellos, logs the first refusal (saying `why`) from that address
/// only, holds it down, and alone is no majority.
fn a_peer_whose_config_differs_is_refused(change: impl Fn(&str) -> String, why: &str) {
    let dir = TempDir::new("secret");
    let (text, ports) = cluster_config(2, "linearizable", "");
    let good = dir.0.join("good.ini");
    let bad = dir.0.join("bad.ini");
    std::fs::write(&good, &text).unwrap();
    std::fs::write(&bad, change(&text)).unwrap();
    let node0 = start_cluster_node(&good, &dir.0, 0, ports[0]);
    let _node1 = start_cluster_node(&bad, &dir.0, 1, ports[1]);
    let log0 = dir.0.join("node0.log");
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match common::stat(node0.port, "mckv_peer_links_refused") >= 3 {
            true => Ok(()),
            false => Err("node 0 did not refuse three hellos".to_string()),
        },
    );
    let log = std::fs::read_to_string(&log0).unwrap_or_default();
    assert_eq!(log.matches(why).count(), 1, "{log}");
    let mut c = connect(node0.port);
    let show = request(&mut c, b"show\r\n");
    assert!(
        show.contains("\r\nNODE 1 ") && show.contains(" down peer "),
        "{show}"
    );
    // One node of two is no majority.
    assert_eq!(
        request(&mut c, b"set k 0 0 1\r\nx\r\n"),
        "SERVER_ERROR no quorum; not applied\r\n"
    );
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused() {
    let guessed = |text: &str| text.replace("secret = test-secret", "secret = guessed");
    a_peer_whose_config_differs_is_refused(guessed, "wrong cluster secret");
}

/// Replicas with another memory cap would evict other keys: a node whose
/// store settings differ is refused like one with another secret.
#[test]
fn a_peer_with_other_store_settings_is_refused() {
    let smaller = |text: &str| text.replace("[cluster]\n", "[cluster]\nmemory_limit_mb = 32\n");
    a_peer_whose_config_differs_is_refused(smaller, "or store settings: memory_limit_mb");
}

#[test]
fn a_stopping_node_tells_its_peers_it_is_leaving() {
    // The failure detector would take a minute: only the leave can make
    // the others form a view without node 1 before the test's 10 s.
    let cluster = start_cluster(3, "sequential", "peer_timeout_ms = 60000");
    let mut c0 = connect(cluster.port(0));
    assert_eq!(request(&mut c0, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");
    cluster.nodes[1].signal("TERM");
    wait_for_state(&cluster, 0, 1, "left");
    wait_for_state(&cluster, 2, 1, "left");
    until_stored(&mut c0, b"set k 0 0 1\r\nb\r\n", Duration::from_secs(10));
    let mut node1 = cluster;
    let status = node1.nodes[1].child.wait().unwrap();
    assert!(status.success(), "SIGTERM exit: {status}");
}

#[test]
fn startup_and_stop_scripts_run_a_cluster_and_leave_nothing_behind() {
    let (text, ports) = cluster_config(3, "linearizable", "");
    run_scripts(&text, &ports);
}

/// The same with each node on a memcached of its own, started by hand as
/// the README says (docker compose runs the same memcacheds where Docker is).
#[test]
fn startup_and_stop_scripts_run_a_cluster_on_memcached_backends() {
    let backends: Vec<_> = (0..3)
        .map(|_| common::start_memcached_with(&["-I", "2m"]))
        .collect();
    let kv = |id: usize| {
        format!(
            "kv_type = memcache\nkv_addr = 127.0.0.1:{}",
            backends[id].port
        )
    };
    let (text, ports) = common::cluster_config_with(3, "linearizable", "", kv);
    run_scripts(&text, &ports);
    // Node 2's memcached holds the write: mckv's 16-byte header, then the value.
    let mut direct = connect(backends[2].port);
    let held = roundtrip(&mut direct, b"get k\r\n", b"END\r\n");
    assert!(held.starts_with(b"VALUE k 0 17\r\n"), "{held:?}");
}

/// `startup.sh` starts the cluster of config `text`, a write on node 0 is
/// read on node 2, and `stop.sh` leaves no process and no pid file behind.
fn run_scripts(text: &str, ports: &[u16]) {
    let dir = TempDir::new("scripts");
    let config = dir.0.join("config.ini");
    std::fs::write(&config, text).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = common::output(
        Command::new(format!("{root}/startup.sh"))
            .arg(&config)
            .env("MCKV_BIN", env!("CARGO_BIN_EXE_mckv")),
    )
    .expect("run startup.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cluster up: 3 nodes"));
    let pids: Vec<String> = (0..3)
        .map(|n| {
            std::fs::read_to_string(dir.0.join(format!("run/node{n}.pid")))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    let mut c = connect(ports[0]);
    assert_eq!(
        roundtrip(&mut c, b"set k 0 0 1\r\nx\r\n", b"\r\n"),
        b"STORED\r\n"
    );
    let mut c2 = connect(ports[2]);
    assert_eq!(
        roundtrip(&mut c2, b"get k\r\n", b"END\r\n"),
        b"VALUE k 0 1\r\nx\r\nEND\r\n"
    );

    let out =
        common::output(Command::new(format!("{root}/stop.sh")).arg(&config)).expect("run stop.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in pids {
        // A zombie (exited, not yet reaped by an init that may never reap
        // it, as in some containers) runs nothing.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state.split(' ').nth(2).is_some_and(|s| s != "Z");
        assert!(!alive, "pid {pid} still running after stop.sh: {state}");
    }
    assert!(!dir.0.join("run/node0.pid").exists());
}

fn stat(cluster: &Cluster, node: usize, name: &str) -> u64 {
    common::stat(cluster.port(node), name)
}

#[test]
fn proposals_and_acks_coalesce_under_load() {
    let cluster = start_cluster(
        3,
        "linearizable",
        "heartbeat_ms = 1000\npeer_timeout_ms = 5000",
    );
    const WRITES: usize = 2000;
    let before = stat(&cluster, 0, "mckv_frames_sent");
    let mut c = connect(cluster.port(0));
    let batch: Vec<u8> = (0..WRITES)
        .flat_map(|i| format!("set k{} 0 0 1 noreply\r\nx\r\n", i % 50).into_bytes())
        .collect();
    c.write_all(&batch).unwrap();
    assert_eq!(
        request(&mut c, b"get k0\r\n"),
        "VALUE k0 0 1\r\nx\r\nEND\r\n"
    );
    let sent = stat(&cluster, 0, "mckv_frames_sent") - before;
    // One frame per operation per peer would be 4000; coalescing sends many
    // operations (and acks) per frame.
    assert!(
        sent < WRITES as u64,
        "{sent} frames for {WRITES} writes to 2 peers"
    );
    assert_eq!(stat(&cluster, 1, "mckv_delivered"), WRITES as u64);
}

/// A node killed with SIGKILL: the other two form a view without it and
/// serve; restarted with an empty store, it is handed the state in a view
/// change and serves again, never answering from its empty store before.
#[test]
fn a_killed_node_leaves_a_majority_serving_and_rejoins_with_the_state() {
    killed_node_rejoins_with_the_state(start_cluster(3, "linearizable", ""));
}

#[test]
fn over_peer_tls_a_killed_node_leaves_a_majority_serving_and_rejoins_with_the_state() {
    let (cluster, _certs) = start_cluster_over_peer_tls(3, "linearizable", "");
    killed_node_rejoins_with_the_state(cluster);
}

/// Node 2 killed (SIGKILL): the majority serves again without it; restarted
/// empty, it is handed the state and answers no read before it holds it.
fn killed_node_rejoins_with_the_state(mut cluster: Cluster) {
    let mut c = connect(cluster.port(0));
    assert_eq!(request(&mut c, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");
    let port = cluster.port(2);
    cluster.nodes[2].signal("KILL");
    let _ = cluster.nodes[2].child.wait();
    let killed = Instant::now();
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match request(&mut c, b"set k2 0 0 1\r\nb\r\n").as_str() {
            "STORED\r\n" => Ok(()),
            other => Err(format!("the majority never served again: {other:?}")),
        },
    );
    eprintln!("served again {:?} after the kill", killed.elapsed());
    cluster.nodes[2] = start_cluster_node(&cluster.config, &cluster.dir.0, 2, port);
    let mut restarted = connect(port);
    let back = Instant::now();
    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let answer = request(&mut restarted, b"get k k2\r\n");
        match answer.as_str() {
            "VALUE k 0 1\r\na\r\nVALUE k2 0 1\r\nb\r\nEND\r\n" => Ok(()),
            a if a.starts_with("SERVER_ERROR ") => Err(format!("not back yet: {a:?}")),
            a => panic!("the restarted node answered from a store it does not hold: {a:?}"),
        }
    });
    eprintln!(
        "the restarted node served {:?} after it started",
        back.elapsed()
    );
    assert_eq!(stat(&cluster, 2, "mckv_snapshots_received"), 1);
    cluster.converged(&["k".to_string(), "k2".to_string()]);
}

/// Node 2 killed and restarted empty while a client writes through node
/// 0, the source of its snapshot (300,000 items: about 40 chunks). Node 0
/// goes on applying the writes while it hands the snapshot, read from an
/// image its store keeps as the view's start left it, and node 2 ends
/// holding every write, those made meanwhile too.
#[test]
fn a_source_applies_writes_while_it_hands_a_restarted_node_the_store() {
    let extra = "memory_limit_mb = 256\nbackend_timeout_ms = 5000";
    let cluster = start_cluster(3, "linearizable", extra);
    a_source_applies_writes_while_it_hands_the_store(cluster, 300_000);
}

/// The same on memcached backends (20,000 items: the source reads them
/// from its memcached), whose image is the keys listed at the first chunk
/// and the record of each key a write reached since, saved before it.
#[test]
fn a_source_on_memcached_applies_writes_while_it_hands_a_restarted_node_the_store() {
    let cluster = start_cluster_on_memcached(3, "sequential", "backend_timeout_ms = 5000");
    a_source_applies_writes_while_it_hands_the_store(cluster, 20_000);
}

fn a_source_applies_writes_while_it_hands_the_store(mut cluster: Cluster, items: usize) {
    let mut c = connect(cluster.port(0));
    let value = "v".repeat(100);
    for batch in (0..items).collect::<Vec<_>>().chunks(10_000) {
        let sets: String = batch
            .iter()
            .map(|i| format!("set item{i} 0 0 100 noreply\r\n{value}\r\n"))
            .collect();
        c.write_all(sets.as_bytes()).unwrap();
    }
    assert_eq!(request(&mut c, b"set w0 0 0 1\r\nx\r\n"), "STORED\r\n");
    cluster.wait_for_value(2, "w0", "VALUE w0 0 1\r\nx\r\nEND\r\n");

    let port = cluster.port(2);
    cluster.nodes[2].signal("KILL");
    let _ = cluster.nodes[2].child.wait();
    let mut written = 1;
    // Each write is stored, or refused while the view changes.
    let mut write = |c: &mut TcpStream| {
        let set = format!("set w{written} 0 0 1\r\n{}\r\n", written % 10);
        match request(c, set.as_bytes()) {
            ok if ok == "STORED\r\n" => written += 1,
            refused if refused.ends_with("; not applied\r\n") => {}
            other => panic!("{other:?}"),
        }
        written
    };
    let mut stored = write(&mut c);
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match write(&mut c) {
            now if now > stored => Ok(()),
            now => Err(format!("the majority never served again ({now} writes)")),
        },
    );
    cluster.nodes[2] = start_cluster_node(&cluster.config, &cluster.dir.0, 2, port);
    let (began, mut slowest) = (Instant::now(), Duration::ZERO);
    while !cluster.log(2).contains("holds the state") {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "node 2 never held the state"
        );
        let sent = Instant::now();
        stored = write(&mut c);
        slowest = slowest.max(sent.elapsed());
    }
    let written = stored;
    let meanwhile = stat(&cluster, 0, "mckv_writes_during_snapshots");
    eprintln!(
        "{written} writes in all, {meanwhile} applied by node 0 while it handed the snapshot; \
         node 2 held the state {:?} after its restart, the slowest write took {slowest:?}",
        began.elapsed()
    );
    assert!(
        meanwhile > 0,
        "node 0 applied no write while it handed the snapshot"
    );
    assert_eq!(stat(&cluster, 0, "mckv_snapshots_sent"), 1);
    let last = written - 1;
    let want = format!("VALUE w{last} 0 1\r\n{}\r\nEND\r\n", last % 10);
    cluster.wait_for_value(2, &format!("w{last}"), &want);
    let mut keys: Vec<String> = (0..written).map(|i| format!("w{i}")).collect();
    keys.extend([0, items / 2, items - 1].map(|i| format!("item{i}")));
    assert_replicas_identical(&cluster, &keys);
}

/// A node on a memcached backend killed with SIGKILL while its memcached
/// keeps running with what it held; the others change, delete and add keys
/// (large ones too) and an item appears in its memcached that the cluster
/// never had. Restarted, it answers only errors until a peer (on memcached
/// as well) has handed it the state, then every key reads the same on every
/// node: nothing of what its memcached held before is left.
fn a_node_on_memcached_rejoins_with_the_state(consistency: &str, killed: usize) {
    const KEYS: usize = 300;
    const LARGE: usize = 200_000;
    let extra = "backend_timeout_ms = 5000";
    let mut cluster = start_cluster_on_memcached(3, consistency, extra);
    let writer = (killed + 1) % 3;
    let mut c = connect(cluster.port(writer));
    let value = |i: usize, round: &str| match i % 30 {
        0 => format!("{round}{i}-").repeat(LARGE / 8),
        _ => format!("{round}{i}"),
    };
    let mut keys: Vec<String> = (0..KEYS).map(|i| format!("key{i}")).collect();
    keys.extend(["100%", "a+b", "ключ", "counter", "stale"].map(String::from));
    let sets: String = keys[..KEYS + 3]
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let v = value(i, "first");
            format!("set {key} {i} 0 {}\r\n{v}\r\n", v.len())
        })
        .chain(["set counter 0 0 1\r\n5\r\n".to_string()])
        .collect();
    let stored = "STORED\r\n".repeat(KEYS + 4);
    let got = roundtrip(&mut c, sets.as_bytes(), stored.as_bytes());
    assert_eq!(String::from_utf8_lossy(&got), stored);
    cluster.wait_for_value(killed, "counter", "VALUE counter 0 1\r\n5\r\nEND\r\n");

    let port = cluster.port(killed);
    cluster.nodes[killed].signal("KILL");
    let _ = cluster.nodes[killed].child.wait();
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match request(&mut c, b"set counter 0 0 1\r\n7\r\n").as_str() {
            "STORED\r\n" => Ok(()),
            other => Err(format!("the majority never served again: {other:?}")),
        },
    );
    let mut changes = String::new();
    for (i, key) in keys[..100].iter().enumerate() {
        match i < 50 {
            true => {
                let v = value(i, "second");
                changes += &format!("set {key} 0 0 {}\r\n{v}\r\n", v.len());
            }
            false => changes += &format!("delete {key}\r\n"),
        }
    }
    changes += "delete ключ\r\n";
    let want = "STORED\r\n".repeat(50) + &"DELETED\r\n".repeat(51);
    let got = roundtrip(&mut c, changes.as_bytes(), want.as_bytes());
    assert_eq!(String::from_utf8_lossy(&got), want);
    let mut direct = connect(cluster.backends[killed].port);
    let mut stale = b"set stale 0 0 17\r\n".to_vec();
    stale.extend_from_slice(b"mkv1\0\0\0\0\0\0\0\x07\0\0\0\0x\r\n"); // mckv's header, then "x"
    assert_eq!(roundtrip(&mut direct, &stale, b"\r\n"), b"STORED\r\n");

    cluster.nodes[killed] = start_cluster_node(&cluster.config, &cluster.dir.0, killed, port);
    let mut restarted = connect(port);
    let first = value(0, "second");
    let want = format!(
        "VALUE key0 0 {}\r\n{first}\r\nVALUE key1 0 7\r\nsecond1\r\nEND\r\n",
        first.len()
    );
    poll(Duration::from_secs(20), Duration::from_millis(20), || {
        let answer = request(&mut restarted, b"get key0 key1 key60 stale\r\n");
        match answer {
            a if a == want => Ok(()),
            a if a.starts_with("SERVER_ERROR ") => Err(format!("not back yet: {a:?}")),
            a => panic!("the restarted node answered from a store it does not hold: {a:.200}"),
        }
    });
    assert_eq!(stat(&cluster, killed, "mckv_snapshots_received"), 1);
    let held = cluster.converged(&keys);
    assert_eq!(held.matches("VALUE ").count(), KEYS - 50 + 3, "{held:.300}");
    assert!(held.contains("VALUE counter 0 1 "), "{held:.300}");
}

#[test]
fn a_node_on_memcached_rejoins_with_the_state_in_linearizable_mode() {
    a_node_on_memcached_rejoins_with_the_state("linearizable", 2);
}

/// Node 0 this time: the state comes from node 1 or 2.
#[test]
fn a_node_on_memcached_rejoins_with_the_state_in_sequential_mode() {
    a_node_on_memcached_rejoins_with_the_state("sequential", 0);
}

/// A restarted node handed a snapshot of several chunks over a thin link
/// (node 0, the source, sends it through a proxy that forwards 1 MB a
/// second) shows how far it has come in `show`
/// (`catch_up_bytes=<done>/<total>`) and `stats`, and once it serves, shows
/// nothing of it any more.
#[test]
fn a_restarted_node_shows_how_far_its_catch_up_has_come() {
    const VALUES: usize = 40;
    const SIZE: usize = 100_000;
    let extra = "heartbeat_ms = 250\npeer_timeout_ms = 5000\nbackend_timeout_ms = 10000";
    let (mut cluster, proxy) = cluster_with_proxied_links("linearizable", extra, 2, &[0]);
    let mut c = connect(cluster.port(0));
    let value = "v".repeat(SIZE);
    for i in 0..VALUES {
        let set = format!("set big{i:02} 0 0 {SIZE}\r\n{value}\r\n");
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }
    let port = cluster.port(2);
    cluster.nodes[2].signal("KILL");
    let _ = cluster.nodes[2].child.wait();
    proxy.throttle(1_000_000);
    // Node 2 is no dialer of the proxy: its config names its real address.
    let direct = cluster.dir.0.join("config-direct.ini");
    cluster.nodes[2] = start_cluster_node(&direct, &cluster.dir.0, 2, port);
    let mut seen = Vec::new();
    poll(Duration::from_secs(20), Duration::from_millis(20), || {
        let show = cluster.show(2);
        let me = show.lines().find(|l| l.contains(" self ")).unwrap_or("");
        if let Some(progress) = me.split(" catch_up_bytes=").nth(1) {
            let (done, total) = progress.split_once('/').expect("done/total");
            seen.push((done.parse::<u64>().unwrap(), total.parse::<u64>().unwrap()));
            assert!(me.contains(" catching-up self "), "{me}");
        }
        match me.contains(" up self ") {
            true => Ok(()),
            false => Err(format!("node 2 never caught up: {show}")),
        }
    });
    let whole = (VALUES * (SIZE + "bigNN".len())) as u64;
    assert!(
        seen.iter()
            .any(|&(done, total)| done < total && total == whole),
        "never seen part way through {whole} bytes: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert_eq!(stat(&cluster, 2, "mckv_catch_up_bytes_total"), 0);
    assert_eq!(stat(&cluster, 2, "mckv_snapshots_received"), 1);
    let keys: Vec<String> = (0..VALUES).map(|i| format!("big{i:02}")).collect();
    cluster.converged(&keys);
}

/// A node restarted after SIGKILL has an empty store; in sequential mode it
/// serves reads locally, so until it holds the cluster's state it must
/// serve none: a `get` of a key the cluster holds answers an error or the
/// value, never a miss (`END`). Its peers are paused while it starts, so it
/// hears nothing from them for a while; once they resume, it rejoins.
#[test]
fn a_restarted_node_answers_no_read_from_its_empty_store() {
    let mut cluster = start_cluster(3, "sequential", "");
    let mut c = connect(cluster.port(0));
    assert_eq!(request(&mut c, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");
    cluster.wait_for_value(2, "k", "VALUE k 0 1\r\na\r\nEND\r\n");
    let port = cluster.port(2);
    cluster.nodes[2].signal("KILL");
    let _ = cluster.nodes[2].child.wait();
    cluster.nodes[0].signal("STOP");
    cluster.nodes[1].signal("STOP");
    cluster.nodes[2] = start_cluster_node(&cluster.config, &cluster.dir.0, 2, port);
    let mut restarted = connect(port);
    let answer = request(&mut restarted, b"get k\r\n");
    cluster.nodes[0].signal("CONT");
    cluster.nodes[1].signal("CONT");
    assert!(
        answer.starts_with("SERVER_ERROR "),
        "while its peers were paused: {answer:?}"
    );
    poll(Duration::from_secs(10), Duration::from_millis(5), || {
        let answer = request(&mut restarted, b"get k\r\n");
        match answer.as_str() {
            "VALUE k 0 1\r\na\r\nEND\r\n" => Ok(()),
            a if a.starts_with("SERVER_ERROR ") => Err(format!("not back yet: {a:?}")),
            a => panic!("after they resumed: {a:?}"),
        }
    });
}

/// Polls `get key` on `node` until it answers `want` (bounded).

#[test]
fn eventual_mode_replicates_and_a_killed_node_catches_up_after_restart() {
    killed_node_catches_up(
        start_cluster(3, "eventual", "sync_interval_ms = 200"),
        |_| {},
    );
}

#[test]
fn over_peer_tls_eventual_mode_replicates_and_a_killed_node_catches_up() {
    let (cluster, _certs) = start_cluster_over_peer_tls(3, "eventual", "sync_interval_ms = 200");
    killed_node_catches_up(cluster, |_| {});
}

/// The same on memcached backends. Node 2's memcached outlives node 2, and
/// an item no replica has a version of (planted while node 2 is down, as an
/// earlier run could have left it) must not be served after the restart.
/// 250 keys written meanwhile come back in sync answers read from memcached
/// in batches.
#[test]
fn eventual_mode_on_memcached_backends_catches_up_after_restart() {
    const MANY: usize = 250;
    let cluster = start_cluster_on_memcached(3, "eventual", "sync_interval_ms = 200");
    let cluster = killed_node_catches_up(cluster, |cluster| {
        let mut direct = connect(cluster.backends[2].port);
        let mut set = b"set leftover 0 0 17\r\n".to_vec();
        set.extend_from_slice(b"mkv1\0\0\0\0\0\0\0\x07\0\0\0\0"); // mckv's header: cas 7, no expiry
        set.extend_from_slice(b"x\r\n");
        assert_eq!(roundtrip(&mut direct, &set, b"\r\n"), b"STORED\r\n");
        let mut c0 = connect(cluster.port(0));
        let sets: String = (0..MANY)
            .map(|i| format!("set many{i} 0 0 1\r\n{}\r\n", i % 10))
            .collect();
        let stored = roundtrip(&mut c0, sets.as_bytes(), &b"STORED\r\n".repeat(MANY));
        assert_eq!(stored, b"STORED\r\n".repeat(MANY));
    });
    let keys: Vec<String> = (0..MANY).map(|i| format!("many{i}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let got = request(&mut connect(cluster.port(2)), line.as_bytes());
        match got.matches("VALUE many").count() == MANY {
            true => Ok(()),
            false => Err(format!("node 2 never got all {MANY}: {got}")),
        }
    });
}

/// Writes replicate; node 2 is killed with SIGKILL, the others write and
/// delete (and `while_down` runs), node 2 restarts and converges with them,
/// deletes included, holding nothing else.
fn killed_node_catches_up(mut cluster: Cluster, while_down: impl FnOnce(&Cluster)) -> Cluster {
    let mut c0 = connect(cluster.port(0));
    assert_eq!(request(&mut c0, b"set a 0 0 3\r\nabc\r\n"), "STORED\r\n");
    cluster.wait_for_value(2, "a", "VALUE a 0 3\r\nabc\r\nEND\r\n");

    let port = cluster.port(2);
    cluster.nodes[2].signal("KILL");
    let _ = cluster.nodes[2].child.wait();
    let mut c1 = connect(cluster.port(1));
    assert_eq!(request(&mut c1, b"set b 0 0 2\r\nhi\r\n"), "STORED\r\n");
    assert_eq!(request(&mut c1, b"delete a\r\n"), "DELETED\r\n");
    // One request at a time: `request` stops at the first whole reply, and
    // a memcached backend's two replies may come in two reads.
    assert_eq!(request(&mut c0, b"set n 0 0 1\r\n5\r\n"), "STORED\r\n");
    assert_eq!(request(&mut c0, b"incr n 2\r\n"), "7\r\n");
    while_down(&cluster);

    // Node 2 comes back empty and syncs everything it missed, deletes included.
    cluster.nodes[2] = start_cluster_node(&cluster.config, &cluster.dir.0, 2, port);
    cluster.wait_for_value(2, "b", "VALUE b 0 2\r\nhi\r\nEND\r\n");
    cluster.wait_for_value(2, "n", "VALUE n 0 1\r\n7\r\nEND\r\n");
    cluster.wait_for_value(2, "a", "END\r\n");
    let keys: Vec<String> = ["a", "b", "n"].iter().map(|k| k.to_string()).collect();
    cluster.converged(&keys);
    cluster.wait_for_value(2, "leftover", "END\r\n");
    assert!(stat(&cluster, 2, "mckv_sync_rounds") > 0);
    assert!(stat(&cluster, 2, "mckv_versions_received") >= 3);
    // Node 0 took the writes; what node 2 missed came in sync answers
    // (from node 0, node 1 or both: either may answer first).
    assert!(stat(&cluster, 0, "mckv_versions_written") >= 3);
    let answered =
        stat(&cluster, 0, "mckv_versions_answered") + stat(&cluster, 1, "mckv_versions_answered");
    assert!(answered >= 3, "{answered} versions answered");
    assert!(cluster.show(0).contains(" sync_lag_ms="));
    cluster
}

#[test]
fn eventual_mode_serves_every_node_while_a_peer_is_down() {
    let cluster = start_cluster(3, "eventual", "sync_interval_ms = 200");
    cluster.nodes[2].signal("STOP");
    wait_for_state(&cluster, 0, 2, "down");
    let mut c = connect(cluster.port(0));
    assert_eq!(request(&mut c, b"set k 0 0 1\r\nx\r\n"), "STORED\r\n");
    cluster.wait_for_value(1, "k", "VALUE k 0 1\r\nx\r\nEND\r\n");
    cluster.nodes[2].signal("CONT");
    cluster.wait_for_value(2, "k", "VALUE k 0 1\r\nx\r\nEND\r\n");
}
