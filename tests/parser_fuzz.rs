//! Both protocols' parsers against a seeded random corpus: random bytes,
//! mutated valid requests and random splits. They must never panic, always
//! make progress on a complete request, treat every strict prefix of a
//! valid request as incomplete, and parse a byte stream the same however it
//! is split; the text parser never swallows a value after an admin
//! command, and the binary decoder never allocates more than the bytes it
//! was given (a length field claims what it likes: a value is copied only
//! once it is all in, and only up to `item_size_max`), counted by this test
//! binary's allocator.

mod common;

use common::alloc::{allocations, largest_allocation, Counting};
use common::rng::Rng;
use mckv::protocol::binary;
use mckv::protocol::{parse, Action, Incomplete, Limits, Parsed};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LIMITS: Limits = Limits {
    item_size_max: 512,
    max_get_line: 4096,
};

const SEEDS: [&[u8]; 21] = [
    b"get a b c\r\n",
    b"gets k\r\n",
    b"gat 10 k\r\n",
    b"set k 1 2 3\r\nabc\r\n",
    b"add k 0 0 1 noreply\r\nx\r\n",
    b"cas k 0 0 1 99\r\nx\r\n",
    b"append k 0 0 2\r\nxy\r\n",
    b"delete k 0\r\n",
    b"incr k 18446744073709551615\r\n",
    b"decr k 1 noreply\r\n",
    b"touch k -1\r\n",
    b"flush_all 5\r\n",
    b"verbosity 1\r\n",
    b"stats\r\n",
    b"stats detail on\r\n",
    b"stats cachedump 1 100\r\n",
    b"cache_memlimit 64 noreply\r\n",
    b"slabs automove ratio 0.5\r\n",
    b"slabs reassign -1 2\r\n",
    b"version\r\n",
    b"set big 0 0 600\r\n",
];

const PIECES: [&[u8]; 14] = [
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b"\t",
    b"-1",
    b"noreply",
    b"999999999999999999999",
    b"get",
    b"set",
    b"HTTP/1.1",
    b"0",
    b"\xff",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if !out.is_empty() => {
                out.remove(at.min(out.len() - 1));
            }
            1 => {
                let piece = rng.pick(&PIECES);
                out.splice(at..at, piece.iter().copied());
            }
            2 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next() as u8;
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Parses a whole stream the way a connection does; returns what happened.
fn drain(stream: &[u8]) -> Vec<(Action, usize)> {
    let mut seen = Vec::new();
    let mut at = 0;
    let mut swallow = 0;
    loop {
        if swallow > 0 {
            let n = swallow.min(stream.len() - at);
            at += n;
            swallow -= n;
            if swallow > 0 {
                return seen;
            }
        }
        match parse(&stream[at..], &LIMITS) {
            Err(Incomplete) => return seen,
            Ok(Parsed {
                action,
                consumed,
                swallow: more,
            }) => {
                assert!(consumed > 0, "no progress at {at}");
                assert!(at + consumed <= stream.len(), "consumed past the end");
                if let Action::Admin { .. } = action {
                    assert_eq!(more, 0, "an admin command swallowed bytes at {at}");
                }
                at += consumed;
                swallow = more;
                let close = action == Action::Close;
                seen.push((action, at));
                if close {
                    return seen;
                }
            }
        }
    }
}

/// The same stream fed in random chunks, re-parsing from the unparsed start.
fn drain_in_chunks(rng: &mut Rng, stream: &[u8]) -> Vec<(Action, usize)> {
    let mut available = 0;
    let mut seen = Vec::new();
    while available < stream.len() {
        available = (available + 1 + rng.below(64)).min(stream.len());
        seen = drain(&stream[..available]);
        if seen.last().is_some_and(|(a, _)| *a == Action::Close) {
            break;
        }
    }
    seen
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..20_000 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        drain(&bytes);
    }
}

#[test]
fn mutated_requests_never_panic_and_always_progress() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..50_000 {
        let mut stream = Vec::new();
        for _ in 0..=rng.below(5) {
            let seed = rng.pick(&SEEDS);
            stream.extend(mutate(&mut rng, seed));
        }
        drain(&stream);
    }
}

#[test]
fn every_strict_prefix_of_a_valid_stream_is_incomplete() {
    for seed in SEEDS.iter().filter(|s| !s.starts_with(b"set big")) {
        for end in 0..seed.len() {
            assert_eq!(
                parse(&seed[..end], &LIMITS),
                Err(Incomplete),
                "{:?}",
                &seed[..end]
            );
        }
        assert!(parse(seed, &LIMITS).is_ok());
    }
}

#[test]
fn splitting_a_stream_does_not_change_how_it_parses() {
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..3_000 {
        let mut stream = Vec::new();
        for _ in 0..=rng.below(6) {
            let seed = rng.pick(&SEEDS);
            if rng.below(3) == 0 {
                stream.extend(mutate(&mut rng, seed));
            } else {
                stream.extend_from_slice(seed);
            }
        }
        assert_eq!(
            drain(&stream),
            drain_in_chunks(&mut rng, &stream),
            "{stream:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The binary protocol
// ---------------------------------------------------------------------------

/// A binary request as a client sends it.
fn binary_request(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
    let body = (extras.len() + key.len() + value.len()) as u32;
    let mut r = vec![binary::REQUEST_MAGIC, opcode];
    r.extend_from_slice(&(key.len() as u16).to_be_bytes());
    r.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    r.extend_from_slice(&body.to_be_bytes());
    r.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    r.extend_from_slice(&cas.to_be_bytes());
    r.extend_from_slice(extras);
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    r
}

/// A valid request of every opcode memcached knows, quiet forms included.
fn binary_seeds() -> Vec<Vec<u8>> {
    let set = [5u32.to_be_bytes(), 60u32.to_be_bytes()].concat();
    let arith = [
        &3u64.to_be_bytes()[..],
        &1u64.to_be_bytes(),
        &0u32.to_be_bytes(),
    ]
    .concat();
    let exptime = 10u32.to_be_bytes();
    let mut seeds = Vec::new();
    for opcode in [0x00, 0x09, 0x0c, 0x0d, 0x04, 0x14] {
        seeds.push(binary_request(opcode, b"key", &[], &[], 0));
    }
    for opcode in [0x01, 0x02, 0x03, 0x11, 0x12, 0x13] {
        seeds.push(binary_request(opcode, b"key", &set, b"value", 7));
    }
    for opcode in [0x0e, 0x0f, 0x19, 0x1a] {
        seeds.push(binary_request(opcode, b"key", &[], b"value", 0));
    }
    for opcode in [0x05, 0x06, 0x15, 0x16] {
        seeds.push(binary_request(opcode, b"key", &arith, &[], 0));
    }
    for opcode in [0x1c, 0x1d, 0x1e, 0x23, 0x24] {
        seeds.push(binary_request(opcode, b"key", &exptime, &[], 0));
    }
    for opcode in [0x07, 0x08, 0x0a, 0x0b, 0x10, 0x17, 0x18, 0x20] {
        seeds.push(binary_request(opcode, b"", &[], &[], 0));
    }
    seeds.push(binary_request(0x08, b"", &exptime, &[], 0));
    seeds.push(binary_request(0x10, b"items", &[], &[], 0));
    // A value past LIMITS.item_size_max, refused before it arrives.
    seeds.push(binary_request(0x01, b"big", &set, &[b'v'; 600], 0));
    seeds
}

/// Changes header fields (opcode, lengths, up to huge ones) and body bytes.
fn mutate_binary(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        if out.len() < binary::HEADER_LEN {
            out.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(6) {
            0 => out[1] = rng.next() as u8,
            1 => out[2..4].copy_from_slice(&(rng.next() as u16).to_be_bytes()),
            2 => out[4] = rng.next() as u8,
            3 => {
                let huge = [u32::MAX, u32::MAX - 23, 1 << 20, rng.next() as u32];
                out[8..12].copy_from_slice(&huge[rng.below(huge.len())].to_be_bytes());
            }
            4 => out[at] = rng.next() as u8,
            _ => out.truncate(at.max(1)),
        }
    }
    out
}

/// Decodes a whole stream the way a connection does (armed: every
/// allocation counted); returns what happened.
fn drain_binary(stream: &[u8]) -> Vec<(binary::Action, usize, usize)> {
    let mut seen = Vec::new();
    let mut at = 0;
    let mut swallow = 0;
    loop {
        let n = swallow.min(stream.len() - at);
        at += n;
        swallow -= n;
        if swallow > 0 {
            return seen;
        }
        let input = &stream[at..];
        let (decoded, largest) = largest_allocation(|| binary::decode(input, &LIMITS));
        // Small allocations (a meta command's flags) whatever the input.
        assert!(
            largest <= input.len().max(256),
            "{largest} bytes allocated for {} bytes of input at {at}: {stream:?}",
            input.len()
        );
        let Ok(decoded) = decoded else {
            return seen;
        };
        assert!(decoded.consumed > 0, "no progress at {at}");
        assert!(
            at + decoded.consumed <= stream.len(),
            "consumed past the end"
        );
        assert!(
            decoded.consumed
                <= LIMITS.item_size_max + binary::HEADER_LEN + 255 + usize::from(u16::MAX),
            "held more than item_size_max"
        );
        at += decoded.consumed;
        swallow = decoded.swallow;
        let ends = matches!(
            decoded.action,
            binary::Action::Close | binary::Action::Refuse { close: true, .. }
        );
        seen.push((decoded.action, at, swallow));
        if ends {
            return seen;
        }
    }
}

/// The same stream fed in random chunks, re-decoding from the unparsed start.
fn drain_binary_in_chunks(rng: &mut Rng, stream: &[u8]) -> Vec<(binary::Action, usize, usize)> {
    let mut available = 0;
    let mut seen = Vec::new();
    while available < stream.len() {
        available = (available + 1 + rng.below(64)).min(stream.len());
        seen = drain_binary(&stream[..available]);
    }
    seen
}

#[test]
fn random_binary_bytes_never_panic_nor_allocate_what_a_length_claims() {
    let mut rng = Rng(0x5eed_0b01);
    for _ in 0..20_000 {
        let len = rng.below(300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = bytes.first_mut() {
            *first = binary::REQUEST_MAGIC;
        }
        drain_binary(&bytes);
    }
}

#[test]
fn mutated_binary_requests_never_panic_and_always_progress() {
    let seeds = binary_seeds();
    let mut rng = Rng(0x5eed_0b02);
    for _ in 0..50_000 {
        let mut stream = Vec::new();
        for _ in 0..=rng.below(5) {
            let seed = &seeds[rng.below(seeds.len())];
            stream.extend(mutate_binary(&mut rng, seed));
        }
        drain_binary(&stream);
    }
}

#[test]
fn every_strict_prefix_of_a_valid_binary_request_is_incomplete() {
    for seed in binary_seeds() {
        for end in 0..seed.len() {
            let prefix = &seed[..end];
            let decided = binary::decode(prefix, &LIMITS);
            // The oversized value is refused once its key is in.
            let refused_early = seed.len() > LIMITS.item_size_max && decided.is_ok();
            assert!(decided.is_err() || refused_early, "{prefix:?}");
        }
        assert!(binary::decode(&seed, &LIMITS).is_ok());
    }
}

#[test]
fn splitting_a_binary_stream_does_not_change_how_it_decodes() {
    let seeds = binary_seeds();
    let mut rng = Rng(0x5eed_0b03);
    for _ in 0..3_000 {
        let mut stream = Vec::new();
        for _ in 0..=rng.below(6) {
            let seed = &seeds[rng.below(seeds.len())];
            match rng.below(3) {
                0 => stream.extend(mutate_binary(&mut rng, seed)),
                _ => stream.extend_from_slice(seed),
            }
        }
        assert_eq!(
            drain_binary(&stream),
            drain_binary_in_chunks(&mut rng, &stream),
            "{stream:?}"
        );
    }
}

/// memcached makes no allocation per key of a multi-get; mckv's parser
/// packs a `get`'s keys into one buffer and their ends into another, so a
/// 100-key `get` costs the two, as a 1-key one does (one `Vec` per key made
/// it 101 or more: the keys and the list, grown as they came). Once a list
/// was dropped on the thread, the next takes its buffers and allocates
/// nothing, unless it is too big to keep (1,000 keys here). Each size runs
/// on a thread of its own, whose spares start empty.
#[test]
fn a_multi_get_parses_in_two_allocations_however_many_keys_it_names_then_none() {
    for (count, again) in [(1, 0), (2, 0), (100, 0), (1000, 2)] {
        let keys: Vec<String> = (0..count).map(|i| format!("key:{i:028}")).collect();
        let line = format!("get {}\r\n", keys.join(" "));
        let limits = Limits {
            max_get_line: line.len(),
            ..LIMITS
        };
        let parse_counted = || {
            let (parsed, made) = allocations(|| parse(line.as_bytes(), &limits));
            match parsed.map(|p| p.action) {
                Ok(Action::Execute(request)) => match request.command {
                    mckv::protocol::Command::Get(get) => assert_eq!(get.keys.len(), count),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
            made
        };
        let (first, second) = std::thread::scope(|s| {
            s.spawn(|| (parse_counted(), parse_counted()))
                .join()
                .unwrap()
        });
        assert_eq!((first, second), (2, again), "{count} keys");
    }
}
