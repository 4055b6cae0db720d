//! `mckv client` at a terminal: rustyline's line editing (arrows, Ctrl-R,
//! the usual Emacs keys), a history of the command lines kept in a file
//! across sessions, and tab completion of command names. Only command
//! lines go into the history: a storage command's value line does not, so
//! arrow-up brings back the last command.
//!
//! The history file is `$XDG_STATE_HOME/mckv/history`, or `~/.mckv_history`
//! where `XDG_STATE_HOME` is not set; each command is appended as it is
//! typed, so a client that dies keeps what was typed before.

use std::io;
use std::path::PathBuf;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, Helper};

use super::help;
use super::Typed;

/// Command lines the history keeps, newest last.
const HISTORY_LINES: usize = 1000;

/// The terminal's line editor and where its history is kept.
pub struct Terminal {
    editor: Editor<CommandNames, FileHistory>,
    /// `None` when no home or state directory is known: history then
    /// lasts for the session only.
    history: Option<PathBuf>,
    /// A history file that cannot be written is reported once.
    history_failed: bool,
}

impl Terminal {
    /// An editor on the terminal, with the history of earlier sessions.
    pub fn open() -> io::Result<Terminal> {
        let config = Config::builder()
            .max_history_size(HISTORY_LINES)
            .map_err(readline_error)?
            .history_ignore_dups(true)
            .map_err(readline_error)?
            .auto_add_history(false)
            // A pasted request and its value line are taken line by line,
            // as typed, not as one line holding both.
            .bracketed_paste(false)
            .build();
        let mut editor = Editor::with_config(config).map_err(readline_error)?;
        editor.set_helper(Some(CommandNames));
        let history = history_path();
        if let Some(path) = &history {
            // No file yet is a first session, not an error.
            let _ = editor.load_history(path);
        }
        Ok(Terminal {
            editor,
            history,
            history_failed: false,
        })
    }

    /// A command line, kept in the history.
    pub fn command(&mut self, prompt: &str) -> io::Result<Typed> {
        let typed = self.read(prompt)?;
        if let Typed::Line(line) = &typed {
            if !line.trim().is_empty() {
                self.remember(line);
            }
        }
        Ok(typed)
    }

    /// A storage command's value line, kept out of the history.
    pub fn value(&mut self) -> io::Result<Typed> {
        self.read("")
    }

    fn read(&mut self, prompt: &str) -> io::Result<Typed> {
        match self.editor.readline(prompt) {
            Ok(line) => Ok(Typed::Line(line)),
            Err(ReadlineError::Interrupted) => Ok(Typed::Cancelled),
            Err(ReadlineError::Eof) => Ok(Typed::End),
            Err(e) => Err(readline_error(e)),
        }
    }

    fn remember(&mut self, line: &str) {
        let _ = self.editor.add_history_entry(line);
        let Some(path) = &self.history else {
            return;
        };
        let saved = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir).map_err(ReadlineError::Io),
            None => Ok(()),
        }
        .and_then(|()| self.editor.append_history(path));
        if let Err(e) = saved {
            if !std::mem::replace(&mut self.history_failed, true) {
                eprintln!("mckv client: history not saved to {}: {e}", path.display());
            }
        }
    }
}

/// Where the history is kept: `$XDG_STATE_HOME/mckv/history`, else
/// `~/.mckv_history`.
pub fn history_path() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = nonempty("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("mckv").join("history"));
    }
    nonempty("HOME").map(|home| PathBuf::from(home).join(".mckv_history"))
}

fn readline_error(e: ReadlineError) -> io::Error {
    match e {
        ReadlineError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Completes the command name being typed: the first word of a line, or
/// the word after `help`.
struct CommandNames;

impl Completer for CommandNames {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let typed = &line[..pos];
        let start = typed.rfind(' ').map_or(0, |space| space + 1);
        let before: Vec<&str> = typed[..start].split_whitespace().collect();
        let names = match before[..] {
            [] | [help::HELP] => help::names_starting_with(&typed[start..]),
            _ => Vec::new(),
        };
        Ok((start, names))
    }
}

impl Hinter for CommandNames {
    type Hint = String;
}

impl Highlighter for CommandNames {}

impl Validator for CommandNames {}

impl Helper for CommandNames {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn complete(line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        CommandNames
            .complete(line, line.len(), &Context::new(&history))
            .unwrap()
    }

    #[test]
    fn completes_a_command_name_first_and_after_help_only() {
        assert_eq!(complete("sho"), (0, vec!["show".to_string()]));
        assert_eq!(
            complete("help de"),
            (5, vec!["delete".into(), "decr".into()])
        );
        assert_eq!(
            complete("  ver"),
            (2, vec!["version".into(), "verbosity".into()])
        );
        assert_eq!(complete("get sh"), (4, Vec::<String>::new()));
    }
}
