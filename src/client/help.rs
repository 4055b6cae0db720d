//! Every command `mckv client` can send or answers itself, with its syntax
//! and what it does: what `help` lists, what `help <command>` prints, and
//! the names tab completion offers. One table, so the three cannot
//! disagree.

use std::fmt::Write as _;

/// One command: its name, its syntax (one line per form; a storage
/// command's value line included), a short line on what it does for the
/// list, and what `help <command>` adds: replies, flags.
pub struct CommandHelp {
    pub name: &'static str,
    pub syntax: &'static [&'static str],
    pub about: &'static str,
    pub details: &'static [&'static str],
}

/// The client's own commands: answered here, never sent.
pub const HELP: &str = "help";
pub const SWITCH_NODE: &str = "\\node";

/// A storage command's replies.
const STORED_OR_NOT: &[&str] = &["replies STORED or NOT_STORED"];

/// The commands, in the order `help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "get",
        syntax: &["get <key> [<key> ...]"],
        about: "the values of the keys that exist",
        details: &["replies VALUE <key> <flags> <bytes> and the value for each, then END"],
    },
    CommandHelp {
        name: "gets",
        syntax: &["gets <key> [<key> ...]"],
        about: "as get, with each value's cas unique",
        details: &[
            "replies VALUE <key> <flags> <bytes> <cas unique> and the value for each, then END",
        ],
    },
    CommandHelp {
        name: "gat",
        syntax: &["gat <exptime> <key> [<key> ...]"],
        about: "get and touch: as get, giving each key found a new exptime",
        details: &[],
    },
    CommandHelp {
        name: "gats",
        syntax: &["gats <exptime> <key> [<key> ...]"],
        about: "as gat, with cas uniques",
        details: &[],
    },
    CommandHelp {
        name: "bget",
        syntax: &["bget <key> [<key> ...]"],
        about: "memcached's old name for get",
        details: &[],
    },
    CommandHelp {
        name: "set",
        syntax: &["set <key> <flags> <exptime> <bytes> [noreply]", "<value>"],
        about: "store the value (the next line) under the key",
        details: &["replies STORED"],
    },
    CommandHelp {
        name: "add",
        syntax: &["add <key> <flags> <exptime> <bytes> [noreply]", "<value>"],
        about: "store only if the key holds nothing",
        details: STORED_OR_NOT,
    },
    CommandHelp {
        name: "replace",
        syntax: &[
            "replace <key> <flags> <exptime> <bytes> [noreply]",
            "<value>",
        ],
        about: "store only if the key holds a value",
        details: STORED_OR_NOT,
    },
    CommandHelp {
        name: "append",
        syntax: &[
            "append <key> <flags> <exptime> <bytes> [noreply]",
            "<value>",
        ],
        about: "add the value after the key's",
        details: &["flags and exptime are ignored; replies STORED or NOT_STORED"],
    },
    CommandHelp {
        name: "prepend",
        syntax: &[
            "prepend <key> <flags> <exptime> <bytes> [noreply]",
            "<value>",
        ],
        about: "add the value before the key's",
        details: &["flags and exptime are ignored; replies STORED or NOT_STORED"],
    },
    CommandHelp {
        name: "cas",
        syntax: &[
            "cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]",
            "<value>",
        ],
        about: "store only if the key's cas unique (from gets) is unchanged",
        details: &["replies STORED, EXISTS (changed since) or NOT_FOUND"],
    },
    CommandHelp {
        name: "delete",
        syntax: &["delete <key> [0] [noreply]"],
        about: "remove the key",
        details: &["replies DELETED or NOT_FOUND"],
    },
    CommandHelp {
        name: "incr",
        syntax: &["incr <key> <delta> [noreply]"],
        about: "add delta to the key's decimal value",
        details: &["wraps at 2^64; replies the new value, or NOT_FOUND"],
    },
    CommandHelp {
        name: "decr",
        syntax: &["decr <key> <delta> [noreply]"],
        about: "subtract delta from the key's decimal value",
        details: &["stops at 0; replies the new value, or NOT_FOUND"],
    },
    CommandHelp {
        name: "touch",
        syntax: &["touch <key> <exptime> [noreply]"],
        about: "give the key a new exptime",
        details: &["replies TOUCHED or NOT_FOUND"],
    },
    CommandHelp {
        name: "flush_all",
        syntax: &["flush_all [<delay>] [noreply]"],
        about: "invalidate every item, now or in delay seconds",
        details: &["replies OK"],
    },
    CommandHelp {
        name: "mg",
        syntax: &["mg <key> <flag>*"],
        about: "meta get",
        details: &[
            "flags: v value, f client flags, s size, t ttl, c cas unique, k key,",
            "O<opaque>, q quiet, b base64 key, T<ttl> touch, u P L (accepted)",
            "replies VA <bytes> <flags>* and the value, HD <flags>*, or EN (miss)",
        ],
    },
    CommandHelp {
        name: "ms",
        syntax: &["ms <key> <datalen> <flag>*", "<value>"],
        about: "meta set",
        details: &[
            "flags: T<ttl>, F<client flags>, C<cas> compare, c cas unique, k, O, q, b, I,",
            "M<mode>: S set, E add, A append, P prepend, R replace",
            "replies HD, NS (not stored), EX (cas differs) or NF (not found)",
        ],
    },
    CommandHelp {
        name: "md",
        syntax: &["md <key> <flag>*"],
        about: "meta delete",
        details: &[
            "flags: C<cas> compare, k, O<opaque>, q, b, T (accepted)",
            "replies HD, NF (not found) or EX (cas differs)",
        ],
    },
    CommandHelp {
        name: "ma",
        syntax: &["ma <key> <flag>*"],
        about: "meta arithmetic",
        details: &[
            "flags: M<mode> (I or + incr, D or - decr), D<delta>, N<ttl> create on a miss",
            "with J<initial>, T<ttl>, C<cas>, v value, c, t, k, O, q, b",
            "replies HD, VA <bytes> and the value, NF, NS or EX",
        ],
    },
    CommandHelp {
        name: "mn",
        syntax: &["mn"],
        about: "meta no-op",
        details: &["replies MN; marks the end of quiet (q) replies"],
    },
    CommandHelp {
        name: "me",
        syntax: &["me <key> [b]"],
        about: "meta debug: what memcached keeps of the key",
        details: &["replies ME <key> exp= la= cas= fetch= cls= size=, or EN"],
    },
    CommandHelp {
        name: "stats",
        syntax: &[
            "stats",
            "stats settings | items | slabs | sizes | conns | extstore",
            "stats detail on | off | dump",
            "stats cachedump <class> <limit>",
            "stats reset",
        ],
        about: "the node's counters, or one group of them",
        details: &[
            "replies STAT <name> <value> lines, then END (memcached's, then mckv_*);",
            "reset replies RESET, detail on|off OK",
        ],
    },
    CommandHelp {
        name: "show",
        syntax: &["show"],
        about: "the cluster as this node sees it",
        details: &[
            "replies one NODE line per node, then END: NODE <id> <address> <state>",
            "<self|peer> last_heard_ms= clock= view= queue= ops=, then on its own line",
            "members= and, in the strong modes, delivery_lag_ms=; on a peer's, run= (the",
            "run of it this node last took a hello from)",
        ],
    },
    CommandHelp {
        name: "version",
        syntax: &["version"],
        about: "the memcached protocol level mckv speaks",
        details: &["replies VERSION 1.6.0 (mckv's own version is stats' mckv_version)"],
    },
    CommandHelp {
        name: "verbosity",
        syntax: &["verbosity <level> [noreply]"],
        about: "accepted; the node's log level is its --log-level",
        details: &["replies OK"],
    },
    CommandHelp {
        name: "cache_memlimit",
        syntax: &["cache_memlimit <megabytes> [noreply]"],
        about: "this node's embedded store memory limit from now on",
        details: &["replies OK, or MEMLIMIT_TOO_SMALL under 8"],
    },
    CommandHelp {
        name: "slabs",
        syntax: &[
            "slabs automove <0|1|2> [noreply]",
            "slabs automove ratio <x> [noreply]",
            "slabs reassign <source class> <destination class>",
        ],
        about: "accepted as memcached accepts them (there are no slab pages)",
        details: &["automove replies OK; reassign NOSPARE, SAME or BADCLASS"],
    },
    CommandHelp {
        name: "quit",
        syntax: &["quit"],
        about: "close the connection and end the client",
        details: &[],
    },
    CommandHelp {
        name: HELP,
        syntax: &["help", "help <command>"],
        about: "(this client) the commands, or one command's syntax",
        details: &[],
    },
    CommandHelp {
        name: SWITCH_NODE,
        syntax: &["\\node <id>"],
        about: "(this client) talk to node <id> of the --config file",
        details: &["the client stays on its node when the other does not answer"],
    },
];

/// The command named `name`.
pub fn find(name: &str) -> Option<&'static CommandHelp> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// What `help` prints: every command with what it does.
pub fn list() -> String {
    let width = COMMANDS.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut text = String::from("Commands (help <command> shows its syntax):\n");
    for command in COMMANDS {
        let _ = writeln!(text, "  {:width$}  {}", command.name, command.about);
    }
    text
}

/// What `help <name>` prints: the command's forms, then what it does.
pub fn describe(name: &str) -> String {
    match find(name) {
        Some(command) => {
            let mut text = String::new();
            for line in command.syntax {
                let _ = writeln!(text, "{line}");
            }
            for line in std::iter::once(&command.about).chain(command.details) {
                let _ = writeln!(text, "  {line}");
            }
            text
        }
        None => format!("no command {name:?}; help lists them\n"),
    }
}

/// The command names starting with `prefix`, for tab completion.
pub fn names_starting_with(prefix: &str) -> Vec<String> {
    let names = COMMANDS.iter().map(|c| c.name);
    names
        .filter(|name| name.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_of_a_command_starts_with_its_syntax() {
        let set = describe("set");
        assert!(
            set.starts_with("set <key> <flags> <exptime> <bytes> [noreply]\n<value>\n"),
            "{set}"
        );
        assert!(describe("nosuch").starts_with("no command \"nosuch\""));
    }

    #[test]
    fn the_list_names_every_command_once() {
        let list = list();
        for command in COMMANDS {
            let start = format!("  {} ", command.name);
            let lines = list.lines().filter(|l| l.starts_with(&start));
            assert_eq!(lines.count(), 1, "{}", command.name);
        }
    }

    #[test]
    fn completion_offers_the_names_with_the_prefix() {
        assert_eq!(names_starting_with("ge"), ["get", "gets"]);
        assert_eq!(names_starting_with("sh"), ["show"]);
        assert_eq!(names_starting_with("\\"), ["\\node"]);
        assert!(names_starting_with("x").is_empty());
        assert_eq!(names_starting_with("").len(), COMMANDS.len());
    }
}
