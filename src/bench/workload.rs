//! The requests of a run and what proves each reply right: `keys` keys of
//! [`KEY_LEN`] bytes, each with a value of its own that never changes, as
//! memcached text or as etcd JSON-over-HTTP requests. A get names one key,
//! or (a multi-get, memcached only) `keys_per_get` consecutive keys: get
//! `g` names keys `g * keys_per_get` on, and its reply is every value. [`populate`] stores
//! them all before the load starts, so every `get` has exactly one right
//! answer and a miss is an error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::framing::{frame, Expect, Framing, Outcome};
use super::target::Protocol;
use crate::protocol::base64;

pub const KEY_LEN: usize = 32;

/// Every request and its expected reply, built once per protocol.
pub struct Workload {
    pub(crate) protocol: Protocol,
    /// One per group of `keys_per_get` keys.
    pub(crate) get_req: Vec<Vec<u8>>,
    /// One per key.
    pub(crate) set_req: Vec<Vec<u8>>,
    /// What a `get` of the key must answer: memcached's whole reply; for
    /// etcd, the `"value":"<base64>"` its JSON body must contain (the rest
    /// of the body carries revisions that change with every write).
    pub(crate) get_expected: Vec<Vec<u8>>,
}

/// Key `i`: `key:` and `i` in 28 digits.
pub fn key(i: usize) -> String {
    format!("key:{i:028}")
}

/// Key `i`'s value: the same `len` bytes every time the key is written.
pub fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect()
}

fn base64_text(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    base64::encode(bytes, &mut out);
    String::from_utf8(out).expect("base64 is ASCII")
}

/// An HTTP/1.1 request to etcd's v3 JSON gateway, `POST /v3/kv/{method}`.
fn etcd_request(method: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v3/kv/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn etcd_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        base64_text(key),
        base64_text(value)
    );
    etcd_request("put", &body)
}

/// A range of one key, with etcd's default (linearizable) consistency.
fn etcd_range(key: &[u8]) -> Vec<u8> {
    etcd_request("range", &format!(r#"{{"key":"{}"}}"#, base64_text(key)))
}

impl Workload {
    /// The requests for `keys` keys with values of `value_len` bytes, each
    /// get naming `keys_per_get` of them (more than 1: memcached only).
    pub fn new(protocol: Protocol, keys: usize, value_len: usize, keys_per_get: usize) -> Workload {
        let gets = keys.div_ceil(keys_per_get);
        let mut w = Workload {
            protocol,
            get_req: Vec::with_capacity(gets),
            set_req: Vec::with_capacity(keys),
            get_expected: Vec::with_capacity(gets),
        };
        for i in 0..keys {
            let (k, v) = (key(i), value(i, value_len));
            match protocol {
                Protocol::Memcached => {
                    let mut set = format!("set {k} 0 0 {value_len}\r\n").into_bytes();
                    set.extend_from_slice(&v);
                    set.extend_from_slice(b"\r\n");
                    w.set_req.push(set);
                }
                Protocol::EtcdHttp => {
                    w.set_req.push(etcd_put(k.as_bytes(), &v));
                    w.get_req.push(etcd_range(k.as_bytes()));
                    let expected = format!(r#""value":"{}""#, base64_text(&v));
                    w.get_expected.push(expected.into_bytes());
                }
            }
        }
        if protocol == Protocol::Memcached {
            for g in 0..gets {
                let group = g * keys_per_get..((g + 1) * keys_per_get).min(keys);
                let mut get = b"get".to_vec();
                let mut reply = Vec::new();
                for i in group {
                    let k = key(i);
                    get.push(b' ');
                    get.extend_from_slice(k.as_bytes());
                    reply.extend_from_slice(format!("VALUE {k} 0 {value_len}\r\n").as_bytes());
                    reply.extend_from_slice(&value(i, value_len));
                    reply.extend_from_slice(b"\r\n");
                }
                get.extend_from_slice(b"\r\n");
                reply.extend_from_slice(b"END\r\n");
                w.get_req.push(get);
                w.get_expected.push(reply);
            }
        }
        w
    }

    pub fn keys(&self) -> usize {
        self.set_req.len()
    }

    /// How many different gets there are (groups of keys).
    pub fn gets(&self) -> usize {
        self.get_req.len()
    }

    /// The longest reply a request can have.
    pub fn longest_reply(&self) -> usize {
        self.get_expected.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Connections [`populate`] spreads the keys over: etcd answers a
/// connection's requests one after another, each after its own commit
/// (about 1,000 a second here), which would make one connection take 10 s
/// for 10,000 keys.
const POPULATE_CONNS: usize = 8;

/// Stores every key (pipelined, 100 at a time per connection) and checks
/// that the last one reads back. Every connect, read and write gives up
/// after `timeout`.
pub fn populate(addr: SocketAddr, w: &Workload, timeout: Duration) -> Result<(), String> {
    std::thread::scope(|scope| {
        let shares: Vec<_> = (0..POPULATE_CONNS)
            .map(|share| scope.spawn(move || populate_share(addr, w, share, timeout)))
            .collect();
        shares
            .into_iter()
            .try_for_each(|h| h.join().expect("populate thread panicked"))
    })?;
    let mut s = blocking_connect(addr, timeout)?;
    let last = w.gets() - 1;
    s.write_all(&w.get_req[last])
        .map_err(|e| format!("write: {e}"))?;
    match read_reply(&mut s, &mut Vec::new(), Expect::Get(last as u32), w)? {
        (Outcome::Ok, _) => Ok(()),
        (_, reply) => Err(format!("a stored key does not read back: {reply:?}")),
    }
}

/// Stores every `POPULATE_CONNS`-th key from `share` on one connection.
fn populate_share(
    addr: SocketAddr,
    w: &Workload,
    share: usize,
    timeout: Duration,
) -> Result<(), String> {
    let mut s = blocking_connect(addr, timeout)?;
    let keys: Vec<usize> = (share..w.keys()).step_by(POPULATE_CONNS).collect();
    let mut input = Vec::new();
    for batch in keys.chunks(100) {
        let out: Vec<u8> = batch
            .iter()
            .flat_map(|&i| w.set_req[i].iter().copied())
            .collect();
        s.write_all(&out).map_err(|e| format!("write: {e}"))?;
        for _ in batch {
            if let (Outcome::Miss | Outcome::Wrong, reply) =
                read_reply(&mut s, &mut input, Expect::Set, w)?
            {
                return Err(format!("a set was answered {reply:?}"));
            }
        }
    }
    Ok(())
}

/// Reads (blocking, within the stream's timeouts) until the reply at the
/// head of `input` is complete; takes it out of `input` and returns its
/// outcome and its text.
pub(crate) fn read_reply(
    s: &mut TcpStream,
    input: &mut Vec<u8>,
    expect: Expect,
    w: &Workload,
) -> Result<(Outcome, String), String> {
    let mut buf = [0u8; 4096];
    loop {
        match frame(input, expect, w) {
            Framing::Done(outcome, used) => {
                let text = String::from_utf8_lossy(&input[..used]).into_owned();
                input.drain(..used);
                return Ok((outcome, text));
            }
            Framing::Incomplete => {}
            Framing::Broken(why) => {
                let head = String::from_utf8_lossy(&input[..input.len().min(300)]);
                return Err(format!("unparsable reply ({why}): {head:?}"));
            }
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        input.extend_from_slice(&buf[..n]);
    }
}

/// A blocking connection whose connect, reads and writes each give up
/// after `timeout`, so a dead or silent server cannot hang the caller.
pub(crate) fn blocking_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}
