//! Where each reply ends and whether it is the one expected, for both
//! protocols, as pure functions over the bytes received (the driver and
//! `populate` own the sockets). A reply that cannot be framed puts the
//! connection out of step: the caller drops the connection.

use std::ops::Range;

use memchr::memchr;

use super::target::Protocol;
use super::workload::Workload;

/// What a request's reply must be.
#[derive(Clone, Copy)]
pub(crate) enum Expect {
    /// The value of this key.
    Get(u32),
    /// Stored.
    Set,
}

pub(crate) enum Outcome {
    Ok,
    /// A `get` of a stored key that found nothing.
    Miss,
    /// Any other reply (a `SERVER_ERROR` included).
    Wrong,
}

pub(crate) enum Framing {
    /// A whole reply, this many bytes long.
    Done(Outcome, usize),
    Incomplete,
    /// The bytes cannot be framed as a reply (why).
    Broken(&'static str),
}

/// The longest line (or HTTP head) waited for before the bytes are taken
/// for garbage.
const MAX_LINE: usize = 4096;
const MAX_HTTP_HEAD: usize = 8192;

/// Frames the reply at the head of `buf` and checks it against `expect`.
pub(crate) fn frame(buf: &[u8], expect: Expect, w: &Workload) -> Framing {
    match w.protocol {
        Protocol::Memcached => frame_memcached(buf, expect, w),
        Protocol::EtcdHttp => frame_etcd(buf, expect, w),
    }
}

fn line_end(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    match memchr(b'\n', buf) {
        Some(nl) => Ok(Some(nl + 1)),
        None if buf.len() > MAX_LINE => Err("no end of line in 4 KiB"),
        None => Ok(None),
    }
}

fn frame_memcached(buf: &[u8], expect: Expect, w: &Workload) -> Framing {
    match expect {
        Expect::Set => match line_end(buf) {
            Ok(Some(end)) if &buf[..end] == b"STORED\r\n" => Framing::Done(Outcome::Ok, end),
            Ok(Some(end)) => Framing::Done(Outcome::Wrong, end),
            Ok(None) => Framing::Incomplete,
            Err(why) => Framing::Broken(why),
        },
        Expect::Get(k) => {
            let want = &w.get_expected[k as usize];
            if buf.starts_with(want) {
                return Framing::Done(Outcome::Ok, want.len());
            }
            frame_memcached_values(buf)
        }
    }
}

/// Frames a `get` reply that is not the expected bytes (or not all here
/// yet): `VALUE` blocks up to `END`, or a one-line error.
fn frame_memcached_values(buf: &[u8]) -> Framing {
    let mut at = 0;
    let mut values = 0;
    loop {
        let end = match line_end(&buf[at..]) {
            Ok(Some(len)) => at + len,
            Ok(None) => return Framing::Incomplete,
            Err(why) => return Framing::Broken(why),
        };
        let line = &buf[at..end];
        if line == b"END\r\n" {
            let outcome = if values == 0 {
                Outcome::Miss
            } else {
                Outcome::Wrong
            };
            return Framing::Done(outcome, end);
        }
        if let Some(rest) = line.strip_prefix(b"VALUE ") {
            let Some(len) = String::from_utf8_lossy(rest)
                .split_whitespace()
                .nth(2)
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return Framing::Broken("VALUE line without a length");
            };
            let data_end = end + len + 2;
            if buf.len() < data_end {
                return Framing::Incomplete;
            }
            if &buf[data_end - 2..data_end] != b"\r\n" {
                return Framing::Broken("value data not followed by CRLF");
            }
            at = data_end;
            values += 1;
            continue;
        }
        if at == 0 {
            // A one-line reply instead of a value: ERROR, SERVER_ERROR, ...
            return Framing::Done(Outcome::Wrong, end);
        }
        return Framing::Broken("a line that is neither VALUE nor END");
    }
}

/// Frames the HTTP/1.1 response at the head of `buf`: its status and the
/// byte range of its body (whose end is the response's length), or `None`
/// while incomplete. Only a Content-Length can frame a response among
/// pipelined ones here; a chunked one is refused, not skipped over.
pub fn parse_http(buf: &[u8]) -> Result<Option<(u16, Range<usize>)>, &'static str> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return if buf.len() > MAX_HTTP_HEAD {
            Err("no end of the response head in 8 KiB")
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| "response head not UTF-8")?;
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("not an HTTP/1.x status line")?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding (chunked) response");
        }
    }
    let length: usize = length.ok_or("response without Content-Length")?;
    let end = head_len + length;
    Ok((buf.len() >= end).then_some((status, head_len..end)))
}

/// A `put` is right if answered 200; a `range` if the 200 body holds the
/// key's value, a miss if it has no `"kvs"` at all.
fn frame_etcd(buf: &[u8], expect: Expect, w: &Workload) -> Framing {
    let (status, body) = match parse_http(buf) {
        Ok(Some(response)) => response,
        Ok(None) => return Framing::Incomplete,
        Err(why) => return Framing::Broken(why),
    };
    let used = body.end;
    let body = &buf[body];
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let outcome = match expect {
        _ if status != 200 => Outcome::Wrong,
        Expect::Set => Outcome::Ok,
        Expect::Get(k) if contains(&w.get_expected[k as usize]) => Outcome::Ok,
        Expect::Get(_) if !contains(br#""kvs""#) => Outcome::Miss,
        Expect::Get(_) => Outcome::Wrong,
    };
    Framing::Done(outcome, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload::new(Protocol::Memcached, 2, 3, 1)
    }

    fn framed(buf: &[u8], expect: Expect) -> String {
        framed_in(&workload(), buf, expect)
    }

    fn framed_in(w: &Workload, buf: &[u8], expect: Expect) -> String {
        match frame(buf, expect, w) {
            Framing::Done(Outcome::Ok, n) => format!("ok {n}"),
            Framing::Done(Outcome::Miss, n) => format!("miss {n}"),
            Framing::Done(Outcome::Wrong, n) => format!("wrong {n}"),
            Framing::Incomplete => "incomplete".into(),
            Framing::Broken(why) => format!("broken: {why}"),
        }
    }

    #[test]
    fn memcached_replies_are_framed_and_judged() {
        let get = Expect::Get(1);
        let right = format!(
            "VALUE {} 0 3\r\nbcd\r\nEND\r\n",
            super::super::workload::key(1)
        );
        for (reply, expect, want) in [
            ("STORED\r\n", Expect::Set, "ok 8"),
            ("NOT_STORED\r\n", Expect::Set, "wrong 12"),
            ("STOR", Expect::Set, "incomplete"),
            (right.as_str(), get, "ok 54"),
            ("END\r\n", get, "miss 5"),
            ("VALUE x 0 1\r\nz\r\nEND\r\n", get, "wrong 21"),
            ("VALUE x 0 1\r\nz", get, "incomplete"),
            ("SERVER_ERROR out of memory\r\n", get, "wrong 28"),
            (
                "VALUE x 0 1\r\nzz\r\nEND\r\n",
                get,
                "broken: value data not followed by CRLF",
            ),
            ("VALUE x\r\n", get, "broken: VALUE line without a length"),
        ] {
            assert_eq!(framed(reply.as_bytes(), expect), want, "{reply:?}");
        }
        assert_eq!(
            framed(&[b'x'; MAX_LINE + 1], Expect::Set),
            "broken: no end of line in 4 KiB"
        );
    }

    #[test]
    fn every_strict_prefix_of_the_expected_get_reply_is_incomplete() {
        let w = workload();
        let reply = &w.get_expected[0];
        for end in 0..reply.len() {
            assert!(
                matches!(
                    frame(&reply[..end], Expect::Get(0), &w),
                    Framing::Incomplete
                ),
                "{end}"
            );
        }
    }

    #[test]
    fn a_multi_get_names_its_group_of_keys_and_wants_every_value() {
        use super::super::workload::key;
        let w = Workload::new(Protocol::Memcached, 5, 2, 2);
        assert_eq!((w.keys(), w.gets()), (5, 3));
        let want = format!("get {} {}\r\n", key(2), key(3));
        assert_eq!(w.get_req[1], want.as_bytes());
        assert_eq!(w.get_req[2], format!("get {}\r\n", key(4)).as_bytes());
        let right = w.get_expected[1].clone();
        let n = right.len();
        assert_eq!(framed_in(&w, &right, Expect::Get(1)), format!("ok {n}"));
        // One value missing: a whole reply, but the wrong one.
        let first_value_only = format!("VALUE {} 0 2\r\ncd\r\nEND\r\n", key(2));
        assert_eq!(
            framed_in(&w, first_value_only.as_bytes(), Expect::Get(1)),
            format!("wrong {}", first_value_only.len())
        );
        for end in 0..n {
            assert_eq!(framed_in(&w, &right[..end], Expect::Get(1)), "incomplete");
        }
    }

    #[test]
    fn http_responses_are_framed_by_content_length_only() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_http(ok), Ok(Some((200, 38..40))));
        assert_eq!(parse_http(&ok[..39]), Ok(None));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_http(chunked).is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
