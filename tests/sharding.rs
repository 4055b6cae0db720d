//! The sharding recipe of `examples/sharding/`: twemproxy (`nutcracker`, from
//! Debian) in front of two 3-node mckv replica groups, with the recipe's own
//! `nutcracker.yml` (its addresses moved to free ports). Keys written through
//! the proxy spread across both groups, each key in exactly one, and each
//! group replicates its keys to all of its nodes.
//!
//! Runs where `nutcracker` is installed (CI installs it); elsewhere it says
//! so and passes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{connect, free_port, request, spawn, start_cluster, wait_for_port, ProcessGuard};

const KEYS: usize = 200;

fn nutcracker_installed() -> bool {
    Command::new("nutcracker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The recipe's nutcracker.yml with its listen address on `listen` and
/// its two servers on `group_a` and `group_b`.
fn recipe(listen: u16, group_a: u16, group_b: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sharding/nutcracker.yml");
    let text = std::fs::read_to_string(path).expect("the recipe");
    let moved = text
        .replace("127.0.0.1:22121", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8000:1", &format!("127.0.0.1:{group_a}:1"))
        .replace("127.0.0.1:8100:1", &format!("127.0.0.1:{group_b}:1"));
    assert_ne!(text, moved, "the recipe's addresses moved");
    moved
}

#[test]
fn twemproxy_spreads_keys_across_two_replica_groups() {
    if !nutcracker_installed() {
        eprintln!("nutcracker is not installed: apt-get install nutcracker to run this test");
        return;
    }
    let groups = [
        start_cluster(3, "linearizable", ""),
        start_cluster(3, "sequential", ""),
    ];
    let (listen, stats) = (free_port(), free_port());
    let dir = &groups[0].dir.0;
    let config = dir.join("nutcracker.yml");
    std::fs::write(
        &config,
        recipe(listen, groups[0].port(0), groups[1].port(0)),
    )
    .unwrap();
    let child = spawn(
        Command::new("nutcracker")
            .arg("-c")
            .arg(&config)
            .arg("-o")
            .arg(dir.join("nutcracker.log"))
            .arg("-p")
            .arg(dir.join("nutcracker.pid"))
            .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start nutcracker");
    let _proxy = ProcessGuard {
        child,
        port: listen,
    };
    wait_for_port(listen, Duration::from_secs(10));

    let mut c = connect(listen);
    for k in 0..KEYS {
        let set = format!("set key{k} 0 0 2\r\nv{}\r\n", k % 10);
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n", "key{k}");
    }
    for k in 0..KEYS {
        let got = request(&mut c, format!("get key{k}\r\n").as_bytes());
        assert_eq!(got, format!("VALUE key{k} 0 2\r\nv{}\r\nEND\r\n", k % 10));
    }

    // Read on each group's node 2, which the proxy never talks to.
    let mut held = [0, 0];
    for k in 0..KEYS {
        let line = format!("get key{k}\r\n");
        let found: Vec<bool> = groups
            .iter()
            .map(|g| request(&mut connect(g.port(2)), line.as_bytes()) != "END\r\n")
            .collect();
        assert_eq!(
            found.iter().filter(|&&f| f).count(),
            1,
            "key{k} in exactly one group: {found:?}"
        );
        held[usize::from(found[1])] += 1;
    }
    eprintln!("group a holds {} keys, group b {}", held[0], held[1]);
    assert!(held[0] > KEYS / 5 && held[1] > KEYS / 5, "{held:?}");
}
