//! Table tests for the binary protocol: what each request decodes into,
//! every refusal and when it closes, the prefix property, and the response
//! each text reply becomes (checked against memcached 1.6.18's bytes in
//! tests/differential.rs).

use super::header::{Response, HEADER_LEN};
use super::*;
use crate::protocol::{
    Admin, Command, Detail, Incomplete, Limits, Meta, MetaArith, MetaFlag, MetaOp, MetaReply,
    MetaSet, StatsGroup, StorageMode,
};

const OPAQUE: u32 = 0xdead_beef;

fn limits() -> Limits {
    Limits {
        item_size_max: 1024,
        max_get_line: 8192,
    }
}

/// A request as a client sends it, with lengths taken from its parts.
fn request(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
    let body = (key.len() + extras.len() + value.len()) as u32;
    with_lengths(
        opcode,
        key.len() as u16,
        extras.len() as u8,
        body,
        cas,
        &[extras, key, value].concat(),
    )
}

/// A request whose header claims the given lengths, followed by `body`.
fn with_lengths(opcode: u8, key: u16, extras: u8, body_len: u32, cas: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![REQUEST_MAGIC, opcode];
    r.extend_from_slice(&key.to_be_bytes());
    r.extend_from_slice(&[extras, 0, 0, 0]);
    r.extend_from_slice(&body_len.to_be_bytes());
    r.extend_from_slice(&OPAQUE.to_be_bytes());
    r.extend_from_slice(&cas.to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn set_extras(flags: u32, exptime: u32) -> Vec<u8> {
    [flags.to_be_bytes(), exptime.to_be_bytes()].concat()
}

fn arith_extras(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    [
        &delta.to_be_bytes()[..],
        &initial.to_be_bytes(),
        &exptime.to_be_bytes(),
    ]
    .concat()
}

/// The decoding of a whole, single request (it must use all of it).
fn decoded(input: &[u8]) -> Decoded {
    let d = decode(input, &limits()).unwrap_or_else(|_| panic!("incomplete: {input:?}"));
    assert_eq!(d.consumed, input.len(), "{input:?}");
    d
}

fn executed(input: &[u8]) -> Command {
    match decoded(input).action {
        Action::Execute(command) => command,
        other => panic!("{other:?}"),
    }
}

fn meta(key: &str, op: MetaOp, flags: Vec<MetaFlag>, value: bool) -> Command {
    Command::Meta(Meta {
        key: key.as_bytes().to_vec(),
        op,
        reply: MetaReply {
            flags,
            quiet: false,
            base64: false,
            value,
        },
    })
}

fn get_flags() -> Vec<MetaFlag> {
    vec![MetaFlag::ClientFlags, MetaFlag::Cas]
}

fn set_op(
    mode: StorageMode,
    compare: Option<u64>,
    flags: u32,
    exptime: i32,
    value: &str,
) -> MetaOp {
    MetaOp::Set(MetaSet {
        mode,
        compare,
        flags,
        exptime,
        value: value.as_bytes().to_vec(),
    })
}

#[test]
fn retrievals_and_touches_are_mg() {
    let touch = |t: i32| [get_flags(), vec![MetaFlag::Touch(t)]].concat();
    let table = [
        (
            request(0x00, b"k", &[], &[], 0),
            meta("k", MetaOp::Get, get_flags(), true),
        ),
        (
            request(0x0d, b"k", &[], &[], 0),
            meta("k", MetaOp::Get, get_flags(), true),
        ),
        (
            request(0x1c, b"k", &9u32.to_be_bytes(), &[], 0),
            meta("k", MetaOp::Get, touch(9), false),
        ),
        (
            request(0x1d, b"k", &0u32.to_be_bytes(), &[], 0),
            meta("k", MetaOp::Get, touch(0), true),
        ),
        // An exptime past i32::MAX is kept at the furthest the store takes,
        // never read as negative (already expired).
        (
            request(0x24, b"k", &u32::MAX.to_be_bytes(), &[], 0),
            meta("k", MetaOp::Get, touch(i32::MAX), true),
        ),
    ];
    for (input, want) in table {
        assert_eq!(executed(&input), want, "{input:?}");
    }
}

#[test]
fn storage_commands_are_ms_and_a_cas_makes_set_add_replace_a_cas() {
    let set = |opcode, cas| request(opcode, b"k", &set_extras(5, 60), b"val", cas);
    let concat = |opcode, cas| request(opcode, b"k", &[], b"val", cas);
    let c = vec![MetaFlag::Cas];
    let table = [
        (set(0x01, 0), set_op(StorageMode::Set, None, 5, 60, "val")),
        (set(0x11, 0), set_op(StorageMode::Set, None, 5, 60, "val")),
        (set(0x02, 0), set_op(StorageMode::Add, None, 5, 60, "val")),
        (
            set(0x13, 0),
            set_op(StorageMode::Replace, None, 5, 60, "val"),
        ),
        (
            set(0x01, 7),
            set_op(StorageMode::Cas(7), None, 5, 60, "val"),
        ),
        (
            set(0x02, 7),
            set_op(StorageMode::Cas(7), None, 5, 60, "val"),
        ),
        (
            set(0x03, 7),
            set_op(StorageMode::Cas(7), None, 5, 60, "val"),
        ),
        (
            concat(0x0e, 0),
            set_op(StorageMode::Append, None, 0, 0, "val"),
        ),
        (
            concat(0x1a, 7),
            set_op(StorageMode::Prepend, Some(7), 0, 0, "val"),
        ),
    ];
    for (input, op) in table {
        assert_eq!(
            executed(&input),
            meta("k", op, c.clone(), false),
            "{input:?}"
        );
    }
}

#[test]
fn delete_incr_decr_and_flush() {
    let arith = |incr, initial, compare| {
        MetaOp::Arith(MetaArith {
            incr,
            delta: 3,
            initial,
            compare,
        })
    };
    let table = [
        (
            request(0x04, b"k", &[], &[], 0),
            meta("k", MetaOp::Delete { compare: None }, vec![], false),
        ),
        (
            request(0x14, b"k", &[], &[], 9),
            meta("k", MetaOp::Delete { compare: Some(9) }, vec![], false),
        ),
        (
            request(0x05, b"k", &arith_extras(3, 10, 60), &[], 0),
            meta(
                "k",
                arith(true, Some(10), None),
                vec![MetaFlag::Cas, MetaFlag::Vivify(60)],
                true,
            ),
        ),
        // Expiration 0xffffffff: a miss is not created.
        (
            request(0x16, b"k", &arith_extras(3, 10, u32::MAX), &[], 4),
            meta("k", arith(false, None, Some(4)), vec![MetaFlag::Cas], true),
        ),
        (
            request(0x08, b"", &[], &[], 0),
            Command::FlushAll { delay: 0 },
        ),
        (
            request(0x18, b"", &30u32.to_be_bytes(), &[], 0),
            Command::FlushAll { delay: 30 },
        ),
    ];
    for (input, want) in table {
        assert_eq!(executed(&input), want, "{input:?}");
    }
}

#[test]
fn noop_version_quit_and_stat_groups_are_answered_by_the_node() {
    let admin = |input: Vec<u8>| decoded(&input).action;
    assert_eq!(admin(request(0x0a, b"", &[], &[], 0)), Action::Noop);
    assert_eq!(
        admin(request(0x0b, b"", &[], &[], 0)),
        Action::Admin(Admin::Version)
    );
    assert_eq!(
        admin(request(0x17, b"", &[], &[], 0)),
        Action::Admin(Admin::Quit)
    );
    let stat = |key: &[u8]| admin(request(0x10, key, &[], &[], 0));
    let table: [(&[u8], StatsGroup); 8] = [
        (b"", StatsGroup::General),
        (b"reset", StatsGroup::Reset),
        (b"resetting", StatsGroup::Reset),
        (b"settings", StatsGroup::Settings),
        (b"items", StatsGroup::Items),
        (b"slabs", StatsGroup::Slabs),
        (b"detail dump", StatsGroup::Detail(Detail::Dump)),
        (b"detail on", StatsGroup::Detail(Detail::On)),
    ];
    for (key, group) in table {
        assert_eq!(stat(key), Action::Admin(Admin::Stats(group)), "{key:?}");
    }
    let not_found = Action::Refuse {
        status: Status::KeyNotFound,
        close: false,
    };
    for key in [
        &b"conns"[..],
        b"items2",
        b"detail",
        b"detail x",
        b"cachedump 1 1",
    ] {
        assert_eq!(stat(key), not_found, "{key:?}");
    }
}

/// What a malformed request gets: (request, status, whether the
/// connection closes, bytes consumed, bytes swallowed), as memcached 1.6.18.
#[test]
fn malformed_requests_are_refused_as_memcached_refuses_them() {
    let unknown = Status::UnknownCommand;
    let invalid = Status::InvalidArguments;
    let table: Vec<(Vec<u8>, Status, bool, usize, usize)> = vec![
        // Key and extras longer than the body.
        (with_lengths(0x00, 3, 0, 2, 0, b"abc"), unknown, true, 27, 0),
        (
            with_lengths(0x01, 1, 8, 8, 0, &[0; 9]),
            unknown,
            true,
            33,
            0,
        ),
        // A key over 250 bytes.
        (
            request(0x00, &[b'k'; 251], &[], &[], 0),
            invalid,
            true,
            275,
            0,
        ),
        // Unknown opcodes (verbosity among them): the body length is
        // swallowed after the key and extras.
        (request(0x50, b"", &[], &[], 0), unknown, false, 24, 0),
        (
            request(0x1b, b"", &[0, 0, 0, 1], &[], 0),
            unknown,
            false,
            28,
            4,
        ),
        (request(0x50, b"k", &[], b"vv", 0), unknown, false, 25, 3),
        // SASL, which memcached without SASL does not know; the mechanism's
        // data is swallowed.
        (request(0x20, b"", &[], &[], 0), unknown, false, 24, 0),
        (
            request(0x21, b"PLAIN", &[], b"\0u\0p", 0),
            unknown,
            false,
            29,
            4,
        ),
        // Lengths wrong for the opcode.
        (request(0x00, b"", &[], &[], 0), invalid, true, 24, 0),
        (request(0x00, b"k", b"1234", &[], 0), invalid, true, 29, 0),
        (request(0x01, b"k", &[], b"v", 0), invalid, true, 25, 0),
        (request(0x0e, b"k", b"1234", b"v", 0), invalid, true, 29, 0),
        (request(0x04, b"", &[], &[], 0), invalid, true, 24, 0),
        (request(0x05, b"k", b"1234", &[], 0), invalid, true, 29, 0),
        (request(0x1c, b"k", &[], &[], 0), invalid, true, 25, 0),
        (request(0x08, b"k", &[], &[], 0), invalid, true, 25, 0),
        (request(0x08, b"", b"12", &[], 0), invalid, true, 26, 0),
        (request(0x0a, b"k", &[], &[], 0), invalid, true, 25, 0),
        (request(0x0b, b"", &[], b"v", 0), invalid, true, 24, 0),
        (request(0x07, b"", b"1234", &[], 0), invalid, true, 28, 0),
        (request(0x10, b"", b"1234", &[], 0), invalid, true, 28, 0),
    ];
    for (input, status, close, consumed, swallow) in table {
        let d = decode(&input, &limits()).expect("decided");
        assert_eq!(
            (d.action, d.consumed, d.swallow),
            (Action::Refuse { status, close }, consumed, swallow),
            "{input:?}"
        );
    }
}

#[test]
fn a_wrong_magic_closes_once_a_whole_header_is_in() {
    let mut input = request(0x0a, b"", &[], &[], 0);
    input[0] = 0x81;
    assert_eq!(decode(&input[..23], &limits()), Err(Incomplete));
    assert_eq!(decode(&input, &limits()).unwrap().action, Action::Close);
}

#[test]
fn a_value_too_large_is_refused_at_once_and_swallowed() {
    // 1024 bytes of item_size_max hold 59 of overhead, the key and 964.
    let fits = request(0x01, b"k", &set_extras(0, 0), &[b'v'; 964], 0);
    assert!(matches!(
        decoded(&fits).action,
        Action::Execute(Command::Meta(_))
    ));
    let head = with_lengths(
        0x01,
        1,
        8,
        9 + 965,
        0,
        &[&set_extras(0, 0)[..], b"k"].concat(),
    );
    let d = decode(&head, &limits()).expect("decided without the value");
    let too_large = Command::TooLarge {
        key: b"k".to_vec(),
        is_set: true,
    };
    assert_eq!(
        (d.action, d.consumed, d.swallow),
        (Action::Execute(too_large), 33, 965)
    );
    // Only a set drops the old value; append's flags count as 0.
    let head = with_lengths(0x19, 1, 0, 1 + 965, 0, b"k");
    let d = decode(&head, &limits()).expect("decided without the value");
    let too_large = Command::TooLarge {
        key: b"k".to_vec(),
        is_set: false,
    };
    assert_eq!((d.action, d.swallow), (Action::Execute(too_large), 965));
    // A body length near 4 GB is refused the same way, holding nothing.
    let head = with_lengths(
        0x01,
        1,
        8,
        u32::MAX,
        0,
        &[&set_extras(0, 0)[..], b"k"].concat(),
    );
    assert_eq!(
        decode(&head, &limits()).unwrap().swallow,
        u32::MAX as usize - 9
    );
}

#[test]
fn a_body_past_what_the_opcode_reads_is_the_next_request() {
    // memcached reads a stat's or a touch's header, extras and key only.
    let stat = with_lengths(0x10, 5, 0, 7, 0, b"resetzz");
    assert_eq!(decode(&stat, &limits()).unwrap().consumed, 29);
    let gat = with_lengths(0x1d, 1, 4, 6, 0, b"\0\0\0\0xy");
    assert_eq!(decode(&gat, &limits()).unwrap().consumed, 29);
}

#[test]
fn every_strict_prefix_of_a_valid_request_is_incomplete() {
    let valid = [
        request(0x00, b"key", &[], &[], 0),
        request(0x01, b"key", &set_extras(1, 2), b"value", 3),
        request(0x0e, b"key", &[], b"value", 0),
        request(0x05, b"key", &arith_extras(1, 2, 3), &[], 0),
        request(0x1d, b"key", &5u32.to_be_bytes(), &[], 0),
        request(0x08, b"", &5u32.to_be_bytes(), &[], 0),
        request(0x10, b"items", &[], &[], 0),
        request(0x0a, b"", &[], &[], 0),
    ];
    for input in valid {
        for end in 0..input.len() {
            assert_eq!(
                decode(&input[..end], &limits()),
                Err(Incomplete),
                "{:?}",
                &input[..end]
            );
        }
        assert!(decode(&input, &limits()).is_ok());
    }
}

/// The response to `input` when its text reply is `text`.
fn respond(input: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    decoded(input).responder.respond(text, &mut out);
    out
}

/// A response to an `opcode` request with opaque [`OPAQUE`].
fn response(opcode: u8, r: Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    r.write(opcode, OPAQUE, &mut out);
    out
}

fn error(opcode: u8, status: Status) -> Vec<u8> {
    response(
        opcode,
        Response {
            value: status.text(),
            ..Response::bare(status)
        },
    )
}

fn success(opcode: u8, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let r = Response {
        status: Status::Success,
        cas,
        extras,
        key,
        value,
    };
    response(opcode, r)
}

#[test]
fn retrieval_replies_become_memcacheds_responses() {
    let get = |opcode| request(opcode, b"k1", &[], &[], 0);
    let touch = |opcode| request(opcode, b"k1", &[0, 0, 0, 9], &[], 0);
    let hit = b"VA 5 f5 c112\r\nhello\r\n";
    let five = 5u32.to_be_bytes();
    let table: Vec<(Vec<u8>, &[u8], Vec<u8>)> = vec![
        (get(0x00), hit, success(0x00, 112, &five, b"", b"hello")),
        (get(0x09), hit, success(0x09, 112, &five, b"", b"hello")),
        (get(0x0c), hit, success(0x0c, 112, &five, b"k1", b"hello")),
        (touch(0x23), hit, success(0x23, 112, &five, b"k1", b"hello")),
        (
            touch(0x1c),
            b"HD f5 c112\r\n",
            success(0x1c, 112, &five, b"", b""),
        ),
        (get(0x00), b"EN\r\n", error(0x00, Status::KeyNotFound)),
        (touch(0x1c), b"EN\r\n", error(0x1c, Status::KeyNotFound)),
        // getk and gatk name the key they missed, without a text.
        (
            get(0x0c),
            b"EN\r\n",
            response(
                0x0c,
                Response {
                    key: b"k1",
                    ..Response::bare(Status::KeyNotFound)
                },
            ),
        ),
        // Quiet misses are silent.
        (get(0x09), b"EN\r\n", vec![]),
        (get(0x0d), b"EN\r\n", vec![]),
        (touch(0x1e), b"EN\r\n", vec![]),
        (touch(0x24), b"EN\r\n", vec![]),
    ];
    for (input, text, want) in table {
        assert_eq!(respond(&input, text), want, "{input:?} {text:?}");
    }
}

#[test]
fn write_replies_become_memcacheds_responses() {
    let set = |opcode| request(opcode, b"k", &set_extras(0, 0), b"v", 0);
    let concat = |opcode| request(opcode, b"k", &[], b"v", 0);
    let delete = |opcode| request(opcode, b"k", &[], &[], 0);
    let arith = |opcode| request(opcode, b"k", &arith_extras(1, 0, 0), &[], 0);
    let none = Vec::new();
    let table: Vec<(Vec<u8>, &[u8], Vec<u8>)> = vec![
        (set(0x01), b"HD c114\r\n", success(0x01, 114, b"", b"", b"")),
        (set(0x11), b"HD c114\r\n", none.clone()),
        (set(0x01), b"NF c0\r\n", error(0x01, Status::KeyNotFound)),
        (set(0x11), b"EX c0\r\n", error(0x11, Status::KeyExists)),
        (set(0x02), b"NS c0\r\n", error(0x02, Status::KeyExists)),
        (set(0x13), b"NS c0\r\n", error(0x13, Status::KeyNotFound)),
        (concat(0x0e), b"NS c0\r\n", error(0x0e, Status::NotStored)),
        (concat(0x1a), b"HD c9\r\n", none.clone()),
        (delete(0x04), b"HD\r\n", success(0x04, 0, b"", b"", b"")),
        (delete(0x14), b"HD\r\n", none.clone()),
        (delete(0x14), b"NF\r\n", error(0x14, Status::KeyNotFound)),
        (delete(0x04), b"EX\r\n", error(0x04, Status::KeyExists)),
        (
            arith(0x05),
            b"VA 2 c119\r\n10\r\n",
            success(0x05, 119, b"", b"", &10u64.to_be_bytes()),
        ),
        (arith(0x15), b"VA 2 c119\r\n10\r\n", none.clone()),
        (arith(0x06), b"NF\r\n", error(0x06, Status::KeyNotFound)),
        (arith(0x05), b"NS\r\n", error(0x05, Status::NotStored)),
        (arith(0x05), b"EX\r\n", error(0x05, Status::KeyExists)),
        (
            arith(0x16),
            crate::protocol::reply::NON_NUMERIC,
            error(0x16, Status::NonNumeric),
        ),
        (
            request(0x08, b"", &[], &[], 0),
            b"OK\r\n",
            success(0x08, 0, b"", b"", b""),
        ),
        (request(0x18, b"", &[], &[], 0), b"OK\r\n", none.clone()),
    ];
    for (input, text, want) in table {
        assert_eq!(respond(&input, text), want, "{input:?} {text:?}");
    }
}

#[test]
fn store_and_node_errors_keep_what_they_say() {
    let set = request(0x11, b"k", &set_extras(0, 0), b"v", 0);
    let oom = Response {
        value: b"Out of memory allocating item",
        ..Response::bare(Status::OutOfMemory)
    };
    let internal = |why: &'static [u8]| Response {
        value: why,
        ..Response::bare(Status::InternalError)
    };
    let table: Vec<(&[u8], Vec<u8>)> = vec![
        (
            crate::protocol::reply::TOO_LARGE,
            error(0x11, Status::TooLarge),
        ),
        (crate::protocol::reply::OUT_OF_MEMORY, response(0x11, oom)),
        (
            b"SERVER_ERROR no quorum\r\n",
            response(0x11, internal(b"no quorum")),
        ),
        (
            b"SERVER_ERROR timeout; the operation may have been applied\r\n",
            response(
                0x11,
                internal(b"timeout; the operation may have been applied"),
            ),
        ),
        (b"garbage", response(0x11, internal(b"garbage"))),
    ];
    for (text, want) in table {
        assert_eq!(respond(&set, text), want, "{text:?}");
    }
}

#[test]
fn noop_version_quit_and_stats_responses() {
    let plain = |opcode| request(opcode, b"", &[], &[], 0);
    let empty = |opcode| success(opcode, 0, b"", b"", b"");
    assert_eq!(respond(&plain(0x0a), b""), empty(0x0a));
    assert_eq!(respond(&plain(0x07), b""), empty(0x07));
    assert_eq!(respond(&plain(0x17), b""), Vec::<u8>::new());
    assert_eq!(
        respond(&plain(0x0b), b"VERSION 1.6.0\r\n"),
        success(0x0b, 0, b"", b"", b"1.6.0")
    );
    let stats = respond(
        &plain(0x10),
        b"STAT pid 12\r\nSTAT version 1.6.0\r\nEND\r\n",
    );
    let want = [
        success(0x10, 0, b"", b"pid", b"12"),
        success(0x10, 0, b"", b"version", b"1.6.0"),
        empty(0x10),
    ]
    .concat();
    assert_eq!(stats, want);
    let reset = request(0x10, b"reset", &[], &[], 0);
    assert_eq!(respond(&reset, b"RESET\r\n"), empty(0x10));
    let dump = request(0x10, b"detail dump", &[], &[], 0);
    let text = b"PREFIX a get 1 hit 0 set 0 del 0\r\nEND\r\n";
    let want = [success(0x10, 0, b"", b"detailed", text), empty(0x10)].concat();
    assert_eq!(respond(&dump, text), want);
}

#[test]
fn refusals_carry_memcacheds_text_and_are_never_quiet() {
    let setq = request(0x11, b"k", &set_extras(0, 0), b"v", 0);
    let mut out = Vec::new();
    decoded(&setq).responder.refuse(Status::TooLarge, &mut out);
    assert_eq!(out, error(0x11, Status::TooLarge));
    assert_eq!(out.len(), HEADER_LEN + b"Too large.".len());
}
