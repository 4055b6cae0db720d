//! The node's configuration: `config.ini` (shared by all nodes, read with
//! rust-ini), typed and validated once at start, with command-line overrides
//! applied on top. Unknown keys are errors so that a typo cannot silently fall
//! back to a default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::Limits;
use crate::store::Eviction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Sequential,
    Eventual,
    Causal,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Sequential => "sequential",
            Consistency::Eventual => "eventual",
            Consistency::Causal => "causal",
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Consistency, String> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "sequential" => Ok(Consistency::Sequential),
            "eventual" => Ok(Consistency::Eventual),
            "causal" => Ok(Consistency::Causal),
            other => Err(format!(
                "unknown consistency {other:?} (linearizable | sequential | eventual | causal)"
            )),
        }
    }
}

/// Where a node keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    Memory,
    Memcache,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::Memory => "memory",
            KvType::Memcache => "memcache",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<KvType, String> {
        match s {
            "memory" => Ok(KvType::Memory),
            "memcache" => Ok(KvType::Memcache),
            other => Err(format!("unknown kv_type {other:?} (memory | memcache)")),
        }
    }
}

/// When the write-ahead log of a node with a `data_dir` is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before a write is acknowledged (group commit: one fsync per batch).
    Always,
    /// About once a second.
    EverySec,
    /// Never by mckv: the kernel writes the log back in its own time.
    No,
}

impl Fsync {
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::No => "no",
        }
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "everysec" => Ok(Fsync::EverySec),
            "no" => Ok(Fsync::No),
            other => Err(format!(
                "unknown fsync policy {other:?} (always | everysec | no)"
            )),
        }
    }
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub consistency: Consistency,
    pub heartbeat: Duration,
    pub peer_timeout: Duration,
    pub sync_interval: Duration,
    pub secret: String,
    /// memcached's `-I`: the largest item (value, key and 59 bytes of header).
    pub item_size_max: usize,
    /// The memory store's cap.
    pub memory_limit_bytes: u64,
    /// How long a request may wait for the store before it fails.
    pub backend_timeout: Duration,
    /// When a node with a `data_dir` fsyncs its log.
    pub fsync: Fsync,
    /// Log bytes after which a node with a `data_dir` writes a snapshot.
    pub snapshot_every: u64,
    /// memcached's `-c`: client connections open at once; one more is
    /// refused.
    pub max_connections: usize,
    /// memcached's `-o idle_timeout`: a client connection that sent nothing
    /// and is owed nothing this long is closed; `None` never closes one.
    pub idle_timeout: Option<Duration>,
    /// The embedded store drops expired items in the background, a slice
    /// at a time (memcached's LRU crawler; `off` is its `-o
    /// no_lru_crawler`).
    pub expiry_sweep: bool,
    /// What a full embedded store does: evict (memcached's default) or
    /// refuse the write (memcached's `-M`).
    pub eviction: Eviction,
    /// Peer links run over TLS, each side presenting its node's
    /// certificate, checked against `tls_ca`.
    pub peer_tls: bool,
    /// memcached's `-Z`: client connections are TLS only.
    pub client_tls: bool,
    /// The certificate authority every node's certificate chains to.
    pub tls_ca: Option<PathBuf>,
    /// A client with this many reply bytes queued for it is not read until
    /// it takes some.
    pub max_reply_buffer: usize,
    /// A peer link with this many bytes unsent is owed no new frame.
    pub peer_unsent_limit: usize,
    /// About how many bytes of the writes it delivered each node of a
    /// strong cluster keeps for a member that falls behind (or restarts
    /// with its data): one behind by more is handed a snapshot.
    pub catch_up_bytes: usize,
}

impl ClusterConfig {
    pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 64;
    pub const DEFAULT_BACKEND_TIMEOUT_MS: u64 = 1000;
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 64 << 20;
    /// memcached's default `-c`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    pub const DEFAULT_MAX_REPLY_BUFFER: usize = 1 << 20;
    pub const DEFAULT_PEER_UNSENT_LIMIT: usize = 2 << 20;
    /// Well under the 256 MiB a peer may leave unread before its link drops.
    pub const MAX_PEER_UNSENT_LIMIT: usize = 64 << 20;
    pub const DEFAULT_CATCH_UP_MB: usize = 8;

    /// The TLS files of `node`, if the cluster runs TLS anywhere; an error
    /// names what is missing.
    pub fn tls_files(&self, node: &NodeConfig) -> Result<Option<TlsFiles>, ConfigError> {
        if !self.peer_tls && !self.client_tls {
            return Ok(None);
        }
        if self.peer_tls && self.tls_ca.is_none() {
            return Err(invalid("cluster", "peer_tls", "needs tls_ca (the CA file)"));
        }
        let section = format!("node.{}", node.id);
        let needed = |file: &Option<PathBuf>, key: &str| {
            file.clone()
                .ok_or_else(|| invalid(&section, key, "needed with peer_tls or client_tls = on"))
        };
        Ok(Some(TlsFiles {
            cert: needed(&node.tls_cert, "tls_cert")?,
            key: needed(&node.tls_key, "tls_key")?,
            ca: self.tls_ca.clone(),
        }))
    }

    pub fn limits(&self) -> Limits {
        Limits {
            item_size_max: self.item_size_max,
            max_get_line: self.item_size_max.max(Limits::LINE_SCAN_LIMIT),
        }
    }

    /// The store settings every node of a cluster must share, as its peer
    /// handshakes prove them: with another cap, eviction policy, sweep or
    /// item size, a strong mode's replicas would evict, sweep or refuse
    /// other writes, and an eventual node would delete everywhere what
    /// only it evicted.
    pub fn replica_terms(&self) -> String {
        format!(
            "consistency={} store={} memory_limit={} eviction={} expiry_sweep={} item_size_max={}",
            self.consistency.name(),
            crate::store::memory::HOUSEKEEPING,
            self.memory_limit_bytes,
            self.eviction.name(),
            self.expiry_sweep,
            self.item_size_max
        )
    }
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            name: "mckv".into(),
            consistency: Consistency::Linearizable,
            heartbeat: Duration::from_millis(100),
            peer_timeout: Duration::from_millis(500),
            sync_interval: Duration::from_millis(1000),
            secret: "change-me".into(),
            item_size_max: Limits::DEFAULT_ITEM_SIZE_MAX,
            memory_limit_bytes: ClusterConfig::DEFAULT_MEMORY_LIMIT_MB << 20,
            backend_timeout: Duration::from_millis(ClusterConfig::DEFAULT_BACKEND_TIMEOUT_MS),
            fsync: Fsync::EverySec,
            snapshot_every: ClusterConfig::DEFAULT_SNAPSHOT_EVERY,
            max_connections: ClusterConfig::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: None,
            expiry_sweep: true,
            eviction: Eviction::Lru,
            peer_tls: false,
            client_tls: false,
            tls_ca: None,
            max_reply_buffer: ClusterConfig::DEFAULT_MAX_REPLY_BUFFER,
            peer_unsent_limit: ClusterConfig::DEFAULT_PEER_UNSENT_LIMIT,
            catch_up_bytes: ClusterConfig::DEFAULT_CATCH_UP_MB << 20,
        }
    }
}

/// One `[node.N]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: u32,
    /// `host:port` clients connect to.
    pub client: String,
    /// `host:port` peers connect to.
    pub peer: String,
    pub kv_type: KvType,
    /// `host:port` of the node's memcached (kv_type = memcache).
    pub kv_addr: String,
    pub data_dir: Option<PathBuf>,
    pub log_file: PathBuf,
    /// `host:port` of the Prometheus endpoint (`GET /metrics`); `None`: off.
    pub metrics_addr: Option<String>,
    /// The node's certificate chain and private key (PEM), for TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The files a node's TLS needs, once the config says TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Required for peer TLS.
    pub ca: Option<PathBuf>,
}

impl NodeConfig {
    fn with_id(id: u32) -> NodeConfig {
        NodeConfig {
            id,
            client: format!("127.0.0.1:{}", 8000 + id),
            peer: format!("127.0.0.1:{}", 9000 + id),
            kv_type: KvType::Memory,
            kv_addr: format!("127.0.0.1:{}", 11201 + id),
            data_dir: None,
            log_file: PathBuf::from(format!("logs/node{id}.log")),
            metrics_addr: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The whole cluster as one config file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster: ClusterConfig,
    /// Ordered by id.
    pub nodes: Vec<NodeConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(section: &str, key: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("[{section}] {key}: {why}"))
}

/// The highest node id: a cas unique holds the low 16 bits of its
/// writer's id beside the stamp's time (`cluster/stamp.rs`), so two nodes
/// whose ids differ above them would hand out the same uniques.
const MAX_NODE_ID: u32 = 0xffff;

fn number<T: std::str::FromStr>(section: &str, key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value
        .parse()
        .map_err(|e| invalid(section, key, format!("{value:?}: {e}")))
}

impl Config {
    /// The one-node cluster `mckv server` runs without a config file.
    pub fn single_node() -> Config {
        Config {
            cluster: ClusterConfig::default(),
            nodes: vec![NodeConfig::with_id(0)],
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let ini = ini::Ini::load_from_str(&strip_inline_comments(text))
            .map_err(|e| ConfigError(format!("config.ini: {e}")))?;
        let mut config = Config {
            cluster: ClusterConfig::default(),
            nodes: Vec::new(),
        };
        for (section, props) in ini.iter() {
            let section = section.unwrap_or("");
            if section == "cluster" {
                for (key, value) in props.iter() {
                    config.cluster.set(key, value)?;
                }
            } else if let Some(id) = section.strip_prefix("node.") {
                let id: u32 = number(section, "node id", id)?;
                if id > MAX_NODE_ID {
                    return Err(invalid(
                        section,
                        "node id",
                        format!("at most {MAX_NODE_ID}, not {id}"),
                    ));
                }
                let mut node = NodeConfig::with_id(id);
                for (key, value) in props.iter() {
                    node.set(section, key, value)?;
                }
                config.nodes.push(node);
            } else if !props.is_empty() || !section.is_empty() {
                return Err(ConfigError(format!(
                    "unknown section [{section}] (expected [cluster] and [node.N])"
                )));
            }
        }
        config.nodes.sort_by_key(|n| n.id);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError("no [node.N] section".into()));
        }
        for pair in self.nodes.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(ConfigError(format!("[node.{}] appears twice", pair[0].id)));
            }
        }
        for node in &self.nodes {
            self.cluster.tls_files(node)?;
        }
        Ok(())
    }

    pub fn node(&self, id: u32) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ConfigError(format!("no [node.{id}] in the config")))
    }
}

/// A count of at least 1.
fn at_least_one(section: &str, key: &str, value: &str) -> Result<usize, ConfigError> {
    match number(section, key, value)? {
        0 => Err(invalid(section, key, "must be at least 1")),
        n => Ok(n),
    }
}

/// `on` or `off`.
fn switch(section: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(invalid(section, key, format!("{other:?} is not on or off"))),
    }
}

/// Cuts `value ; comment` (and `#`) after white space: rust-ini keeps them
/// as part of the value.
fn strip_inline_comments(text: &str) -> String {
    text.lines()
        .map(|line| {
            let cut = line
                .char_indices()
                .find(|&(i, c)| (c == ';' || c == '#') && i > 0 && line[..i].ends_with([' ', '\t']))
                .map_or(line.len(), |(i, _)| i);
            format!("{}\n", line[..cut].trim_end())
        })
        .collect()
}

impl ClusterConfig {
    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let ms = |v: &str| number::<u64>("cluster", key, v).map(Duration::from_millis);
        match key {
            "name" => self.name = value.to_string(),
            "consistency" => {
                self.consistency = value.parse().map_err(|e| invalid("cluster", key, e))?
            }
            "heartbeat_ms" => self.heartbeat = ms(value)?,
            "peer_timeout_ms" => self.peer_timeout = ms(value)?,
            "sync_interval_ms" => self.sync_interval = ms(value)?,
            "secret" => self.secret = value.to_string(),
            "item_size_max" => self.item_size_max = number("cluster", key, value)?,
            "memory_limit_mb" => {
                self.memory_limit_bytes = number::<u64>("cluster", key, value)? << 20
            }
            "backend_timeout_ms" => self.backend_timeout = ms(value)?,
            "fsync" => self.fsync = value.parse().map_err(|e| invalid("cluster", key, e))?,
            // 0 would write a snapshot at every chance, idle or not.
            "snapshot_every" => {
                self.snapshot_every = at_least_one("cluster", key, value)? as u64;
            }
            "max_connections" => {
                self.max_connections = number("cluster", key, value)?;
                if self.max_connections == 0 {
                    return Err(invalid("cluster", key, "must be at least 1"));
                }
            }
            "idle_timeout_s" => {
                let seconds: u64 = number("cluster", key, value)?;
                self.idle_timeout = (seconds > 0).then(|| Duration::from_secs(seconds));
            }
            "expiry_sweep" => self.expiry_sweep = switch("cluster", key, value)?,
            "eviction" => self.eviction = value.parse().map_err(|e| invalid("cluster", key, e))?,
            "peer_tls" => self.peer_tls = switch("cluster", key, value)?,
            "client_tls" => self.client_tls = switch("cluster", key, value)?,
            "tls_ca" => self.tls_ca = Some(PathBuf::from(value)),
            "max_reply_buffer" => self.max_reply_buffer = at_least_one("cluster", key, value)?,
            "peer_unsent_limit" => {
                self.peer_unsent_limit = at_least_one("cluster", key, value)?;
                // Past the hard bound a slow peer would be dropped and
                // redialed, not held back.
                if self.peer_unsent_limit >= ClusterConfig::MAX_PEER_UNSENT_LIMIT {
                    return Err(invalid("cluster", key, "must be under 64 MiB"));
                }
            }
            // 0 keeps nothing: a member behind is always handed a snapshot.
            "catch_up_mb" => {
                self.catch_up_bytes = number::<usize>("cluster", key, value)?
                    .checked_mul(1 << 20)
                    .ok_or_else(|| invalid("cluster", key, "is too large"))?;
            }
            other => return Err(invalid("cluster", other, "unknown key")),
        }
        Ok(())
    }
}

impl NodeConfig {
    fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "client" => self.client = value.to_string(),
            "peer" => self.peer = value.to_string(),
            "kv_type" => self.kv_type = value.parse().map_err(|e| invalid(section, key, e))?,
            "kv_addr" => self.kv_addr = value.to_string(),
            "data_dir" if value.is_empty() => {
                return Err(invalid(
                    section,
                    key,
                    "empty; name a directory, or drop the key to keep no data",
                ))
            }
            "data_dir" => self.data_dir = Some(PathBuf::from(value)),
            "log_file" => self.log_file = PathBuf::from(value),
            "metrics_addr" => self.metrics_addr = Some(value.to_string()),
            "tls_cert" => self.tls_cert = Some(PathBuf::from(value)),
            "tls_key" => self.tls_key = Some(PathBuf::from(value)),
            other => return Err(invalid(section, other, "unknown key")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "[cluster]\nname = c\nconsistency = sequential ; comment\nheartbeat_ms = 50\n\
        [node.1]\nclient = 127.0.0.1:8001\n[node.0]\nclient = 127.0.0.1:8000\nkv_type = memcache\n";

    #[test]
    fn parses_sections_in_id_order() {
        let config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.cluster.consistency, Consistency::Sequential);
        assert_eq!(config.cluster.heartbeat, Duration::from_millis(50));
        assert_eq!(config.nodes[0].id, 0);
        assert_eq!(config.nodes[0].kv_type, KvType::Memcache);
        assert_eq!(config.nodes[1].peer, "127.0.0.1:9001");
    }

    #[test]
    fn the_shipped_config_is_the_default_three_node_layout() {
        let config = Config::parse(include_str!("../config.ini")).unwrap();
        let clients: Vec<&str> = config.nodes.iter().map(|n| n.client.as_str()).collect();
        assert_eq!(
            clients,
            ["127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002"]
        );
        assert_eq!(config.nodes[2].peer, "127.0.0.1:9002");
        assert_eq!(config.nodes[1].kv_addr, "127.0.0.1:11202");
        assert_eq!(config.cluster.item_size_max, Limits::DEFAULT_ITEM_SIZE_MAX);
    }

    #[test]
    fn client_limits_default_to_memcacheds() {
        let config = Config::parse("[node.0]\n").unwrap();
        assert_eq!(config.cluster.max_connections, 1024);
        assert_eq!(config.cluster.idle_timeout, None);
        let text = "[cluster]\nmax_connections = 5\nidle_timeout_s = 2\n[node.0]\n";
        let config = Config::parse(text).unwrap();
        assert_eq!(config.cluster.max_connections, 5);
        assert_eq!(config.cluster.idle_timeout, Some(Duration::from_secs(2)));
        let off = Config::parse("[cluster]\nidle_timeout_s = 0\n[node.0]\n").unwrap();
        assert_eq!(off.cluster.idle_timeout, None);
        assert_eq!(config.cluster.max_reply_buffer, 1 << 20);
        let text = "[cluster]\nmax_reply_buffer = 4096\npeer_unsent_limit = 65536\n[node.0]\n";
        let caps = Config::parse(text).unwrap().cluster;
        assert_eq!(
            (caps.max_reply_buffer, caps.peer_unsent_limit),
            (4096, 65536)
        );
        assert_eq!(caps.catch_up_bytes, 8 << 20);
        for (mb, bytes) in [("0", 0), ("64", 64 << 20)] {
            let text = format!("[cluster]\ncatch_up_mb = {mb}\n[node.0]\n");
            assert_eq!(Config::parse(&text).unwrap().cluster.catch_up_bytes, bytes);
        }
    }

    #[test]
    fn the_metrics_endpoint_is_off_unless_a_node_names_its_address() {
        let text = "[node.0]\nmetrics_addr = 127.0.0.1:9100\n[node.1]\n";
        let config = Config::parse(text).unwrap();
        assert_eq!(
            config.nodes[0].metrics_addr.as_deref(),
            Some("127.0.0.1:9100")
        );
        assert_eq!(config.nodes[1].metrics_addr, None);
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        for bad in [
            "[cluster]\nconsistency = strong\n[node.0]\n",
            "[cluster]\nheartbeat = 5\n[node.0]\n",
            "[node.0]\nkv_type = redis\n",
            "[node.x]\n",
            "[nodes]\n",
            "[cluster]\nname = c\n",
            "[cluster]\nmax_connections = 0\n[node.0]\n",
            "[cluster]\nidle_timeout_s = -1\n[node.0]\n",
            "[cluster]\npeer_tls = yes\n[node.0]\n",
            "[cluster]\nmax_reply_buffer = 0\n[node.0]\n",
            "[cluster]\nsnapshot_every = 0\n[node.0]\n",
            "[cluster]\npeer_unsent_limit = lots\n[node.0]\n",
            "[cluster]\npeer_unsent_limit = 268435456\n[node.0]\n",
            "[cluster]\ncatch_up_mb = -1\n[node.0]\n",
            "[cluster]\ncatch_up_mb = 18446744073709551615\n[node.0]\n",
            "[cluster]\npeer_tls = on\n[node.0]\ntls_cert = c\ntls_key = k\n",
            "[cluster]\nclient_tls = on\n[node.0]\ntls_cert = c\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
