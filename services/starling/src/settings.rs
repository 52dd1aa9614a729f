//! Typed settings for the standalone server.
//!
//! Layers, later ones win: built-in defaults, then a TOML file (`--config`), then
//! environment variables `STARLING__<SECTION>__<KEY>` (e.g. `STARLING__SERVER__BIND`),
//! then command-line flags. Everything is validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub timeline: TimelineSettings,
    pub celebrity: graph_service::CelebritySettings,
    pub fanout: fanout_worker::FanoutSettings,
    pub storage: StorageSettings,
    pub rate_limit: RateLimitSettings,
    pub admin: AdminSettings,
    pub backends: BackendSettings,
    pub peers: PeerSettings,
}

/// Where events and timelines live. Empty URLs select the embedded backends, which only
/// work with all four services in one process.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackendSettings {
    /// Kafka bootstrap servers (`host:port,...`); empty: the embedded event log.
    pub kafka_brokers: String,
    /// Partitions of each topic created at start-up: the fan-out parallelism.
    pub kafka_partitions: i32,
    /// Prepended to topic and consumer-group names (one cluster, several deployments).
    pub topic_prefix: String,
    /// `redis://host:port`; empty: the in-memory timeline cache.
    pub redis_url: String,
    /// A Redis Cluster instead of one server: some of its nodes (`redis://host:port,...`),
    /// the rest are discovered. Excludes `redis_url`.
    pub redis_cluster_urls: String,
    /// Prepended to every timeline key.
    pub redis_prefix: String,
    /// Stable name of this process in Kafka consumer groups (e.g. the pod name of a
    /// StatefulSet): a restarted fan-out worker takes its partitions back at once.
    pub kafka_instance_id: String,
    /// How long a Kafka consumer with nothing to read waits before it parks (stops
    /// fetching, probing end offsets every 5 ms instead); 0 never parks.
    pub kafka_park_after_ms: u64,
    /// ScyllaDB contact points (`host:port,...`); empty: the embedded store in the data
    /// directory. Required for more than one graph- or post-service replica.
    pub scylla_uri: String,
    /// Keyspace of the ScyllaDB store; created and migrated at start-up.
    pub scylla_keyspace: String,
    /// Replication factor used only if the keyspace has to be created here.
    pub scylla_replication_factor: u32,
}

/// The event log a node uses, decided by [`BackendSettings::log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogBackend {
    Embedded,
    Kafka { brokers: String },
}

/// The storage of the graph- and post-service, decided by [`BackendSettings::store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    Embedded,
    Scylla { uri: String },
}

/// Where timelines and the read model live, decided by [`BackendSettings::cache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheBackend {
    Memory,
    Redis { url: String },
    RedisCluster { nodes: Vec<String> },
}

impl BackendSettings {
    /// The one place that turns the flat settings into a choice of event log.
    pub fn log(&self) -> LogBackend {
        match self.kafka_brokers.trim() {
            "" => LogBackend::Embedded,
            brokers => LogBackend::Kafka { brokers: brokers.to_owned() },
        }
    }

    pub fn store(&self) -> StoreBackend {
        match self.scylla_uri.trim() {
            "" => StoreBackend::Embedded,
            uri => StoreBackend::Scylla { uri: uri.to_owned() },
        }
    }

    /// `redis_url` and `redis_cluster_urls` together are refused by validation.
    pub fn cache(&self) -> CacheBackend {
        let nodes = self.redis_cluster_nodes();
        match self.redis_url.trim() {
            "" if nodes.is_empty() => CacheBackend::Memory,
            "" => CacheBackend::RedisCluster { nodes },
            url => CacheBackend::Redis { url: url.to_owned() },
        }
    }

    /// The node urls of `redis_cluster_urls`; empty if no cluster is configured.
    pub fn redis_cluster_nodes(&self) -> Vec<String> {
        self.redis_cluster_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
    }
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            kafka_brokers: String::new(),
            kafka_partitions: 8,
            topic_prefix: String::new(),
            redis_url: String::new(),
            redis_cluster_urls: String::new(),
            redis_prefix: "tl:".into(),
            kafka_instance_id: String::new(),
            kafka_park_after_ms: 250,
            scylla_uri: String::new(),
            scylla_keyspace: "starling".into(),
            scylla_replication_factor: 1,
        }
    }
}

/// Where the other services are, for a service running in its own process.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSettings {
    /// Base URL of the graph-service's internal API.
    pub graph_url: String,
    /// Base URL of the post-service's internal API.
    pub post_url: String,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings { graph_url: "http://127.0.0.1:8081".into(), post_url: "http://127.0.0.1:8082".into() }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Snowflake worker id; must differ between processes that create ids.
    pub worker_id: u16,
    /// HTTP worker threads; 0 = one per core.
    pub http_workers: usize,
    /// Longest a graceful stop waits for in-flight requests and fan-out, in seconds.
    pub shutdown_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret for bearer tokens. Empty: generated once and kept in the data directory.
    pub jwt_secret: String,
    pub token_ttl_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TimelineSettings {
    /// Entries kept per materialised timeline (Twitter kept 800).
    pub max_entries: usize,
    /// A reader who has not read for this long loses their materialised timeline.
    pub active_for_secs: u64,
    /// How often idle timelines are swept, in milliseconds.
    pub sweep_every_ms: u64,
    /// How long a post stays in the read model's post cache (Redis TTL), in seconds.
    pub post_cache_ttl_secs: u64,
    /// Posts the in-memory read model keeps (standalone).
    pub post_cache_entries: usize,
    /// Bytes of posts a timeline-service keeps in its own memory in front of Redis (0:
    /// none); see `timeline_service::NearPosts`. Unused in standalone, where the read
    /// model is in the process already.
    pub near_post_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// fdatasync every write (survives power loss) instead of handing it to the OS
    /// (survives a process crash).
    pub sync: bool,
    /// Partitions of the embedded event log: the fan-out parallelism.
    pub log_partitions: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Writes per second per user; 0 disables.
    pub writes_per_second: f64,
    pub burst: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for `/admin/v1/*`. Empty: the admin API is off.
    pub token: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
            timeline: TimelineSettings::default(),
            celebrity: Default::default(),
            fanout: Default::default(),
            storage: StorageSettings::default(),
            rate_limit: RateLimitSettings::default(),
            admin: AdminSettings::default(),
            backends: BackendSettings::default(),
            peers: PeerSettings::default(),
        }
    }
}

// A section given in part (one environment variable, say) is completed from its own
// `Default`, so these must be the real defaults, not derived zeroes.
impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings { jwt_secret: String::new(), token_ttl_secs: 30 * 24 * 3600 }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings { sync: false, log_partitions: 4 }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("starling-data"),
            worker_id: 1,
            http_workers: 0,
            shutdown_timeout_secs: 30,
        }
    }
}

impl Default for TimelineSettings {
    fn default() -> Self {
        TimelineSettings {
            max_entries: 800,
            active_for_secs: 7 * 24 * 3600,
            sweep_every_ms: 60_000,
            post_cache_ttl_secs: 3 * 24 * 3600,
            post_cache_entries: 1_000_000,
            near_post_bytes: 64 << 20,
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings { writes_per_second: 10.0, burst: 100.0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid settings: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults, then `file`, then `STARLING__*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Settings, SettingsError> {
        let mut tree = toml::Table::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.into(), source })?;
            tree = text.parse().map_err(|e| SettingsError::Invalid(format!("{}: {e}", path.display())))?;
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("STARLING__") else { continue };
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut tree, &keys, parse_scalar(&value));
        }
        let settings: Settings =
            toml::Value::Table(tree).try_into().map_err(|e: toml::de::Error| SettingsError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: &str| Err(SettingsError::Invalid(m.to_owned()));
        self.celebrity.validate().map_err(SettingsError::Invalid)?;
        if self.timeline.max_entries == 0 {
            return bad("timeline.max_entries must be positive");
        }
        if self.server.worker_id > starling_ids::MAX_WORKER {
            return bad("server.worker_id must be at most 1023");
        }
        if self.storage.log_partitions == 0 || self.fanout.consumers == 0 || self.fanout.slice_size == 0 {
            return bad("storage.log_partitions, fanout.consumers and fanout.slice_size must be positive");
        }
        if self.auth.token_ttl_secs == 0 {
            return bad("auth.token_ttl_secs must be positive");
        }
        let cluster = self.backends.redis_cluster_nodes();
        if !cluster.is_empty() && !self.backends.redis_url.is_empty() {
            return bad(
                "set either backends.redis_url (one server) or backends.redis_cluster_urls (a cluster), not both",
            );
        }
        if let Some(u) = cluster.iter().find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://"))) {
            return Err(SettingsError::Invalid(format!(
                "backends.redis_cluster_urls: {u:?} is not a redis:// or rediss:// url"
            )));
        }
        if !self.backends.redis_cluster_urls.trim().is_empty() && cluster.is_empty() {
            return bad("backends.redis_cluster_urls lists no node");
        }
        if !self.backends.scylla_uri.is_empty() {
            starling_scylla_store::model::validate_keyspace(&self.backends.scylla_keyspace)
                .map_err(|e| SettingsError::Invalid(format!("backends.scylla_keyspace: {e}")))?;
            if self.backends.scylla_replication_factor == 0 {
                return bad("backends.scylla_replication_factor must be positive");
            }
        }
        Ok(())
    }
}

/// An environment value as TOML would read it (number, bool), else a string.
fn parse_scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(tree: &mut toml::Table, keys: &[String], value: toml::Value) {
    match keys {
        [] => {}
        [last] => {
            tree.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = tree.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[timeline]\nmax_entries = 50\n[celebrity]\nthreshold = 9\ndemote_below = 5\n").unwrap();
        let env = vec![
            ("STARLING__TIMELINE__MAX_ENTRIES".to_owned(), "60".to_owned()),
            ("STARLING__SERVER__BIND".to_owned(), "127.0.0.1:9999".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let s = Settings::load(Some(&file), env.into_iter()).unwrap();
        assert_eq!(s.timeline.max_entries, 60);
        assert_eq!(s.celebrity.threshold, 9);
        assert_eq!(s.server.bind.port(), 9999);
    }

    #[test]
    fn one_key_of_a_section_keeps_the_other_defaults() {
        let env = vec![
            ("STARLING__AUTH__JWT_SECRET".to_owned(), "s3cret".to_owned()),
            ("STARLING__STORAGE__SYNC".to_owned(), "true".to_owned()),
        ];
        let s = Settings::load(None, env.into_iter()).unwrap();
        assert_eq!(s.auth.token_ttl_secs, Settings::default().auth.token_ttl_secs);
        assert_eq!(s.storage.log_partitions, Settings::default().storage.log_partitions);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())].into_iter();
        assert!(Settings::load(None, env("STARLING__TIMELINE__MAX_ENTRYS", "5")).is_err());
        assert!(Settings::load(None, env("STARLING__TIMELINE__MAX_ENTRIES", "0")).is_err());
        assert!(Settings::load(None, env("STARLING__CELEBRITY__DEMOTE_BELOW", "999999")).is_err());
        let bad_mode = Settings::load(None, env("STARLING__CELEBRITY__MODE", "push-everything")).unwrap_err();
        assert!(bad_mode.to_string().contains("push_all"), "names the accepted modes: {bad_mode}");
    }

    #[test]
    fn fanout_modes_are_settings() {
        use graph_service::FanoutMode;
        let env = |v: &str| vec![("STARLING__CELEBRITY__MODE".to_owned(), v.to_owned())].into_iter();
        assert_eq!(Settings::default().celebrity.mode, FanoutMode::Hybrid);
        assert_eq!(Settings::load(None, env("push_all")).unwrap().celebrity.mode, FanoutMode::PushAll);
        assert_eq!(Settings::load(None, env("pull_all")).unwrap().celebrity.mode, FanoutMode::PullAll);
    }

    #[test]
    fn redis_cluster_urls_are_validated() {
        let env = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>().into_iter()
        };
        const CLUSTER: &str = "STARLING__BACKENDS__REDIS_CLUSTER_URLS";
        let s = Settings::load(None, env(&[(CLUSTER, "redis://10.0.0.1:7000, redis://10.0.0.2:7000")])).unwrap();
        assert_eq!(s.backends.redis_cluster_nodes(), vec!["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
        assert!(Settings::default().backends.redis_cluster_nodes().is_empty());
        let both = [(CLUSTER, "redis://10.0.0.1:7000"), ("STARLING__BACKENDS__REDIS_URL", "redis://10.0.0.9:6379")];
        assert!(Settings::load(None, env(&both)).is_err(), "one server or a cluster, not both");
        assert!(Settings::load(None, env(&[(CLUSTER, "10.0.0.1:7000")])).is_err(), "urls, not bare addresses");
        assert!(Settings::load(None, env(&[(CLUSTER, " , ")])).is_err());
    }

    #[test]
    fn scylla_backend_is_configured_from_the_environment() {
        let env = vec![
            ("STARLING__BACKENDS__SCYLLA_URI".to_owned(), "10.0.0.1:9042,10.0.0.2".to_owned()),
            ("STARLING__BACKENDS__SCYLLA_KEYSPACE".to_owned(), "starling_prod".to_owned()),
        ];
        let s = Settings::load(None, env.into_iter()).unwrap();
        assert_eq!(s.backends.scylla_uri, "10.0.0.1:9042,10.0.0.2");
        assert_eq!(s.backends.scylla_keyspace, "starling_prod");
        assert_eq!(s.backends.redis_prefix, "tl:", "the rest of the section keeps its defaults");
        let bad = vec![
            ("STARLING__BACKENDS__SCYLLA_URI".to_owned(), "10.0.0.1".to_owned()),
            ("STARLING__BACKENDS__SCYLLA_KEYSPACE".to_owned(), "no-dashes".to_owned()),
        ];
        assert!(Settings::load(None, bad.into_iter()).is_err());
    }
}
