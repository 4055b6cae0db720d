//! The binary protocol's differential scripts: requests built as packets,
//! sent to a real memcached and to mckv, responses compared packet by
//! packet after [`normalize`].
//!
//! Keys are prefixed when a script is built (`b07_a` for key `a` of the
//! script at index 7), not by the text scripts' `$` substitution, which
//! would change the bytes of a packet's header and its lengths.
//!
//! memcached 1.6.18's `proto_bin.c` is the reference; what the scripts pin
//! down beyond the happy paths: quiet forms (a getq miss is silent, a setq
//! error is not), a cas on set/add/replace making them a compare, append's
//! and incr's own compare, incr's create-on-miss and its 0xffffffff
//! expiration, the refusals that close the connection (key and extras
//! longer than the body, a key over 250 bytes, wrong lengths for the
//! opcode) and those that do not (unknown opcodes and SASL, whose body is
//! swallowed, as memcached swallows it, one key and extras too far), and
//! which responses a request with a bad magic drops.

use super::{Compare, Script, Step, PAUSE_MS};

/// A cas unique neither server hands out in a test: a compare with it
/// fails wherever the item exists (a small one matches the item the
/// parallel scripts happened to store first).
const NEVER: u64 = 9_999_999_999;

/// A request under construction; its opaque is set when its script is.
#[derive(Clone)]
pub struct Req {
    opcode: u8,
    key: Key,
    extras: Vec<u8>,
    value: Vec<u8>,
    cas: u64,
    /// Lengths a header claims instead of the real ones (key, extras, body).
    lengths: Option<(u16, u8, u32)>,
    magic: u8,
    datatype: u8,
    vbucket: u16,
}

/// A request's key: a name the script's prefix goes in front of, or exact bytes.
#[derive(Clone)]
enum Key {
    Named(Vec<u8>),
    /// Prefix and `k`s, this many bytes in all.
    OfLength(usize),
    Exact(Vec<u8>),
}

pub fn req(opcode: u8) -> Req {
    Req {
        opcode,
        key: Key::Exact(Vec::new()),
        extras: Vec::new(),
        value: Vec::new(),
        cas: 0,
        lengths: None,
        magic: 0x80,
        datatype: 0,
        vbucket: 0,
    }
}

impl Req {
    fn key(mut self, name: impl AsRef<[u8]>) -> Req {
        self.key = Key::Named(name.as_ref().to_vec());
        self
    }

    fn key_of_length(mut self, len: usize) -> Req {
        self.key = Key::OfLength(len);
        self
    }

    fn exact_key(mut self, key: impl AsRef<[u8]>) -> Req {
        self.key = Key::Exact(key.as_ref().to_vec());
        self
    }

    fn extras(mut self, extras: impl AsRef<[u8]>) -> Req {
        self.extras = extras.as_ref().to_vec();
        self
    }

    fn value(mut self, value: impl AsRef<[u8]>) -> Req {
        self.value = value.as_ref().to_vec();
        self
    }

    fn cas(mut self, cas: u64) -> Req {
        self.cas = cas;
        self
    }

    fn claiming(mut self, key: u16, extras: u8, body: u32) -> Req {
        self.lengths = Some((key, extras, body));
        self
    }

    fn magic(mut self, magic: u8) -> Req {
        self.magic = magic;
        self
    }

    fn datatype(mut self, datatype: u8) -> Req {
        self.datatype = datatype;
        self
    }

    fn vbucket(mut self, vbucket: u16) -> Req {
        self.vbucket = vbucket;
        self
    }

    /// The packet, with `prefix` before a named key and `opaque` set.
    pub fn bytes(&self, prefix: &[u8], opaque: u32) -> Vec<u8> {
        let key = match &self.key {
            Key::Named(name) => [prefix, name].concat(),
            Key::OfLength(len) => [prefix, &vec![b'k'; len - prefix.len()]].concat(),
            Key::Exact(key) => key.clone(),
        };
        let real = (
            key.len() as u16,
            self.extras.len() as u8,
            (key.len() + self.extras.len() + self.value.len()) as u32,
        );
        let (key_len, extras_len, body_len) = self.lengths.unwrap_or(real);
        let mut r = vec![self.magic, self.opcode];
        r.extend_from_slice(&key_len.to_be_bytes());
        r.extend_from_slice(&[extras_len, self.datatype]);
        r.extend_from_slice(&self.vbucket.to_be_bytes());
        r.extend_from_slice(&body_len.to_be_bytes());
        r.extend_from_slice(&opaque.to_be_bytes());
        r.extend_from_slice(&self.cas.to_be_bytes());
        r.extend_from_slice(&self.extras);
        r.extend_from_slice(&key);
        r.extend_from_slice(&self.value);
        r
    }
}

// The requests scripts use, by memcached's names.

fn get(key: impl AsRef<[u8]>) -> Req {
    req(0x00).key(key)
}
fn getq(key: impl AsRef<[u8]>) -> Req {
    req(0x09).key(key)
}
fn getk(key: impl AsRef<[u8]>) -> Req {
    req(0x0c).key(key)
}
fn getkq(key: impl AsRef<[u8]>) -> Req {
    req(0x0d).key(key)
}

/// set (0x01), add (0x02), replace (0x03) and their quiet forms (0x11-0x13).
fn store(opcode: u8, key: impl AsRef<[u8]>, flags: u32, value: impl AsRef<[u8]>) -> Req {
    req(opcode)
        .key(key)
        .extras(set_extras(flags, 0))
        .value(value)
}

fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Req {
    store(0x01, key, 0, value)
}

fn set_extras(flags: u32, exptime: u32) -> Vec<u8> {
    [flags.to_be_bytes(), exptime.to_be_bytes()].concat()
}

/// append (0x0e), prepend (0x0f) and their quiet forms (0x19, 0x1a).
fn concat(opcode: u8, key: &str, value: impl AsRef<[u8]>) -> Req {
    req(opcode).key(key).value(value)
}

/// incr (0x05), decr (0x06) and their quiet forms (0x15, 0x16).
fn arith(opcode: u8, key: &str, delta: u64, initial: u64, exptime: u32) -> Req {
    let extras = [
        &delta.to_be_bytes()[..],
        &initial.to_be_bytes(),
        &exptime.to_be_bytes(),
    ]
    .concat();
    req(opcode).key(key).extras(extras)
}

/// touch (0x1c), gat (0x1d), gatq (0x1e), gatk (0x23), gatkq (0x24).
fn touch(opcode: u8, key: &str, exptime: u32) -> Req {
    req(opcode).key(key).extras(exptime.to_be_bytes())
}

fn delete(key: impl AsRef<[u8]>) -> Req {
    req(0x04).key(key)
}
fn noop() -> Req {
    req(0x0a)
}
fn stat(group: &str) -> Req {
    req(0x10).exact_key(group)
}

/// What a script sends.
pub enum Part {
    Req(Req),
    /// A request cut into writes at these offsets, with a pause between.
    Cut(Req, Vec<usize>),
    /// Bytes as they are (text, garbage).
    Raw(Vec<u8>),
    Pause(u64),
}

impl From<Req> for Part {
    fn from(r: Req) -> Part {
        Part::Req(r)
    }
}

/// The prefix of script `index`'s keys.
fn prefix(index: usize) -> Vec<u8> {
    format!("b{index:02}_").into_bytes()
}

/// A binary script: its requests numbered as opaques 1, 2, ... so a
/// response out of order shows.
fn script(name: &'static str, index: usize, parts: Vec<Part>) -> Script {
    let prefix = prefix(index);
    let mut steps = Vec::new();
    let mut pending = Vec::new();
    let mut opaque = 0;
    for part in parts {
        match part {
            Part::Req(r) => {
                opaque += 1;
                pending.extend(r.bytes(&prefix, opaque));
            }
            Part::Cut(r, cuts) => {
                opaque += 1;
                let bytes = r.bytes(&prefix, opaque);
                let mut from = 0;
                for at in cuts {
                    pending.extend_from_slice(&bytes[from..at]);
                    steps.push(Step::Send(std::mem::take(&mut pending)));
                    steps.push(Step::Pause(PAUSE_MS));
                    from = at;
                }
                pending.extend_from_slice(&bytes[from..]);
            }
            Part::Raw(bytes) => pending.extend(bytes),
            Part::Pause(ms) => {
                steps.push(Step::Send(std::mem::take(&mut pending)));
                steps.push(Step::Pause(ms));
            }
        }
    }
    steps.push(Step::Send(pending));
    let mut script = Script::new(name);
    script.steps = steps;
    script.compare = Compare::Binary { stats: None };
    script
}

/// Builds the scripts of a table, each with its own key prefix.
fn scripts_of(table: Vec<(&'static str, Vec<Part>)>) -> Vec<Script> {
    table
        .into_iter()
        .enumerate()
        .map(|(i, (name, parts))| script(name, i, parts))
        .collect()
}

macro_rules! parts {
    ($($part:expr),* $(,)?) => { vec![$(Part::from($part)),*] };
}

impl From<Vec<u8>> for Part {
    fn from(bytes: Vec<u8>) -> Part {
        Part::Raw(bytes)
    }
}

/// The requests, every opcode and its quiet form, with their errors.
pub fn scripts() -> Vec<Script> {
    let big = vec![b'v'; 1024 * 1024];
    let mut scripts = scripts_of(vec![
        (
            "get_getq_getk_getkq_hit_and_miss",
            parts![
                store(0x01, "a", 5, "hello"),
                get("a"),
                getq("a"),
                getk("a"),
                getkq("a"),
                get("zz"),
                getq("zz"),
                getk("zz"),
                getkq("zz"),
                noop(),
            ],
        ),
        (
            "quiet_multi_get_ends_with_noop",
            parts![
                set("a", "1"),
                set("c", "3"),
                getkq("a"),
                getkq("b"),
                getkq("c"),
                getq("d"),
                getq("c"),
                noop(),
            ],
        ),
        (
            "set_add_replace_and_quiet_forms",
            parts![
                store(0x01, "a", 1, "one"),
                store(0x11, "a", 2, "two"),
                store(0x02, "a", 0, "x"),
                store(0x12, "a", 0, "x"),
                store(0x02, "b", 3, "bee"),
                store(0x12, "c", 4, "cee"),
                store(0x03, "d", 0, "x"),
                store(0x13, "d", 0, "x"),
                store(0x03, "a", 6, "three"),
                store(0x13, "b", 7, "bee2"),
                get("a"),
                get("b"),
                get("c"),
                get("d"),
                noop(),
            ],
        ),
        (
            "a_cas_that_differs_or_finds_nothing",
            parts![
                set("a", "x"),
                set("a", "y").cas(NEVER),
                store(0x02, "a", 0, "y").cas(NEVER),
                store(0x13, "a", 0, "y").cas(NEVER),
                set("zz", "y").cas(NEVER),
                store(0x02, "zz", 0, "y").cas(NEVER),
                store(0x13, "zz", 0, "y").cas(NEVER),
                get("a"),
                get("zz"),
            ],
        ),
        (
            "append_prepend_and_quiet_forms",
            parts![
                concat(0x0e, "a", "x"),
                concat(0x1a, "a", "x"),
                store(0x01, "a", 3, "mid"),
                concat(0x0e, "a", ">"),
                concat(0x0f, "a", "<"),
                concat(0x19, "a", "]"),
                concat(0x1a, "a", "["),
                get("a"),
                concat(0x0e, "a", "!").cas(NEVER),
                concat(0x0e, "zz", "!").cas(NEVER),
                get("a"),
            ],
        ),
        (
            "delete_and_deleteq",
            parts![
                delete("a"),
                req(0x14).key("a"),
                set("a", "x"),
                delete("a").cas(NEVER),
                delete("a"),
                set("a", "x"),
                req(0x14).key("a"),
                get("a"),
                noop(),
            ],
        ),
        (
            "incr_decr_create_count_and_refuse",
            parts![
                arith(0x05, "n", 1, 10, 0xffff_ffff),
                arith(0x15, "n", 1, 10, 0xffff_ffff),
                arith(0x05, "n", 1, 10, 0),
                arith(0x05, "n", 5, 0, 0),
                arith(0x15, "n", 5, 0, 0),
                arith(0x06, "n", 100, 0, 0),
                arith(0x16, "n", 1, 0, 0),
                arith(0x06, "m", 1, 7, 0),
                get("n"),
                get("m"),
                arith(0x05, "m", 1, 0, 0).cas(NEVER),
                arith(0x05, "zz", 1, 3, 0).cas(NEVER),
                noop(),
            ],
        ),
        (
            "incr_of_a_non_number_an_empty_value_and_past_2_64",
            parts![
                set("s", "abc"),
                arith(0x05, "s", 1, 0, 0),
                arith(0x16, "s", 1, 0, 0),
                set("e", ""),
                arith(0x05, "e", 1, 0, 0),
                set("w", "18446744073709551615"),
                arith(0x05, "w", 2, 0, 0),
                set("p", "100"),
                arith(0x06, "p", 1, 0, 0),
                get("p"),
                get("w"),
            ],
        ),
        (
            "touch_gat_gatk_and_quiet_forms",
            parts![
                store(0x01, "t", 7, "tv"),
                touch(0x1c, "t", 100),
                touch(0x1d, "t", 100),
                touch(0x1e, "t", 0),
                touch(0x23, "t", 100),
                touch(0x24, "t", 100),
                touch(0x1c, "zz", 100),
                touch(0x1d, "zz", 100),
                touch(0x1e, "zz", 100),
                touch(0x23, "zz", 100),
                touch(0x24, "zz", 100),
                get("t"),
                noop(),
            ],
        ),
        (
            "version_noop_and_opaques",
            parts![req(0x0b), noop(), req(0x0b), noop()],
        ),
        (
            "quit_answers_then_closes",
            parts![noop(), req(0x07), noop()],
        ),
        ("quitq_closes_silently", parts![noop(), req(0x17), noop()]),
        (
            "unknown_opcodes_are_answered_and_the_connection_goes_on",
            parts![req(0x50), req(0x1f), req(0xff), noop()],
        ),
        (
            "sasl_is_an_unknown_command",
            parts![
                req(0x20),
                req(0x21).exact_key("PLAIN").value("\0user\0pass"),
                req(0x22).exact_key("PLAIN").value("step"),
                noop(),
            ],
        ),
        // memcached swallows the body length after the key it read, so
        // the noop loses its first byte and the rest reads as a bad magic.
        (
            "an_unknown_opcode_with_a_key_eats_into_the_next_request",
            parts![req(0x50).key("k"), noop(), noop()],
        ),
        (
            "verbosity_is_unknown_and_swallows_its_extras_twice",
            parts![req(0x1b).extras([0, 0, 0, 1]), noop(), noop()],
        ),
        (
            "keys_of_any_bytes",
            parts![
                set("a b\r\n\0\u{1}", "spaced"),
                set([0xff, 0xfe], "high"),
                getk("a b\r\n\0\u{1}"),
                get([0xff, 0xfe]),
                delete("a b\r\n\0\u{1}"),
                getk("a b\r\n\0\u{1}"),
            ],
        ),
        (
            "a_key_of_250_bytes_is_taken",
            parts![
                req(0x01)
                    .key_of_length(250)
                    .extras(set_extras(0, 0))
                    .value("v"),
                req(0x0c).key_of_length(250),
            ],
        ),
        (
            "a_value_too_large_drops_a_sets_old_value",
            parts![
                set("a", "old"),
                set("b", "old"),
                set("a", &big),
                store(0x02, "b", 0, &big),
                concat(0x19, "b", &big),
                get("a"),
                get("b"),
            ],
        ),
        (
            "flags_and_values_of_every_size_class",
            parts![
                store(0x01, "f0", u32::MAX, ""),
                store(0x01, "f1", 1, vec![0u8; 1000]),
                store(0x01, "f2", 2, vec![b'x'; 100_000]),
                get("f0"),
                get("f1"),
                get("f2"),
            ],
        ),
        (
            "split_requests",
            vec![
                Part::Cut(
                    store(0x01, "a", 9, "split value"),
                    vec![1, 12, 23, 24, 30, 35],
                ),
                Part::Cut(getk("a"), vec![10]),
                Part::Req(noop()),
            ],
        ),
        (
            "datatype_and_vbucket_are_ignored",
            parts![set("a", "x"), get("a").datatype(1).vbucket(9)],
        ),
        // The binary protocol is chosen by a connection's first byte only.
        (
            "text_first_then_binary_bytes_are_text",
            parts![b"version\r\n".to_vec(), noop(), vec![b'\n']],
        ),
        (
            "a_bad_magic_after_a_noop_keeps_the_noops_response",
            parts![set("a", "x"), noop(), get("a"), noop().magic(0x81), noop(),],
        ),
        (
            "a_bad_magic_in_a_later_write_keeps_what_was_written",
            vec![
                Part::Req(set("a", "x")),
                Part::Req(get("a")),
                Part::Pause(PAUSE_MS),
                Part::Raw(b"get a\r\nget a\r\nget a\r\nget a\r\n".to_vec()),
            ],
        ),
        (
            "a_bad_magic_drops_responses_not_written_yet",
            parts![
                set("a", "x"),
                get("a"),
                b"get a\r\nget a\r\nget a\r\nget a\r\n".to_vec()
            ],
        ),
    ]);
    scripts.extend(refusal_scripts(scripts.len()));
    for script in &mut scripts {
        if script.name == "text_first_then_binary_bytes_are_text" {
            // Text replies: compared as the text scripts are.
            script.compare = Compare::Exact;
        }
    }
    scripts
}

/// Requests memcached refuses by their lengths: each closes the
/// connection, after answering the request before it.
fn refusal_scripts(first: usize) -> Vec<Script> {
    let table: Vec<(&'static str, Req)> = vec![
        ("key_longer_than_the_body", get("a").claiming(6, 0, 2)),
        (
            "key_and_extras_longer_than_the_body",
            set("a", "v").claiming(5, 8, 12),
        ),
        ("key_of_251_bytes", req(0x00).key_of_length(251)),
        ("get_without_key", req(0x00)),
        ("get_with_extras", get("a").extras([0; 4])),
        ("get_with_a_value", get("a").value("v")),
        ("set_without_extras", req(0x01).key("a").value("v")),
        (
            "set_with_short_extras",
            req(0x01).key("a").extras([0; 4]).value("v"),
        ),
        (
            "add_without_key",
            req(0x02).extras(set_extras(0, 0)).value("v"),
        ),
        ("append_with_extras", concat(0x0e, "a", "v").extras([0; 4])),
        ("delete_with_a_value", delete("a").value("v")),
        ("incr_with_short_extras", req(0x05).key("a").extras([0; 8])),
        ("touch_without_extras", req(0x1c).key("a")),
        ("gat_without_key", req(0x1d).extras([0; 4])),
        ("flush_with_a_key", req(0x08).exact_key("a")),
        ("flush_with_short_extras", req(0x08).extras([0; 2])),
        ("noop_with_a_key", noop().exact_key("a")),
        ("version_with_a_value", req(0x0b).value("v")),
        ("quit_with_extras", req(0x07).extras([0; 4])),
        ("stat_with_extras", stat("").extras([0; 4])),
        ("sasl_list_mechs_with_a_key", req(0x20).exact_key("PLAIN")),
        ("sasl_auth_without_key", req(0x21).value("data")),
    ];
    table
        .into_iter()
        .enumerate()
        .map(|(i, (name, refused))| {
            script(name, first + i, parts![getk("before"), refused, noop()])
        })
        .collect()
}

/// `stat` and its groups, serial (they read or reset what every script
/// did): general and settings compared by their stats' names.
pub fn stats_scripts() -> Vec<Script> {
    let by_name = |mut s: Script, left_out| {
        s.compare = Compare::Binary {
            stats: Some(left_out),
        };
        s.serial()
    };
    let scripts = scripts_of(vec![
        // Before anything is stored: no slab class on either server.
        (
            "stat_groups_of_an_empty_store",
            parts![stat("items"), stat("slabs"), stat("sizes"), noop()],
        ),
        ("stat_general", parts![stat("")]),
        ("stat_settings", parts![stat("settings")]),
        (
            "stat_reset_and_detail",
            parts![
                stat("reset"),
                stat("resetting"),
                stat("detail on"),
                stat("detail dump"),
                stat("detail off"),
                stat("detail"),
                stat("detail x"),
                noop(),
            ],
        ),
        (
            "stat_groups_memcached_has_only_in_text",
            parts![
                stat("conns"),
                stat("extstore"),
                stat("cachedump 1 1"),
                stat("items "),
                stat("bogus"),
                noop(),
            ],
        ),
    ]);
    scripts
        .into_iter()
        .map(|s| match s.name {
            "stat_general" => by_name(s, super::STATS_LEFT_OUT),
            "stat_settings" => by_name(s, super::SETTINGS_LEFT_OUT),
            _ => s.serial(),
        })
        .collect()
}

/// Scripts whose responses a single node gives exactly, but a cluster may
/// not: a store's error response (a miss) is a flush point in memcached,
/// which answers each request before it reads the next; a cluster has not
/// answered it yet when the bad magic behind it closes the connection, and
/// the response is dropped with the rest.
pub fn one_node_scripts() -> Vec<Script> {
    scripts_of(vec![
        (
            "a_bad_magic_after_a_miss_keeps_the_miss",
            parts![set("a", "x"), get("a"), get("zz"), noop().magic(0x00)],
        ),
        // memcached reads a gat's header, extras and key, and the rest of
        // its body as the next request.
        (
            "a_gats_extra_body_is_the_next_request",
            parts![touch(0x1d, "zz", 0).value([b'!'; 24])],
        ),
    ])
}

// ---------------------------------------------------------------------------
// Normalising responses
// ---------------------------------------------------------------------------

/// The responses in `raw`, one line each: opcode, status, opaque, cas,
/// extras, key and value. A nonzero cas unique is written `CAS` (each
/// server numbers its items its own way; tests/differential.rs's cas
/// dialogues compare how uniques relate instead) and the version's value
/// `x`. With `stats` (the names memcached reports and mckv does not), a
/// `stat` response is its name alone, with a number between colons
/// written `N`, and mckv's own `mckv_*` names and those left out are
/// dropped. Bytes after the last whole response are shown as they are.
pub fn normalize(raw: &[u8], stats: Option<&[&str]>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut at = 0;
    while let Some(header) = raw.get(at..at + 24) {
        let body_len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
        let Some(body) = raw.get(at + 24..at + 24 + body_len) else {
            break;
        };
        at += 24 + body_len;
        let (opcode, status) = (header[1], u16::from_be_bytes([header[6], header[7]]));
        let key_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let extras_len = usize::from(header[4]);
        let extras = &body[..extras_len.min(body.len())];
        let key = body
            .get(extras_len..extras_len + key_len)
            .unwrap_or_default();
        let value = body.get(extras_len + key_len..).unwrap_or_default();
        if let (0x10, 0, false, Some(left_out)) = (opcode, status, key.is_empty(), stats) {
            let name = String::from_utf8_lossy(key);
            if !name.starts_with("mckv_") && !left_out.contains(&name.as_ref()) {
                lines.push(format!("STAT {}", numbered(&name)));
            }
            continue;
        }
        let cas = match u64::from_be_bytes(header[16..24].try_into().unwrap()) {
            0 => "0",
            _ => "CAS",
        };
        let value = match (opcode, status) {
            (0x0b, 0) => "x".to_string(),
            _ => super::show(value),
        };
        lines.push(format!(
            "{:02x}{:02x} {:02x} status={status:04x} opaque={} cas={cas} extras={} key={} value={value}",
            header[0],
            header[5],
            opcode,
            u32::from_be_bytes(header[12..16].try_into().unwrap()),
            hex(extras),
            super::escape(key),
        ));
    }
    if at < raw.len() {
        lines.push(format!("partial: {}", super::show(&raw[at..])));
    }
    lines
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stat name with each all-digit part between colons written `N`.
fn numbered(name: &str) -> String {
    let parts: Vec<&str> = name
        .split(':')
        .map(
            |p| match !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                true => "N",
                false => p,
            },
        )
        .collect();
    parts.join(":")
}

// ---------------------------------------------------------------------------
// Dialogues: counters and cas uniques
// ---------------------------------------------------------------------------

/// One response: its opcode, status, cas and value.
pub struct Answer {
    pub opcode: u8,
    pub status: u16,
    pub cas: u64,
    pub value: Vec<u8>,
}

/// A binary connection that sends requests and reads their responses.
pub struct Client {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client {
            stream: crate::common::connect(port),
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, requests: &[Req]) {
        use std::io::Write;
        let bytes: Vec<u8> = requests
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.bytes(b"", i as u32 + 1))
            .collect();
        self.stream.write_all(&bytes).expect("send");
    }

    /// Reads responses until one to `opcode` (them all, in order).
    pub fn read_through(&mut self, opcode: u8) -> Vec<Answer> {
        let mut answers = Vec::new();
        loop {
            let answer = self.read_one();
            let done = answer.opcode == opcode;
            answers.push(answer);
            if done {
                return answers;
            }
        }
    }

    fn read_one(&mut self) -> Answer {
        use std::io::Read;
        loop {
            if let Some(header) = self.pending.get(..24) {
                let body_len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
                if self.pending.len() >= 24 + body_len {
                    let packet: Vec<u8> = self.pending.drain(..24 + body_len).collect();
                    let value_at = 24
                        + usize::from(packet[4])
                        + usize::from(u16::from_be_bytes([packet[2], packet[3]]));
                    return Answer {
                        opcode: packet[1],
                        status: u16::from_be_bytes([packet[6], packet[7]]),
                        cas: u64::from_be_bytes(packet[16..24].try_into().unwrap()),
                        value: packet[value_at..].to_vec(),
                    };
                }
            }
            let mut buf = [0u8; 65536];
            let n = self.stream.read(&mut buf).expect("a response");
            assert!(n > 0, "closed while a response was owed");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// One request and its response.
    pub fn ask(&mut self, request: Req) -> Answer {
        let opcode = request.opcode;
        self.send(&[request]);
        self.read_through(opcode).pop().unwrap()
    }
}

/// The binary commands [`counters_after`] sends: every opcode's hits and
/// misses, quiet forms, compares that fail, creates, an expired item, a
/// value too large.
pub fn counted() -> Vec<Req> {
    let past = 2_592_001; // an absolute time in 1970: expired at once
    vec![
        set("a", "1"),
        get("a"),
        get("b"),
        getk("c"),
        getq("a"),
        getkq("b"),
        touch(0x1d, "a", 0),
        touch(0x1e, "b", 0),
        touch(0x1c, "a", 0),
        touch(0x1c, "zz", 0),
        arith(0x05, "a", 5, 0, 0xffff_ffff),
        arith(0x05, "zz", 1, 0, 0xffff_ffff),
        arith(0x15, "made", 1, 7, 0),
        arith(0x06, "a", 1, 0, 0xffff_ffff),
        arith(0x16, "zz", 1, 0, 0xffff_ffff),
        set("s", "x"),
        arith(0x05, "s", 1, 0, 0xffff_ffff),
        set("a", "x").cas(NEVER),
        set("zz", "x").cas(NEVER),
        store(0x02, "a", 0, "x"),
        store(0x03, "zz", 0, "x"),
        concat(0x0e, "a", "x"),
        concat(0x0f, "zz", "x"),
        concat(0x0e, "a", "x").cas(NEVER),
        delete("a"),
        delete("a"),
        set("d", "x"),
        delete("d").cas(NEVER),
        req(0x01).key("e").extras(set_extras(0, past)).value("x"),
        get("e"),
        set("big", vec![b'x'; 2_000_000]),
        req(0x08),
        req(0x18),
        noop(),
    ]
}

/// The counters `stats` shows after `stat reset` and [`counted`] on one
/// binary connection to `port` (read on a text one, once every response
/// came), the `names` of them.
pub fn counters_after(port: u16, names: &[&str]) -> Vec<(String, String)> {
    let mut c = Client::new(port);
    c.send(&[stat("reset")]);
    c.read_through(0x10);
    c.send(&counted());
    c.read_through(0x0a);
    let stats = crate::common::request(&mut crate::common::connect(port), b"stats\r\n");
    let values: std::collections::HashMap<&str, &str> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("STAT ")?.split_once(' '))
        .collect();
    names
        .iter()
        .map(|name| {
            (
                name.to_string(),
                values.get(name).unwrap_or(&"-").to_string(),
            )
        })
        .collect()
}

/// How cas uniques relate across binary requests (and the text commands
/// that read them), as a transcript of statuses and relations that must
/// read the same on memcached and on mckv (whose numbers differ).
pub fn cas_dialogue(port: u16) -> Vec<String> {
    let mut c = Client::new(port);
    let mut t = Vec::new();
    let mut note = |what: &str, holds: bool| t.push(format!("{what}: {holds}"));
    let c1 = c.ask(set("ca", "x")).cas;
    note("set returns a unique", c1 != 0);
    note("get shows it", c.ask(get("ca")).cas == c1);
    let text = crate::common::request(&mut crate::common::connect(port), b"gets ca\r\n");
    note("text gets shows it", text.contains(&format!(" {c1}\r\n")));
    let c2 = c.ask(set("ca", "y").cas(c1));
    note("set with the unique stores", c2.status == 0 && c2.cas != c1);
    note(
        "set with an old unique exists",
        c.ask(set("ca", "z").cas(c1)).status == 2,
    );
    let c3 = c.ask(store(0x03, "ca", 0, "r").cas(c2.cas));
    note(
        "replace with the unique stores",
        c3.status == 0 && c3.cas != c2.cas,
    );
    let c4 = c.ask(store(0x02, "ca", 0, "a").cas(c3.cas));
    note(
        "add with the unique stores (a cas)",
        c4.status == 0 && c4.cas != c3.cas,
    );
    let c5 = c.ask(concat(0x0e, "ca", "+").cas(c4.cas));
    note(
        "append with the unique stores",
        c5.status == 0 && c5.cas != c4.cas,
    );
    note(
        "append with an old unique exists",
        c.ask(concat(0x0e, "ca", "+").cas(c4.cas)).status == 2,
    );
    note(
        "touch keeps the unique",
        c.ask(touch(0x1c, "ca", 100)).cas == c5.cas,
    );
    let gat = c.ask(touch(0x1d, "ca", 0));
    note(
        "gat keeps the unique",
        gat.cas == c5.cas && gat.value == b"a+",
    );
    let n1 = c.ask(set("n", "5")).cas;
    let n2 = c.ask(arith(0x05, "n", 1, 0, 0).cas(n1));
    note(
        "incr with the unique counts",
        n2.status == 0 && n2.value == 6u64.to_be_bytes(),
    );
    note(
        "incr returns the new unique",
        n2.cas != n1 && c.ask(get("n")).cas == n2.cas,
    );
    note(
        "incr with an old unique exists",
        c.ask(arith(0x05, "n", 1, 0, 0).cas(n1)).status == 2,
    );
    let made = c.ask(arith(0x06, "new", 1, 9, 0));
    note(
        "a created counter has a unique",
        made.cas != 0 && c.ask(get("new")).cas == made.cas,
    );
    let mg = crate::common::request(&mut crate::common::connect(port), b"mg ca c\r\n");
    note(
        "mg shows the binary unique",
        mg == format!("HD c{}\r\n", c5.cas),
    );
    note(
        "delete with another unique exists",
        c.ask(delete("ca").cas(c5.cas + 1)).status == 2,
    );
    note(
        "delete with the unique deletes",
        c.ask(delete("ca").cas(c5.cas)).status == 0,
    );
    t
}
