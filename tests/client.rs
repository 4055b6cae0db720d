//! `mckv client` as people and scripts use it: at a terminal (a
//! pseudo-terminal driven by expectrl: arrow keys, tab, help, the history
//! file), from a pipe (byte for byte what it printed before line editing
//! came), and across the nodes of a config file (`--config`, `\node`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{connect, free_port, request, start_mckv, MckvNode, TempDir};
use expectrl::session::OsSession;
use expectrl::Expect;

const UP_ARROW: &str = "\x1b[A";
const TAB: &str = "\t";
const CTRL_D: &str = "\x04";

/// `mckv client --port <port>` on a pseudo-terminal, its history kept in
/// `state` (killed when dropped).
fn client_at_a_terminal(port: u16, state: &Path) -> OsSession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mckv"));
    cmd.args(["client", "--port", &port.to_string()])
        .env("XDG_STATE_HOME", state)
        .env("HOME", state)
        // rustyline edits lines only on a terminal it knows.
        .env("TERM", "xterm");
    let mut session = common::starting(|| OsSession::spawn(cmd)).expect("start mckv client");
    session.set_expect_timeout(Some(Duration::from_secs(10)));
    session
        .expect(prompt(port).as_str())
        .expect("the client's prompt");
    session
}

fn prompt(port: u16) -> String {
    format!("mckv 127.0.0.1:{port}> ")
}

/// Types `keys`, then waits for `reply` and the next prompt.
fn type_and_expect(session: &mut OsSession, port: u16, keys: &str, reply: &str) {
    session.send(keys).expect("type");
    session
        .expect(reply)
        .unwrap_or_else(|e| panic!("no {reply:?} after typing {keys:?}: {e}"));
    session
        .expect(prompt(port).as_str())
        .unwrap_or_else(|e| panic!("no prompt after {reply:?}: {e}"));
}

/// Ends the session with Ctrl-D and waits for the client to exit.
fn end(mut session: OsSession) {
    session.send(CTRL_D).expect("type Ctrl-D");
    session
        .expect(expectrl::Eof)
        .expect("the client ends on Ctrl-D");
}

#[test]
fn arrow_up_recalls_the_last_command_in_this_session_and_the_next() {
    let node = start_mckv("", &[]);
    let state = TempDir::new("client-history");
    let port = node.port();
    let mut session = client_at_a_terminal(port, &state.0);
    session.send("set k 0 0 2\r").expect("type");
    type_and_expect(&mut session, port, "hi\r", "STORED");
    type_and_expect(&mut session, port, "version\r", "VERSION 1.6.0");
    // An empty line sends nothing: a second reply proves the recall.
    type_and_expect(
        &mut session,
        port,
        &format!("{UP_ARROW}\r"),
        "VERSION 1.6.0",
    );
    end(session);

    let history = std::fs::read_to_string(state.0.join("mckv/history")).expect("a history file");
    let lines: Vec<&str> = history.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        ["set k 0 0 2", "version"],
        "the value line is left out"
    );

    let mut next = client_at_a_terminal(port, &state.0);
    next.send(format!("{UP_ARROW}{UP_ARROW}\r")).expect("type");
    type_and_expect(&mut next, port, "ho\r", "STORED");
    end(next);
    let stored = request(&mut connect(port), b"get k\r\n");
    assert_eq!(stored, "VALUE k 0 2\r\nho\r\nEND\r\n");
}

#[test]
fn tab_completes_a_command_name() {
    let node = start_mckv("", &[]);
    let state = TempDir::new("client-tab");
    let port = node.port();
    let mut session = client_at_a_terminal(port, &state.0);
    let own_line = format!("NODE 0 127.0.0.1:{port} up self");
    type_and_expect(&mut session, port, &format!("sho{TAB}\r"), &own_line);
    type_and_expect(&mut session, port, &format!("vers{TAB}\r"), "VERSION 1.6.0");
    end(session);
}

#[test]
fn help_set_prints_the_syntax_of_set() {
    let node = start_mckv("", &[]);
    let state = TempDir::new("client-help");
    let port = node.port();
    let mut session = client_at_a_terminal(port, &state.0);
    let syntax = "set <key> <flags> <exptime> <bytes> [noreply]";
    type_and_expect(&mut session, port, "help set\r", syntax);
    type_and_expect(&mut session, port, "help\r", "mg ");
    end(session);
}

/// `mckv client <args>` with `stdin` from a pipe and `home` as its home and
/// state directory.
fn client_from_a_pipe(args: &[&str], stdin: &[u8], home: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mckv"));
    cmd.arg("client")
        .args(args)
        .env("XDG_STATE_HOME", home)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = common::spawn(&mut cmd).expect("run mckv client");
    // A client that gives up at once may close its stdin first.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin);
    child.wait_with_output().expect("wait for mckv client")
}

/// A session of set, get, gets, delete, incr, cas and stats groups, and
/// what the client printed for it before it edited lines (the cas unique
/// is the node's own, read afterwards).
const PIPED: &str = "set greeting 0 0 5\nhello\nget greeting missing\ngets greeting\n\
    append greeting 0 0 1\n!\nget greeting\ndelete greeting\ndelete greeting\n\
    set n 0 7 1\n5\nincr n 3\ndecr n 100\ncas n 0 0 1 1\n9\nset quiet 0 0 1 noreply\nq\n\
    gets n quiet\nstats slabs\nstats items\nstats sizes\nstats detail dump\nstats reset\n\
    version\nbogus\n\nquit\n";

fn piped_transcript(cas_n: &str, cas_quiet: &str) -> String {
    [
        "STORED\r\n",
        "VALUE greeting 0 5\r\nhello\r\nEND\r\n",
        "VALUE greeting 0 5 GREETING\r\nhello\r\nEND\r\n",
        "STORED\r\n",
        "VALUE greeting 0 6\r\nhello!\r\nEND\r\n",
        "DELETED\r\n",
        "NOT_FOUND\r\n",
        "STORED\r\n",
        "8\r\n",
        "0\r\n",
        "EXISTS\r\n",
        &format!("VALUE n 0 1 {cas_n}\r\n0\r\nVALUE quiet 0 1 {cas_quiet}\r\nq\r\nEND\r\n"),
        "STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n",
        "END\r\n",
        "STAT sizes_status disabled\r\nEND\r\n",
        "END\r\n",
        "RESET\r\n",
        "VERSION 1.6.0\r\n",
        "ERROR\r\n",
    ]
    .concat()
}

/// The cas unique `gets <key>` reads on `node`.
fn cas_of(node: &MckvNode, key: &str) -> String {
    let reply = request(
        &mut connect(node.port()),
        format!("gets {key}\r\n").as_bytes(),
    );
    let first = reply.lines().next().unwrap_or_default();
    first.rsplit(' ').next().unwrap_or_default().to_string()
}

#[test]
fn from_a_pipe_it_prints_exactly_what_it_printed_before_and_keeps_no_history() {
    let node = start_mckv("", &[]);
    let home = TempDir::new("client-pipe");
    let port = node.port().to_string();
    let out = client_from_a_pipe(&["--port", &port], PIPED.as_bytes(), &home.0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cas_n, cas_quiet) = (cas_of(&node, "n"), cas_of(&node, "quiet"));
    let printed = String::from_utf8_lossy(&out.stdout);
    let want = piped_transcript(&cas_n, &cas_quiet);
    // `gets greeting` read the unique of a value since replaced: any number.
    let (before, after) = want.split_once("GREETING").unwrap();
    assert!(printed.starts_with(before), "{printed:?}");
    let rest = &printed[before.len()..];
    let unique_len = rest.find("\r\n").unwrap_or(0);
    assert!(rest[..unique_len].parse::<u64>().is_ok(), "{printed:?}");
    assert_eq!(&rest[unique_len..], after, "{printed:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let kept: Vec<_> = std::fs::read_dir(&home.0).unwrap().collect();
    assert!(kept.is_empty(), "a piped client wrote {kept:?}");
}

/// A config whose node 0 and 2 listen nowhere and node 1 is `node`.
fn config_around(node: &MckvNode, dir: &Path) -> std::path::PathBuf {
    let config = dir.join("cluster.ini");
    let text = format!(
        "[cluster]\nconsistency = linearizable\n\n\
         [node.0]\nclient = 127.0.0.1:{}\n\n\
         [node.1]\nclient = 127.0.0.1:{}\n\n\
         [node.2]\nclient = 127.0.0.1:{}\n",
        free_port(),
        node.port(),
        free_port()
    );
    std::fs::write(&config, text).expect("write config");
    config
}

#[test]
fn with_a_config_it_talks_to_the_first_node_that_answers_and_switches_on_request() {
    let node = start_mckv("", &[]);
    let home = TempDir::new("client-config");
    let config = config_around(&node, &home.0);
    let script = b"set k 0 0 1\nv\n\\node 2\n\\node 7\n\\node 1\nget k\n";
    let out = client_from_a_pipe(&["--config", config.to_str().unwrap()], script, &home.0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in [
        "mckv client: node 2 (127.0.0.1:",
        ") does not answer: ",
        "mckv client: no node \"7\" in ",
        ": its nodes are 0, 1, 2; still on 127.0.0.1:",
        &format!("mckv client: now on node 1 (127.0.0.1:{})", node.port()),
    ] {
        assert!(stderr.contains(said), "no {said:?} in {stderr}");
    }
}

#[test]
fn node_switching_without_a_config_says_what_it_needs() {
    let node = start_mckv("", &[]);
    let home = TempDir::new("client-no-config");
    let port = node.port().to_string();
    let out = client_from_a_pipe(&["--port", &port], b"\\node 1\nversion\n", &home.0);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "VERSION 1.6.0\r\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\\node needs a config: start the client with --config FILE"),
        "{stderr}"
    );

    let config = home.0.join("none.ini");
    std::fs::write(
        &config,
        format!("[node.0]\nclient = 127.0.0.1:{}\n", free_port()),
    )
    .unwrap();
    let out = client_from_a_pipe(
        &["--config", config.to_str().unwrap()],
        b"version\n",
        &home.0,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mckv client: no node of "), "{stderr}");
    assert!(stderr.contains("answers: node 0 (127.0.0.1:"), "{stderr}");
}
