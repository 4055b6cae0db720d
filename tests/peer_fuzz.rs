//! The peer wire decoder against a seeded random corpus: every message kind
//! of both modes' protocols, encoded, then mutated (flipped bits, cut
//! short, bytes inserted or overwritten, length fields set to huge values)
//! and decoded. It must never panic, must encode what it took back to the
//! same bytes (but a refusal's text, read lossily), and must never allocate
//! more than the input could hold: a length field claims at most what
//! follows it, so no single allocation while decoding may exceed a small
//! multiple of the input's size (checked by counting the allocator's
//! requests, in this test binary only: `common::alloc`).

mod common;

use std::sync::Arc;

use common::alloc::{largest_allocation, Counting};
use common::rng::Rng;
use mckv::cluster::eventual::version::{State, Version};
use mckv::cluster::eventual::{ChangeMark, Gossip, SyncDone, SyncRequest};
use mckv::cluster::membership::Load;
use mckv::cluster::total_order::{Broadcast, Control, Flush, Proposal};
use mckv::cluster::view::Ballot;
use mckv::cluster::wire::{self, Message};
use mckv::cluster::{Frame, Hello, Op, PeerMessage, Stamp};
use mckv::protocol::{parse, Action, Limits, Request};
use mckv::store::{Entry, Expiry, Head, Record};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Requests of every command kind, as clients send them.
fn requests() -> Vec<Request> {
    let lines: [&[u8]; 12] = [
        b"get a b c\r\n",
        b"gets k\r\n",
        b"gat 10 k\r\n",
        b"set k 1 2 3\r\nabc\r\n",
        b"cas k 0 0 1 99\r\nx\r\n",
        b"append k 0 0 2 noreply\r\nxy\r\n",
        b"delete k\r\n",
        b"incr k 18446744073709551615\r\n",
        b"touch k -1\r\n",
        b"flush_all 5\r\n",
        b"ms k 2 T10 F3 MA c\r\nhi\r\n",
        b"ma k N0 J5 D2 v\r\n",
    ];
    let limits = Limits::default();
    lines
        .iter()
        .filter_map(|line| match parse(line, &limits) {
            Ok(parsed) => match parsed.action {
                Action::Execute(request) => Some(request),
                _ => None,
            },
            Err(_) => None,
        })
        .collect()
}

fn proposals(requests: &[Request]) -> Vec<Proposal> {
    requests
        .iter()
        .enumerate()
        .map(|(i, request)| Proposal {
            stamp: Stamp {
                ts: i as u64 + 1,
                node: 1,
            },
            op: Arc::new(Op {
                request: request.clone(),
                now: 1_700_000_000,
            }),
        })
        .collect()
}

fn record(key: &str, value: &[u8]) -> Record {
    Record {
        key: key.as_bytes().to_vec(),
        entry: Entry {
            flags: 7,
            expiry: Expiry::At(1_700_000_100),
            value: value.to_vec(),
        },
        cas: 42,
        stored_at: 1_700_000_010,
        referenced: true,
    }
}

fn broadcasts() -> Vec<Broadcast> {
    let ballot = Ballot {
        round: 3,
        coordinator: 0,
    };
    let held = proposals(&requests());
    let flush = Flush {
        normal: ballot,
        normal_members: vec![0, 1, 2],
        base: ballot,
        has_state: true,
        start_floor: Stamp { ts: 2, node: 0 },
        intact: true,
        remembers: true,
        recovered: false,
        rebuilt: false,
        log_stuck: true,
        amnesiacs: vec![2],
        delivered_upto: Stamp { ts: 9, node: 1 },
        held: held.clone(),
    };
    let controls = vec![
        Control::Prepare {
            ballot,
            members: vec![0, 1],
        },
        Control::Flush { ballot, flush },
        Control::Caught { ballot },
        Control::Took { ballot, chunks: 3 },
        Control::Nack {
            ballot,
            promised: ballot,
        },
        Control::StartView {
            ballot,
            base: ballot,
            floor: Stamp { ts: 2, node: 0 },
            members: vec![0, 1, 2],
            sources: vec![0],
            start: held.clone(),
            reordered: true,
        },
        Control::Started { ballot },
        Control::Behind {
            ballot,
            upto: Stamp { ts: 3, node: 1 },
        },
        Control::Missed {
            ballot,
            after: Stamp { ts: 3, node: 1 },
            writes: held.clone(),
            last: false,
        },
        Control::State {
            ballot,
            upto: Stamp { ts: 9, node: 1 },
            first: Some(Head {
                flush_at: Some(1_700_000_200),
                ..Head::default()
            }),
            records: vec![record("a", b"1"), record("b", &[0xff; 300])],
            read_at: 1_700_000_150,
            last: true,
            total: 1 << 20,
        },
    ];
    vec![
        Broadcast {
            ballot,
            clock: 12,
            echo: 11,
            sees: vec![1, 2],
            acks: vec![(1, 5), (2, 6)],
            proposals: held,
            control: Vec::new(),
        },
        Broadcast {
            ballot,
            clock: 13,
            echo: 12,
            sees: vec![0],
            acks: Vec::new(),
            proposals: Vec::new(),
            control: controls,
        },
    ]
}

fn gossips() -> Vec<Gossip> {
    let version = |key: &str, state: State| Version {
        key: key.as_bytes().to_vec(),
        stamp: Stamp { ts: 77, node: 2 },
        state,
        cause: None,
    };
    let entry = Entry {
        flags: 1,
        expiry: Expiry::Never,
        value: b"value".to_vec(),
    };
    vec![Gossip {
        clock: 5,
        pushes: 1,
        versions: vec![
            version("k", State::Present(entry)),
            version("d", State::Deleted),
            version("", State::Flushed),
        ],
        sync_request: Some(SyncRequest {
            since: ChangeMark {
                incarnation: 9,
                seq: 4,
            },
            held: 4,
            last: 6,
            covered: Default::default(),
            run: 9,
        }),
        sync_complete: Some(SyncDone {
            since: 1,
            asked_by: 9,
            upto: ChangeMark {
                incarnation: 9,
                seq: 8,
            },
            last: 12,
        }),
        coverage: None,
        receiver_covers: None,
    }]
}

/// Every message of the link envelope around `bodies`, encoded.
fn corpus<M: Message>(bodies: Vec<M>) -> Vec<Vec<u8>> {
    let mut messages: Vec<PeerMessage<M>> = vec![
        PeerMessage::Challenge([3; 32]),
        PeerMessage::Hello(Hello {
            cluster: "test".into(),
            node: 1,
            incarnation: 99,
            nonce: [5; 32],
            proof: vec![7; 32],
        }),
        PeerMessage::Welcome {
            incarnation: 98,
            proof: vec![9; 32],
        },
        PeerMessage::Refused {
            why: "wrong secret".into(),
            proof: vec![8; 32],
        },
        PeerMessage::Leave,
    ];
    for body in bodies {
        let load = Load {
            pending: 3,
            ops: 1_000,
        };
        messages.push(PeerMessage::Frame(Frame { load, body }));
    }
    messages
        .iter()
        .map(|m| {
            let mut out = Vec::new();
            wire::encode(m, &mut out);
            out
        })
        .collect()
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len().max(1));
        match rng.below(6) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 => out.truncate(at),
            2 => out.insert(at.min(out.len()), rng.below(256) as u8),
            // A length or count field claiming far more than follows.
            3 if at + 4 <= out.len() => {
                let huge = [0x7f, 0xff, 0xff, 0xff];
                out[at..at + 4].copy_from_slice(&huge);
            }
            4 if !out.is_empty() => out[at] = 0xff,
            _ => out.extend_from_slice(&[0u8; 8]),
        }
    }
    out
}

/// Decodes `bytes` (armed: allocations counted); a message it takes must
/// encode back to the bytes it took.
fn decode_one<M: Message + std::fmt::Debug + PartialEq>(bytes: &[u8]) -> usize {
    let (decoded, largest) = largest_allocation(|| wire::decode::<M>(bytes));
    if let Ok(Some((message, _))) = decoded {
        // Taken bytes may be spelled loosely (any non-zero flag reads as
        // set, a refusal's text lossily); what was read must survive its
        // own encoding unchanged.
        let mut again = Vec::new();
        wire::encode(&message, &mut again);
        match wire::decode::<M>(&again) {
            Ok(Some((reread, used))) => {
                assert_eq!(reread, message, "re-encoding changes it");
                assert_eq!(used, again.len());
            }
            other => panic!("{message:?} encodes to bytes that read as {other:?}"),
        }
    }
    largest
}

/// The largest single allocation decoding `len` bytes may make.
fn bound(len: usize) -> usize {
    64 * len + (64 << 10)
}

fn fuzz<M: Message + std::fmt::Debug + PartialEq>(seeds: &[Vec<u8>], rounds: usize, seed: u64) {
    let mut rng = Rng(seed);
    for seed in seeds {
        let largest = decode_one::<M>(seed);
        assert!(largest <= bound(seed.len()), "a valid message");
    }
    for _ in 0..rounds {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base);
        let largest = decode_one::<M>(&input);
        assert!(
            largest <= bound(input.len()),
            "decoding {} bytes allocated {largest} at once: {:?}",
            input.len(),
            &input[..input.len().min(64)]
        );
    }
}

#[test]
fn the_total_order_protocol_decoder_survives_mutated_frames_within_bounded_memory() {
    let seeds = corpus(broadcasts());
    assert!(seeds.len() >= 6);
    fuzz::<Broadcast>(&seeds, 60_000, 0x5eed_0001);
}

#[test]
fn the_eventual_protocol_decoder_survives_mutated_frames_within_bounded_memory() {
    let seeds = corpus(gossips());
    fuzz::<Gossip>(&seeds, 30_000, 0x5eed_0002);
}
