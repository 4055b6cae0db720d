//! Logging to stderr and to the node's log file, at one level set by flag,
//! and what a panic does to the process.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, LineWriter, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let _ = PANIC_LOG.set(log_file.try_clone()?);
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

/// The log file, for a panic's message: written directly, not through
/// the logger, whose lock the panicking thread may hold.
static PANIC_LOG: OnceLock<File> = OnceLock::new();

/// Makes a panic on any thread end the process: it is written to stderr
/// and the log file, with a backtrace, and the process exits with
/// [`PANIC_EXIT_CODE`]. A panic on a worker thread (the memcached
/// backend's, the log writer's) would otherwise end only that thread and
/// leave the node half-alive: serving, with nobody behind its channels.
/// The message bypasses the `log` facade: a panic raised while formatting
/// a log line holds the logger's lock, and logging again would deadlock.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let backtrace = std::backtrace::Backtrace::force_capture();
        let message = format!("[ERROR] at unix time {at}: {info}; the node stops\n{backtrace}\n");
        // The file first: a stderr pipe nobody drains could block.
        if let Some(mut file) = PANIC_LOG.get() {
            let _ = file.write_all(message.as_bytes());
        }
        let _ = std::io::stderr().write_all(message.as_bytes());
        std::process::exit(PANIC_EXIT_CODE);
    }));
}
