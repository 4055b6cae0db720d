//! Robustness tests against the real `mckv server` binary: many clients at
//! once, a client that never reads, requests split over pauses, oversized
//! values, garbage input, SIGTERM under load, the memory cap, and the
//! client limits (`max_connections`, `idle_timeout_s`). Every check
//! is on what a client sees (reply bytes, exit status) or on a memory bound;
//! none is on timing. Every loop is bounded in count and time.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::rng::Rng;
use common::{
    connect, read_to_eof, read_until, roundtrip, rss_kib, start_mckv_with, start_memcached,
    start_memcached_with, MckvNode,
};

const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A node with `cluster_keys` added to its `[cluster]` section.
fn start_with_cluster(cluster_keys: &str) -> MckvNode {
    start_mckv_with(cluster_keys, "", &[])
}

fn start() -> MckvNode {
    start_with_cluster("")
}

/// `stats` over a fresh connection, as name → value.
fn stats(port: u16) -> HashMap<String, String> {
    stats_on(&mut connect(port), "stats")
}

/// `stats` (or a group, `stats settings`) on `stream`, as name → value.
fn stats_on(s: &mut TcpStream, command: &str) -> HashMap<String, String> {
    let reply = roundtrip(s, format!("{command}\r\n").as_bytes(), b"END\r\n");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.ends_with("END\r\n"), "stats reply: {text:?}");
    text.lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn stat_u64(stats: &HashMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no STAT {name} in {stats:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("STAT {name} {:?}: {e}", stats[name]))
}

fn get_reply(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\nEND\r\n");
    out
}

fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// A set then a get of `key` on `stream`, checking both replies exactly.
fn check_set_get(stream: &mut TcpStream, key: &str, value: &[u8]) {
    let got = roundtrip(stream, &set_request(key, value), b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "STORED\r\n",
        "set {key} on a fresh connection"
    );
    let want = get_reply(key, 0, value);
    let got = roundtrip(stream, format!("get {key}\r\n").as_bytes(), b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "get {key}"
    );
}

fn assert_alive(node: &mut MckvNode) {
    let status = node.process.child.try_wait().expect("try_wait");
    assert!(
        status.is_none(),
        "mckv exited ({status:?}); log:\n{}",
        node.log()
    );
}

// ---------------------------------------------------------------------------
// 1. Connection storm
// ---------------------------------------------------------------------------

#[test]
fn connection_storm_of_300_clients() {
    const THREADS: usize = 10;
    const PER_THREAD: usize = 30;
    let node = start();
    let port = node.port();
    // All sockets are opened at once and held until every one is connected,
    // then each does its own set/get, then all are dropped.
    let connected = Arc::new(Barrier::new(THREADS + 1));
    let served = Arc::new(Barrier::new(THREADS + 1));
    let release = Arc::new(Barrier::new(THREADS + 1));
    let failures = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (connected, served, release, failures) = (
                connected.clone(),
                served.clone(),
                release.clone(),
                failures.clone(),
            );
            thread::spawn(move || {
                let mut socks: Vec<(usize, TcpStream)> = (0..PER_THREAD)
                    .map(|i| (t * PER_THREAD + i, connect(port)))
                    .collect();
                connected.wait();
                for (n, sock) in socks.iter_mut() {
                    let key = format!("storm{n}");
                    let value = format!("value-of-client-{n}-{}", "x".repeat(*n % 50));
                    let got = roundtrip(sock, &set_request(&key, value.as_bytes()), b"\r\n");
                    let want = get_reply(&key, 0, value.as_bytes());
                    let got2 = roundtrip(sock, format!("get {key}\r\n").as_bytes(), b"END\r\n");
                    if got != b"STORED\r\n" || got2 != want {
                        eprintln!(
                            "client {n}: set -> {:?}, get -> {:?}",
                            String::from_utf8_lossy(&got),
                            String::from_utf8_lossy(&got2)
                        );
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                served.wait();
                release.wait();
                drop(socks);
            })
        })
        .collect();
    connected.wait();
    // Once every client was served, all 300 are accepted and still open.
    served.wait();
    let during = stats(port);
    release.wait();
    for h in handles {
        h.join().expect("client thread");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "clients saw wrong replies"
    );
    assert!(
        stat_u64(&during, "curr_connections") >= 300,
        "while 300 clients were connected: {during:?}"
    );
    // Closes are noticed asynchronously: poll until the count drops.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last;
    loop {
        last = stats(port);
        if stat_u64(&last, "curr_connections") <= 5 || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        stat_u64(&last, "curr_connections") <= 5,
        "connections not released: {last:?}"
    );
    assert!(stat_u64(&last, "total_connections") >= 300, "{last:?}");
}

// ---------------------------------------------------------------------------
// 2. Slow reader
// ---------------------------------------------------------------------------

#[test]
fn slow_reader_does_not_block_others_or_grow_memory() {
    slow_reader(start());
}

/// With a reply buffer of 8 KiB (smaller than one reply), the slow reader
/// is read one request at a time and still gets every byte in order.
#[test]
fn a_small_max_reply_buffer_still_serves_a_slow_reader_in_order() {
    let node = start_with_cluster("max_reply_buffer = 8192");
    let settings = stats_on(&mut connect(node.port()), "stats settings");
    assert_eq!(settings["mckv_max_reply_buffer"], "8192");
    slow_reader(node);
}

/// A client pipelines 2,000 gets of a 100 kB value and reads nothing for a
/// second: another client is served meanwhile, the node's memory stays
/// bounded, and the slow client then gets every reply, in order.
fn slow_reader(node: MckvNode) {
    const GETS: usize = 2000;
    const SIZE: usize = 100_000;
    const RSS_LIMIT_KIB: u64 = 100 * 1024;
    let port = node.port();
    let pid = node.process.pid();
    let mut rng = Rng(0x5eed_0002);
    let value: Vec<u8> = (0..SIZE).map(|_| b'a' + rng.below(26) as u8).collect();
    let mut slow = connect(port);
    check_set_get(&mut slow, "slowbig", &value);
    let one_reply = get_reply("slowbig", 0, &value);

    // Pipeline every get without reading a byte of the ~200 MB of replies.
    let requests = b"get slowbig\r\n".repeat(GETS);
    slow.write_all(&requests).expect("pipeline gets");

    // Let the server produce as much as it will.
    let mut peak = 0;
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(pid));
    }

    // Another client is served meanwhile.
    let mut other = connect(port);
    check_set_get(&mut other, "other", b"still-served");
    check_set_get(&mut other, "other2", &value[..1000]);
    peak = peak.max(rss_kib(pid));

    // Now drain the slow client, checking every byte against the expected stream.
    let total = one_reply.len() * GETS;
    let mut offset = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reads = 0u64;
    while offset < total && Instant::now() < deadline {
        let n = match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("slow client read after {offset} of {total} bytes: {e}"),
        };
        for (i, &b) in buf[..n].iter().enumerate() {
            let pos = (offset + i) % one_reply.len();
            if b != one_reply[pos] {
                panic!(
                    "reply byte {} (byte {pos} of reply {}) is {b:?}, expected {:?}",
                    offset + i,
                    (offset + i) / one_reply.len(),
                    one_reply[pos]
                );
            }
        }
        offset += n;
        reads += 1;
        if reads.is_multiple_of(64) {
            peak = peak.max(rss_kib(pid));
        }
    }
    assert_eq!(offset, total, "slow client got {offset} of {total} bytes");
    // Nothing more than the replies.
    let extra = read_until(&mut slow, Duration::from_millis(200), |got| !got.is_empty());
    assert!(extra.is_empty(), "extra bytes after the replies: {extra:?}");
    assert!(
        peak < RSS_LIMIT_KIB,
        "server RSS peaked at {peak} KiB while a client had {} MB of replies unread",
        total >> 20
    );
    check_set_get(&mut slow, "after-slow", b"ok");
}

// ---------------------------------------------------------------------------
// 3. Requests split over pauses, and half requests then close
// ---------------------------------------------------------------------------

#[test]
fn half_a_command_then_pause() {
    let node = start();
    let port = node.port();
    let mut first = connect(port);
    first.write_all(b"set half 0 0 10\r\nabc").unwrap();
    // Another client is served while the first is stuck mid-value.
    let mut second = connect(port);
    check_set_get(&mut second, "meanwhile", b"served");
    thread::sleep(Duration::from_millis(300));
    // Nothing was answered to the half request yet.
    let early = read_until(&mut first, Duration::from_millis(100), |g| !g.is_empty());
    assert!(early.is_empty(), "reply to half a set: {early:?}");
    let got = roundtrip(&mut first, b"defghij\r\n", b"\r\n");
    assert_eq!(String::from_utf8_lossy(&got), "STORED\r\n");
    let got = roundtrip(&mut first, b"get half\r\n", b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "VALUE half 0 10\r\nabcdefghij\r\nEND\r\n"
    );

    // A command line split in the middle of its key.
    first.write_all(b"get ha").unwrap();
    thread::sleep(Duration::from_millis(300));
    let got = roundtrip(&mut first, b"lf\r\n", b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "VALUE half 0 10\r\nabcdefghij\r\nEND\r\n"
    );

    // Half a line, then the client goes away.
    let mut quitter = connect(port);
    quitter.write_all(b"get ").unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(quitter);
    // Half a value, then the client goes away: nothing is stored.
    let mut quitter = connect(port);
    quitter.write_all(b"set halfgone 0 0 100\r\nabc").unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(quitter);
    thread::sleep(Duration::from_millis(100));

    let mut fresh = connect(port);
    check_set_get(&mut fresh, "fresh", b"works");
    let got = roundtrip(&mut fresh, b"get halfgone\r\n", b"END\r\n");
    assert_eq!(String::from_utf8_lossy(&got), "END\r\n");
    let got = roundtrip(&mut second, b"get half\r\n", b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "VALUE half 0 10\r\nabcdefghij\r\nEND\r\n"
    );
}

// ---------------------------------------------------------------------------
// 4. Values over the size limit
// ---------------------------------------------------------------------------

/// Sends a `set` of `len` bytes (optionally noreply), then `get`, returns all replies.
fn oversized_set_then_get(port: u16, key: &str, len: usize, noreply: bool) -> Vec<u8> {
    let mut s = connect(port);
    let mut request = format!(
        "set {key} 0 0 {len}{}\r\n",
        if noreply { " noreply" } else { "" }
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'z', len));
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(format!("get {key}\r\n").as_bytes());
    // Write from a thread: the server may answer before it has read it all.
    let mut writer = s.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&request));
    let got = read_until(&mut s, Duration::from_secs(10), |g| g.ends_with(b"END\r\n"));
    sender.join().unwrap().expect("send the oversized set");
    got
}

#[test]
fn giant_value_is_swallowed_and_refused() {
    const BIG: usize = 2_000_000;
    let node = start();
    let memcached = start_memcached();
    for (name, port) in [("mckv", node.port()), ("memcached", memcached.port)] {
        let got = oversized_set_then_get(port, "big", BIG, true);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "END\r\n",
            "{name}: noreply set of {BIG} bytes, then get"
        );
        let got = oversized_set_then_get(port, "big2", BIG, false);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "SERVER_ERROR object too large for cache\r\nEND\r\n",
            "{name}: set of {BIG} bytes, then get"
        );
    }
    let mut s = connect(node.port());
    check_set_get(&mut s, "small-after-big", b"fine");
}

/// Stores `key` with `flags` and `len` bytes; returns the reply line.
fn store_len(s: &mut TcpStream, key: &str, flags: u32, len: usize) -> Vec<u8> {
    let mut request = format!("set {key} {flags} 0 {len}\r\n").into_bytes();
    request.extend(std::iter::repeat_n(b'v', len));
    request.extend_from_slice(b"\r\n");
    roundtrip(s, &request, b"\r\n")
}

#[test]
fn value_exactly_at_a_configured_limit() {
    // memcached's rule (-I): 59 bytes of item header + key + value (+ 4 bytes
    // when flags are not 0) must fit item_size_max. The same probes run
    // against memcached -I 1024 and mckv with item_size_max = 1024.
    const ITEM_SIZE_MAX: usize = 1024;
    let node = start_with_cluster("item_size_max = 1024");
    let memcached = start_memcached_with(&["-I", "1024", "-o", "slab_chunk_max=512"]);
    for (name, port) in [("mckv", node.port()), ("memcached", memcached.port)] {
        let mut s = connect(port);
        for (key, flags) in [("k", 0), ("at-limit", 0), ("k", 5), ("at-limit", 77)] {
            let fits = ITEM_SIZE_MAX - 59 - key.len() - if flags == 0 { 0 } else { 4 };
            let got = store_len(&mut s, key, flags, fits);
            assert_eq!(
                String::from_utf8_lossy(&got),
                "STORED\r\n",
                "{name}: set {key} flags {flags}, {fits} bytes"
            );
            let want = get_reply(key, flags, &vec![b'v'; fits]);
            let got = roundtrip(&mut s, format!("get {key}\r\n").as_bytes(), b"END\r\n");
            assert!(got == want, "{name}: get {key} after storing {fits} bytes");
            // One byte more is refused, and (set) drops the stored item.
            let got = store_len(&mut s, key, flags, fits + 1);
            assert_eq!(
                String::from_utf8_lossy(&got),
                "SERVER_ERROR object too large for cache\r\n",
                "{name}: set {key} flags {flags}, {} bytes",
                fits + 1
            );
            let got = roundtrip(&mut s, format!("get {key}\r\n").as_bytes(), b"END\r\n");
            assert_eq!(
                String::from_utf8_lossy(&got),
                "END\r\n",
                "{name}: get {key} after a too-large set"
            );
        }
        check_set_get(&mut s, "after", b"connection still in sync");
    }
}

// ---------------------------------------------------------------------------
// 5. Garbage input
// ---------------------------------------------------------------------------

const TEMPLATES: &[&[u8]] = &[
    b"get k1\r\n",
    b"gets k1 k2 k3\r\n",
    b"set k1 0 0 5\r\nhello\r\n",
    b"add k2 7 100 3\r\nabc\r\n",
    b"replace k1 0 0 2\r\nxy\r\n",
    b"append k1 0 0 1\r\nz\r\n",
    b"prepend k1 0 0 1\r\na\r\n",
    b"cas k1 0 0 1 12345\r\nb\r\n",
    b"incr n 5\r\n",
    b"decr n 18446744073709551615\r\n",
    b"touch k1 10\r\n",
    b"gat 10 k1 k2\r\n",
    b"gats 0 k1\r\n",
    b"delete k1\r\n",
    b"delete k1 noreply\r\n",
    b"set k3 0 0 4 noreply\r\nnope\r\n",
    b"stats\r\n",
    b"stats settings\r\n",
    b"version\r\n",
    b"verbosity 1\r\n",
    b"show\r\n",
    b"quit\r\n",
];

/// One fragment of garbage: random bytes, or a mutated valid request.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => (0..rng.below(200) + 1).map(|_| rng.next() as u8).collect(),
        1 => {
            // A long line, sometimes without its end.
            let mut v: Vec<u8> = (0..rng.below(5000) + 100)
                .map(|_| b' ' + rng.below(95) as u8)
                .collect();
            if rng.below(2) == 0 {
                v.extend_from_slice(b"\r\n");
            }
            v
        }
        2 => {
            // Odd numbers in a storage command.
            let numbers = [
                "-1",
                "0",
                "4294967296",
                "18446744073709551616",
                "99999999999999999999999",
                "abc",
                "",
                "1e3",
                "+5",
            ];
            let cmd = ["set", "add", "cas", "incr", "touch", "gat", "get"][rng.below(7)];
            let key_len = [1, 249, 250, 251, 300][rng.below(5)];
            let mut line = format!("{cmd} {}", "k".repeat(key_len));
            for _ in 0..rng.below(6) {
                line.push(' ');
                line.push_str(numbers[rng.below(numbers.len())]);
            }
            line.push_str(["\r\n", "\n", "\r", ""][rng.below(4)]);
            line.into_bytes()
        }
        3 => {
            // Many tokens.
            let mut line = b"get".to_vec();
            for i in 0..rng.below(40) {
                line.extend_from_slice(format!(" t{i}").as_bytes());
            }
            line.extend_from_slice(b"\r\n");
            line
        }
        _ => {
            let mut v = TEMPLATES[rng.below(TEMPLATES.len())].to_vec();
            for _ in 0..rng.below(4) {
                if v.is_empty() {
                    break;
                }
                let at = rng.below(v.len());
                match rng.below(4) {
                    0 => v[at] = rng.next() as u8,
                    1 => {
                        v.remove(at);
                    }
                    2 => v.insert(at, [b' ', b'\r', b'\n', 0, b'9'][rng.below(5)]),
                    _ => v.truncate(at),
                }
            }
            v
        }
    }
}

#[test]
fn malformed_input_never_kills_the_node() {
    const CONNECTIONS: u64 = 4;
    const FRAGMENTS: usize = 400;
    let mut node = start();
    let port = node.port();
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            thread::spawn(move || {
                let mut rng = Rng(0x9a7b_a9e0 + c * 7919);
                let deadline = Instant::now() + Duration::from_secs(8);
                let mut stream = connect(port);
                stream
                    .set_read_timeout(Some(Duration::from_millis(1)))
                    .unwrap();
                let mut reconnects = 0;
                let mut sink = [0u8; 65536];
                for _ in 0..FRAGMENTS {
                    if Instant::now() > deadline {
                        break;
                    }
                    let fragment = garbage(&mut rng);
                    let mut closed = stream.write_all(&fragment).is_err();
                    // Take whatever replies are there, so the server never
                    // stops reading us for unread output.
                    loop {
                        match stream.read(&mut sink) {
                            Ok(0) => {
                                closed = true;
                                break;
                            }
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) =>
                            {
                                break
                            }
                            Err(_) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    if closed {
                        reconnects += 1;
                        stream = connect(port);
                        stream
                            .set_read_timeout(Some(Duration::from_millis(1)))
                            .unwrap();
                    }
                }
                reconnects
            })
        })
        .collect();
    let reconnects: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("garbage connections closed by the server or by quit: {reconnects}");
    assert_alive(&mut node);
    let mut fresh = connect(port);
    check_set_get(&mut fresh, "after-garbage", b"still correct");
    let got = roundtrip(&mut fresh, b"version\r\n", b"\r\n");
    assert!(got.starts_with(b"VERSION "), "version: {got:?}");
    assert_alive(&mut node);
    common::assert_rss_bounded(node.process.pid(), "garbage from four connections");
}

// ---------------------------------------------------------------------------
// 6. SIGTERM under load
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
struct LoadOutcome {
    completed: usize,
    closed: usize,
    bad: Vec<String>,
}

/// Reads until `want.len()` bytes came, or EOF/error, or `WAIT` passed.
/// Returns the bytes and whether the connection ended.
fn read_reply(stream: &mut TcpStream, want: &[u8]) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while got.len() < want.len() && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

fn load_client(port: u16, id: usize, done: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> LoadOutcome {
    let mut out = LoadOutcome::default();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(_) => {
            out.closed += 1;
            return out;
        }
    };
    let _ = stream.set_write_timeout(Some(WAIT));
    for i in 0..20_000 {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("load{id}_{i}");
        let value = format!("v{id}-{i}-{}", "p".repeat(i % 64));
        let exchanges = [
            (set_request(&key, value.as_bytes()), b"STORED\r\n".to_vec()),
            (
                format!("get {key}\r\n").into_bytes(),
                get_reply(&key, 0, value.as_bytes()),
            ),
        ];
        for (request, want) in exchanges {
            if stream.write_all(&request).is_err() {
                out.closed += 1;
                return out;
            }
            let (got, ended) = read_reply(&mut stream, &want);
            if got == want {
                out.completed += 1;
                done.fetch_add(1, Ordering::Relaxed);
            } else if got.is_empty() && ended {
                // Refused or closed before any byte of a reply: acceptable.
                out.closed += 1;
                return out;
            } else {
                out.bad.push(format!(
                    "client {id} sent {:?}, got {:?} (ended: {ended})",
                    String::from_utf8_lossy(&request),
                    String::from_utf8_lossy(&got)
                ));
                return out;
            }
        }
    }
    out
}

#[test]
fn sigterm_mid_load_exits_cleanly() {
    let mut node = start();
    let port = node.port();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..4)
        .map(|id| {
            let (done, stop) = (done.clone(), stop.clone());
            thread::spawn(move || load_client(port, id, done, stop))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < 400 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let before = done.load(Ordering::Relaxed);
    node.process.signal("TERM");

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.process.child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<LoadOutcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let status = status.unwrap_or_else(|| panic!("mckv still runs 10 s after SIGTERM"));
    assert!(
        before >= 400,
        "only {before} replies before SIGTERM: {outcomes:?}"
    );
    let bad: Vec<&String> = outcomes.iter().flat_map(|o| &o.bad).collect();
    assert!(bad.is_empty(), "incomplete or wrong replies: {bad:#?}");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let log = node.log();
    assert!(
        log.to_lowercase().contains("signal") || log.contains("SIGTERM"),
        "log does not mention the signal:\n{log}"
    );
    let completed: usize = outcomes.iter().map(|o| o.completed).sum();
    let closed: usize = outcomes.iter().map(|o| o.closed).sum();
    eprintln!(
        "SIGTERM after {before} replies; {completed} complete replies, {closed} connections closed"
    );
}

// ---------------------------------------------------------------------------
// 7. Memory cap
// ---------------------------------------------------------------------------

#[test]
fn memory_cap_refuses_then_flush_recovers() {
    const SIZE: usize = 10_000;
    let node = start_with_cluster("memory_limit_mb = 1\neviction = none");
    let mut s = connect(node.port());
    let value = |i: usize| -> Vec<u8> {
        let mut v = format!("{i:08}").into_bytes();
        v.resize(SIZE, b'a' + (i % 26) as u8);
        v
    };
    let mut stored = 0;
    let mut refused = None;
    // 1 MiB / 10 kB is about 100 values; 1000 bounds the loop.
    for i in 0..1000 {
        let got = roundtrip(
            &mut s,
            &set_request(&format!("fill{i}"), &value(i)),
            b"\r\n",
        );
        match got.as_slice() {
            b"STORED\r\n" => stored += 1,
            b"SERVER_ERROR out of memory storing object\r\n" => {
                refused = Some(i);
                break;
            }
            other => panic!(
                "set fill{i} after {stored} stored: {:?}",
                String::from_utf8_lossy(other)
            ),
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("1000 values of {SIZE} bytes all stored"));
    assert!(
        stored >= 50,
        "only {stored} values of {SIZE} bytes fit in 1 MB"
    );
    for i in [0, stored / 2, stored - 1] {
        let key = format!("fill{i}");
        let got = roundtrip(&mut s, format!("get {key}\r\n").as_bytes(), b"END\r\n");
        assert!(
            got == get_reply(&key, 0, &value(i)),
            "get {key} after the cap: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(80)])
        );
    }
    let got = roundtrip(
        &mut s,
        format!("get fill{refused}\r\n").as_bytes(),
        b"END\r\n",
    );
    assert_eq!(String::from_utf8_lossy(&got), "END\r\n");
    let got = roundtrip(&mut s, b"flush_all\r\n", b"\r\n");
    assert_eq!(String::from_utf8_lossy(&got), "OK\r\n");
    for i in 0..stored.min(20) {
        check_set_get(&mut s, &format!("again{i}"), &value(i));
    }
    let got = roundtrip(&mut s, b"get fill0\r\n", b"END\r\n");
    assert_eq!(String::from_utf8_lossy(&got), "END\r\n");
}

// ---------------------------------------------------------------------------
// The binary protocol
// ---------------------------------------------------------------------------

/// A binary request of `opcode` for `key` (no extras, no value), opaque
/// 0x11223344.
fn binary_request(opcode: u8, key: &[u8]) -> Vec<u8> {
    let mut request = vec![0x80, opcode];
    request.extend_from_slice(&(key.len() as u16).to_be_bytes());
    request.extend_from_slice(&[0, 0, 0, 0]);
    request.extend_from_slice(&(key.len() as u32).to_be_bytes());
    request.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    request.extend_from_slice(&[0; 8]);
    request.extend_from_slice(key);
    request
}

/// Everything `port` answers to `request` within `WAIT`, and whether it
/// closed the connection after.
fn binary_exchange(port: u16, request: &[u8]) -> (Vec<u8>, bool) {
    let mut c = connect(port);
    c.write_all(request).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 256]);
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !got.is_empty() {
                    return (got, false);
                }
            }
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// A binary client is never left waiting: an unknown opcode gets
/// memcached's bytes at once and the connection goes on (it answers the
/// `noop` after it), and a request that is not binary after a binary one
/// closes the connection, as on memcached.
#[test]
fn a_binary_client_is_answered_at_once_and_a_broken_stream_closes() {
    let node = start();
    let memcached = start_memcached();
    let unknown_then_noop = [binary_request(0x50, b""), binary_request(0x0a, b"")].concat();
    let (theirs, their_close) = binary_exchange(memcached.port, &unknown_then_noop);
    let (ours, our_close) = binary_exchange(node.port(), &unknown_then_noop);
    assert_eq!(
        ours, theirs,
        "memcached's answer to an unknown opcode, then the noop's"
    );
    assert!(!their_close && !our_close, "the connection stays open");

    let broken = [
        binary_request(0x0a, b""),
        b"get k\r\nget k\r\nget k\r\nget k\r\n".to_vec(),
    ]
    .concat();
    let (ours, closed) = binary_exchange(node.port(), &broken);
    assert_eq!(ours, binary_exchange(memcached.port, &broken).0);
    assert!(closed, "a wrong magic closes the connection");
    // A text client is not affected.
    let mut c = connect(node.port());
    assert_eq!(
        roundtrip(&mut c, b"version\r\n", b"\r\n")[..8],
        *b"VERSION "
    );
}

/// Binary requests with random lengths, opcodes and bytes, on many
/// connections: the node never stops serving (a panic would end it).
#[test]
fn random_binary_requests_leave_the_node_serving() {
    let node = start();
    let mut rng = Rng(0xb1_0a27);
    for _ in 0..200 {
        let mut stream = Vec::new();
        for _ in 0..=rng.below(4) {
            let mut request = binary_request(rng.below(0x30) as u8, b"key");
            for _ in 0..rng.below(3) {
                let at = rng.below(request.len());
                request[at] = rng.next() as u8;
            }
            stream.extend(request);
        }
        let mut c = connect(node.port());
        let _ = c.write_all(&stream);
    }
    let mut c = connect(node.port());
    assert_eq!(
        roundtrip(&mut c, b"version\r\n", b"\r\n")[..8],
        *b"VERSION "
    );
}

// ---------------------------------------------------------------------------
// Client limits: max_connections and idle_timeout_s
// ---------------------------------------------------------------------------

/// What memcached writes to a connection over its `-c` limit, then closes.
const TOO_MANY: &[u8] = b"ERROR Too many open connections\r\n";

/// Waits (at most 10 s) until `stats` on `stream` counts `n` client
/// connections: the node notices closes (the start-up probe's too) as
/// they come.
fn wait_for_connections(stream: &mut TcpStream, n: u64) -> HashMap<String, String> {
    common::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let now = stats_on(stream, "stats");
        match stat_u64(&now, "curr_connections") == n {
            true => Ok(now),
            false => Err(format!("never {n} connections: {now:?}")),
        }
    })
}

fn assert_serves(stream: &mut TcpStream, what: &str) {
    let got = roundtrip(stream, b"version\r\n", b"\r\n");
    assert!(
        got.starts_with(b"VERSION "),
        "{what}: version -> {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// mckv counts only client connections against `max_connections`: with 5,
/// five are served and the sixth reads memcached's refusal and is closed.
/// The served ones go on being served, the refused one counts in
/// `rejected_connections` and not in `total_connections`, and once a
/// client leaves, a new one is taken.
#[test]
fn the_connection_over_max_connections_is_refused_as_memcached_refuses_it() {
    let node = start_with_cluster("max_connections = 5");
    let port = node.port();
    let mut first = connect(port);
    let before = wait_for_connections(&mut first, 1);
    let mut others: Vec<TcpStream> = (0..4).map(|_| connect(port)).collect();
    for (i, c) in others.iter_mut().enumerate() {
        assert_serves(c, &format!("connection {}", i + 2));
    }
    let mut sixth = connect(port);
    let (got, closed) = read_to_eof(&mut sixth, WAIT);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "ERROR Too many open connections\r\n"
    );
    assert!(closed, "the refused connection is closed");

    check_set_get(&mut first, "limited", b"still served");
    check_set_get(&mut others[3], "limited2", b"also served");
    let after = stats_on(&mut first, "stats");
    assert_eq!(stat_u64(&after, "max_connections"), 5);
    assert_eq!(stat_u64(&after, "curr_connections"), 5, "{after:?}");
    assert_eq!(stat_u64(&after, "rejected_connections"), 1, "{after:?}");
    assert_eq!(
        stat_u64(&after, "total_connections") - stat_u64(&before, "total_connections"),
        4,
        "a refused connection is not counted as opened: {after:?}"
    );
    let settings = stats_on(&mut first, "stats settings");
    assert_eq!(settings["maxconns"], "5");
    assert_eq!(settings["maxconns_fast"], "yes");

    // One leaves: the next is served.
    drop(others.pop());
    wait_for_connections(&mut first, 4);
    let mut again = connect(port);
    assert_serves(&mut again, "a connection after one closed");
    check_set_get(&mut again, "limited3", b"room again");
    let last = stats_on(&mut first, "stats");
    assert_eq!(stat_u64(&last, "rejected_connections"), 1, "{last:?}");
}

/// 2,000 connections opened at once against `max_connections = 100`: each
/// of the 1,901 over the limit reads the refusal and is closed, the 99
/// taken are served, a client connected before keeps being served, and the
/// node's memory stays small.
#[test]
fn a_storm_of_2000_connections_past_the_limit_is_refused_without_harm() {
    const STORM: usize = 2000;
    const LIMIT: usize = 100;
    const THREADS: usize = 4;
    // About 6 MiB in practice.
    const RSS_LIMIT_KIB: u64 = 32 * 1024;
    let node = start_with_cluster(&format!("max_connections = {LIMIT}"));
    let (port, pid) = (node.port(), node.process.pid());
    let mut good = connect(port);
    wait_for_connections(&mut good, 1);
    check_set_get(&mut good, "before-storm", b"calm");

    let socks: Vec<TcpStream> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(move || {
                    (0..STORM / THREADS)
                        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("connecting thread"))
            .collect()
    });
    let mut peak = rss_kib(pid);
    check_set_get(&mut good, "during-storm", b"still answered");

    // Collect the refusals: every socket the node refused gets the whole
    // text and EOF; the others get nothing.
    let refused_want = STORM - (LIMIT - 1);
    let mut outcome: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false); STORM];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = |outcome: &[(Vec<u8>, bool)]| outcome.iter().filter(|(_, eof)| *eof).count();
    let mut buf = [0u8; 256];
    while refused(&outcome) < refused_want && Instant::now() < deadline {
        for (s, (got, eof)) in socks.iter().zip(outcome.iter_mut()) {
            while !*eof {
                match (&*s).read(&mut buf) {
                    Ok(0) => *eof = true,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("a storm connection failed: {e}"),
                }
            }
        }
        peak = peak.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(20));
    }
    let mut taken = Vec::new();
    for (i, (got, eof)) in outcome.iter().enumerate() {
        if *eof {
            assert_eq!(got.as_slice(), TOO_MANY, "connection {i}");
        } else {
            assert!(got.is_empty(), "connection {i} got {got:?} and stayed open");
            taken.push(i);
        }
    }
    assert_eq!(
        taken.len(),
        LIMIT - 1,
        "connections taken besides the first"
    );
    // The ones taken are served.
    for &i in &taken {
        let mut s = &socks[i];
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"version\r\n").unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).expect("a taken connection answers");
            assert!(n > 0, "a taken connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"VERSION "), "{got:?}");
    }
    peak = peak.max(rss_kib(pid));
    check_set_get(&mut good, "after-storm", b"fine");
    let after = stats_on(&mut good, "stats");
    assert_eq!(
        stat_u64(&after, "rejected_connections"),
        refused_want as u64,
        "{after:?}"
    );
    assert_eq!(stat_u64(&after, "curr_connections"), LIMIT as u64);
    assert!(
        peak < RSS_LIMIT_KIB,
        "server RSS peaked at {peak} KiB through a storm of {STORM} connections"
    );
    drop(socks);
    wait_for_connections(&mut good, 1);
}

/// With `idle_timeout_s = 1`, a connection that sends nothing is closed
/// silently (as memcached closes it), one that keeps sending is not, and
/// one owed replies it has not read is not idle however long it waits.
#[test]
fn an_idle_connection_is_closed_and_a_busy_or_owed_one_is_not() {
    const SIZE: usize = 100_000;
    const GETS: usize = 200;
    // The busy connection sends every 100 ms or so: thirty times inside
    // the timeout, so only a test thread stalled for seconds could see it
    // kicked.
    let node = start_with_cluster("idle_timeout_s = 3");
    let port = node.port();
    let mut busy = connect(port);
    let value = vec![b'i'; SIZE];
    check_set_get(&mut busy, "big", &value);
    // 20 MB of replies: more than the socket buffers and the node's own
    // back-pressure bound hold, so the node keeps some unsent.
    let mut owed = connect(port);
    owed.write_all(&b"get big\r\n".repeat(GETS)).unwrap();
    let mut idle = connect(port);
    idle.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 64];
    let closed = loop {
        assert_serves(&mut busy, "a connection that keeps sending");
        match idle.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => panic!("the idle connection got {:?}", &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("the idle connection: {e}"),
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(closed, "the idle connection was not closed within 15 s");
    let now = stats_on(&mut busy, "stats");
    assert_eq!(stat_u64(&now, "idle_kicks"), 1, "{now:?}");
    let settings = stats_on(&mut busy, "stats settings");
    assert_eq!(settings["idle_timeout"], "3");

    // The owed connection outlived the idle one (it waited as long, and
    // sent nothing since): every reply is still delivered.
    let one = get_reply("big", 0, &value);
    let total = one.len() * GETS;
    let got = read_until(&mut owed, Duration::from_secs(60), |got| got.len() >= total);
    assert_eq!(got.len(), total, "the owed connection got all its replies");
    assert!(got.chunks(one.len()).all(|c| c == one.as_slice()));
    assert_serves(&mut owed, "the owed connection after reading");
    let end = stats_on(&mut busy, "stats");
    assert_eq!(stat_u64(&end, "idle_kicks"), 1, "{end:?}");
    common::assert_rss_bounded(node.process.pid(), "idle and owed connections");
}

/// The bytes of a refusal are memcached's: a `memcached -c 16` (it counts
/// its own descriptors, so it takes fewer clients) and an mckv with
/// `max_connections = 1` refuse with the same text, then close.
#[test]
fn a_refused_connection_reads_what_memcached_sends() {
    let memcached = start_memcached_with(&["-c", "16"]);
    let mut held = Vec::new();
    let theirs = loop {
        assert!(held.len() < 20, "memcached -c 16 took 20 connections");
        let mut c = connect(memcached.port);
        // A connection it took sends nothing; a refused one gets the text.
        let (got, closed) = read_to_eof(&mut c, Duration::from_millis(500));
        if !got.is_empty() || closed {
            break (got, closed);
        }
        held.push(c);
    };
    let node = start_with_cluster("max_connections = 1");
    // Until the node has seen the start-up probe close, it refuses this one.
    let _first = common::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let mut c = connect(node.port());
        match roundtrip(&mut c, b"version\r\n", b"\r\n").starts_with(b"VERSION ") {
            true => Ok(c),
            false => Err("the node never took a first connection".to_string()),
        }
    });
    let ours = read_to_eof(&mut connect(node.port()), WAIT);
    assert_eq!(
        (String::from_utf8_lossy(&ours.0), ours.1),
        (String::from_utf8_lossy(&theirs.0), theirs.1)
    );
    assert_eq!(theirs.0, TOO_MANY);
}

// ---------------------------------------------------------------------------
// Hostile clients: a 2 GiB declared value, an HTTP request, a trickle
// ---------------------------------------------------------------------------

/// A value declared 2 GiB long gets memcached's answer at once (its length
/// does not fit memcached's 32-bit signed one: `CLIENT_ERROR bad command
/// line format`), and what follows, read as a command line with no end,
/// closes the connection past the line limit, as memcached does: the node
/// never holds it, serves a well-behaved client throughout, and its memory
/// stays bounded.
#[test]
fn a_declared_2_gib_value_is_refused_as_memcached_refuses_it_in_bounded_memory() {
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let node = start();
    let memcached = start_memcached();
    let declare = b"set huge 0 0 2147483648\r\n";
    let first_reply = |port: u16| {
        let mut c = connect(port);
        c.write_all(declare).unwrap();
        let reply = read_until(&mut c, Duration::from_secs(5), |g| g.ends_with(b"\r\n"));
        (c, reply)
    };
    let (_, from_memcached) = first_reply(memcached.port);
    let (mut giant, reply) = first_reply(node.port());
    assert_eq!(reply, from_memcached);
    assert_eq!(reply, b"CLIENT_ERROR bad command line format\r\n");

    let pid = node.process.pid();
    let chunk = vec![b'x'; 1 << 20];
    let mut other = connect(node.port());
    let mut peak = 0;
    let mut closed = false;
    for i in 0..32 {
        if giant.write_all(&chunk).is_err() {
            closed = true;
            break;
        }
        check_set_get(&mut other, "meanwhile", i.to_string().as_bytes());
        peak = peak.max(rss_kib(pid));
    }
    let (_, eof) = read_to_eof(&mut giant, Duration::from_secs(5));
    assert!(closed || eof, "the endless line was not closed");
    assert!(
        peak < RSS_LIMIT_KIB,
        "RSS peaked at {peak} KiB while a 2 GiB value was sent"
    );
    check_set_get(&mut other, "after", b"fine");
}

/// An HTTP request (a load balancer's health check, a browser) gets what
/// memcached answers it, byte for byte, and the node serves on.
#[test]
fn an_http_request_is_answered_as_memcached_answers_it() {
    let node = start();
    let memcached = start_memcached();
    let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n";
    let answer = |port: u16| {
        let mut c = connect(port);
        c.write_all(request).unwrap();
        read_until(&mut c, Duration::from_millis(500), |g| g.len() >= 28)
    };
    assert_eq!(
        String::from_utf8_lossy(&answer(node.port())),
        String::from_utf8_lossy(&answer(memcached.port))
    );
    check_set_get(&mut connect(node.port()), "after-http", b"fine");
    common::assert_rss_bounded(node.process.pid(), "an HTTP request");
}

/// A client that sends its request a byte at a time, pausing between
/// bytes, is answered once the request is whole; others are served
/// between its bytes.
#[test]
fn a_client_trickling_one_byte_at_a_time_is_answered_and_blocks_nobody() {
    let node = start();
    let mut trickle = connect(node.port());
    let mut other = connect(node.port());
    for (i, byte) in b"set slow 0 0 4\r\nslow\r\n".iter().enumerate() {
        trickle.write_all(&[*byte]).unwrap();
        check_set_get(&mut other, "between", i.to_string().as_bytes());
        thread::sleep(Duration::from_millis(50));
    }
    let reply = read_until(&mut trickle, Duration::from_secs(5), |g| {
        g.ends_with(b"\r\n")
    });
    assert_eq!(String::from_utf8_lossy(&reply), "STORED\r\n");
    check_set_get(&mut trickle, "slow2", b"done");
    common::assert_rss_bounded(node.process.pid(), "a trickling client");
}

// ---------------------------------------------------------------------------
// Big values: read apart, replied without a copy, buffers shrink back
// ---------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

/// A node that takes values of 1 MiB (memcached's default `-I 1m` counts
/// the item's header too, so a value of exactly 1 MiB needs a little more).
fn start_for_big_values() -> MckvNode {
    start_with_cluster("item_size_max = 2097152")
}

/// A value around a read's size (16 KiB), cut where a read apart could go
/// wrong: right after the line, one byte into the block, one short of its
/// end, between the value and its `\r\n`, inside the `\r\n`; each half
/// written alone, with a pause between. Every value reads back exactly.
#[test]
fn values_cut_at_every_risky_point_read_back_exactly() {
    let node = start_for_big_values();
    let mut c = connect(node.port());
    for (n, len) in [16_383, 16_384, 16_385, 40_000].into_iter().enumerate() {
        let value = big_value(n, len);
        let key = format!("cut{n}");
        let request = set_request(&key, &value);
        let line = request.iter().position(|&b| b == b'\n').unwrap() + 1;
        for cut in [line, line + 1, line + len - 1, line + len, line + len + 1] {
            c.write_all(&request[..cut]).unwrap();
            thread::sleep(Duration::from_millis(20));
            c.write_all(&request[cut..]).unwrap();
            let reply = read_until(&mut c, Duration::from_secs(5), |g| g.ends_with(b"\r\n"));
            assert_eq!(reply, b"STORED\r\n", "{len} bytes cut at {cut}");
            let mut want = format!("VALUE {key} 0 {len}\r\n").into_bytes();
            want.extend_from_slice(&value);
            want.extend_from_slice(b"\r\nEND\r\n");
            let got = roundtrip(&mut c, format!("get {key}\r\n").as_bytes(), b"END\r\n");
            assert!(
                got == want,
                "{len} bytes cut at {cut} read back differently"
            );
        }
    }
}

/// 200 clients each announce a 2 MB value, send its first 20 kB (more
/// than one read) and sleep: the node holds what they sent, not what they
/// announced (400 MB), and serves everyone else meanwhile.
#[test]
fn clients_that_announce_big_values_and_sleep_cost_what_they_sent() {
    let node = start_for_big_values();
    // Big values come and go first, as on any busy node: the allocator then
    // serves big buffers from memory it already holds.
    let mut other = connect(node.port());
    for i in 0..4 {
        check_set_get(&mut other, &format!("warm{i}"), &big_value(i, 1_900_000));
        assert_eq!(
            roundtrip(
                &mut other,
                format!("delete warm{i}\r\n").as_bytes(),
                b"\r\n"
            ),
            b"DELETED\r\n"
        );
    }
    let sleepers: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut c = connect(node.port());
            let mut head = format!("set sleeper{i} 0 0 2000000\r\n").into_bytes();
            head.extend(big_value(i, 20_000));
            c.write_all(&head).unwrap();
            c
        })
        .collect();
    check_set_get(&mut other, "awake", b"yes");
    common::assert_rss_bounded(node.process.pid(), "200 clients announcing 2 MB values");
    drop(sleepers);
}

/// `len` bytes that differ from those of any other `seed`, with no `\r\n`.
fn big_value(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'0' + ((i * 7 + seed) % 61) as u8)
        .collect()
}

/// Reads exactly `want.len()` bytes (or what came before the timeout).
fn read_exactly(stream: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    read_until(stream, Duration::from_secs(10), |got| {
        got.len() >= want.len()
    })
}

#[test]
fn a_1_mib_value_sent_in_many_small_writes_reads_back_byte_exact() {
    let node = start_for_big_values();
    let mut c = connect(node.port());
    let (first, second) = (big_value(1, MIB), big_value(2, MIB - 1));
    // Two big sets and a small one back to back, so bytes of the next
    // request arrive with the end of each value; written in pieces of
    // 1 to 4,999 bytes, each its own segment (nodelay).
    let mut stream = set_request("first", &first);
    stream.extend_from_slice(&set_request("second", &second));
    stream.extend_from_slice(&set_request("small", b"tail"));
    let mut rng = Rng(0x5eed_0016);
    let mut at = 0;
    while at < stream.len() {
        let piece = (1 + rng.below(4_999)).min(stream.len() - at);
        c.write_all(&stream[at..at + piece]).unwrap();
        at += piece;
    }
    let want = b"STORED\r\nSTORED\r\nSTORED\r\n";
    assert_eq!(read_exactly(&mut c, want), want);
    for (key, value) in [("first", &first), ("second", &second)] {
        c.write_all(format!("get {key}\r\n").as_bytes()).unwrap();
        let want = get_reply(key, 0, value);
        let got = read_exactly(&mut c, &want);
        assert!(got == want, "get {key}: {} bytes differ", got.len());
    }
    refuses_a_big_block_without_its_end(&mut c, &format!("set bad 0 0 {MIB}"), &first);
}

/// `line`, then `block` ended by `XX` where `\r\n` belongs: refused as
/// memcached refuses it, and the connection goes on.
fn refuses_a_big_block_without_its_end(c: &mut TcpStream, line: &str, block: &[u8]) {
    let mut bad = format!("{line}\r\n").into_bytes();
    bad.extend_from_slice(block);
    bad.extend_from_slice(b"XX");
    let want = b"CLIENT_ERROR bad data chunk\r\n";
    c.write_all(&bad).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_exactly(c, want)),
        String::from_utf8_lossy(want)
    );
    check_set_get(c, "after", b"fine");
}

#[test]
fn memory_returns_near_its_baseline_after_200_connections_moved_1_mib_each_and_went_idle() {
    let node = start_for_big_values();
    let value = big_value(3, MIB);
    let want = get_reply("big", 0, &value);
    let move_value = |c: &mut TcpStream| {
        let stored = roundtrip(c, &set_request("big", &value), b"\r\n");
        assert_eq!(stored, b"STORED\r\n");
        c.write_all(b"get big\r\n").unwrap();
        assert!(read_exactly(c, &want) == want, "get big: wrong bytes");
    };
    let (grown, mut idle) = rss_grown_by_200_idle_connections(&node, move_value);
    // A connection that kept the buffers of one big value would hold at
    // least 1 MiB: 200 of them, 200 MiB. What may stay is the allocator's
    // free memory, not a share per connection.
    assert!(
        grown < 24 * 1024,
        "RSS grew by {grown} KiB with 200 idle connections that each moved 1 MiB"
    );
    check_set_get(&mut idle[199], "still", b"served");
}

/// How far (KiB) the node's RSS grew while 200 connections each ran
/// `transfer` once and stayed open, idle; and those connections. The
/// baseline is taken after one transfer, so it holds what one leaves.
fn rss_grown_by_200_idle_connections(
    node: &MckvNode,
    transfer: impl Fn(&mut TcpStream),
) -> (u64, Vec<TcpStream>) {
    transfer(&mut connect(node.port()));
    let baseline = rss_kib(node.process.pid());
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut c = connect(node.port());
        transfer(&mut c);
        idle.push(c);
    }
    let grown = rss_kib(node.process.pid()).saturating_sub(baseline);
    (grown, idle)
}

/// `ms <key> <len> T0`, its value and `\r\n`: a meta set, answered `HD`.
fn meta_set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut request = format!("ms {key} {} T0\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    request
}

/// What `mg <key> v` answers for a stored `value`.
fn meta_value_reply(value: &[u8]) -> Vec<u8> {
    let mut reply = format!("VA {}\r\n", value.len()).into_bytes();
    reply.extend_from_slice(value);
    reply.extend_from_slice(b"\r\n");
    reply
}

/// The `ms` twin of the test above: its value is read apart from the read
/// buffer, so nothing of it stays with an idle connection either.
#[test]
fn memory_returns_near_its_baseline_after_200_connections_sent_1_mib_by_ms_and_went_idle() {
    let node = start_for_big_values();
    let value = big_value(6, MIB);
    let request = meta_set_request("big", &value);
    let send_value = |c: &mut TcpStream| {
        assert_eq!(roundtrip(c, &request, b"\r\n"), b"HD\r\n");
    };
    let (grown, mut idle) = rss_grown_by_200_idle_connections(&node, send_value);
    assert!(
        grown < 24 * 1024,
        "RSS grew by {grown} KiB with 200 idle connections that each sent 1 MiB by ms"
    );
    let want = meta_value_reply(&value);
    idle[199].write_all(b"mg big v\r\n").unwrap();
    assert!(
        read_exactly(&mut idle[199], &want) == want,
        "mg big: wrong bytes"
    );
}

/// A read buffer that grew for a big value is kept among the node's
/// spares (up to their byte budget) when its connection goes idle; an
/// `ms` value read apart never grows one, so the spares stay a few reads.
#[test]
fn an_ms_value_longer_than_a_read_does_not_grow_the_read_buffer() {
    let node = start_for_big_values();
    let mut c = connect(node.port());
    // `asking` holds its read buffer (half a `stats`) before the value
    // comes, so it answers without taking a spare, grown or not.
    let mut asking = connect(node.port());
    asking.write_all(b"stats").unwrap();
    common::poll(WAIT, Duration::from_millis(20), || {
        let now = stats_on(&mut c, "stats");
        match stat_u64(&now, "read_buf_count") {
            2 => Ok(()),
            n => Err(format!("{n} read buffers held: {now:?}")),
        }
    });
    let value = big_value(7, 300_000);
    assert_eq!(
        roundtrip(&mut c, &meta_set_request("grown", &value), b"\r\n"),
        b"HD\r\n"
    );
    // The rest of its line: `stats_on` sends `""` and `\r\n`.
    let stats = stats_on(&mut asking, "");
    // Grown by doubling from 16 KiB, a buffer for 300 kB holds 512 KiB.
    assert!(
        stat_u64(&stats, "read_buf_bytes_free") <= 4 * 16 * 1024,
        "{stats:?}"
    );
}

/// An `ms` value around a read's size or far past it, cut where a read
/// apart could go wrong, each half written alone with a pause between:
/// `mg` reads every value back exactly.
#[test]
fn ms_values_cut_at_every_risky_point_read_back_exactly() {
    let node = start_for_big_values();
    let mut c = connect(node.port());
    for (n, len) in [16_383, 16_384, 16_385, 40_000, MIB]
        .into_iter()
        .enumerate()
    {
        let value = big_value(n, len);
        let key = format!("mscut{n}");
        let request = meta_set_request(&key, &value);
        let line = request.iter().position(|&b| b == b'\n').unwrap() + 1;
        let half = line + len / 2;
        for cut in [
            line,
            line + 1,
            half,
            line + len - 1,
            line + len,
            line + len + 1,
        ] {
            c.write_all(&request[..cut]).unwrap();
            thread::sleep(Duration::from_millis(20));
            c.write_all(&request[cut..]).unwrap();
            let reply = read_until(&mut c, WAIT, |g| g.ends_with(b"\r\n"));
            assert_eq!(reply, b"HD\r\n", "{len} bytes cut at {cut}");
            c.write_all(format!("mg {key} v\r\n").as_bytes()).unwrap();
            let want = meta_value_reply(&value);
            let got = read_exactly(&mut c, &want);
            assert!(
                got == want,
                "{len} bytes cut at {cut} read back differently"
            );
        }
    }
    refuses_a_big_block_without_its_end(&mut c, &format!("ms bad {MIB}"), &big_value(9, MIB));
}

#[test]
fn connections_waiting_for_their_clients_hold_no_read_or_write_buffer() {
    let node = start();
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut c = connect(node.port());
        check_set_get(&mut c, &format!("idle{i}"), b"value");
        idle.push(c);
    }
    // A request split mid-line keeps its connection's read buffer.
    let mut partial = connect(node.port());
    partial.write_all(b"get idle").unwrap();
    let mut asking = connect(node.port());
    wait_for_connections(&mut asking, 52);
    // Only the connection asking holds a read buffer and a reply at the
    // moment `stats` is composed, and the one with half a request (once
    // the node has read it) its read buffer; the 50 idle ones hold none.
    let stats = common::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let now = stats_on(&mut asking, "stats");
        match stat_u64(&now, "read_buf_count") {
            2 => Ok(now),
            n => Err(format!("{n} read buffers held: {now:?}")),
        }
    });
    assert!(stat_u64(&stats, "response_obj_count") <= 1, "{stats:?}");
    assert!(
        stat_u64(&stats, "read_buf_bytes") <= 2 * 16 * 1024,
        "{stats:?}"
    );
    partial.write_all(b"0\r\n").unwrap();
    let want = get_reply("idle0", 0, b"value");
    assert_eq!(read_exactly(&mut partial, &want), want);
}

#[test]
fn pipelined_big_and_small_replies_leave_in_request_order_byte_exact() {
    let node = start_for_big_values();
    let mut c = connect(node.port());
    let (a, b) = (big_value(4, MIB), big_value(5, 700_000));
    for (key, value) in [("a", &a), ("b", &b), ("s", &b"small".to_vec())] {
        let stored = roundtrip(&mut c, &set_request(key, value), b"\r\n");
        assert_eq!(stored, b"STORED\r\n");
    }
    // Big replies behind small ones and small ones behind big ones, all
    // in one write, then a set and a miss.
    let mut requests =
        b"get s\r\nget a\r\nget s\r\nget b\r\nget a\r\nget b\r\nversion\r\n".to_vec();
    requests.extend_from_slice(&set_request("s", b"again"));
    requests.extend_from_slice(b"get nothing\r\nget s a\r\n");
    c.write_all(&requests).unwrap();
    let small = get_reply("s", 0, b"small");
    let mut want = Vec::new();
    for part in [
        &small,
        &get_reply("a", 0, &a),
        &small,
        &get_reply("b", 0, &b),
        &get_reply("a", 0, &a),
        &get_reply("b", 0, &b),
    ] {
        want.extend_from_slice(part);
    }
    let mut tail = b"STORED\r\nEND\r\n".to_vec();
    tail.extend_from_slice(format!("VALUE s 0 5\r\nagain\r\nVALUE a 0 {MIB}\r\n").as_bytes());
    tail.extend_from_slice(&a);
    tail.extend_from_slice(b"\r\nEND\r\n");
    let at_least = want.len() + tail.len();
    let got = read_until(&mut c, Duration::from_secs(10), |g| {
        g.len() >= at_least && g.ends_with(&tail)
    });
    assert!(got.len() >= at_least, "only {} bytes came", got.len());
    assert!(
        got[..want.len()] == want,
        "the gets' replies differ or are out of order"
    );
    let version = &got[want.len()..got.len() - tail.len()];
    assert!(
        version.starts_with(b"VERSION ") && version.ends_with(b"\r\n"),
        "between the gets and the set: {:?}",
        String::from_utf8_lossy(version)
    );
}
