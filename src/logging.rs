//! Logging to stderr and to the node's log file, at one level set by flag.

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
