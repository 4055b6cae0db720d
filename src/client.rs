//! `mckv client`: a line client for people, like telnet but aware of the
//! protocol. It sends each line (and, for storage commands, the next line as
//! the value), waits for exactly that command's reply and prints it. From a
//! pipe it works the same, without prompts.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long to wait for a reply before telling the user.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What reply a request line expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Lines up to `END` (or an error line).
    UntilEnd,
    OneLine,
    Nothing,
    /// The server closes the connection.
    Close,
}

fn expectation(line: &str) -> (Expect, bool) {
    let tokens: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
    let name = tokens.first().copied().unwrap_or("");
    let has_value = matches!(
        name,
        "set" | "add" | "replace" | "append" | "prepend" | "cas"
    );
    let expect = match name {
        "get" | "gets" | "gat" | "gats" | "bget" | "show" => Expect::UntilEnd,
        "stats" if tokens.get(1) != Some(&"reset") => Expect::UntilEnd,
        "quit" => Expect::Close,
        _ if tokens.last() == Some(&"noreply") => Expect::Nothing,
        _ => Expect::OneLine,
    };
    (expect, has_value)
}

fn is_final_line(line: &[u8]) -> bool {
    line == b"END\r\n"
        || line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
}

/// Reads one reply of the expected shape; a `VALUE` block is read by its length.
fn read_reply(
    reader: &mut BufReader<TcpStream>,
    expect: Expect,
    out: &mut impl Write,
) -> io::Result<bool> {
    let mut line = Vec::new();
    match expect {
        Expect::Nothing => return Ok(true),
        Expect::Close => {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            out.write_all(&rest)?;
            return Ok(false);
        }
        Expect::OneLine | Expect::UntilEnd => {}
    }
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        out.write_all(&line)?;
        if expect == Expect::OneLine || is_final_line(&line) {
            return Ok(true);
        }
        if let Some(length) = value_length(&line) {
            let mut block = vec![0; length + 2];
            reader.read_exact(&mut block)?;
            out.write_all(&block)?;
        }
    }
}

/// The data length declared by a `VALUE <key> <flags> <bytes> [<cas>]` line.
fn value_length(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line.strip_prefix(b"VALUE ")?).ok()?;
    text.split(' ').nth(2)?.trim_end().parse().ok()
}

/// Where replies are printed. A reader that went away (`mckv client | head`)
/// ends the client quietly, as it ends `cat`; its `BrokenPipe` is told apart
/// from one on the server's socket by [`ReaderGone`].
struct Printer<W>(W);

#[derive(Debug)]
struct ReaderGone;

impl std::fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the reader of the output went away")
    }
}

impl std::error::Error for ReaderGone {}

fn reader_gone(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::other(ReaderGone)
    } else {
        e
    }
}

impl<W: Write> Write for Printer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(reader_gone)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(reader_gone)
    }
}

/// Runs the client until EOF on stdin, `quit`, the server closing, or the
/// reader of its output going away.
pub fn run(host: &str, port: u16) -> io::Result<()> {
    match converse(host, port) {
        Err(e) if e.get_ref().is_some_and(|inner| inner.is::<ReaderGone>()) => Ok(()),
        result => result,
    }
}

fn converse(host: &str, port: u16) -> io::Result<()> {
    let stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock().lines();
    let mut out = Printer(io::stdout().lock());
    loop {
        if interactive {
            write!(out, "mckv {host}:{port}> ")?;
            out.flush()?;
        }
        let Some(line) = input.next().transpose()? else {
            break;
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (expect, has_value) = expectation(line);
        let mut request = format!("{line}\r\n");
        if has_value {
            let value = input.next().transpose()?.unwrap_or_default();
            request.push_str(value.trim_end_matches('\r'));
            request.push_str("\r\n");
        }
        writer.write_all(request.as_bytes())?;
        match read_reply(&mut reader, expect, &mut out) {
            Ok(true) => {}
            Ok(false) => {
                if expect != Expect::Close {
                    writeln!(out, "(connection closed by server)")?;
                }
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                writeln!(out, "(no reply within {}s)", REPLY_TIMEOUT.as_secs())?;
            }
            Err(e) => return Err(e),
        }
        out.flush()?;
    }
    if interactive {
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_each_reply_shape() {
        assert_eq!(expectation("get a b"), (Expect::UntilEnd, false));
        assert_eq!(expectation("set k 0 0 1"), (Expect::OneLine, true));
        assert_eq!(expectation("set k 0 0 1 noreply"), (Expect::Nothing, true));
        assert_eq!(expectation("stats reset"), (Expect::OneLine, false));
        assert_eq!(expectation("quit"), (Expect::Close, false));
        assert_eq!(value_length(b"VALUE k 0 12 99\r\n"), Some(12));
        assert!(is_final_line(b"SERVER_ERROR no quorum\r\n"));
    }
}
