//! Eventual mode's catch-up through the real binary: a node restarted with
//! an empty store next to a peer holding about ten times what one sync
//! answer carries (4 MiB) fetches it all, in parts, each asked for as soon
//! as the one before it is kept.

mod common;

use std::time::Duration;

use common::{connect, poll, request, start_cluster, start_cluster_node, stat};

const VALUES: usize = 40;
const SIZE: usize = 1_000_000;

fn key(i: usize) -> String {
    format!("big{i:02}")
}

/// Each key's value is one letter repeated, a different one per key.
fn value(i: usize) -> String {
    let letter = (b'a' + (i % 26) as u8) as char;
    letter.to_string().repeat(SIZE)
}

/// Node 1 is killed; node 0 takes 40 values of 1,000,000 bytes; node 1
/// restarts empty and ends up holding every one of them, byte for byte as
/// node 0 does. Four such values fit in an answer, so node 1's `stats`
/// count a sync round for each of the ten parts at least. Sync rounds are
/// 30 s apart: the parts arrive within the wait (90 s) only because each
/// is asked for as soon as the one before it is kept.
#[test]
fn a_restarted_node_catches_up_a_store_ten_times_an_answer() {
    let extra = "sync_interval_ms = 30000\nmemory_limit_mb = 256";
    let mut cluster = start_cluster(2, "eventual", extra);
    let port = cluster.port(1);
    cluster.nodes[1].signal("KILL");
    let _ = cluster.nodes[1].child.wait();

    let mut c0 = connect(cluster.port(0));
    for i in 0..VALUES {
        let set = format!("set {} 0 0 {SIZE}\r\n{}\r\n", key(i), value(i));
        assert_eq!(request(&mut c0, set.as_bytes()), "STORED\r\n");
    }

    cluster.nodes[1] = start_cluster_node(&cluster.config, &cluster.dir.0, 1, port);
    poll(
        Duration::from_secs(90),
        Duration::from_millis(100),
        || match stat(port, "curr_items") {
            n if n == VALUES as u64 => Ok(()),
            n => Err(format!("node 1 holds {n} of {VALUES} items after 90 s")),
        },
    );
    let mut c1 = connect(port);
    for i in 0..VALUES {
        let get = format!("gets {}\r\n", key(i));
        let at_node_1 = request(&mut c1, get.as_bytes());
        assert!(at_node_1.contains(&value(i)), "{} at node 1", key(i));
        assert_eq!(at_node_1, request(&mut c0, get.as_bytes()), "{}", key(i));
    }
    let parts = (VALUES / 4) as u64;
    let rounds = stat(port, "mckv_sync_rounds");
    assert!(rounds >= parts, "{rounds} sync rounds for {parts} parts");
    assert!(stat(port, "mckv_versions_received") >= VALUES as u64);
}
