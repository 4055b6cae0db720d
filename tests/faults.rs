//! What clients of a real 3-node cluster see when a peer link fails in a
//! way a socket error does not reveal: a link that stays open but delivers
//! nothing (a black hole: no RST, no FIN). A test-owned TCP proxy sits on
//! every link into node 1 (nodes 0 and 2 dial node 1 through it, as their
//! config says; node 1's own config names its real address) and stops
//! forwarding without closing, holding the bytes as a network path that
//! drops packets makes TCP hold them, then forwards them again.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::time::{Duration, Instant};

use common::{connect, poll, request};
use proxy::cluster_behind_proxy;

/// While the links into node 1 deliver nothing, node 1 notices its peers'
/// silence within `peer_timeout_ms` and refuses its clients with `no
/// quorum`, saying nothing was applied; nodes 0 and 2, which still hear node
/// 1 but get no answer from it, form a view without it and serve again
/// (node 0's write during the change may end either way; it is answered
/// within `backend_timeout_ms`, never held for ever). Once the path delivers
/// again, node 1 rejoins, is handed the state, and every node agrees.
#[test]
fn a_black_holed_link_leaves_the_majority_serving_and_the_node_rejoins_after() {
    let (cluster, proxy) = cluster_behind_proxy("linearizable", "backend_timeout_ms = 1000");
    let mut c0 = connect(cluster.port(0));
    assert_eq!(request(&mut c0, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");

    proxy.black_hole(true);
    let holed = Instant::now();
    let mut c1 = connect(cluster.port(1));
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match request(&mut c1, b"get k\r\n").as_str() {
            "SERVER_ERROR no quorum; not applied\r\n" => Ok(()),
            other => Err(format!("node 1 never noticed the silence: {other:?}")),
        },
    );
    let log = cluster.log(1);
    assert!(log.contains("node 0 is silent for over 400 ms"), "{log}");
    assert!(
        !log.contains("link from node 0 closed"),
        "the link stayed open: {log}"
    );

    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let asked = Instant::now();
        let answer = request(&mut c0, b"set k 0 0 1\r\nb\r\n");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "bounded by backend_timeout_ms"
        );
        match answer.as_str() {
            "STORED\r\n" => Ok(()),
            other => Err(format!(
                "nodes 0 and 2 never served without node 1: {other:?}"
            )),
        }
    });
    eprintln!("served again {:?} after the black hole", holed.elapsed());

    proxy.black_hole(false);
    poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match request(&mut c1, b"get k\r\n").as_str() {
            "VALUE k 0 1\r\nb\r\nEND\r\n" => Ok(()),
            a if a.starts_with("SERVER_ERROR ") => Err(format!("node 1 never rejoined: {a:?}")),
            a => panic!("node 1 answered {a:?}"),
        },
    );
    cluster.wait_all_up();
    let agreed = cluster.converged(&["k".to_string()]);
    assert!(agreed.ends_with("\r\nb\r\nEND\r\n"), "{agreed}");
    drop(cluster);
}
