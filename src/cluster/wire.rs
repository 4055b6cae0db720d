//! The peer wire format: each message is a big-endian `u32` length and a
//! body whose first byte says which message it is. Decoding never panics and
//! never allocates more than the declared length, which is capped.

use std::sync::Arc;

use super::eventual::version::{State, Version};
use super::message::{ChangeMark, Frame, Hello, Op, PeerMessage, Proposal, SyncDone};
use super::Stamp;
use crate::protocol::{Arith, Command, Get, Request, Storage, StorageMode};
use crate::store::{Entry, Expiry};

/// The largest message a peer may send (a frame of many large values).
pub const MAX_MESSAGE: usize = 256 << 20;

/// The largest first message of a link: its hello, before anything on the
/// link is trusted.
pub const MAX_HELLO: usize = 64 << 10;

const HELLO: u8 = 1;
const FRAME: u8 = 2;
const LEAVE: u8 = 3;
const REFUSED: u8 = 4;

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
pub fn encode(message: &PeerMessage, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match message {
        PeerMessage::Hello(hello) => {
            out.push(HELLO);
            put_bytes(out, hello.cluster.as_bytes());
            put_u32(out, hello.node);
            put_u64(out, hello.incarnation);
            put_bytes(out, &hello.proof);
        }
        PeerMessage::Frame(frame) => {
            out.push(FRAME);
            put_u64(out, frame.clock);
            put_u32(out, frame.acks.len() as u32);
            for &(origin, ts) in &frame.acks {
                put_u32(out, origin);
                put_u64(out, ts);
            }
            put_u32(out, frame.proposals.len() as u32);
            for proposal in &frame.proposals {
                put_u64(out, proposal.stamp.ts);
                put_u32(out, proposal.stamp.node);
                put_u64(out, proposal.op.now);
                out.push(u8::from(proposal.op.request.noreply));
                put_command(out, &proposal.op.request.command);
            }
            put_u64(out, frame.pending);
            put_u64(out, frame.ops);
            put_u32(out, frame.versions.len() as u32);
            for version in &frame.versions {
                put_version(out, version);
            }
            put_option_mark(out, frame.sync_request);
            match frame.sync_complete {
                Some(done) => {
                    out.push(1);
                    put_u64(out, done.since);
                    put_u64(out, done.upto.incarnation);
                    put_u64(out, done.upto.seq);
                }
                None => out.push(0),
            }
        }
        PeerMessage::Leave => out.push(LEAVE),
        PeerMessage::Refused(why) => {
            out.push(REFUSED);
            put_bytes(out, why.as_bytes());
        }
    }
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

/// Decodes the first message of `buf`: `Ok(None)` while it is incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<(PeerMessage, usize)>, WireError> {
    decode_within(buf, MAX_MESSAGE)
}

/// Like [`decode`], refusing a message declared longer than `limit` as soon
/// as its length prefix is in.
pub fn decode_within(buf: &[u8], limit: usize) -> Result<Option<(PeerMessage, usize)>, WireError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if length > limit {
        return Err(WireError::TooLarge(length));
    }
    let Some(body) = buf.get(4..4 + length) else {
        return Ok(None);
    };
    let mut r = Reader { buf: body, at: 0 };
    let message = match r.u8()? {
        HELLO => PeerMessage::Hello(Hello {
            cluster: String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| WireError::Malformed("cluster name"))?,
            node: r.u32()?,
            incarnation: r.u64()?,
            proof: r.bytes()?.to_vec(),
        }),
        FRAME => PeerMessage::Frame(read_frame(&mut r)?),
        LEAVE => PeerMessage::Leave,
        REFUSED => PeerMessage::Refused(String::from_utf8_lossy(r.bytes()?).into_owned()),
        _ => return Err(WireError::Malformed("unknown message kind")),
    };
    if r.at != body.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(Some((message, 4 + length)))
}

fn read_frame(r: &mut Reader<'_>) -> Result<Frame, WireError> {
    let clock = r.u64()?;
    let mut acks = Vec::new();
    for _ in 0..r.count(12)? {
        acks.push((r.u32()?, r.u64()?));
    }
    let mut proposals = Vec::new();
    for _ in 0..r.count(21)? {
        let stamp = Stamp {
            ts: r.u64()?,
            node: r.u32()?,
        };
        let now = r.u64()?;
        let noreply = r.u8()? != 0;
        let command = read_command(r)?;
        let request = Request { command, noreply };
        proposals.push(Proposal {
            stamp,
            op: Arc::new(Op { request, now }),
        });
    }
    Ok(Frame {
        clock,
        acks,
        proposals,
        pending: r.u64()?,
        ops: r.u64()?,
        versions: {
            let mut versions = Vec::new();
            for _ in 0..r.count(17)? {
                versions.push(read_version(r)?);
            }
            versions
        },
        sync_request: r.option_mark()?,
        sync_complete: match r.u8()? {
            0 => None,
            _ => Some(SyncDone {
                since: r.u64()?,
                upto: ChangeMark {
                    incarnation: r.u64()?,
                    seq: r.u64()?,
                },
            }),
        },
    })
}

const GET: u8 = 1;
const STORAGE: u8 = 2;
const TOO_LARGE: u8 = 3;
const DELETE: u8 = 4;
const ARITH: u8 = 5;
const TOUCH: u8 = 6;
const FLUSH_ALL: u8 = 7;

fn put_command(out: &mut Vec<u8>, command: &Command) {
    match command {
        Command::Get(get) => {
            out.push(GET);
            out.push(u8::from(get.with_cas));
            put_option_i32(out, get.touch);
            put_u32(out, get.keys.len() as u32);
            for key in &get.keys {
                put_bytes(out, key);
            }
        }
        Command::Storage(storage) => {
            out.push(STORAGE);
            match storage.mode {
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
    }
}

fn read_command(r: &mut Reader<'_>) -> Result<Command, WireError> {
    Ok(match r.u8()? {
        GET => {
            let with_cas = r.u8()? != 0;
            let touch = r.option_i32()?;
            let mut keys = Vec::new();
            for _ in 0..r.count(4)? {
                keys.push(r.bytes()?.to_vec());
            }
            Command::Get(Get {
                keys,
                with_cas,
                touch,
            })
        }
        STORAGE => {
            let mode = match r.u8()? {
                0 => StorageMode::Set,
                1 => StorageMode::Add,
                2 => StorageMode::Replace,
                3 => StorageMode::Append,
                4 => StorageMode::Prepend,
                5 => StorageMode::Cas(r.u64()?),
                _ => return Err(WireError::Malformed("store mode")),
            };
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
        _ => return Err(WireError::Malformed("command")),
    })
}

const PRESENT: u8 = 0;
const DELETED: u8 = 1;
const FLUSHED: u8 = 2;

fn put_version(out: &mut Vec<u8>, version: &Version) {
    put_bytes(out, &version.key);
    put_u64(out, version.stamp.ts);
    put_u32(out, version.stamp.node);
    match &version.state {
        State::Present(item) => {
            out.push(PRESENT);
            put_u32(out, item.flags);
            put_u64(
                out,
                match item.expiry {
                    Expiry::Never => 0,
                    Expiry::At(at) => at.max(1),
                },
            );
            put_bytes(out, &item.value);
        }
        State::Deleted => out.push(DELETED),
        State::Flushed => out.push(FLUSHED),
    }
}

fn read_version(r: &mut Reader<'_>) -> Result<Version, WireError> {
    let key = r.bytes()?.to_vec();
    let stamp = Stamp {
        ts: r.u64()?,
        node: r.u32()?,
    };
    let state = match r.u8()? {
        PRESENT => State::Present(Entry {
            flags: r.u32()?,
            expiry: match r.u64()? {
                0 => Expiry::Never,
                at => Expiry::At(at),
            },
            value: r.bytes()?.to_vec(),
        }),
        DELETED => State::Deleted,
        FLUSHED => State::Flushed,
        _ => return Err(WireError::Malformed("version state")),
    };
    Ok(Version { key, stamp, state })
}

fn put_option_mark(out: &mut Vec<u8>, mark: Option<ChangeMark>) {
    match mark {
        Some(mark) => {
            out.push(1);
            put_u64(out, mark.incarnation);
            put_u64(out, mark.seq);
        }
        None => out.push(0),
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
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
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(WireError::Malformed("truncated"))?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn option_mark(&mut self) -> Result<Option<ChangeMark>, WireError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(ChangeMark {
                incarnation: self.u64()?,
                seq: self.u64()?,
            }),
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
    fn count(&mut self, min_size: usize) -> Result<usize, WireError> {
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

    fn op(command: Command) -> Arc<Op> {
        Arc::new(Op {
            request: Request {
                command,
                noreply: true,
            },
            now: 1_700_000_000,
        })
    }

    fn sample() -> Vec<PeerMessage> {
        let commands = vec![
            Command::Get(Get {
                keys: vec![b"a".to_vec(), b"b".to_vec()],
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
        ];
        let proposals = commands
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
            PeerMessage::Hello(Hello {
                cluster: "c".into(),
                node: 4,
                incarnation: 99,
                proof: vec![1, 2, 3],
            }),
            PeerMessage::Frame(Frame {
                clock: 42,
                acks: vec![(0, 5), (1, 6)],
                proposals,
                pending: 3,
                ops: 1234,
                versions: vec![
                    Version {
                        key: b"k".to_vec(),
                        stamp: Stamp { ts: 9, node: 1 },
                        state: State::Present(Entry {
                            flags: 3,
                            expiry: Expiry::At(1_700_000_100),
                            value: b"v".to_vec(),
                        }),
                    },
                    Version {
                        key: b"gone".to_vec(),
                        stamp: Stamp { ts: 10, node: 1 },
                        state: State::Deleted,
                    },
                    Version {
                        key: Vec::new(),
                        stamp: Stamp { ts: 11, node: 2 },
                        state: State::Flushed,
                    },
                ],
                sync_request: Some(ChangeMark {
                    incarnation: 5,
                    seq: 77,
                }),
                sync_complete: Some(SyncDone {
                    since: 70,
                    upto: ChangeMark {
                        incarnation: 6,
                        seq: 78,
                    },
                }),
            }),
            PeerMessage::Frame(Frame::default()),
            PeerMessage::Leave,
            PeerMessage::Refused("why".into()),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut buf = Vec::new();
        for message in sample() {
            encode(&message, &mut buf);
        }
        let mut at = 0;
        for message in sample() {
            let (decoded, used) = decode(&buf[at..]).unwrap().unwrap();
            assert_eq!(decoded, message);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn prefixes_are_incomplete_and_garbage_is_refused() {
        let mut buf = Vec::new();
        encode(&sample()[1], &mut buf);
        for end in 0..buf.len() {
            assert_eq!(decode(&buf[..end]), Ok(None));
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
            let _ = decode(&bytes); // must not panic
        }
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
    }
}
