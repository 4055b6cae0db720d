//! `mckv client`: a line client for people, like telnet but aware of the
//! protocol. It sends each line (and, for storage commands, the next line as
//! the value), waits for exactly that command's reply and prints it as the
//! server sent it. `help` and `\node` it answers itself.
//!
//! ```text
//!  a pipe ───────────────────── lines ──┐
//!  a terminal ─ rustyline (editor.rs) ──┴─► help, \node ─► help.rs, nodes.rs
//!                                          a request ─► Link (nodes.rs) ─► reply.rs ─► stdout
//! ```
//!
//! From a pipe it works as it always has: no prompt, no history, nothing
//! printed but the replies. At a terminal, lines are edited and kept in a
//! history file, and command names complete with tab. Replies and `help`
//! go to stdout; the client's own notes (a node switched to, a node that
//! does not answer) go to stderr, so a script's output holds only replies.

mod editor;
mod help;
mod nodes;
mod reply;

pub use nodes::{connect, Target};

use std::io::{self, BufRead, IsTerminal, Lines, StdinLock, Write};

use nodes::{Link, Nodes, REPLY_TIMEOUT};
use reply::Expect;

/// What the user typed at a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Typed {
    Line(String),
    /// Ctrl-C at a terminal: drop the line.
    Cancelled,
    /// End of input (Ctrl-D at a terminal).
    End,
}

/// Where lines come from.
enum Input {
    Pipe(Lines<StdinLock<'static>>),
    Terminal(Box<editor::Terminal>),
}

impl Input {
    fn open() -> io::Result<Input> {
        let stdin = io::stdin();
        Ok(match stdin.is_terminal() {
            true => Input::Terminal(Box::new(editor::Terminal::open()?)),
            false => Input::Pipe(stdin.lock().lines()),
        })
    }

    fn command(&mut self, prompt: &str) -> io::Result<Typed> {
        match self {
            Input::Pipe(lines) => Self::next(lines),
            Input::Terminal(terminal) => terminal.command(prompt),
        }
    }

    fn value(&mut self) -> io::Result<Typed> {
        match self {
            Input::Pipe(lines) => Self::next(lines),
            Input::Terminal(terminal) => terminal.value(),
        }
    }

    fn next(lines: &mut Lines<StdinLock<'static>>) -> io::Result<Typed> {
        Ok(lines.next().transpose()?.map_or(Typed::End, Typed::Line))
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Terminal(_))
    }
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
pub fn run(target: &Target) -> io::Result<()> {
    let (nodes, link) = Nodes::connect(target)?;
    let mut session = Session {
        nodes,
        link,
        input: Input::open()?,
        out: Printer(io::stdout().lock()),
    };
    match session.converse() {
        Err(e) if e.get_ref().is_some_and(|inner| inner.is::<ReaderGone>()) => Ok(()),
        Err(e) => Err(nodes::at(&session.link.addr, e)),
        Ok(()) => Ok(()),
    }
}

/// A client's conversation: its input, the node it talks to, its output.
struct Session {
    nodes: Nodes,
    link: Link,
    input: Input,
    out: Printer<io::StdoutLock<'static>>,
}

/// Whether to go on after a line.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

impl Session {
    fn converse(&mut self) -> io::Result<()> {
        loop {
            let line = match self.input.command(&self.link.prompt())? {
                Typed::Line(line) => line,
                Typed::Cancelled => continue,
                Typed::End => break,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let next = match local_command(line) {
                Some(Local::Help(topic)) => self.help(topic),
                Some(Local::SwitchNode(id)) => self.switch_node(id),
                None => self.request(line),
            }?;
            self.out.flush()?;
            if next == Next::Stop {
                break;
            }
        }
        if self.input.is_terminal() {
            writeln!(self.out)?;
        }
        Ok(())
    }

    fn help(&mut self, topic: Option<&str>) -> io::Result<Next> {
        let text = topic.map_or_else(help::list, help::describe);
        self.out.write_all(text.as_bytes())?;
        Ok(Next::Continue)
    }

    fn switch_node(&mut self, id: &str) -> io::Result<Next> {
        match self.nodes.switch(id) {
            Ok(link) => {
                eprintln!("mckv client: now on node {id} ({})", link.addr);
                self.link = link;
            }
            Err(why) => eprintln!("mckv client: {why}; still on {}", self.link.addr),
        }
        Ok(Next::Continue)
    }

    /// Sends `line` (with its value line, if it takes one) and prints the reply.
    fn request(&mut self, line: &str) -> io::Result<Next> {
        let shape = reply::shape(line);
        let mut request = format!("{line}\r\n");
        if shape.has_value {
            let value = match self.input.value()? {
                Typed::Line(value) => value,
                Typed::Cancelled => return Ok(Next::Continue),
                Typed::End => String::new(),
            };
            request.push_str(value.trim_end_matches('\r'));
            request.push_str("\r\n");
        }
        if shape.expect == Expect::UntilNoOp {
            request.push_str(reply::NO_OP);
        }
        self.link.writer.write_all(request.as_bytes())?;
        match reply::read(&mut self.link.reader, shape.expect, &mut self.out) {
            Ok(true) => Ok(Next::Continue),
            Ok(false) => {
                if shape.expect != Expect::Close {
                    writeln!(self.out, "(connection closed by server)")?;
                }
                Ok(Next::Stop)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                writeln!(self.out, "(no reply within {}s)", REPLY_TIMEOUT.as_secs())?;
                Ok(Next::Continue)
            }
            Err(e) => Err(e),
        }
    }
}

/// A command the client answers itself.
#[derive(Debug, PartialEq, Eq)]
enum Local<'a> {
    Help(Option<&'a str>),
    SwitchNode(&'a str),
}

/// The client's own command in `line`, if it is one. memcached answers
/// `help` with `ERROR`, and no command starts with a backslash, so neither
/// hides a server command.
fn local_command(line: &str) -> Option<Local<'_>> {
    let mut words = line.split_whitespace();
    let (name, argument) = (words.next()?, words.next());
    match name {
        help::HELP => Some(Local::Help(argument)),
        help::SWITCH_NODE => Some(Local::SwitchNode(argument.unwrap_or(""))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_node_are_the_clients_own_and_nothing_else_is() {
        assert_eq!(local_command("help"), Some(Local::Help(None)));
        assert_eq!(local_command(" help  set "), Some(Local::Help(Some("set"))));
        assert_eq!(local_command("\\node 2"), Some(Local::SwitchNode("2")));
        assert_eq!(local_command("\\node"), Some(Local::SwitchNode("")));
        assert_eq!(local_command("get help"), None);
        assert_eq!(local_command("helpme"), None);
    }
}
