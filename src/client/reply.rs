//! What reply each request line expects, and reading exactly that reply
//! from the server, byte for byte as it came: the client never waits for
//! a reply that is not coming, nor leaves one behind to be taken for the
//! next request's.
//!
//! ```text
//!  get gets gat gats bget show stats..  lines up to END (or an error line); VALUE blocks by length
//!  set .. / ms ..                       the next input line is the value; one line back
//!  mg ma (any line VA <len> ..)         one line, then the data block of that length
//!  .. noreply                           nothing
//!  a meta command with q                the request, then `mn`: lines up to MN, MN kept back
//!  quit                                 everything until the server closes
//!  anything else                        one line
//! ```

use std::io::{self, BufRead, Write};

/// What reply a request line expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Lines up to `END` (or an error line).
    UntilEnd,
    OneLine,
    Nothing,
    /// A quiet meta command (`q`) answers only what is worth saying, so
    /// the client sends `mn` after it and reads up to its `MN`, which is
    /// not printed.
    UntilNoOp,
    /// The server closes the connection.
    Close,
}

/// What a request line needs: the reply it expects, and whether the next
/// input line is its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub expect: Expect,
    pub has_value: bool,
}

/// Sent after a quiet meta command to end its reply (see [`Expect::UntilNoOp`]).
pub const NO_OP: &str = "mn\r\n";
const NO_OP_REPLY: &[u8] = b"MN\r\n";

/// The shape of the request `line`.
pub fn shape(line: &str) -> Shape {
    let tokens: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
    let name = tokens.first().copied().unwrap_or("");
    let has_value = matches!(
        name,
        "set" | "add" | "replace" | "append" | "prepend" | "cas" | "ms"
    );
    let meta = matches!(name, "mg" | "ms" | "md" | "ma");
    let expect = match name {
        "get" | "gets" | "gat" | "gats" | "bget" | "show" => Expect::UntilEnd,
        "stats" => stats_shape(tokens.get(1..).unwrap_or_default()),
        "quit" => Expect::Close,
        // A meta command's flags follow its key (and an `ms` length).
        _ if meta && tokens.iter().skip(2).any(|t| *t == "q") => Expect::UntilNoOp,
        _ if tokens.last() == Some(&"noreply") => Expect::Nothing,
        _ => Expect::OneLine,
    };
    Shape { expect, has_value }
}

/// `stats reset` and `stats detail on|off` answer one line; every other
/// group a list ending in `END`.
fn stats_shape(arguments: &[&str]) -> Expect {
    match arguments {
        ["reset", ..] | ["detail", "on" | "off", ..] => Expect::OneLine,
        _ => Expect::UntilEnd,
    }
}

fn is_final_line(line: &[u8]) -> bool {
    line == b"END\r\n"
        || line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
}

/// Reads one reply of the expected shape into `out`, as it came; `false`
/// when the server closed the connection.
pub fn read(reader: &mut impl BufRead, expect: Expect, out: &mut impl Write) -> io::Result<bool> {
    match expect {
        Expect::Nothing => Ok(true),
        Expect::Close => {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            out.write_all(&rest)?;
            Ok(false)
        }
        Expect::OneLine => read_lines(reader, out, |_| true),
        Expect::UntilEnd => read_lines(reader, out, is_final_line),
        Expect::UntilNoOp => {
            // The no-op's `MN` answers the client, not the user.
            let mut reply = Vec::new();
            let open = read_lines(reader, &mut reply, |line| line == NO_OP_REPLY)?;
            out.write_all(reply.strip_suffix(NO_OP_REPLY).unwrap_or(&reply))?;
            Ok(open)
        }
    }
}

/// Copies lines, each with the data block it announces, until `last(line)`
/// holds.
fn read_lines(
    reader: &mut impl BufRead,
    out: &mut impl Write,
    last: impl Fn(&[u8]) -> bool,
) -> io::Result<bool> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        out.write_all(&line)?;
        if let Some(length) = block_length(&line) {
            let mut block = vec![0; length + 2];
            reader.read_exact(&mut block)?;
            out.write_all(&block)?;
        }
        if last(&line) {
            return Ok(true);
        }
    }
}

/// The data length announced by `VALUE <key> <flags> <bytes> [<cas>]` or
/// a meta reply's `VA <bytes> <flags>*`.
fn block_length(line: &[u8]) -> Option<usize> {
    let (rest, field) = match line {
        [b'V', b'A', b'L', b'U', b'E', b' ', rest @ ..] => (rest, 2),
        [b'V', b'A', b' ', rest @ ..] => (rest, 0),
        _ => return None,
    };
    let text = std::str::from_utf8(rest).ok()?;
    text.split(' ').nth(field)?.trim_end().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(line: &str) -> (Expect, bool) {
        let s = shape(line);
        (s.expect, s.has_value)
    }

    #[test]
    fn knows_each_reply_shape() {
        let cases = [
            ("get a b", (Expect::UntilEnd, false)),
            ("set k 0 0 1", (Expect::OneLine, true)),
            ("set k 0 0 1 noreply", (Expect::Nothing, true)),
            ("stats", (Expect::UntilEnd, false)),
            ("stats settings", (Expect::UntilEnd, false)),
            ("stats reset", (Expect::OneLine, false)),
            ("stats detail on", (Expect::OneLine, false)),
            ("stats detail dump", (Expect::UntilEnd, false)),
            ("quit", (Expect::Close, false)),
            ("ms k 2 T0", (Expect::OneLine, true)),
            ("ms k 2 q", (Expect::UntilNoOp, true)),
            ("mg k v q", (Expect::UntilNoOp, false)),
            ("mg q v", (Expect::OneLine, false)),
            ("mn", (Expect::OneLine, false)),
            ("me k", (Expect::OneLine, false)),
            ("bogus", (Expect::OneLine, false)),
        ];
        for (line, want) in cases {
            assert_eq!(shape_of(line), want, "{line}");
        }
    }

    #[test]
    fn a_data_block_is_read_by_the_length_its_line_announces() {
        assert_eq!(block_length(b"VALUE k 0 12 99\r\n"), Some(12));
        assert_eq!(block_length(b"VALUE k 0 3\r\n"), Some(3));
        assert_eq!(block_length(b"VA 5 f0 c7\r\n"), Some(5));
        assert_eq!(block_length(b"VA 2\r\n"), Some(2));
        assert_eq!(block_length(b"HD c7\r\n"), None);
        assert!(is_final_line(b"SERVER_ERROR no quorum\r\n"));
    }

    fn reply_to(expect: Expect, bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut reader = io::BufReader::new(bytes);
        let mut out = Vec::new();
        assert!(read(&mut reader, expect, &mut out).unwrap());
        (out, reader.buffer().len())
    }

    #[test]
    fn a_reply_is_copied_as_it_came_and_nothing_after_it_is_taken() {
        let next = b"STORED\r\n";
        let cases: [(Expect, &[u8]); 4] = [
            (Expect::UntilEnd, b"VALUE k 0 5\r\nEND\r\n\r\nEND\r\n"),
            (Expect::OneLine, b"VA 3 f0\r\na\r\n\r\n"),
            (Expect::OneLine, b"MN\r\n"),
            (
                Expect::UntilEnd,
                b"CLIENT_ERROR bad command line format\r\n",
            ),
        ];
        for (expect, reply) in cases {
            let (out, left) = reply_to(expect, &[reply, next].concat());
            assert_eq!(out, reply, "{}", String::from_utf8_lossy(reply));
            assert_eq!(left, next.len());
        }
    }

    #[test]
    fn a_quiet_meta_reply_ends_at_the_no_op_which_is_not_shown() {
        let (out, left) = reply_to(Expect::UntilNoOp, b"VA 1 k\r\nx\r\nMN\r\nHD\r\n");
        assert_eq!(out, b"VA 1 k\r\nx\r\n");
        assert_eq!(left, 4);
        let (out, _) = reply_to(Expect::UntilNoOp, b"MN\r\n");
        assert_eq!(out, b"");
    }
}
