//! The peer wire format: each message is a big-endian `u32` length and a
//! body whose first byte says which message it is. Decoding never panics and
//! never allocates more than the declared length, which is capped.
//!
//! This module owns the envelope ([`PeerMessage`]: challenge, hello,
//! welcome, refusal, frame, leave) and the pieces every mode's message is built from (numbers,
//! byte strings, replicated operations); each mode encodes its own message
//! through [`Message`], beside the message's definition.

use std::sync::Arc;

use super::handshake::{Nonce, NONCE_LEN};
use super::membership::Load;
use super::message::{Frame, Hello, Op, PeerMessage};
use crate::protocol::{
    Arith, Command, Get, Keys, Meta, MetaArith, MetaFlag, MetaOp, MetaReply, MetaSet, Request,
    Storage, StorageMode,
};

/// The largest message a peer may send (a frame of many large values).
pub const MAX_MESSAGE: usize = 256 << 20;

/// The largest first message of a link: its hello, before anything on the
/// link is trusted.
pub const MAX_HELLO: usize = 64 << 10;

const HELLO: u8 = 1;
const FRAME: u8 = 2;
const LEAVE: u8 = 3;
const REFUSED: u8 = 4;
const WELCOME: u8 = 5;
const CHALLENGE: u8 = 6;

/// A mode's message, as it travels inside a [`Frame`].
pub trait Message: Sized {
    /// Names the mode's protocol in the hello's proof, so nodes started in
    /// different modes refuse each other instead of misreading frames.
    const PROTOCOL: &'static str;

    fn encode(&self, out: &mut Vec<u8>);

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    TooLarge(usize),
    Malformed(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the limit"),
            WireError::Malformed(what) => write!(f, "malformed message: {what}"),
        }
    }
}

/// Appends `message`, length prefix included, to `out`.
pub fn encode<M: Message>(message: &PeerMessage<M>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match message {
        PeerMessage::Challenge(nonce) => {
            out.push(CHALLENGE);
            out.extend_from_slice(nonce);
        }
        PeerMessage::Hello(hello) => {
            out.push(HELLO);
            put_bytes(out, hello.cluster.as_bytes());
            put_u32(out, hello.node);
            put_u64(out, hello.incarnation);
            out.extend_from_slice(&hello.nonce);
            put_bytes(out, &hello.proof);
        }
        PeerMessage::Frame(frame) => {
            out.push(FRAME);
            put_u64(out, frame.load.pending);
            put_u64(out, frame.load.ops);
            frame.body.encode(out);
        }
        PeerMessage::Welcome { incarnation, proof } => {
            out.push(WELCOME);
            put_u64(out, *incarnation);
            put_bytes(out, proof);
        }
        PeerMessage::Leave => out.push(LEAVE),
        PeerMessage::Refused { why, proof } => {
            out.push(REFUSED);
            put_bytes(out, why.as_bytes());
            put_bytes(out, proof);
        }
    }
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

/// Decodes the first message of `buf`: `Ok(None)` while it is incomplete.
pub fn decode<M: Message>(buf: &[u8]) -> Result<Option<(PeerMessage<M>, usize)>, WireError> {
    decode_within(buf, MAX_MESSAGE)
}

/// Like [`decode`], refusing a message declared longer than `limit` as soon
/// as its length prefix is in.
pub fn decode_within<M: Message>(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(PeerMessage<M>, usize)>, WireError> {
    let Some(length) = next_message(buf, limit)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(&buf[4..length])?, length)))
}

/// The length of the first message of `buf`, prefix included, once all of
/// it is in; a message declared longer than `limit` is refused as soon as
/// its prefix is.
pub fn next_message(buf: &[u8], limit: usize) -> Result<Option<usize>, WireError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if length > limit {
        return Err(WireError::TooLarge(length));
    }
    Ok((buf.len() >= 4 + length).then_some(4 + length))
}

/// Decodes a message's body (what follows its length prefix).
pub fn decode_body<M: Message>(body: &[u8]) -> Result<PeerMessage<M>, WireError> {
    let mut r = Reader { buf: body, at: 0 };
    let message = match r.u8()? {
        CHALLENGE => PeerMessage::Challenge(r.nonce()?),
        HELLO => PeerMessage::Hello(Hello {
            cluster: String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| WireError::Malformed("cluster name"))?,
            node: r.u32()?,
            incarnation: r.u64()?,
            nonce: r.nonce()?,
            proof: r.bytes()?.to_vec(),
        }),
        FRAME => PeerMessage::Frame(Frame {
            load: Load {
                pending: r.u64()?,
                ops: r.u64()?,
            },
            body: M::decode(&mut r)?,
        }),
        WELCOME => PeerMessage::Welcome {
            incarnation: r.u64()?,
            proof: r.bytes()?.to_vec(),
        },
        LEAVE => PeerMessage::Leave,
        REFUSED => PeerMessage::Refused {
            why: String::from_utf8_lossy(r.bytes()?).into_owned(),
            proof: r.bytes()?.to_vec(),
        },
        _ => return Err(WireError::Malformed("unknown message kind")),
    };
    if r.at != body.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(message)
}

/// Appends a replicated operation: the origin's wall time and the request.
pub fn put_op(out: &mut Vec<u8>, op: &Op) {
    put_u64(out, op.now);
    out.push(u8::from(op.request.noreply));
    put_command(out, &op.request.command);
}

const GET: u8 = 1;
const STORAGE: u8 = 2;
const TOO_LARGE: u8 = 3;
const DELETE: u8 = 4;
const ARITH: u8 = 5;
const TOUCH: u8 = 6;
const FLUSH_ALL: u8 = 7;
const META: u8 = 8;

fn put_command(out: &mut Vec<u8>, command: &Command) {
    match command {
        Command::Get(get) => {
            out.push(GET);
            out.push(u8::from(get.with_cas));
            put_option_i32(out, get.touch);
            put_u32(out, get.keys.len() as u32);
            for key in get.keys.iter() {
                put_bytes(out, key);
            }
        }
        Command::Storage(storage) => {
            out.push(STORAGE);
            put_mode(out, storage.mode);
            put_bytes(out, &storage.key);
            put_u32(out, storage.flags);
            put_u32(out, storage.exptime as u32);
            put_bytes(out, &storage.value);
        }
        Command::TooLarge { key, is_set } => {
            out.push(TOO_LARGE);
            put_bytes(out, key);
            out.push(u8::from(*is_set));
        }
        Command::Delete { key } => {
            out.push(DELETE);
            put_bytes(out, key);
        }
        Command::Arith(arith) => {
            out.push(ARITH);
            put_bytes(out, &arith.key);
            out.push(u8::from(arith.incr));
            put_u64(out, arith.delta);
        }
        Command::Touch { key, exptime } => {
            out.push(TOUCH);
            put_bytes(out, key);
            put_u32(out, *exptime as u32);
        }
        Command::FlushAll { delay } => {
            out.push(FLUSH_ALL);
            put_u32(out, *delay as u32);
        }
        Command::Meta(meta) => {
            out.push(META);
            put_meta(out, meta);
        }
    }
}

fn put_mode(out: &mut Vec<u8>, mode: StorageMode) {
    match mode {
        StorageMode::Set => out.push(0),
        StorageMode::Add => out.push(1),
        StorageMode::Replace => out.push(2),
        StorageMode::Append => out.push(3),
        StorageMode::Prepend => out.push(4),
        StorageMode::Cas(unique) => {
            out.push(5);
            put_u64(out, unique);
        }
    }
}

fn read_mode(r: &mut Reader<'_>) -> Result<StorageMode, WireError> {
    Ok(match r.u8()? {
        0 => StorageMode::Set,
        1 => StorageMode::Add,
        2 => StorageMode::Replace,
        3 => StorageMode::Append,
        4 => StorageMode::Prepend,
        5 => StorageMode::Cas(r.u64()?),
        _ => return Err(WireError::Malformed("store mode")),
    })
}

/// A meta command: key, operation, then its reply flags (the origin
/// replies, but the flags `T` and `N` change the item everywhere).
fn put_meta(out: &mut Vec<u8>, meta: &Meta) {
    put_bytes(out, &meta.key);
    match &meta.op {
        MetaOp::Get => out.push(0),
        MetaOp::Set(set) => {
            out.push(1);
            put_mode(out, set.mode);
            put_option_u64(out, set.compare);
            put_u32(out, set.flags);
            put_u32(out, set.exptime as u32);
            put_bytes(out, &set.value);
        }
        MetaOp::Delete { compare } => {
            out.push(2);
            put_option_u64(out, *compare);
        }
        MetaOp::Arith(arith) => {
            out.push(3);
            out.push(u8::from(arith.incr));
            put_u64(out, arith.delta);
            put_option_u64(out, arith.initial);
            put_option_u64(out, arith.compare);
        }
        MetaOp::Debug => out.push(4),
    }
    let reply = &meta.reply;
    put_u32(out, reply.flags.len() as u32);
    for flag in &reply.flags {
        match flag {
            MetaFlag::Opaque(token) => {
                out.push(0);
                put_bytes(out, token);
            }
            MetaFlag::Key => out.push(1),
            MetaFlag::Cas => out.push(2),
            MetaFlag::ClientFlags => out.push(3),
            MetaFlag::Size => out.push(4),
            MetaFlag::Ttl => out.push(5),
            MetaFlag::Touch(exptime) => {
                out.push(6);
                put_u32(out, *exptime as u32);
            }
            MetaFlag::Vivify(exptime) => {
                out.push(7);
                put_u32(out, *exptime as u32);
            }
        }
    }
    out.extend([reply.quiet, reply.base64, reply.value].map(u8::from));
}

fn read_meta(r: &mut Reader<'_>) -> Result<Meta, WireError> {
    let key = r.bytes()?.to_vec();
    let op = match r.u8()? {
        0 => MetaOp::Get,
        1 => MetaOp::Set(MetaSet {
            mode: read_mode(r)?,
            compare: r.option_u64()?,
            flags: r.u32()?,
            exptime: r.u32()? as i32,
            value: r.bytes()?.to_vec(),
        }),
        2 => MetaOp::Delete {
            compare: r.option_u64()?,
        },
        3 => MetaOp::Arith(MetaArith {
            incr: r.u8()? != 0,
            delta: r.u64()?,
            initial: r.option_u64()?,
            compare: r.option_u64()?,
        }),
        4 => MetaOp::Debug,
        _ => return Err(WireError::Malformed("meta operation")),
    };
    let mut flags = Vec::new();
    for _ in 0..r.count(1)? {
        flags.push(match r.u8()? {
            0 => MetaFlag::Opaque(r.bytes()?.to_vec()),
            1 => MetaFlag::Key,
            2 => MetaFlag::Cas,
            3 => MetaFlag::ClientFlags,
            4 => MetaFlag::Size,
            5 => MetaFlag::Ttl,
            6 => MetaFlag::Touch(r.u32()? as i32),
            7 => MetaFlag::Vivify(r.u32()? as i32),
            _ => return Err(WireError::Malformed("meta flag")),
        });
    }
    let reply = MetaReply {
        flags,
        quiet: r.u8()? != 0,
        base64: r.u8()? != 0,
        value: r.u8()? != 0,
    };
    Ok(Meta { key, op, reply })
}

fn read_command(r: &mut Reader<'_>) -> Result<Command, WireError> {
    Ok(match r.u8()? {
        GET => {
            let with_cas = r.u8()? != 0;
            let touch = r.option_i32()?;
            // The same bytes as when a key was a Vec each; decoded packed.
            let count = r.count(4)?;
            let mut keys = Keys::with_capacity(count, 0);
            for _ in 0..count {
                keys.push(r.bytes()?);
            }
            Command::Get(Get {
                keys,
                with_cas,
                touch,
            })
        }
        STORAGE => {
            let mode = read_mode(r)?;
            Command::Storage(Storage {
                mode,
                key: r.bytes()?.to_vec(),
                flags: r.u32()?,
                exptime: r.u32()? as i32,
                value: r.bytes()?.to_vec(),
            })
        }
        TOO_LARGE => Command::TooLarge {
            key: r.bytes()?.to_vec(),
            is_set: r.u8()? != 0,
        },
        DELETE => Command::Delete {
            key: r.bytes()?.to_vec(),
        },
        ARITH => Command::Arith(Arith {
            key: r.bytes()?.to_vec(),
            incr: r.u8()? != 0,
            delta: r.u64()?,
        }),
        TOUCH => Command::Touch {
            key: r.bytes()?.to_vec(),
            exptime: r.u32()? as i32,
        },
        FLUSH_ALL => Command::FlushAll {
            delay: r.u32()? as i32,
        },
        META => Command::Meta(read_meta(r)?),
        _ => return Err(WireError::Malformed("command")),
    })
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn put_option_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            put_u64(out, v);
        }
        None => out.push(0),
    }
}

fn put_option_i32(out: &mut Vec<u8>, v: Option<i32>) {
    match v {
        Some(v) => {
            out.push(1);
            put_u32(out, v as u32);
        }
        None => out.push(0),
    }
}

/// A cursor over a message body; every read checks the bounds.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.at == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(WireError::Malformed("truncated"))?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn nonce(&mut self) -> Result<Nonce, WireError> {
        Ok(self.take(NONCE_LEN)?.try_into().expect("a nonce's length"))
    }

    /// An operation written by [`put_op`].
    pub fn op(&mut self) -> Result<Arc<Op>, WireError> {
        let now = self.u64()?;
        let noreply = self.u8()? != 0;
        let command = read_command(self)?;
        let request = Request { command, noreply };
        Ok(Arc::new(Op { request, now }))
    }

    fn option_u64(&mut self) -> Result<Option<u64>, WireError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.u64()?),
        })
    }

    fn option_i32(&mut self) -> Result<Option<i32>, WireError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.u32()? as i32),
        })
    }

    /// A count of items of at least `min_size` bytes each, checked against
    /// what is left so a bad count cannot make us allocate.
    pub fn count(&mut self, min_size: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.buf.len() - self.at {
            return Err(WireError::Malformed("count exceeds the message"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::eventual::origins::{Cause, Coverage, Origin};
    use crate::cluster::eventual::version::{State, Version};
    use crate::cluster::eventual::{ChangeMark, Gossip, SyncDone, SyncRequest};
    use crate::cluster::total_order::{Broadcast, Control, Flush, Proposal};
    use crate::cluster::view::Ballot;
    use crate::cluster::Stamp;
    use crate::store::{Entry, Expiry, Head, Housekeeping, Record};

    fn op(command: Command) -> Arc<Op> {
        Arc::new(Op {
            request: Request {
                command,
                noreply: true,
            },
            now: 1_700_000_000,
        })
    }

    /// Packed keys go to a peer as the same bytes a `Vec` per key did, so
    /// nodes of either build read each other's multi-gets.
    #[test]
    fn a_multi_get_encodes_to_the_bytes_it_had_before_its_keys_were_packed() {
        let get = Command::Get(Get {
            keys: ["ab", "", "c"].into_iter().collect(),
            with_cas: true,
            touch: Some(-1),
        });
        let mut out = Vec::new();
        put_command(&mut out, &get);
        let mut expected = vec![GET, 1, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 3];
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 0, 1, b'c']);
        assert_eq!(out, expected);
        assert_eq!(read_command(&mut Reader::new(&out)).unwrap(), get);
    }

    fn broadcasts() -> Vec<PeerMessage<Broadcast>> {
        let commands = vec![
            Command::Get(Get {
                keys: ["a", "b"].into_iter().collect(),
                with_cas: true,
                touch: Some(-1),
            }),
            Command::Storage(Storage {
                mode: StorageMode::Cas(u64::MAX),
                key: b"k".to_vec(),
                flags: 7,
                exptime: -5,
                value: vec![0, 13, 10, 255],
            }),
            Command::Storage(Storage {
                mode: StorageMode::Prepend,
                key: b"k".to_vec(),
                flags: 0,
                exptime: 0,
                value: Vec::new(),
            }),
            Command::TooLarge {
                key: b"big".to_vec(),
                is_set: true,
            },
            Command::Delete { key: b"k".to_vec() },
            Command::Arith(Arith {
                key: b"n".to_vec(),
                incr: false,
                delta: 3,
            }),
            Command::Touch {
                key: b"k".to_vec(),
                exptime: 100,
            },
            Command::FlushAll { delay: 9 },
            Command::Meta(Meta {
                key: b"m".to_vec(),
                op: MetaOp::Set(MetaSet {
                    mode: StorageMode::Append,
                    compare: Some(7),
                    flags: 3,
                    exptime: -1,
                    value: b"v".to_vec(),
                }),
                reply: MetaReply {
                    flags: vec![
                        MetaFlag::Opaque(b"O1".to_vec()),
                        MetaFlag::Key,
                        MetaFlag::Cas,
                    ],
                    quiet: true,
                    base64: false,
                    value: true,
                },
            }),
            Command::Meta(Meta {
                key: b"n".to_vec(),
                op: MetaOp::Arith(MetaArith {
                    incr: false,
                    delta: 2,
                    initial: Some(5),
                    compare: None,
                }),
                reply: MetaReply {
                    flags: vec![MetaFlag::Ttl, MetaFlag::Touch(-3), MetaFlag::Vivify(9)],
                    ..MetaReply::default()
                },
            }),
            Command::Meta(Meta {
                key: b"g".to_vec(),
                op: MetaOp::Get,
                reply: MetaReply {
                    flags: vec![MetaFlag::Size, MetaFlag::ClientFlags],
                    base64: true,
                    ..MetaReply::default()
                },
            }),
            Command::Meta(Meta {
                key: b"d".to_vec(),
                op: MetaOp::Delete { compare: Some(0) },
                reply: MetaReply::default(),
            }),
        ];
        let proposals: Vec<Proposal> = commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| Proposal {
                stamp: Stamp {
                    ts: i as u64 + 1,
                    node: 2,
                },
                op: op(c),
            })
            .collect();
        vec![
            PeerMessage::Challenge([5; NONCE_LEN]),
            PeerMessage::Hello(Hello {
                cluster: "c".into(),
                node: 4,
                incarnation: 99,
                nonce: [6; NONCE_LEN],
                proof: vec![1, 2, 3],
            }),
            PeerMessage::Frame(Frame {
                load: Load {
                    pending: 3,
                    ops: 1234,
                },
                body: Broadcast {
                    ballot: Ballot {
                        round: 7,
                        coordinator: 2,
                    },
                    clock: 42,
                    echo: 41,
                    sees: vec![0, 1],
                    acks: vec![(0, 5), (1, 6)],
                    proposals: proposals.clone(),
                    control: controls(proposals),
                },
            }),
            PeerMessage::Frame(Frame {
                load: Load::default(),
                body: Broadcast::default(),
            }),
            PeerMessage::Welcome {
                incarnation: 98,
                proof: vec![4, 5],
            },
            PeerMessage::Leave,
            PeerMessage::Refused {
                why: "why".into(),
                proof: vec![6],
            },
        ]
    }

    /// One of every view-change message.
    fn controls(proposals: Vec<Proposal>) -> Vec<Control> {
        let ballot = Ballot {
            round: 3,
            coordinator: 1,
        };
        let record = Record {
            key: b"k".to_vec(),
            entry: Entry {
                flags: 9,
                expiry: Expiry::At(1_700_000_100),
                value: b"value".to_vec(),
            },
            cas: 77,
            stored_at: 1_700_000_050,
            referenced: true,
        };
        vec![
            Control::Prepare {
                ballot,
                members: vec![0, 1, 2],
            },
            Control::Flush {
                ballot,
                flush: Flush {
                    normal: Ballot::default(),
                    normal_members: vec![0, 1],
                    base: Ballot {
                        round: 2,
                        coordinator: 0,
                    },
                    has_state: true,
                    start_floor: Stamp { ts: 3, node: 1 },
                    intact: false,
                    remembers: true,
                    recovered: true,
                    rebuilt: true,
                    log_stuck: true,
                    amnesiacs: vec![2],
                    delivered_upto: Stamp { ts: 5, node: 2 },
                    held: proposals.clone(),
                },
            },
            Control::Caught { ballot },
            Control::Took { ballot, chunks: 3 },
            Control::Nack {
                ballot,
                promised: Ballot {
                    round: 4,
                    coordinator: 0,
                },
            },
            Control::StartView {
                ballot,
                base: Ballot::default(),
                floor: Stamp { ts: 3, node: 2 },
                members: vec![0, 2],
                sources: vec![0],
                start: proposals.clone(),
                reordered: false,
            },
            Control::Started { ballot },
            Control::Behind {
                ballot,
                upto: Stamp { ts: 4, node: 2 },
            },
            Control::Missed {
                ballot,
                after: Stamp { ts: 4, node: 2 },
                writes: proposals,
                last: true,
            },
            Control::State {
                ballot,
                upto: Stamp { ts: 6, node: 1 },
                read_at: 1_700_000_100,
                first: Some(Head {
                    flush_at: Some(1_700_000_200),
                    housekeeping: Housekeeping {
                        sweep_cursor: Some(12),
                        sweep_began: 1_700_000_090,
                        hand: 7,
                        last_reclaim: 1_700_000_080,
                    },
                }),
                records: vec![record.clone(), record],
                last: false,
                total: 1 << 33,
            },
            Control::State {
                ballot,
                upto: Stamp { ts: 6, node: 1 },
                read_at: 0,
                first: Some(Head::default()),
                records: Vec::new(),
                last: true,
                total: 0,
            },
            Control::State {
                ballot,
                upto: Stamp { ts: 6, node: 1 },
                read_at: u64::MAX,
                first: None,
                records: Vec::new(),
                last: true,
                total: 0,
            },
        ]
    }

    fn gossips() -> Vec<PeerMessage<Gossip>> {
        let origin = |node, run| Origin { node, run };
        let deps = Arc::new(Coverage::from_entries(vec![
            (origin(2, 7), 3),
            (origin(3, 8), 1),
        ]));
        let cause = |node, seq, deps: Option<&Arc<Coverage>>| Cause {
            origin: origin(node, 6),
            seq,
            deps: deps.cloned(),
        };
        vec![
            PeerMessage::Frame(Frame {
                load: Load::default(),
                body: Gossip {
                    clock: 42,
                    versions: vec![
                        Version {
                            key: b"k".to_vec(),
                            stamp: Stamp { ts: 9, node: 1 },
                            state: State::Present(Entry {
                                flags: 3,
                                expiry: Expiry::At(1_700_000_100),
                                value: b"v".to_vec(),
                            }),
                            cause: None,
                        },
                        Version {
                            key: b"gone".to_vec(),
                            stamp: Stamp { ts: 10, node: 1 },
                            state: State::Deleted,
                            cause: Some(cause(1, 4, Some(&deps))),
                        },
                        Version {
                            key: Vec::new(),
                            stamp: Stamp { ts: 11, node: 1 },
                            state: State::Flushed,
                            cause: Some(cause(1, 5, Some(&deps))),
                        },
                        Version {
                            key: b"k2".to_vec(),
                            stamp: Stamp { ts: 12, node: 1 },
                            state: State::Deleted,
                            cause: Some(cause(1, 6, None)),
                        },
                    ],
                    pushes: 2,
                    sync_request: Some(SyncRequest {
                        since: ChangeMark {
                            incarnation: 5,
                            seq: 77,
                        },
                        held: 70,
                        last: 90,
                        covered: Coverage::from_entries(vec![(origin(3, 2), 5)]),
                        run: 4,
                    }),
                    sync_complete: Some(SyncDone {
                        since: 70,
                        asked_by: 3,
                        upto: ChangeMark {
                            incarnation: 6,
                            seq: 78,
                        },
                        last: 80,
                    }),
                    coverage: Some(Coverage::from_entries(vec![(origin(1, 6), 9)])),
                    receiver_covers: None,
                },
            }),
            PeerMessage::Frame(Frame {
                load: Load::default(),
                body: Gossip::default(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        round_trips(broadcasts());
        round_trips(gossips());
    }

    fn round_trips<M: Message + PartialEq + std::fmt::Debug>(messages: Vec<PeerMessage<M>>) {
        let mut buf = Vec::new();
        for message in &messages {
            encode(message, &mut buf);
        }
        let mut at = 0;
        for message in messages {
            let (decoded, used) = decode::<M>(&buf[at..]).unwrap().unwrap();
            assert_eq!(decoded, message);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn prefixes_are_incomplete_and_garbage_is_refused() {
        refused_when_broken(&broadcasts()[1]);
        refused_when_broken(&gossips()[0]);
    }

    fn refused_when_broken<M: Message + PartialEq + std::fmt::Debug>(message: &PeerMessage<M>) {
        let mut buf = Vec::new();
        encode(message, &mut buf);
        for end in 0..buf.len() {
            assert_eq!(decode::<M>(&buf[..end]), Ok(None));
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut bytes = buf.clone();
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng % bytes.len() as u64) as usize;
                bytes[i] = (rng >> 32) as u8;
            }
            let _ = decode::<M>(&bytes); // must not panic
        }
        assert_eq!(
            decode::<M>(&[0xff, 0xff, 0xff, 0xff]),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
    }
}
