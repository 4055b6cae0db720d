//! What a panic does to a node's process: on any thread, and even while a
//! log line is being written, it is logged and the process exits non-zero,
//! rather than living on without the thread (or hanging).
//!
//! Each panic runs in a child process (this test binary run again for one
//! ignored test), so the hook the server installs ends that child only.

mod common;

use std::fmt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use mckv::logging::{self, PANIC_EXIT_CODE};
use simplelog::LevelFilter;

/// Where the child logs, and how it panics; set only in the child.
const CHILD_LOG: &str = "MCKV_PANIC_CHILD_LOG";
const CHILD_PANIC: &str = "MCKV_PANIC_CHILD_HOW";

/// Runs the child that panics `how` (killed if still running after 10 s);
/// returns its exit code, its log and its stdout.
fn panicking_child(how: &str) -> (Option<i32>, String, String) {
    let dir = TempDir::new("panics");
    let log = dir.0.join("child.log");
    let mut child = common::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_child_panics", "--ignored", "--nocapture"])
            .env(CHILD_LOG, &log)
            .env(CHILD_PANIC, how)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("run the child");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    use std::io::Read;
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    (status.code(), logged, stdout)
}

#[test]
fn a_panic_on_a_worker_thread_is_logged_and_ends_the_process() {
    let (code, logged, stdout) = panicking_child("worker");
    assert_eq!(code, Some(PANIC_EXIT_CODE), "{stdout}");
    assert!(
        logged.contains("the store is gone; the node stops"),
        "{logged}"
    );
    assert!(
        !stdout.contains("still alive"),
        "the process outlived its worker"
    );
}

#[test]
fn a_panic_while_a_line_is_logged_still_ends_the_process() {
    let (code, logged, stdout) = panicking_child("logging");
    assert_eq!(code, Some(PANIC_EXIT_CODE), "hung or lived on: {stdout}");
    assert!(
        logged.contains("cannot show this; the node stops"),
        "{logged}"
    );
}

/// A value whose display panics, as a buggy one might inside a log line.
struct PanicsWhenShown;

impl fmt::Display for PanicsWhenShown {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("cannot show this")
    }
}

#[test]
#[ignore = "a child process of the tests above"]
fn a_child_panics() {
    let Some(log) = std::env::var_os(CHILD_LOG) else {
        return;
    };
    logging::init(LevelFilter::Info, log.as_ref()).unwrap();
    logging::exit_on_panic();
    match std::env::var(CHILD_PANIC).as_deref() {
        Ok("logging") => log::info!("{}", PanicsWhenShown),
        _ => {
            let _ = std::thread::spawn(|| panic!("the store is gone")).join();
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    println!("still alive");
}
