//! The `memcache` backend: mckv in front of a real memcached that the test
//! starts, for every command and for a memcached that stops answering.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{
    connect, read_until, roundtrip, start_mckv_with, start_memcached, MckvNode, ProcessGuard,
};

fn ends_with_line(got: &[u8]) -> bool {
    got.ends_with(b"\r\n")
}

fn start_in_front_of(memcached: &ProcessGuard, timeout_ms: u64) -> MckvNode {
    start_mckv_with(
        &format!("backend_timeout_ms = {timeout_ms}"),
        &format!("kv_type = memcache\nkv_addr = 127.0.0.1:{}", memcached.port),
        &[],
    )
}

#[test]
fn every_command_goes_through_memcached() {
    let memcached = start_memcached();
    let node = start_in_front_of(&memcached, 2000);
    let mut c = connect(node.port());
    let steps: &[(&[u8], &[u8])] = &[
        (b"set k 5 0 3\r\nabc\r\n", b"STORED\r\n"),
        (b"get k missing\r\n", b"VALUE k 5 3\r\nabc\r\nEND\r\n"),
        (b"add k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"add k2 0 0 1\r\nx\r\n", b"STORED\r\n"),
        (b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"replace k2 0 0 1\r\ny\r\n", b"STORED\r\n"),
        (b"append nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"prepend nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"append k 0 0 1\r\n>\r\n", b"STORED\r\n"),
        (b"prepend k 0 0 1\r\n<\r\n", b"STORED\r\n"),
        (b"get k\r\n", b"VALUE k 5 5\r\n<abc>\r\nEND\r\n"),
        (b"cas nope 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n"),
        (b"cas k 0 0 1 1\r\nx\r\n", b"EXISTS\r\n"),
        (b"set n 0 0 3\r\n100\r\n", b"STORED\r\n"),
        (b"decr n 1\r\n", b"99\r\n"),
        (b"get n\r\n", b"VALUE n 0 3\r\n99 \r\nEND\r\n"),
        (b"incr n 18446744073709551615\r\n", b"98\r\n"),
        (
            b"incr k 1\r\n",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (b"incr nope 1\r\n", b"NOT_FOUND\r\n"),
        (b"touch k 100\r\n", b"TOUCHED\r\n"),
        (b"touch nope 100\r\n", b"NOT_FOUND\r\n"),
        (b"gat 100 k2\r\n", b"VALUE k2 0 1\r\ny\r\nEND\r\n"),
        (b"set gone 0 -1 1\r\nx\r\n", b"STORED\r\n"),
        (b"get gone\r\n", b"END\r\n"),
        (b"delete k2\r\n", b"DELETED\r\n"),
        (b"delete k2\r\n", b"NOT_FOUND\r\n"),
        (
            b"set quiet 0 0 1 noreply\r\nq\r\nget quiet\r\n",
            b"VALUE quiet 0 1\r\nq\r\nEND\r\n",
        ),
        (b"flush_all\r\n", b"OK\r\n"),
        (b"get k n\r\n", b"END\r\n"),
    ];
    for (request, want) in steps {
        let got = roundtrip(&mut c, request, want);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "request {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // The unique a `gets` shows is mckv's (kept in the item's header), and `cas` with it succeeds.
    let got = roundtrip(&mut c, b"set c 0 0 1\r\nx\r\ngets c\r\n", b"END\r\n");
    let text = String::from_utf8_lossy(&got).into_owned();
    let unique = text
        .lines()
        .nth(1)
        .and_then(|l| l.split(' ').nth(4))
        .expect("a gets line");
    let cas = format!("cas c 0 0 1 {unique}\r\ny\r\n");
    assert_eq!(roundtrip(&mut c, cas.as_bytes(), b"\r\n"), b"STORED\r\n");
}

/// What the memcache backend cannot hold gets a clear error, not a wrong
/// answer: keys that are not UTF-8 (the `memcache` crate takes `&str`),
/// items some other client put into the node's memcached (no mckv header),
/// and a value mckv takes but a memcached with the default `-I 1m` cannot
/// (mckv's header makes it 16 bytes longer).
#[test]
fn foreign_items_and_non_utf8_keys_are_refused_clearly() {
    let memcached = start_memcached();
    let node = start_in_front_of(&memcached, 2000);
    let mut c = connect(node.port());
    let got = roundtrip(&mut c, b"set \x80k 0 0 1\r\nx\r\n", b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "SERVER_ERROR backend error: the memcache backend needs UTF-8 keys\r\n"
    );
    let mut direct = connect(memcached.port);
    let foreign: &[u8] = b"set foreign 0 0 2\r\nab\r\nset long 0 0 20\r\n01234567890123456789\r\n";
    let stored = roundtrip(&mut direct, foreign, b"STORED\r\nSTORED\r\n");
    assert_eq!(stored, b"STORED\r\nSTORED\r\n");
    for key in ["foreign", "long"] {
        let got = roundtrip(&mut c, format!("get {key}\r\n").as_bytes(), b"\r\n");
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!(
                "SERVER_ERROR backend error: item {key} in memcached was not stored by mckv\r\n"
            )
        );
    }
    assert_eq!(
        roundtrip(
            &mut c,
            b"set foreign 0 0 1\r\nz\r\nget foreign\r\n",
            b"END\r\n"
        ),
        b"STORED\r\nVALUE foreign 0 1\r\nz\r\nEND\r\n"
    );
    // The largest value mckv takes under key `k`: value + key + 59 bytes fill item_size_max.
    let largest = 1_048_576 - 1 - 59;
    let mut set = format!("set k 0 0 {largest}\r\n").into_bytes();
    set.extend(std::iter::repeat_n(b'v', largest));
    set.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&roundtrip(&mut c, &set, b"\r\n")),
        "SERVER_ERROR backend error: object too large for cache\r\n"
    );
}

#[test]
fn a_stopped_memcached_turns_into_errors_while_the_node_stays_responsive() {
    let memcached = start_memcached();
    let node = start_in_front_of(&memcached, 1500);
    let mut setup = connect(node.port());
    assert_eq!(
        roundtrip(&mut setup, b"set k 0 0 2\r\nok\r\n", b"\r\n"),
        b"STORED\r\n"
    );

    memcached.signal("STOP");
    let mut stuck = connect(node.port());
    stuck.write_all(b"get k\r\n").unwrap();

    // While the store is stuck, the reactor still answers what needs no store.
    let mut other = connect(node.port());
    assert!(roundtrip(&mut other, b"version\r\n", b"\r\n").starts_with(b"VERSION "));
    let stats = roundtrip(&mut other, b"stats\r\n", b"END\r\n");
    assert!(String::from_utf8_lossy(&stats).contains("STAT mckv_backend memcache"));
    let mut fresh = connect(node.port());
    assert!(roundtrip(&mut fresh, b"version\r\n", b"\r\n").starts_with(b"VERSION "));

    // ...and the stuck request gets a SERVER_ERROR, not a hang.
    let got = read_until(&mut stuck, Duration::from_secs(10), ends_with_line);
    assert!(
        got.starts_with(b"SERVER_ERROR "),
        "stuck get answered {:?}",
        String::from_utf8_lossy(&got)
    );
    let later = roundtrip(&mut other, b"set x 0 0 1\r\nx\r\n", b"\r\n");
    assert!(
        later.starts_with(b"SERVER_ERROR "),
        "{:?}",
        String::from_utf8_lossy(&later)
    );

    // When memcached answers again, the node recovers by itself.
    memcached.signal("CONT");
    let mut recovered = false;
    for _ in 0..100 {
        other.write_all(b"get k\r\n").unwrap();
        let got = read_until(&mut other, Duration::from_secs(5), |g| {
            g.ends_with(b"END\r\n") || (g.starts_with(b"SERVER_ERROR") && ends_with_line(g))
        });
        if got == b"VALUE k 0 2\r\nok\r\nEND\r\n" {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "the node did not recover after SIGCONT");
}
