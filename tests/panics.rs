//! What a panic does to a node's process: on any thread, it is logged and
//! the process exits non-zero, rather than living on without the thread.
//!
//! The panic runs in a child process (this test binary run again for one
//! ignored test), so the hook the server installs ends that child only.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TempDir;
use mckv::logging::{self, PANIC_EXIT_CODE};
use simplelog::LevelFilter;

/// Where the child logs; set only in the child.
const CHILD_LOG: &str = "MCKV_PANIC_CHILD_LOG";

#[test]
fn a_panic_on_a_worker_thread_is_logged_and_ends_the_process() {
    let dir = TempDir::new("panics");
    let log = dir.0.join("child.log");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_worker_thread_panics",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_LOG, &log)
        .output()
        .expect("run the child");
    assert_eq!(
        child.status.code(),
        Some(PANIC_EXIT_CODE),
        "{}",
        String::from_utf8_lossy(&child.stdout)
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("[ERROR]"), "{logged}");
    assert!(
        logged.contains("the store is gone; the node stops"),
        "{logged}"
    );
    assert!(
        !String::from_utf8_lossy(&child.stdout).contains("still alive"),
        "the process outlived its worker"
    );
}

#[test]
#[ignore = "a child process of a_panic_on_a_worker_thread_is_logged_and_ends_the_process"]
fn a_worker_thread_panics() {
    let Some(log) = std::env::var_os(CHILD_LOG) else {
        return;
    };
    logging::init(LevelFilter::Info, log.as_ref()).unwrap();
    logging::exit_on_panic();
    let worker = std::thread::spawn(|| panic!("the store is gone"));
    let _ = worker.join();
    std::thread::sleep(Duration::from_secs(2));
    println!("still alive");
}
