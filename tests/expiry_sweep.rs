//! The embedded store's expiry sweep (memcached's LRU crawler) through the
//! real `mckv server` binary: a store filled to its cap with items that
//! expire frees their memory by itself, with no command touching those
//! keys, and counts it as memcached's crawler does. Every wait is a bounded
//! poll; nothing is asserted on timing.

mod common;

use std::time::Duration;

use common::{connect, poll, request, start_mckv_with, stat};

/// A `set` of `key` with `size` bytes that expires in `exptime` seconds.
fn set(key: &str, size: usize, exptime: u32) -> Vec<u8> {
    let mut bytes = format!("set {key} 0 {exptime} {size}\r\n").into_bytes();
    bytes.resize(bytes.len() + size, b'v');
    bytes.extend_from_slice(b"\r\n");
    bytes
}

const OUT_OF_MEMORY: &str = "SERVER_ERROR out of memory storing object\r\n";

#[test]
fn a_store_full_of_expired_items_frees_their_memory_without_being_asked() {
    const SIZE: usize = 10_000;
    let node = start_mckv_with("memory_limit_mb = 1\neviction = none", "", &[]);
    let mut c = connect(node.port());
    let settings = request(&mut c, b"stats settings\r\n");
    assert!(settings.contains("STAT lru_crawler yes\r\n"), "{settings}");

    // Fill to the cap with items that live 2 s; 1 MiB / 10 kB is about 100.
    let mut stored = 0;
    for i in 0..1000 {
        match request(&mut c, &set(&format!("brief{i}"), SIZE, 2)).as_str() {
            "STORED\r\n" => stored += 1,
            OUT_OF_MEMORY => break,
            other => panic!("set brief{i} after {stored} stored: {other:?}"),
        }
    }
    assert!(
        stored >= 50,
        "only {stored} values of {SIZE} bytes fit in 1 MB"
    );
    // While they live, a write that needs half the memory is refused.
    let half = set("big", 512 * 1024, 0);
    assert_eq!(request(&mut c, &half), OUT_OF_MEMORY);
    let walks = stat(node.port(), "direct_reclaims");

    // No command touches those keys: the sweep alone drops them.
    poll(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || match (stat(node.port(), "curr_items"), stat(node.port(), "bytes")) {
            (0, 0) => Ok(()),
            (items, bytes) => Err(format!("{items} items of {bytes} bytes still held")),
        },
    );
    let port = node.port();
    assert!(stat(port, "crawler_reclaimed") >= stored);
    assert!(stat(port, "crawler_items_checked") >= stored);
    // None was ever fetched: each is an `expired_unfetched`, as memcached's
    // crawler counts them.
    assert!(stat(port, "expired_unfetched") >= stored);
    assert!(stat(port, "lru_crawler_starts") >= 1);
    // memcached's `reclaimed` counts memory a write took from a dead item;
    // the sweep left the writes none to take.
    assert_eq!(stat(port, "reclaimed"), 0);

    // The memory is free: the write fits without a walk over the store.
    assert_eq!(request(&mut c, &half), "STORED\r\n");
    assert_eq!(stat(port, "direct_reclaims"), walks);
    assert_eq!(stat(port, "curr_items"), 1);
}

#[test]
fn with_the_sweep_off_stats_settings_says_there_is_no_crawler() {
    let node = start_mckv_with("expiry_sweep = off", "", &[]);
    let settings = request(&mut connect(node.port()), b"stats settings\r\n");
    assert!(settings.contains("STAT lru_crawler no\r\n"), "{settings}");
    let stats = request(&mut connect(node.port()), b"stats\r\n");
    assert!(stats.contains("STAT lru_crawler_running 0\r\n"), "{stats}");
}

/// In a strong mode the replicas sweep as they apply writes, a few entries
/// with each (see `store/memory.rs`), so every replica frees the same
/// expired items at the same point: once the items expired, writes to
/// another key drive the sweep over them on all three nodes, which end up
/// holding the same items and bytes. Eventual mode's nodes sweep on their
/// timers, each its own.
#[test]
fn strong_replicas_sweep_the_same_expired_items_as_writes_come() {
    const BRIEF: u64 = 300;
    for mode in ["linearizable", "sequential"] {
        let cluster = common::start_cluster(3, mode, "");
        let mut c = connect(cluster.port(0));
        let settings = request(&mut c, b"stats settings\r\n");
        assert!(
            settings.contains("STAT lru_crawler yes\r\n"),
            "{mode}: {settings}"
        );
        for i in 0..BRIEF {
            assert_eq!(
                request(&mut c, &set(&format!("brief{i}"), 100, 1)),
                "STORED\r\n"
            );
        }
        assert_eq!(request(&mut c, &set("kept", 100, 0)), "STORED\r\n");
        // Expired, and nothing written: no node's timer frees them.
        poll(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || match request(&mut c, b"get brief0\r\n").as_str() {
                "END\r\n" => Ok(()),
                other => Err(format!("brief0 never expired: {other:?}")),
            },
        );
        // The writes of the later items may already have swept earlier
        // ones that expired meanwhile (a slow machine): each replica swept
        // the same, so all three hold one count once they applied them all.
        let mut held = 0;
        poll(Duration::from_secs(10), Duration::from_millis(50), || {
            let counts: Vec<u64> = (0..3)
                .map(|n| stat(cluster.port(n), "curr_items"))
                .collect();
            held = counts[0];
            match counts.iter().all(|&c| c == held) {
                true => Ok(()),
                false => Err(format!("{mode}: items per node {counts:?}")),
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        for n in 0..3 {
            assert_eq!(
                stat(cluster.port(n), "curr_items"),
                held,
                "{mode}: node {n} freed items with no write"
            );
        }
        let mut writes = 0;
        poll(Duration::from_secs(30), Duration::from_millis(50), || {
            for _ in 0..10 {
                writes += 1;
                assert_eq!(request(&mut c, &set("tick", 10, 0)), "STORED\r\n");
            }
            let held: Vec<(u64, u64)> = (0..3)
                .map(|n| {
                    (
                        stat(cluster.port(n), "curr_items"),
                        stat(cluster.port(n), "bytes"),
                    )
                })
                .collect();
            match held.iter().all(|&(items, _)| items == 2) {
                true => Ok(()),
                false => Err(format!(
                    "after {writes} writes, (items, bytes) per node: {held:?}"
                )),
            }
        });
        let bytes: Vec<u64> = (0..3).map(|n| stat(cluster.port(n), "bytes")).collect();
        assert!(bytes.iter().all(|&b| b == bytes[0]), "{mode}: {bytes:?}");
        for n in 0..3 {
            let port = cluster.port(n);
            assert!(stat(port, "crawler_reclaimed") >= BRIEF, "{mode}: node {n}");
        }
        let hit = request(&mut connect(cluster.port(2)), b"get kept\r\n");
        assert!(hit.starts_with("VALUE kept 0 100\r\n"), "{mode}: {hit}");
    }
    let cluster = common::start_cluster(3, "eventual", "");
    let settings = request(&mut connect(cluster.port(0)), b"stats settings\r\n");
    assert!(settings.contains("STAT lru_crawler yes\r\n"), "{settings}");
}
