//! What memcached's monitoring and admin tools read from mckv: the
//! Prometheus memcached exporter's scrape, `cache_memlimit`, and counters
//! that say where a cluster's traffic went. The replies' bytes are checked
//! against a real memcached in tests/differential.rs; these tests check
//! what a tool does with them.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{connect, request, start_cluster, start_mckv, start_mckv_with, start_memcached, stat};

/// The exporter's default `--memcached.timeout`: every reply must be whole by then.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// `stats` fields the exporter (v0.11 and later) parses as numbers; a
/// field that is there and is not one makes the scrape fail (`memcached_up
/// 0`). `rusage_*` are parsed as `seconds.micros`.
const EXPORTER_NUMBERS: &[&str] = &[
    "uptime",
    "time",
    "get_hits",
    "get_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "cmd_flush",
    "cmd_set",
    "bytes",
    "limit_maxbytes",
    "curr_items",
    "total_items",
    "bytes_read",
    "bytes_written",
    "curr_connections",
    "total_connections",
    "rejected_connections",
    "conn_yields",
    "listen_disabled_num",
    "evictions",
    "reclaimed",
    "store_too_large",
    "store_no_memory",
    "lru_crawler_starts",
    "direct_reclaims",
    "crawler_items_checked",
    "crawler_reclaimed",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "total_malloced",
    "accepting_conns",
];

/// What one scrape read: `stats`, `stats slabs` and `stats items` merged by
/// name (as the exporter's client merges them), and `stats settings`.
struct Scrape {
    stats: HashMap<String, String>,
    settings: HashMap<String, String>,
}

/// Reads one reply the way the exporter's memcache client does: line by
/// line until `END`, failing on a `CLIENT_ERROR` or when the timeout passes.
fn read_stats(reader: &mut BufReader<TcpStream>, command: &str) -> Result<Vec<String>, String> {
    reader
        .get_mut()
        .write_all(command.as_bytes())
        .map_err(|e| format!("{command:?}: {e}"))?;
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{command:?}: no END within {SCRAPE_TIMEOUT:?}: {lines:?}"
            ));
        }
        reader.get_ref().set_read_timeout(Some(left)).unwrap();
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("{command:?}: connection closed")),
            Ok(_) => {}
            Err(e) => return Err(format!("{command:?}: {e} after {lines:?}")),
        }
        if line == "END\r\n" {
            return Ok(lines);
        }
        if line.starts_with("CLIENT_ERROR") || line.starts_with("ERROR") {
            return Err(format!("{command:?}: {line:?}"));
        }
        lines.push(line.trim_end_matches("\r\n").to_string());
    }
}

/// One scrape of `port`, as the Prometheus memcached exporter makes it:
/// `stats`, `stats slabs`, `stats items` on one connection, then `stats
/// settings`. Fails where the exporter would report `memcached_up 0`.
fn scrape(port: u16) -> Result<Scrape, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut stats = HashMap::new();
    for command in ["stats\r\n", "stats slabs\r\n", "stats items\r\n"] {
        for line in read_stats(&mut reader, command)? {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() != 3 || fields[0] != "STAT" {
                return Err(format!("{command:?}: not a STAT line: {line:?}"));
            }
            stats.insert(fields[1].to_string(), fields[2].to_string());
        }
    }
    let mut settings = HashMap::new();
    for line in read_stats(&mut reader, "stats settings\r\n")? {
        // The exporter's client takes `STAT name value` (or a value of two words).
        let fields: Vec<&str> = line.split(' ').collect();
        if !matches!(fields.len(), 3 | 4) {
            return Err(format!("stats settings: unexpected line {line:?}"));
        }
        settings.insert(fields[1].to_string(), fields[2].to_string());
    }
    for name in EXPORTER_NUMBERS {
        if let Some(value) = stats.get(*name) {
            value
                .parse::<f64>()
                .map_err(|e| format!("{name} {value:?}: {e}"))?;
        }
    }
    for name in ["rusage_user", "rusage_system"] {
        let value = stats.get(name).ok_or(format!("no {name}"))?;
        let (secs, micros) = value.split_once('.').ok_or(format!("{name} {value:?}"))?;
        secs.parse::<u64>().map_err(|e| format!("{name}: {e}"))?;
        micros.parse::<u64>().map_err(|e| format!("{name}: {e}"))?;
    }
    settings
        .get("maxconns")
        .ok_or("no maxconns")?
        .parse::<f64>()
        .map_err(|e| format!("maxconns: {e}"))?;
    Ok(Scrape { stats, settings })
}

/// Writes a few items (one with a `:` prefix) and reads them back, so the
/// scrape sees a store that has worked.
fn some_traffic(port: u16) {
    let mut c = connect(port);
    for i in 0..20 {
        let set = format!("set user:{i} 0 0 5\r\nhello\r\n");
        assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    }
    assert!(request(&mut c, b"get user:1 user:99\r\n").starts_with("VALUE user:1 0 5"));
}

/// Every reply of the scrape ends in `END` in time, and parses as the
/// exporter parses it, so it reports `memcached_up 1` and the metric
/// families a memcached with an empty slab allocator gives.
fn the_scrape_succeeds(port: u16) -> Scrape {
    let scrape = scrape(port).unwrap_or_else(|e| panic!("the exporter's scrape fails: {e}"));
    assert_eq!(scrape.stats["version"], "1.6.0");
    assert_eq!(scrape.stats["curr_items"], "20");
    assert_eq!(scrape.stats["active_slabs"], "0");
    assert_eq!(scrape.settings["maxconns"], "1024");
    scrape
}

/// The fields the exporter reads (its metric families) that `port` reports.
fn exporter_fields(port: u16) -> Vec<String> {
    let scrape = scrape(port).unwrap_or_else(|e| panic!("scrape of {port}: {e}"));
    let mut names: Vec<String> = scrape
        .stats
        .keys()
        .filter(|name| {
            EXPORTER_NUMBERS.contains(&name.as_str())
                || name.contains(':')
                || name.starts_with("rusage_")
        })
        .cloned()
        .collect();
    names.sort();
    names
}

#[test]
fn the_exporter_reads_the_same_fields_from_mckv_as_from_an_empty_memcached() {
    let memcached = start_memcached();
    let node = start_mckv("", &[]);
    assert_eq!(
        exporter_fields(node.port()),
        exporter_fields(memcached.port)
    );
}

#[test]
fn the_exporters_scrape_of_one_node_ends_every_reply_in_end() {
    let node = start_mckv("", &[]);
    some_traffic(node.port());
    let scrape = the_scrape_succeeds(node.port());
    assert_eq!(scrape.stats["cmd_set"], "20");
    assert_eq!(scrape.stats["get_hits"], "1");
}

#[test]
fn the_exporters_scrape_of_every_node_of_a_cluster_ends_every_reply_in_end() {
    let cluster = start_cluster(3, "linearizable", "");
    some_traffic(cluster.port(0));
    for node in 0..3 {
        // Replicas catch up at once in this mode: a write is answered once ordered everywhere.
        let scrape = common::poll(Duration::from_secs(5), Duration::from_millis(50), || {
            let scrape = scrape(cluster.port(node))?;
            match scrape.stats["curr_items"].as_str() {
                "20" => Ok(scrape),
                n => Err(format!("node {node} holds {n} items")),
            }
        });
        assert_eq!(scrape.stats["mckv_node"], node.to_string());
    }
}

/// A value of 1,000,000 bytes: nine of them pass 8 MB.
fn big_set(key: &str) -> Vec<u8> {
    let mut set = format!("set {key} 0 0 1000000\r\n").into_bytes();
    set.extend(std::iter::repeat_n(b'v', 1_000_000));
    set.extend_from_slice(b"\r\n");
    set
}

/// `cache_memlimit` changes the embedded store's limit at once. memcached
/// refuses a limit under 8 MB (so `cache_memlimit 1` changes nothing); at
/// 8 MB the ninth value of a megabyte no longer fits, and a store that
/// does not evict (memcached's `-M`) refuses it.
#[test]
fn cache_memlimit_8_makes_a_set_past_it_fail_with_out_of_memory() {
    let node = start_mckv_with("eviction = none", "", &[]);
    let mut c = connect(node.port());
    assert_eq!(
        request(&mut c, b"cache_memlimit 1\r\n"),
        "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
    );
    assert_eq!(request(&mut c, b"cache_memlimit 8\r\n"), "OK\r\n");
    let stats = request(&mut c, b"stats\r\n");
    assert!(stats.contains("STAT limit_maxbytes 8388608\r\n"), "{stats}");
    let settings = request(&mut c, b"stats settings\r\n");
    assert!(settings.contains("STAT maxbytes 8388608\r\n"), "{settings}");
    for i in 0..8 {
        let key = format!("big{i}");
        assert_eq!(request(&mut c, &big_set(&key)), "STORED\r\n", "{key}");
    }
    assert_eq!(
        request(&mut c, &big_set("big8")),
        "SERVER_ERROR out of memory storing object\r\n"
    );
    let stats = request(&mut c, b"stats\r\n");
    assert!(stats.contains("STAT store_no_memory 1\r\n"), "{stats}");
    assert!(stats.contains("STAT curr_items 8\r\n"), "{stats}");
    assert_eq!(request(&mut c, b"cache_memlimit 64\r\n"), "OK\r\n");
    assert_eq!(request(&mut c, &big_set("big8")), "STORED\r\n");
    let show = request(&mut c, b"show\r\n");
    assert!(show.contains(" eviction=none"), "{show}");
}

/// A store that evicts, as memcached does unless started with `-M`, makes
/// room for the ninth value of a megabyte by evicting; once the clock has
/// gone round (every value was new), a value read since is spared and one
/// nobody used goes.
#[test]
fn a_full_store_evicts_the_least_recently_used_value() {
    let node = start_mckv("", &[]);
    let mut c = connect(node.port());
    let held = |c: &mut TcpStream, key: &str| {
        let hit = request(c, format!("get {key}\r\n").as_bytes());
        hit.starts_with(&format!("VALUE {key} 0 1000000\r\n"))
    };
    assert_eq!(request(&mut c, b"cache_memlimit 8\r\n"), "OK\r\n");
    for i in 0..9 {
        let key = format!("big{i}");
        assert_eq!(request(&mut c, &big_set(&key)), "STORED\r\n", "{key}");
    }
    assert!(!held(&mut c, "big0"), "the oldest went first");
    assert!(held(&mut c, "big1"));
    assert_eq!(request(&mut c, &big_set("big9")), "STORED\r\n");
    assert!(held(&mut c, "big1"), "big1 was read: spared");
    assert!(!held(&mut c, "big2"), "big2 was not: evicted");
    let port = node.port();
    assert_eq!(
        (stat(port, "evictions"), stat(port, "evicted_unfetched")),
        (2, 2)
    );
    assert_eq!(stat(port, "curr_items"), 8);
    assert!(stat(port, "bytes") <= 8 << 20);
    let settings = request(&mut c, b"stats settings\r\n");
    assert!(settings.contains("STAT evictions on\r\n"), "{settings}");
    let show = request(&mut c, b"show\r\n");
    assert!(show.contains(" eviction=lru"), "{show}");
}

/// In a strong mode every replica must evict (or refuse) the same writes,
/// so its nodes share the cluster's `memory_limit_mb`: `cache_memlimit` on
/// one of them is refused, and the log says why.
#[test]
fn cache_memlimit_on_a_strong_cluster_node_is_refused() {
    let cluster = start_cluster(3, "sequential", "");
    let mut c = connect(cluster.port(1));
    assert_eq!(
        request(&mut c, b"cache_memlimit 64\r\n"),
        "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n"
    );
    common::poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let log = cluster.log(1);
        match log.contains("set memory_limit_mb in [cluster]") {
            true => Ok(()),
            false => Err(format!("the log does not say why:\n{log}")),
        }
    });
}

/// A node on a memcached backend does not change that memcached's memory,
/// which is its own: it answers as memcached does when it cannot adjust.
#[test]
fn cache_memlimit_on_a_memcache_backend_is_refused() {
    let backend = start_memcached();
    let kv = format!("kv_type = memcache\nkv_addr = 127.0.0.1:{}", backend.port);
    let node = start_mckv_with("", &kv, &[]);
    let mut c = connect(node.port());
    assert_eq!(
        request(&mut c, b"cache_memlimit 8\r\n"),
        "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n"
    );
}

/// Commands count on the node that took them; the others hold the items
/// but count no command, so the nodes' counters add up to the traffic.
/// `stats` pipelined behind writes waits for them and counts them.
#[test]
fn a_cluster_counts_each_command_once_on_the_node_that_took_it() {
    let cluster = start_cluster(3, "linearizable", "");
    let mut c = connect(cluster.port(0));
    let mut pipeline = Vec::new();
    for i in 0..10 {
        pipeline.extend_from_slice(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes());
    }
    pipeline.extend_from_slice(b"get k0 k1 nope\r\nstats\r\n");
    c.write_all(&pipeline).unwrap();
    let replies = common::read_until(&mut c, Duration::from_secs(5), |got| {
        got.ends_with(b"END\r\n") && got.windows(9).any(|w| w == b"STAT pid ")
    });
    let replies = String::from_utf8_lossy(&replies);
    assert!(replies.contains("STAT cmd_set 10\r\n"), "{replies}");
    assert!(replies.contains("STAT get_hits 2\r\n"), "{replies}");
    assert!(replies.contains("STAT get_misses 1\r\n"), "{replies}");
    for node in 1..3 {
        let port = cluster.port(node);
        common::poll(
            Duration::from_secs(5),
            Duration::from_millis(50),
            || match stat(port, "curr_items") {
                10 => Ok(()),
                n => Err(format!("node {node} holds {n} items")),
            },
        );
        assert_eq!(stat(port, "cmd_set"), 0, "node {node}");
        assert_eq!(stat(port, "cmd_get"), 0, "node {node}");
        assert_eq!(stat(port, "total_items"), 0, "node {node}");
    }
}
