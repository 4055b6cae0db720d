//! The parser against a seeded random corpus: random bytes, mutated valid
//! requests and random splits. It must never panic, always make progress on a
//! complete request, treat every strict prefix of a valid request as
//! incomplete, never swallow a value after an admin command, and parse a byte
//! stream the same however it is split.

mod common;

use common::rng::Rng;
use mckv::protocol::{parse, Action, Incomplete, Limits, Parsed};

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
