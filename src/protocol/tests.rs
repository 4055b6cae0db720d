//! Table tests for the parser: every command, every error reply, the
//! equivalences memcached allows, and the prefix property.

use super::reply;
use super::*;

fn limits() -> Limits {
    Limits {
        item_size_max: 1024,
        max_get_line: 8192,
    }
}

fn parse_one(input: &[u8]) -> Result<Parsed, Incomplete> {
    parse(input, &limits())
}

/// The action of a whole, single request.
fn action(input: &[u8]) -> Action {
    match parse_one(input) {
        Ok(Parsed {
            action, consumed, ..
        }) => {
            assert_eq!(
                consumed,
                input.len(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            action
        }
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(input)),
    }
}

fn command(input: &[u8]) -> (Command, bool) {
    match action(input) {
        Action::Execute(Request { command, noreply }) => (command, noreply),
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(input)),
    }
}

fn admin(input: &[u8]) -> (Admin, bool) {
    match action(input) {
        Action::Admin { command, noreply } => (command, noreply),
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(input)),
    }
}

fn key(k: &str) -> Vec<u8> {
    k.as_bytes().to_vec()
}

fn storage(mode: StorageMode, k: &str, flags: u32, exptime: i32, value: &str) -> Command {
    Command::Storage(Storage {
        mode,
        key: key(k),
        flags,
        exptime,
        value: value.as_bytes().to_vec(),
    })
}

fn get(keys: &[&str], with_cas: bool, touch: Option<i32>) -> Command {
    Command::Get(Get {
        keys: keys.iter().map(|k| key(k)).collect(),
        with_cas,
        touch,
    })
}

/// Every valid request for the store, with what it parses to.
fn valid_requests() -> Vec<(&'static [u8], Command, bool)> {
    vec![
        (b"get a\r\n", get(&["a"], false, None), false),
        (b"get a b c\r\n", get(&["a", "b", "c"], false, None), false),
        (b"gets a b\r\n", get(&["a", "b"], true, None), false),
        (b"gat 10 a b\r\n", get(&["a", "b"], false, Some(10)), false),
        (b"gats -1 a\r\n", get(&["a"], true, Some(-1)), false),
        (b"gat 10\r\n", get(&[], false, Some(10)), false),
        (b"bget a\r\n", get(&["a"], false, None), false),
        (
            b"set k 1 2 3\r\nabc\r\n",
            storage(StorageMode::Set, "k", 1, 2, "abc"),
            false,
        ),
        (
            b"set k 0 0 3 noreply\r\nabc\r\n",
            storage(StorageMode::Set, "k", 0, 0, "abc"),
            true,
        ),
        (
            b"set k 0 0 3 anything\r\nabc\r\n",
            storage(StorageMode::Set, "k", 0, 0, "abc"),
            false,
        ),
        (
            b"set k 0 0 0\r\n\r\n",
            storage(StorageMode::Set, "k", 0, 0, ""),
            false,
        ),
        (
            b"set k 0 0 4\r\na\r\nb\r\n",
            storage(StorageMode::Set, "k", 0, 0, "a\r\nb"),
            false,
        ),
        (
            b"add k 0 0 1\r\nx\r\n",
            storage(StorageMode::Add, "k", 0, 0, "x"),
            false,
        ),
        (
            b"replace k 0 0 1\r\nx\r\n",
            storage(StorageMode::Replace, "k", 0, 0, "x"),
            false,
        ),
        (
            b"append k 0 0 1\r\nx\r\n",
            storage(StorageMode::Append, "k", 0, 0, "x"),
            false,
        ),
        (
            b"prepend k 0 0 1\r\nx\r\n",
            storage(StorageMode::Prepend, "k", 0, 0, "x"),
            false,
        ),
        (
            b"cas k 0 0 1 99\r\nx\r\n",
            storage(StorageMode::Cas(99), "k", 0, 0, "x"),
            false,
        ),
        (
            b"cas k 0 0 1 99 noreply\r\nx\r\n",
            storage(StorageMode::Cas(99), "k", 0, 0, "x"),
            true,
        ),
        (b"delete k\r\n", Command::Delete { key: key("k") }, false),
        (b"delete k 0\r\n", Command::Delete { key: key("k") }, false),
        (
            b"delete k noreply\r\n",
            Command::Delete { key: key("k") },
            true,
        ),
        (
            b"delete k 0 noreply\r\n",
            Command::Delete { key: key("k") },
            true,
        ),
        (
            b"incr k 5\r\n",
            Command::Arith(Arith {
                key: key("k"),
                incr: true,
                delta: 5,
            }),
            false,
        ),
        (
            b"decr k 18446744073709551615 noreply\r\n",
            Command::Arith(Arith {
                key: key("k"),
                incr: false,
                delta: u64::MAX,
            }),
            true,
        ),
        (
            b"touch k 10\r\n",
            Command::Touch {
                key: key("k"),
                exptime: 10,
            },
            false,
        ),
        (
            b"touch k 10 noreply\r\n",
            Command::Touch {
                key: key("k"),
                exptime: 10,
            },
            true,
        ),
        (b"flush_all\r\n", Command::FlushAll { delay: 0 }, false),
        (b"flush_all 5\r\n", Command::FlushAll { delay: 5 }, false),
        (
            b"flush_all noreply\r\n",
            Command::FlushAll { delay: 0 },
            true,
        ),
        (
            b"flush_all 5 noreply\r\n",
            Command::FlushAll { delay: 5 },
            true,
        ),
    ]
}

/// Every valid request the node answers itself, with what it parses to.
fn admin_requests() -> Vec<(&'static [u8], Admin, bool)> {
    vec![
        (b"version\r\n", Admin::Version, false),
        (b"verbosity 1\r\n", Admin::Verbosity, false),
        (b"verbosity 1 noreply\r\n", Admin::Verbosity, true),
        (b"stats\r\n", Admin::Stats(StatsGroup::General), false),
        (b"stats reset\r\n", Admin::Stats(StatsGroup::Reset), false),
        (
            b"stats settings\r\n",
            Admin::Stats(StatsGroup::Settings),
            false,
        ),
        (b"stats items\r\n", Admin::Stats(StatsGroup::Items), false),
        (b"stats slabs\r\n", Admin::Stats(StatsGroup::Slabs), false),
        (b"stats sizes\r\n", Admin::Stats(StatsGroup::Sizes), false),
        (b"stats conns\r\n", Admin::Stats(StatsGroup::Conns), false),
        (
            b"stats extstore\r\n",
            Admin::Stats(StatsGroup::Extstore),
            false,
        ),
        (
            b"stats detail on\r\n",
            Admin::Stats(StatsGroup::Detail(Detail::On)),
            false,
        ),
        (
            b"stats detail off\r\n",
            Admin::Stats(StatsGroup::Detail(Detail::Off)),
            false,
        ),
        (
            b"stats detail dump\r\n",
            Admin::Stats(StatsGroup::Detail(Detail::Dump)),
            false,
        ),
        (
            b"stats cachedump 1 0\r\n",
            Admin::Stats(StatsGroup::CacheDump { class: 1, limit: 0 }),
            false,
        ),
        (
            b"stats cachedump 63 4294967297\r\n",
            Admin::Stats(StatsGroup::CacheDump {
                class: 63,
                limit: 1,
            }),
            false,
        ),
        (
            b"cache_memlimit 8\r\n",
            Admin::CacheMemlimit { megabytes: 8 },
            false,
        ),
        (
            b"cache_memlimit 1000000000 noreply\r\n",
            Admin::CacheMemlimit {
                megabytes: 1_000_000_000,
            },
            true,
        ),
        (b"slabs automove 0\r\n", Admin::SlabsAutomove, false),
        (b"slabs automove 2\r\n", Admin::SlabsAutomove, false),
        (b"slabs automove 1 noreply\r\n", Admin::SlabsAutomove, true),
        (b"slabs automove ratio 0.5\r\n", Admin::SlabsAutomove, false),
        (
            b"slabs reassign 1 2\r\n",
            Admin::SlabsReassign {
                source: 1,
                destination: 2,
            },
            false,
        ),
        (
            b"slabs reassign -1 4294967297\r\n",
            Admin::SlabsReassign {
                source: -1,
                destination: 1,
            },
            false,
        ),
        (b"show\r\n", Admin::Show, false),
        (b"quit\r\n", Admin::Quit, false),
    ]
}

#[test]
fn every_command_parses() {
    for (input, want, noreply) in valid_requests() {
        assert_eq!(
            command(input),
            (want, noreply),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_admin_command_parses() {
    for (input, want, noreply) in admin_requests() {
        assert_eq!(
            admin(input),
            (want, noreply),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_strict_prefix_is_incomplete() {
    let data = valid_requests().into_iter().map(|(input, ..)| input);
    let admin = admin_requests().into_iter().map(|(input, ..)| input);
    for input in data.chain(admin) {
        for end in 0..input.len() {
            assert_eq!(
                parse_one(&input[..end]),
                Err(Incomplete),
                "{:?}",
                String::from_utf8_lossy(&input[..end])
            );
        }
    }
}

#[test]
fn equivalent_spellings_parse_alike() {
    let pairs: &[(&[u8], &[u8])] = &[
        (b"get a\n", b"get a\r\n"),
        (b"get   a    b  \r\n", b"get a b\r\n"),
        (b"  get a\r\n", b"get a\r\n"),
        (b"set k 0 0 1\t\r\nx\r\n", b"set k 0 0 1\r\nx\r\n"),
        (b"set k +0 00 1\r\nx\r\n", b"set k 0 0 1\r\nx\r\n"),
        (b"set k 4294967296 0 1\r\nx\r\n", b"set k 0 0 1\r\nx\r\n"),
        (
            b"set k 0 4294967296 4294967297\r\nx\r\n",
            b"set k 0 0 1\r\nx\r\n",
        ),
        (b"get a\0garbage\r\n", b"get a\r\n"),
        (b"incr k +5\r\n", b"incr k 5\r\n"),
        (b"delete k 0 \r\n", b"delete k 0\r\n"),
    ];
    for (a, b) in pairs {
        assert_eq!(
            command(a).0,
            command(b).0,
            "{:?}",
            String::from_utf8_lossy(a)
        );
    }
}

#[test]
fn admin_spellings_memcached_takes_alike_parse_alike() {
    let pairs: &[(&[u8], &[u8])] = &[
        (b"stats  detail  on extra\r\n", b"stats detail on\r\n"),
        (b"stats settings x\r\n", b"stats settings\r\n"),
        (b"stats cachedump 1 2 3\r\n", b"stats cachedump 1 2\r\n"),
        (b"cache_memlimit +064\r\n", b"cache_memlimit 64\r\n"),
        (b"cache_memlimit 64 x\r\n", b"cache_memlimit 64\r\n"),
        (b"slabs  automove  1 \r\n", b"slabs automove 1\r\n"),
        (b"slabs automove 1 2\r\n", b"slabs automove 1\r\n"),
    ];
    for (a, b) in pairs {
        assert_eq!(admin(a), admin(b), "{:?}", String::from_utf8_lossy(a));
    }
}

#[test]
fn binary_values_pass_through() {
    let mut input = b"set k 0 0 256\r\n".to_vec();
    let value: Vec<u8> = (0..=255u8).collect();
    input.extend_from_slice(&value);
    input.extend_from_slice(b"\r\n");
    match command(&input).0 {
        Command::Storage(s) => assert_eq!(s.value, value),
        other => panic!("{other:?}"),
    }
}

fn reply_of(input: &[u8]) -> (&'static [u8], bool, usize) {
    match parse_one(input) {
        Ok(Parsed {
            action: Action::Reply { text, silent, .. },
            consumed,
            ..
        }) => (text, silent, consumed),
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn every_error_reply() {
    let long_key = "k".repeat(251);
    let owned: Vec<(Vec<u8>, &[u8], bool)> = vec![
        (b"\r\n".to_vec(), reply::ERROR, false),
        (b"   \r\n".to_vec(), reply::ERROR, false),
        (b"x\r\n".to_vec(), reply::ERROR, false),
        (b"GET a\r\n".to_vec(), reply::ERROR, false),
        (b"get\r\n".to_vec(), reply::ERROR, false),
        (b"gex a\r\n".to_vec(), reply::ERROR, false),
        (b"mx a v\r\n".to_vec(), reply::ERROR, false),
        (b"set k 0 0\r\n".to_vec(), reply::ERROR, false),
        (
            b"set k 0 0 1 noreply extra\r\n".to_vec(),
            reply::ERROR,
            false,
        ),
        (b"cas k 0 0 1\r\n".to_vec(), reply::ERROR, false),
        (b"incr k\r\n".to_vec(), reply::ERROR, false),
        (b"delete\r\n".to_vec(), reply::ERROR, false),
        (b"touch k\r\n".to_vec(), reply::ERROR, false),
        (b"verbosity\r\n".to_vec(), reply::ERROR, false),
        (b"verbosity noreply\r\n".to_vec(), reply::BAD_FORMAT, true),
        (b"verbosity abc\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"stats nonsense\r\n".to_vec(), reply::ERROR, false),
        (b"stats noreply\r\n".to_vec(), reply::ERROR, false),
        (b"stats SLABS\r\n".to_vec(), reply::ERROR, false),
        (b"stats detail\r\n".to_vec(), reply::DETAIL_USAGE, false),
        (b"stats detail x\r\n".to_vec(), reply::DETAIL_USAGE, false),
        (
            b"stats cachedump\r\n".to_vec(),
            reply::BAD_COMMAND_LINE,
            false,
        ),
        (
            b"stats cachedump 1\r\n".to_vec(),
            reply::BAD_COMMAND_LINE,
            false,
        ),
        (
            b"stats cachedump x 1\r\n".to_vec(),
            reply::BAD_FORMAT,
            false,
        ),
        (
            b"stats cachedump 1 -1\r\n".to_vec(),
            reply::BAD_FORMAT,
            false,
        ),
        (
            b"stats cachedump 64 0\r\n".to_vec(),
            reply::ILLEGAL_SLAB_ID,
            false,
        ),
        (b"cache_memlimit\r\n".to_vec(), reply::ERROR, false),
        (b"cache_memlimit x\r\n".to_vec(), reply::ERROR, false),
        (b"cache_memlimit -1\r\n".to_vec(), reply::ERROR, false),
        (b"cache_memlimit 1 2 3\r\n".to_vec(), reply::ERROR, false),
        (
            b"cache_memlimit 7\r\n".to_vec(),
            reply::MEMLIMIT_TOO_SMALL,
            false,
        ),
        (
            b"cache_memlimit 4294967296\r\n".to_vec(),
            reply::MEMLIMIT_TOO_SMALL,
            false,
        ),
        (
            b"cache_memlimit 1 noreply\r\n".to_vec(),
            reply::MEMLIMIT_TOO_SMALL,
            true,
        ),
        (
            b"cache_memlimit 1000000001\r\n".to_vec(),
            reply::MEMLIMIT_NOT_BYTES,
            false,
        ),
        (b"slabs\r\n".to_vec(), reply::ERROR, false),
        (b"slabs automove\r\n".to_vec(), reply::ERROR, false),
        (b"slabs automove x\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"slabs automove -1\r\n".to_vec(), reply::BAD_FORMAT, false),
        (
            b"slabs automove x noreply\r\n".to_vec(),
            reply::BAD_FORMAT,
            true,
        ),
        (b"slabs automove 3\r\n".to_vec(), reply::ERROR, false),
        (b"slabs automove ratio\r\n".to_vec(), reply::ERROR, false),
        (
            b"slabs automove ratio x 1\r\n".to_vec(),
            reply::ERROR,
            false,
        ),
        (b"slabs reassign 1\r\n".to_vec(), reply::ERROR, false),
        (
            b"slabs reassign 1 2 noreply\r\n".to_vec(),
            reply::ERROR,
            false,
        ),
        (b"slabs reassign x 1\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"slabs Automove 1\r\n".to_vec(), reply::ERROR, false),
        (b"shutdown\r\n".to_vec(), reply::SHUTDOWN_DISABLED, false),
        (b"set k 0 0 -1\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"set k abc 0 1\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"set k 0 abc 1\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"set k -1 0 1\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"set k 0 0 1x\r\n".to_vec(), reply::BAD_FORMAT, false),
        (b"set k 0 0 x noreply\r\n".to_vec(), reply::BAD_FORMAT, true),
        (b"cas k 0 0 1 abc\r\n".to_vec(), reply::BAD_FORMAT, false),
        (
            format!("set {long_key} 0 0 1\r\n").into_bytes(),
            reply::BAD_FORMAT,
            false,
        ),
        (
            format!("get a {long_key}\r\n").into_bytes(),
            reply::BAD_FORMAT,
            false,
        ),
        (
            format!("delete {long_key}\r\n").into_bytes(),
            reply::BAD_FORMAT,
            false,
        ),
        (
            format!("incr {long_key} 1\r\n").into_bytes(),
            reply::BAD_FORMAT,
            false,
        ),
        (
            format!("touch {long_key} 1\r\n").into_bytes(),
            reply::BAD_FORMAT,
            false,
        ),
        (b"incr k abc\r\n".to_vec(), reply::INVALID_DELTA, false),
        (b"incr k -1\r\n".to_vec(), reply::INVALID_DELTA, false),
        (
            b"decr k abc noreply\r\n".to_vec(),
            reply::INVALID_DELTA,
            true,
        ),
        (b"touch k abc\r\n".to_vec(), reply::INVALID_EXPTIME, false),
        (b"gat abc k\r\n".to_vec(), reply::INVALID_EXPTIME, false),
        (b"delete k 5\r\n".to_vec(), reply::DELETE_USAGE, false),
        (
            b"delete k 5 noreply\r\n".to_vec(),
            reply::DELETE_USAGE,
            true,
        ),
        (b"delete k 0 extra\r\n".to_vec(), reply::DELETE_USAGE, false),
        (b"flush_all abc\r\n".to_vec(), reply::INVALID_EXPTIME, false),
        (
            b"set k 0 0 2147483648\r\n".to_vec(),
            reply::BAD_FORMAT,
            false,
        ),
    ];
    for (input, want, silent) in owned {
        let (text, got_silent, _) = reply_of(&input);
        assert_eq!(
            (text, got_silent),
            (want, silent),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn only_an_overlong_retrieval_key_discards_unflushed_replies() {
    let long_key = "k".repeat(251);
    let discards = |line: String| match parse_one(line.as_bytes()) {
        Ok(Parsed {
            action: Action::Reply {
                discards_unflushed, ..
            },
            ..
        }) => discards_unflushed,
        other => panic!("{other:?}"),
    };
    assert!(discards(format!("get a {long_key}\r\n")));
    assert!(discards(format!("gats 1 {long_key}\r\n")));
    assert!(!discards(format!("delete {long_key}\r\n")));
    assert!(!discards("bogus\r\n".to_string()));
}

#[test]
fn a_bad_command_line_leaves_the_value_to_be_read_as_a_command() {
    let input = b"set k 0 0 -1\r\nabc\r\n";
    let (_, _, consumed) = reply_of(input);
    assert_eq!(&input[consumed..], b"abc\r\n");
}

#[test]
fn bad_data_chunk_consumes_exactly_the_declared_length() {
    let input = b"set k 0 0 3\r\nabcde\r\n";
    let (text, silent, consumed) = reply_of(input);
    assert_eq!((text, silent), (reply::BAD_DATA_CHUNK, false));
    assert_eq!(&input[consumed..], b"\r\n");
}

#[test]
fn oversized_values_are_swallowed() {
    // 59 bytes of item header + key 1 + value 964 = 1024: the largest that fits.
    assert!(matches!(parse_one(b"set k 0 0 964\r\n"), Err(Incomplete)));
    assert_eq!(parse_one(b"set k 1 0 964\r\n").unwrap().swallow, 966);
    let parsed = parse_one(b"set k 0 0 2000\r\n").unwrap();
    assert_eq!(parsed.swallow, 2002);
    assert_eq!(parsed.consumed, 16);
    assert_eq!(
        parsed.action,
        Action::Execute(Request {
            command: Command::TooLarge {
                key: key("k"),
                is_set: true
            },
            noreply: false
        })
    );
}

#[test]
fn long_lines_close_unless_multiget() {
    let junk = vec![b'x'; Limits::LINE_SCAN_LIMIT + 1];
    assert_eq!(parse_one(&junk).map(|p| p.action), Ok(Action::Close));
    let mut multiget = b"get ".to_vec();
    multiget.extend(std::iter::repeat_n(b'k', Limits::LINE_SCAN_LIMIT));
    assert_eq!(parse_one(&multiget), Err(Incomplete));
    multiget.extend(std::iter::repeat_n(b'k', limits().max_get_line));
    assert_eq!(parse_one(&multiget).map(|p| p.action), Ok(Action::Close));
}

#[test]
fn http_requests_close_the_connection() {
    assert_eq!(
        parse_one(b"GET / HTTP/1.1\r\n").map(|p| p.action),
        Ok(Action::Close)
    );
}

#[test]
fn pipelined_requests_parse_one_at_a_time() {
    let input = b"set k 0 0 1\r\nx\r\nget k\r\ndelete k\r\n";
    let mut at = 0;
    let mut seen = 0;
    while at < input.len() {
        let parsed = parse_one(&input[at..]).expect("complete");
        at += parsed.consumed;
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn multiget_past_the_token_limit_keeps_every_key() {
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    match command(line.as_bytes()).0 {
        Command::Get(g) => assert_eq!(g.keys, keys.iter().map(|k| key(k)).collect()),
        other => panic!("{other:?}"),
    }
    // Spaces, and an overlong key, past the limit count as well.
    let line = format!("gat 5  {}  {}  \r\n", keys.join("  "), "k".repeat(251));
    assert!(matches!(
        parse_one(line.as_bytes()),
        Ok(Parsed {
            action: Action::Reply {
                text: reply::BAD_FORMAT,
                discards_unflushed: true,
                ..
            },
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Meta commands
// ---------------------------------------------------------------------------

fn meta(k: &str, op: MetaOp, flags: Vec<MetaFlag>) -> Command {
    Command::Meta(Meta {
        key: key(k),
        op,
        reply: MetaReply {
            flags,
            ..MetaReply::default()
        },
    })
}

fn meta_with(command: Command, edit: impl FnOnce(&mut MetaReply)) -> Command {
    let Command::Meta(mut m) = command else {
        unreachable!()
    };
    edit(&mut m.reply);
    Command::Meta(m)
}

#[test]
fn meta_commands_parse_with_their_flags_in_order() {
    let set = |mode, compare, flags, exptime, value: &str| {
        MetaOp::Set(MetaSet {
            mode,
            compare,
            flags,
            exptime,
            value: value.as_bytes().to_vec(),
        })
    };
    let cases: Vec<(&[u8], Command)> = vec![
        (b"mg k\r\n", meta("k", MetaOp::Get, vec![])),
        (
            b"mg k s v t T30 c f k O12\r\n",
            meta_with(
                meta(
                    "k",
                    MetaOp::Get,
                    vec![
                        MetaFlag::Size,
                        MetaFlag::Ttl,
                        MetaFlag::Touch(30),
                        MetaFlag::Cas,
                        MetaFlag::ClientFlags,
                        MetaFlag::Key,
                        MetaFlag::Opaque(b"O12".to_vec()),
                    ],
                ),
                |r| r.value = true,
            ),
        ),
        (
            b"mg a2V5 b q k\r\n",
            meta_with(meta("key", MetaOp::Get, vec![MetaFlag::Key]), |r| {
                r.base64 = true;
                r.quiet = true;
            }),
        ),
        (
            b"ms k 2 T9 F3 c\r\nhi\r\n",
            meta(
                "k",
                set(StorageMode::Set, None, 3, 9, "hi"),
                vec![MetaFlag::Cas],
            ),
        ),
        (
            b"ms k 2 MR C7\r\nhi\r\n",
            meta("k", set(StorageMode::Cas(7), None, 0, 0, "hi"), vec![]),
        ),
        (
            b"ms k 2 MA C7\r\nhi\r\n",
            meta("k", set(StorageMode::Append, Some(7), 0, 0, "hi"), vec![]),
        ),
        (
            b"ms k 2 ME C7 I\r\nhi\r\n",
            meta("k", set(StorageMode::Add, None, 0, 0, "hi"), vec![]),
        ),
        (
            b"md k C0 k T5\r\n",
            meta(
                "k",
                MetaOp::Delete { compare: Some(0) },
                vec![MetaFlag::Key],
            ),
        ),
        (
            b"ma k N60 J5 D2 MD C0 t\r\n",
            meta(
                "k",
                MetaOp::Arith(MetaArith {
                    incr: false,
                    delta: 2,
                    initial: Some(5),
                    compare: None,
                }),
                vec![MetaFlag::Vivify(60), MetaFlag::Ttl],
            ),
        ),
        (b"me k\r\n", meta("k", MetaOp::Debug, vec![])),
    ];
    for (input, want) in cases {
        assert_eq!(
            command(input),
            (want, false),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(action(b"mn\r\n"), Action::MetaNoop);
}

#[test]
fn every_meta_error_reply() {
    let long_key = "k".repeat(251);
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (b"mg\r\n".to_vec(), reply::ERROR),
        (b"mz k\r\n".to_vec(), reply::ERROR),
        (format!("mg {long_key}\r\n").into_bytes(), reply::BAD_FORMAT),
        (b"me\r\n".to_vec(), reply::BAD_FORMAT),
        (b"me !!!! b\r\n".to_vec(), reply::BAD_FORMAT),
        (
            b"mg k 1 2 3 4 5 6 7 8 9 a b c d e f g h i\r\n".to_vec(),
            reply::META_TOO_MANY_FLAGS_MG,
        ),
        (
            b"md k 1 2 3 4 5 6 7 8 9 a b c d e f g h i\r\n".to_vec(),
            reply::META_TOO_MANY_FLAGS,
        ),
        (b"mg k v v\r\n".to_vec(), reply::META_DUPLICATE_FLAG),
        (b"mg k x\r\n".to_vec(), reply::META_INVALID_FLAG),
        (b"mg k h\r\n".to_vec(), reply::META_INVALID_FLAG),
        (b"mg k Tx\r\n".to_vec(), reply::META_BAD_TOKEN),
        (b"mg k Fx\r\n".to_vec(), reply::BAD_FORMAT),
        (b"mg !!!! b\r\n".to_vec(), reply::META_BAD_KEY_ENCODING),
        (b"mg k Ox Tx b\r\n".to_vec(), reply::META_BAD_KEY_ENCODING),
        (
            format!("mg k O{}\r\n", "o".repeat(32)).into_bytes(),
            reply::META_OPAQUE_TOO_LONG,
        ),
        (
            b"md k x\r\n".to_vec(),
            reply::META_INVALID_OR_DUPLICATE_FLAG,
        ),
        (
            b"md k I\r\n".to_vec(),
            reply::META_INVALID_OR_DUPLICATE_FLAG,
        ),
        (
            b"ma k Dx\r\n".to_vec(),
            reply::META_INVALID_OR_DUPLICATE_FLAG,
        ),
        (b"ma k MX\r\n".to_vec(), reply::META_BAD_ARITH_MODE),
        (b"ms k\r\n".to_vec(), reply::BAD_FORMAT),
        (b"ms k x\r\n".to_vec(), reply::BAD_FORMAT),
    ];
    for (input, want) in cases {
        let (text, silent, consumed) = reply_of(&input);
        assert_eq!(
            (text, silent),
            (want, false),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
        assert_eq!(consumed, input.len());
    }
}

#[test]
fn a_meta_set_error_after_the_length_swallows_the_value() {
    for (line, want) in [
        (&b"ms k 3 MX\r\n"[..], reply::META_BAD_SET_MODE),
        (b"ms k 3 MEE\r\n", reply::META_BAD_MODE_LENGTH),
        (b"ms k 3 z\r\n", reply::META_INVALID_FLAG),
        (b"ms k 3 I C1\r\n", reply::META_INVALID_FLAG),
    ] {
        let parsed = parse_one(line).unwrap();
        assert_eq!(parsed.swallow, 5, "{:?}", String::from_utf8_lossy(line));
        assert!(matches!(parsed.action, Action::Reply { text, .. } if text == want));
    }
    // A bad length swallows nothing.
    assert_eq!(parse_one(b"ms k -1\r\n").unwrap().swallow, 0);
    let big = parse_one(b"ms k 2000 T1\r\n").unwrap();
    assert_eq!(big.swallow, 2002);
    assert!(matches!(
        big.action,
        Action::Execute(Request {
            command: Command::TooLarge { is_set: true, .. },
            ..
        })
    ));
}

#[test]
fn every_strict_prefix_of_a_meta_set_is_incomplete() {
    let input = b"ms k 5 T0 c\r\nab\r\nc\r\n";
    for end in 0..input.len() {
        assert_eq!(parse_one(&input[..end]), Err(Incomplete), "{end}");
    }
    assert!(parse_one(input).is_ok());
}

#[test]
fn a_storage_line_without_its_whole_block_says_how_long_the_block_is() {
    for (request, line_len) in [
        (&b"set k 5 0 10 noreply\r\n0123456789\r\n"[..], 22),
        (b"ms k 10 T5 F7 q\r\n0123456789\r\n", 17),
    ] {
        assert_eq!(request[line_len - 1], b'\n');
        for cut in 0..request.len() {
            let expected = match cut < line_len {
                true => Awaiting::More,
                false => Awaiting::Block {
                    line_len,
                    block_len: 12,
                },
            };
            let got = parse_awaiting(&request[..cut], &limits());
            assert_eq!(got, Err(expected), "{:?}", String::from_utf8_lossy(request));
        }
    }
    // Only storage commands wait for a block of known length.
    assert_eq!(parse_awaiting(b"get k", &limits()), Err(Awaiting::More));
}

/// Storage requests whose block may be read apart, classic and meta: each
/// meta flag `ms` reads, its modes, a base64 key, and blocks that do not
/// end in `\r\n`.
const REQUESTS_WITH_BLOCKS: [&[u8]; 13] = [
    b"set k 5 0 10 noreply\r\n0123456789\r\n",
    b"cas k 0 0 3 77\r\na\r\n\r\n",
    b"append k 0 0 0\r\n\r\n",
    b"set k 0 0 2\r\nabcd",
    b"ms k 10 T5 F7 I q\r\n0123456789\r\n",
    b"ms Zm9v 3 b k c O123 s\r\nfoo\r\n",
    b"ms k 2 MA C7\r\nhi\r\n",
    b"ms k 2 MP C0 q\r\nhi\r\n",
    b"ms k 2 MR C9 T-1\r\nhi\r\n",
    b"ms k 0 ME\r\n\r\n",
    b"ms k 2 MS F4294967295\r\n\r\n\r\n",
    b"ms k 2 q\r\nabcd",
    b"ms k 2\r\nab\n\r",
];

#[test]
fn a_block_read_apart_parses_as_the_same_request_and_becomes_its_value() {
    let mut long_value = b"ms k 900 T1\r\n".to_vec();
    long_value.extend_from_slice(&[b'v'; 900]);
    long_value.extend_from_slice(b"\r\n");
    for request in REQUESTS_WITH_BLOCKS.into_iter().chain([&long_value[..]]) {
        let Err(Awaiting::Block {
            line_len,
            block_len,
        }) = parse_awaiting(&request[..request.len() - 1], &limits())
        else {
            panic!("{:?} waits for no block", String::from_utf8_lossy(request));
        };
        let whole = parse_one(request).unwrap();
        let block = request[line_len..line_len + block_len].to_vec();
        let apart = parse_with_block(&request[..line_len], block, &limits());
        let what = String::from_utf8_lossy(request);
        assert_eq!(apart.action, whole.action, "{what:?}");
        assert_eq!(apart.swallow, whole.swallow, "{what:?}");
        assert_eq!(apart.consumed, line_len, "{what:?}");
        assert_eq!(whole.consumed, line_len + block_len, "{what:?}");
    }
}

#[test]
fn a_meta_set_refused_on_its_line_waits_for_no_block() {
    // Too large for the item size (1,023 bytes plus the item's overhead),
    // and errors found once the length is read: each swallows its block
    // without reading it, however much of it is here.
    for line in [
        &b"ms k 1023 T1\r\n"[..],
        b"ms k 3 MX\r\n",
        b"ms k 3 I C1\r\n",
    ] {
        let refused = parse_one(line).unwrap();
        assert!(refused.swallow > 0);
        let mut request = line.to_vec();
        request.extend_from_slice(b"abc");
        for cut in line.len()..=request.len() {
            assert_eq!(
                parse_awaiting(&request[..cut], &limits()),
                Ok(refused.clone()),
                "{:?}",
                String::from_utf8_lossy(&request[..cut])
            );
        }
    }
}
