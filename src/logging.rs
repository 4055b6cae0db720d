//! Logging to stderr and to the node's log file, at one level set by flag,
//! and what a panic does to the process.

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, LineWriter};
use std::path::Path;

use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, LevelFilter, TermLogger, TerminalMode, WriteLogger,
};

/// Colours only for a person at a terminal, never in a redirected stderr.
fn colors() -> ColorChoice {
    if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    }
}

/// Starts logging; the log file (and its directory) is created if missing and appended to.
pub fn init(level: LevelFilter, file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let log_file = OpenOptions::new().create(true).append(true).open(file)?;
    let config = ConfigBuilder::new().set_time_format_rfc3339().build();
    CombinedLogger::init(vec![
        TermLogger::new(level, config.clone(), TerminalMode::Stderr, colors()),
        // simplelog writes a line in many pieces: one system call per line.
        WriteLogger::new(level, config, LineWriter::new(log_file)),
    ])
    .map_err(std::io::Error::other)
}

/// The exit code of a process a panic ended (Rust's own for a panic on
/// the main thread).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Makes a panic on any thread end the process: it is logged (to stderr
/// and the log file) and the process exits with [`PANIC_EXIT_CODE`]. A
/// panic on a worker thread (the memcached backend's, the log writer's)
/// would otherwise end only that thread and leave the node half-alive:
/// serving, with nobody behind its channels.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        log::error!("{info}; the node stops\n{backtrace}");
        log::logger().flush();
        std::process::exit(PANIC_EXIT_CODE);
    }));
}
