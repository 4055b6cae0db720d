//! The `memcache` backend: mckv in front of a real memcached that the test
//! starts, for every command and for a memcached that stops answering; and
//! the store itself giving and taking a strong mode's snapshot.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{
    connect, poll, read_until, request, roundtrip, start_mckv_with, start_memcached,
    start_memcached_with, MckvNode, ProcessGuard,
};
use mckv::protocol::{KeysRef, Limits, StorageMode};
use mckv::store::memcache::MemcacheStore;
use mckv::store::{unix_now, Entry, Expiry, Head, Record, Store, StoreError, VersionedStore};

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

fn store_on(port: u16) -> MemcacheStore {
    let addr = format!("127.0.0.1:{port}");
    MemcacheStore::new(&addr, Duration::from_secs(2), Limits::default())
}

fn record(key: &str, flags: u32, expiry: Expiry, value: &[u8], cas: u64) -> Record {
    let entry = Entry {
        flags,
        expiry,
        value: value.to_vec(),
    };
    Record {
        key: key.as_bytes().to_vec(),
        entry,
        cas,
        stored_at: 0,
        referenced: false,
    }
}

/// A snapshot head with only a pending delayed `flush_all`.
fn flush_at(at: Option<u64>) -> Head {
    Head {
        flush_at: at,
        ..Head::default()
    }
}

fn import(store: &mut MemcacheStore, r: &Record, now: u64) {
    store.import(&r.key, Some(&r.entry), r.cas, now).unwrap();
}

/// Keys that memcached's metadump lists url-encoded (`%`, `+`, a tab,
/// UTF-8) come back as they were, and each record is read back exactly:
/// flags, expiry, value (a large one too) and the cluster's cas unique.
#[test]
fn a_snapshot_lists_every_key_and_exports_each_record_exactly() {
    let memcached = start_memcached_with(&["-I", "2m"]);
    let mut store = store_on(memcached.port);
    let now = unix_now();
    let records = [
        record("plain", 0, Expiry::Never, b"abc", 7),
        record("100%", 0, Expiry::At(now + 3600), b"", 8),
        record("a+b%20c", 1, Expiry::Never, b"x y", 9),
        record("tab\there", 0, Expiry::Never, b"t", 10),
        record(
            "ключ",
            0xffff_ffff,
            Expiry::At(now + 86_400 * 40),
            b"\r\n",
            11,
        ),
        record("big", 0, Expiry::Never, &vec![b'v'; 900_000], u64::MAX),
    ];
    for r in &records {
        import(&mut store, r, now);
    }
    let listing = store.snapshot_keys().unwrap();
    let mut keys: Vec<Vec<u8>> = listing.keys.iter().map(<[u8]>::to_vec).collect();
    keys.sort();
    let mut want: Vec<Vec<u8>> = records.iter().map(|r| r.key.clone()).collect();
    want.sort();
    assert_eq!(keys, want);
    // About the keys' and values' bytes: exact but for 4 bytes per item
    // with flags, which memcached 1.6.18 counts without listing its flags.
    let exact: u64 = records.iter().map(Record::size).sum();
    assert!(
        (exact..=exact + 8).contains(&listing.bytes),
        "{} bytes listed for {exact}",
        listing.bytes
    );
    assert_eq!(listing.head.flush_at, None);
    for r in &records {
        // memcached keeps no store time a snapshot could carry: the read's.
        let read = Record {
            stored_at: now,
            ..r.clone()
        };
        assert_eq!(store.export_record(&r.key, now).unwrap(), Some(read));
    }
}

/// A key deleted or expired after the listing is left out of the snapshot,
/// not an error; the pending delayed `flush_all` comes with the listing.
#[test]
fn a_snapshot_skips_what_went_since_the_listing_and_carries_the_pending_flush() {
    let memcached = start_memcached();
    let mut store = store_on(memcached.port);
    let now = unix_now();
    for r in [
        record("stays", 0, Expiry::Never, b"1", 1),
        record("deleted", 0, Expiry::Never, b"2", 2),
        record("expires", 0, Expiry::At(now + 100), b"3", 3),
    ] {
        import(&mut store, &r, now);
    }
    store.flush_all(Some(now + 1000), now).unwrap();
    let listing = store.snapshot_keys().unwrap();
    assert_eq!(listing.keys.len(), 3);
    assert_eq!(listing.head.flush_at, Some(now + 1000));
    store.delete(b"deleted", now).unwrap();
    assert!(store.export_record(b"stays", now + 100).unwrap().is_some());
    assert_eq!(store.export_record(b"deleted", now + 100).unwrap(), None);
    assert_eq!(store.export_record(b"expires", now + 100).unwrap(), None);
    assert_eq!(store.export_record(b"never-there", now).unwrap(), None);
    store.flush_all(None, now).unwrap();
    assert_eq!(store.snapshot_keys().unwrap().head.flush_at, None);
}

/// An image frozen by key reads every listed key's record as it was at the
/// freeze, whatever was written since (each kind of write, a key added),
/// and a second freeze gives the same listing while it is kept. A
/// `flush_all` ends it: reading it fails until it is thawed.
#[test]
fn an_image_frozen_by_key_reads_each_record_as_it_was_whatever_was_written_since() {
    let memcached = start_memcached();
    let mut store = store_on(memcached.port);
    let now = unix_now();
    let records = [
        record("set-over", 0, Expiry::Never, b"old", 1),
        record("deleted", 0, Expiry::Never, b"d", 2),
        record("appended", 3, Expiry::Never, b"a", 3),
        record("counter", 0, Expiry::Never, b"41", 4),
        record("touched", 0, Expiry::At(now + 100), b"t", 5),
        record("got-and-touched", 0, Expiry::At(now + 100), b"g", 6),
        record("untouched", 0, Expiry::Never, b"u", 7),
    ];
    for r in &records {
        import(&mut store, r, now);
    }
    let listing = store
        .freeze_keys()
        .unwrap()
        .expect("a memcached backend keeps an image");
    assert_eq!(listing.keys.len(), records.len());
    let write = |key: &'static [u8], mode, value: &'static [u8]| mckv::store::Write {
        mode,
        key,
        flags: 0,
        expiry: Expiry::Never,
        value,
        cas: 9,
    };
    store
        .store(write(b"set-over", StorageMode::Set, b"new"), now)
        .unwrap();
    store.delete(b"deleted", now).unwrap();
    store
        .store(write(b"appended", StorageMode::Append, b"b"), now)
        .unwrap();
    store.arith(b"counter", true, 1, 10, now).unwrap();
    store.touch(b"touched", Expiry::Never, now).unwrap();
    let got_and_touched = KeysRef::One(b"got-and-touched");
    store
        .retrieve(got_and_touched, Some(Expiry::Never), now, &mut |_, _| {})
        .unwrap();
    store
        .store(write(b"added", StorageMode::Set, b"n"), now)
        .unwrap();

    let again = store.freeze_keys().unwrap().unwrap();
    assert_eq!(again.keys, listing.keys, "the image kept is the one listed");
    let keys: Vec<&[u8]> = records.iter().map(|r| &r.key[..]).collect();
    let read = store.export_listed(&keys, now).unwrap();
    for (r, read) in records.iter().zip(read) {
        let was = Record {
            stored_at: now,
            ..r.clone()
        };
        assert_eq!(read, Some(was), "{}", String::from_utf8_lossy(&r.key));
    }
    assert_eq!(store.export_listed(&[b"added"], now).unwrap(), [None]);

    store.flush_all(None, now).unwrap();
    let lost = store.export_listed(&[b"untouched"], now);
    assert!(matches!(lost, Err(StoreError::Refused(_))));
    assert!(matches!(store.freeze_keys(), Err(StoreError::Refused(_))));
    store.thaw();
    assert_eq!(
        store.freeze_keys().unwrap().unwrap().keys.len(),
        0,
        "a new image"
    );
}

/// A snapshot's chunk installed in one go (sets pipelined, more than a
/// batch of them, a value larger than a batch's bytes) reads back exactly,
/// and an item already expired is stored expired.
#[test]
fn a_chunk_installed_at_once_reads_back_exactly() {
    let memcached = start_memcached_with(&["-I", "2m"]);
    let mut store = store_on(memcached.port);
    let now = unix_now();
    let mut records: Vec<Record> = (0..250)
        .map(|i| {
            record(
                &format!("key{i}"),
                i,
                Expiry::Never,
                format!("v{i}").as_bytes(),
                1 + i as u64,
            )
        })
        .collect();
    records.push(record(
        "big",
        7,
        Expiry::At(now + 3600),
        &vec![b'b'; 900_000],
        500,
    ));
    records.push(record("gone", 0, Expiry::At(now - 1), b"x", 501));
    store.install_many(&records, now).unwrap();
    for r in &records[..records.len() - 1] {
        let read = Record {
            stored_at: now,
            ..r.clone()
        };
        assert_eq!(store.export_record(&r.key, now).unwrap(), Some(read));
    }
    assert_eq!(store.export_record(b"gone", now).unwrap(), None);
}

/// memcached's `flush_all` only hides what it flushed, and a later delayed
/// `flush_all` shows it again (it replaces the time before which items are
/// hidden). A reset must leave nothing that could come back: here items
/// hidden by an immediate flush stay gone when a delayed one follows.
/// memcached drops hidden items it meets (its LRU maintainer in the
/// background, an allocation in the same slab class), which would cover up
/// a reset that left them: the maintainer is off here.
#[test]
fn a_reset_leaves_nothing_a_later_delayed_flush_could_bring_back() {
    let memcached = start_memcached_with(&["-o", "no_lru_maintainer"]);
    let mut store = store_on(memcached.port);
    let now = unix_now();
    // Of another slab class than `live`, whose allocation would drop it.
    let hidden = record("hidden", 0, Expiry::Never, &[b'h'; 10_000], 1);
    import(&mut store, &hidden, now);
    store.flush_all(None, now).unwrap();
    let live = record("live", 0, Expiry::Never, b"new", 2);
    import(&mut store, &live, now);
    store.reset(&flush_at(None), now).unwrap();
    assert!(store.snapshot_keys().unwrap().keys.is_empty());
    let mut direct = connect(memcached.port);
    assert_eq!(request(&mut direct, b"flush_all 1000\r\n"), "OK\r\n");
    assert_eq!(request(&mut direct, b"get hidden live\r\n"), "END\r\n");
}

/// A reset takes the snapshot's pending delayed `flush_all`, which then
/// flushes what is imported after it, and drops the one the store had.
#[test]
fn a_reset_takes_the_pending_flush_of_the_snapshot_and_drops_its_own() {
    let (kept_on, flushed_on) = (start_memcached(), start_memcached());
    let (mut kept, mut flushed) = (store_on(kept_on.port), store_on(flushed_on.port));
    let now = unix_now();
    kept.flush_all(Some(now + 2), now).unwrap();
    kept.reset(&flush_at(None), now).unwrap();
    assert_eq!(kept.snapshot_keys().unwrap().head.flush_at, None);
    import(&mut kept, &record("k", 0, Expiry::Never, b"kept", 1), now);
    flushed.reset(&flush_at(Some(now + 2)), now).unwrap();
    assert_eq!(
        flushed.snapshot_keys().unwrap().head.flush_at,
        Some(now + 2)
    );
    import(
        &mut flushed,
        &record("k", 0, Expiry::Never, b"gone", 1),
        now,
    );
    poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match request(&mut connect(flushed_on.port), b"get k\r\n").as_str() {
            "END\r\n" => Ok(()),
            other => Err(format!("the snapshot's flush never came: {other:?}")),
        },
    );
    while unix_now() <= now + 3 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = kept.export_record(b"k", unix_now()).unwrap();
    assert_eq!(got.map(|r| r.entry.value), Some(b"kept".to_vec()));
}

/// A memcached that cannot list its keys, or answers what the protocol
/// does not allow, makes a snapshot fail with a clear error, never a panic
/// or a listing that leaves keys out.
#[test]
fn a_memcached_that_cannot_list_its_keys_fails_the_snapshot_clearly() {
    let no_crawler = start_memcached_with(&["-o", "no_lru_crawler"]);
    let mut store = store_on(no_crawler.port);
    let why = format!("{:?}", store.snapshot_keys().unwrap_err());
    assert!(why.contains("lru crawler disabled"), "{why}");
    assert!(store.reset(&flush_at(None), unix_now()).is_err());

    for (reply, want) in [
        (&b"key=a%2 size=70\n"[..], "Unexpected"),
        (
            b"key=a exp=-1 la=1 cas=1 fetch=no cls=1\nEND\r\n",
            "Unexpected",
        ),
        (b"BUSY currently processing crawler request\r\n", "busy"),
        (b"what\r\n", "what"),
    ] {
        let fake = FakeMemcached::answering(reply);
        let mut store = store_on(fake.port);
        match store.snapshot_keys() {
            Err(StoreError::Backend(why)) => assert!(why.contains(want), "{why}"),
            other => panic!("{:?} answered by {other:?}", String::from_utf8_lossy(reply)),
        }
    }
}

/// A key the text protocol cannot carry (a space, a line end: a meta
/// command's base64 key can spell one) is refused before it reaches
/// memcached, where it would make every later listing of the keys fail;
/// the listing still works after the attempt.
#[test]
fn a_key_the_text_protocol_cannot_carry_is_refused_and_listings_still_work() {
    let memcached = start_memcached_with(&["-I", "2m"]);
    let mut store = store_on(memcached.port);
    let now = unix_now();
    for key in ["a b", "line\nend", "cr\r", "nul\0"] {
        let r = record(key, 0, Expiry::Never, b"v", 1);
        match store.import(&r.key, Some(&r.entry), r.cas, now) {
            Err(StoreError::Refused(why)) => assert!(why.contains("cannot hold a key"), "{why}"),
            other => panic!("{key:?}: {other:?}"),
        }
    }
    import(&mut store, &record("fine", 0, Expiry::Never, b"v", 2), now);
    let listed: Vec<Vec<u8>> = store
        .snapshot_keys()
        .unwrap()
        .keys
        .iter()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(listed, vec![b"fine".to_vec()]);
}

/// A server on a free port that answers every line it reads with `reply`
/// (the store's pooled clients connect too, and stay connected).
struct FakeMemcached {
    port: u16,
}

impl FakeMemcached {
    fn answering(reply: &'static [u8]) -> FakeMemcached {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
                    while let Some(Ok(_)) = lines.next() {
                        if stream.write_all(reply).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FakeMemcached { port }
    }
}
