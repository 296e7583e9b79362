//! Configuration: the limits and defaults the core enforces, and the server settings the
//! runtimes read, in one schema shared by every runtime.
//!
//! Layering (built-in defaults < `krest.toml` < `KREST_*` environment < flags) is done by the
//! runtime; this module parses TOML text (unknown keys are errors that name the key), applies
//! `section.key=value` overrides, and validates the result. It reads no files.

use serde::{Deserialize, Serialize};

/// Everything a node is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and addresses.
    pub server: ServerConfig,
    /// Bounds on every table and message.
    pub limits: Limits,
    /// What a queue declared without settings gets.
    pub queue_defaults: QueueDefaults,
    /// On-disk layout.
    pub storage: StorageConfig,
    /// The other nodes, if this node is one of a cluster.
    pub cluster: ClusterConfig,
}

/// The cluster this node belongs to. No `nodes` (or only this one): a single node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Names the cluster: peer links from another cluster are refused.
    pub cluster_id: String,
    /// Where this node accepts peer links.
    pub peer_listen: String,
    /// A follower that hears from no leader for about this long starts an election; a leader
    /// that hears from no majority for this long steps down.
    pub election_timeout_ms: u64,
    /// How often a leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Every node of the cluster, this one included.
    pub nodes: Vec<ClusterNode>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    /// Its `server.node_id`.
    pub id: u64,
    /// Where its clients connect (what `NOT_LEADER` answers name).
    pub client: String,
    /// Where it accepts peer links.
    pub peer: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_id: "krest".into(),
            peer_listen: "127.0.0.1:7656".into(),
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            nodes: Vec::new(),
        }
    }
}

impl ClusterConfig {
    /// The voters of the cluster's groups: every node's id, in id order (just `node_id` when
    /// no nodes are listed).
    pub fn voters(&self, node_id: u64) -> Vec<crate::ids::NodeId> {
        if self.nodes.is_empty() {
            return vec![crate::ids::NodeId(node_id)];
        }
        let mut ids: Vec<_> = self
            .nodes
            .iter()
            .map(|node| crate::ids::NodeId(node.id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Node `id`'s entry.
    pub fn node(&self, id: u64) -> Option<&ClusterNode> {
        self.nodes.iter().find(|node| node.id == id)
    }
}

/// Identity and addresses of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// This node's id ("Kid" in the original Krest-MQ).
    pub node_id: u64,
    /// Where clients connect.
    pub listen: String,
    /// Where the admin HTTP API listens.
    pub admin_listen: String,
    /// Where logs and metadata live.
    pub data_dir: String,
}

/// Bounds. Every in-memory table of the core has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame a client may send (and the server will send).
    pub max_frame_bytes: u32,
    /// Largest message: payload plus headers.
    pub max_message_bytes: u32,
    /// Most client connections at once (enforced by the runtime).
    pub max_connections: u32,
    /// Most queues on the node.
    pub max_queues: u32,
    /// Most consumers on one connection.
    pub max_consumers_per_connection: u32,
    /// Most subscriptions (durable and broadcast) on one queue.
    pub max_subscriptions_per_queue: u32,
    /// Most unacked deliveries per consumer (caps `prefetch`).
    pub max_in_flight_per_consumer: u32,
    /// Most messages in one fetch answer.
    pub max_fetch_messages: u32,
    /// Longest a fetch may wait.
    pub max_fetch_wait_ms: u64,
    /// Unconfirmed publishes per connection before the server stops reading from it.
    pub max_unconfirmed_per_connection: u32,
    /// Longest ack timeout or lease extension.
    pub max_ack_timeout_ms: u64,
    /// Latest deliver-at, counted from now.
    pub max_delay_ms: u64,
    /// Idempotency entries remembered per producer.
    pub idempotency_window_per_producer: u32,
    /// Producers whose idempotency entries are remembered.
    pub max_idempotent_producers: u32,
    /// A connection that sends nothing for this long is closed (enforced by the runtime).
    pub idle_timeout_ms: u64,
}

/// Defaults for queue settings left at zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueDefaults {
    /// Messages a queue holds before its overflow policy applies.
    pub max_messages: u64,
    /// Payload bytes a queue holds before its overflow policy applies.
    pub max_bytes: u64,
    /// How long a delivery stays leased without an ack.
    pub ack_timeout_ms: u64,
    /// Deliveries before dead-lettering; 0 means unlimited.
    pub max_deliveries: u32,
    /// Push credit when a subscribe asks for 0.
    pub prefetch: u32,
}

/// On-disk layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Size at which a log rolls to a new segment file.
    pub segment_bytes: u64,
    /// Payload and header bytes of durable (persistent and delay) messages kept in memory.
    /// Beyond it, new messages live only on disk and their payloads are read back just before
    /// delivery, so a backlog larger than memory still works. 0 keeps none in memory.
    pub payload_memory_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            listen: "127.0.0.1:7654".into(),
            admin_listen: "127.0.0.1:7655".into(),
            data_dir: "./krest-data".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 8 * 1024 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            max_connections: 10_000,
            max_queues: 10_000,
            max_consumers_per_connection: 1_000,
            max_subscriptions_per_queue: 1_000,
            max_in_flight_per_consumer: 10_000,
            max_fetch_messages: 1_000,
            max_fetch_wait_ms: 300_000,
            max_unconfirmed_per_connection: 4_096,
            max_ack_timeout_ms: 24 * 60 * 60 * 1000,
            max_delay_ms: 366 * 24 * 60 * 60 * 1000,
            idempotency_window_per_producer: 4_096,
            max_idempotent_producers: 4_096,
            idle_timeout_ms: 5 * 60 * 1000,
        }
    }
}

impl Default for QueueDefaults {
    fn default() -> Self {
        QueueDefaults {
            max_messages: 10_000_000,
            max_bytes: 4 * 1024 * 1024 * 1024,
            ack_timeout_ms: 30_000,
            max_deliveries: 0,
            prefetch: 256,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            segment_bytes: 64 * 1024 * 1024,
            payload_memory_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// `section.key`, or the file for syntax errors.
    pub key: String,
    /// What is wrong, in a sentence.
    pub reason: String,
}

impl Config {
    /// Parses a `krest.toml`. Missing keys keep their defaults; unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError {
            key: "krest.toml".into(),
            reason: error.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config schema always serialises")
    }

    /// Sets one `section.key` from text, as the environment and flags do. Checks the type;
    /// relations between values are checked by [`Config::validate`] once every layer is applied.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let (section, field) = key.split_once('.').ok_or_else(|| ConfigError {
            key: key.into(),
            reason: "expected section.key".into(),
        })?;
        let mut table = toml::Table::try_from(&*self).expect("the config schema serialises");
        let section_table = table
            .get_mut(section)
            .and_then(|value| value.as_table_mut())
            .ok_or_else(|| ConfigError {
                key: key.into(),
                reason: format!("unknown section '{section}'"),
            })?;
        let current = section_table.get(field).ok_or_else(|| ConfigError {
            key: key.into(),
            reason: format!("unknown key '{field}' in section '{section}'"),
        })?;
        let parsed = match current {
            toml::Value::String(_) => toml::Value::String(value.to_string()),
            toml::Value::Integer(_) => {
                toml::Value::Integer(value.trim().parse().map_err(|_| ConfigError {
                    key: key.into(),
                    reason: format!("'{value}' is not a whole number"),
                })?)
            }
            toml::Value::Boolean(_) => {
                toml::Value::Boolean(value.trim().parse().map_err(|_| ConfigError {
                    key: key.into(),
                    reason: format!("'{value}' is not true or false"),
                })?)
            }
            other => {
                return Err(ConfigError {
                    key: key.into(),
                    reason: format!("cannot set a {} from text", other.type_str()),
                })
            }
        };
        section_table.insert(field.to_string(), parsed);
        let updated: Config = table
            .try_into()
            .map_err(|error: toml::de::Error| ConfigError {
                key: key.into(),
                reason: error.message().to_string(),
            })?;
        *self = updated;
        Ok(())
    }

    /// Layers a configuration: built-in defaults, then `file_text` (a `krest.toml`), then
    /// `KREST_<SECTION>_<KEY>` environment variables (for example `KREST_LIMITS_MAX_QUEUES`),
    /// then `overrides` (`section.key`, value) from command-line flags. Environment variables
    /// that do not start with a section name are not ours and are ignored; ones that name a
    /// section but an unknown key are errors.
    pub fn load(
        file_text: Option<&str>,
        environment: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let mut config = match file_text {
            Some(text) => Config::from_toml(text)?,
            None => Config::default(),
        };
        const SECTIONS: [&str; 5] = ["queue_defaults", "server", "limits", "storage", "cluster"];
        let mut variables: Vec<(String, String)> = environment
            .into_iter()
            .filter(|(name, _)| name.starts_with("KREST_"))
            .collect();
        variables.sort();
        for (name, value) in variables {
            let rest = name["KREST_".len()..].to_ascii_lowercase();
            let Some(section) = SECTIONS
                .iter()
                .find(|section| rest.starts_with(&format!("{section}_")))
            else {
                continue;
            };
            let key = format!("{section}.{}", &rest[section.len() + 1..]);
            config.set(&key, &value).map_err(|error| ConfigError {
                key: format!("{name} ({key})"),
                reason: error.reason,
            })?;
        }
        for (key, value) in overrides {
            config.set(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks relations between values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, reason: &str| {
            Err(ConfigError {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let limits = &self.limits;
        if limits.max_frame_bytes < 1024 {
            return fail("limits.max_frame_bytes", "must be at least 1024");
        }
        // A message's size (payload plus headers, dead-letter headers included) is kept in 32
        // bits: frames stay well below 4 GiB.
        if limits.max_frame_bytes > 1 << 30 {
            return fail(
                "limits.max_frame_bytes",
                "must be at most 1073741824 (1 GiB)",
            );
        }
        // A message counts its pending subscriptions in 16 bits.
        if limits.max_subscriptions_per_queue > u32::from(u16::MAX) {
            return fail(
                "limits.max_subscriptions_per_queue",
                "must be at most 65535",
            );
        }
        if u64::from(limits.max_message_bytes) + 1024 > u64::from(limits.max_frame_bytes) {
            return fail(
                "limits.max_message_bytes",
                "must leave at least 1024 bytes of max_frame_bytes for the frame's envelope",
            );
        }
        for (key, value) in [
            ("limits.max_connections", limits.max_connections),
            ("limits.max_queues", limits.max_queues),
            (
                "limits.max_consumers_per_connection",
                limits.max_consumers_per_connection,
            ),
            (
                "limits.max_subscriptions_per_queue",
                limits.max_subscriptions_per_queue,
            ),
            (
                "limits.max_in_flight_per_consumer",
                limits.max_in_flight_per_consumer,
            ),
            ("limits.max_fetch_messages", limits.max_fetch_messages),
            (
                "limits.max_unconfirmed_per_connection",
                limits.max_unconfirmed_per_connection,
            ),
            (
                "limits.idempotency_window_per_producer",
                limits.idempotency_window_per_producer,
            ),
            (
                "limits.max_idempotent_producers",
                limits.max_idempotent_producers,
            ),
            ("queue_defaults.prefetch", self.queue_defaults.prefetch),
        ] {
            if value == 0 {
                return fail(key, "must be at least 1");
            }
        }
        if self.queue_defaults.ack_timeout_ms == 0
            || self.queue_defaults.ack_timeout_ms > limits.max_ack_timeout_ms
        {
            return fail(
                "queue_defaults.ack_timeout_ms",
                "must be between 1 and limits.max_ack_timeout_ms",
            );
        }
        if self.queue_defaults.max_messages == 0 || self.queue_defaults.max_bytes == 0 {
            return fail(
                "queue_defaults",
                "max_messages and max_bytes must be at least 1",
            );
        }
        if self.storage.segment_bytes < 4096 {
            return fail("storage.segment_bytes", "must be at least 4096");
        }
        if limits.idle_timeout_ms == 0 {
            return fail("limits.idle_timeout_ms", "must be at least 1");
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, reason: String| {
            Err(ConfigError {
                key: key.into(),
                reason,
            })
        };
        let cluster = &self.cluster;
        if self.server.node_id == 0 {
            return fail("server.node_id", "must be at least 1".into());
        }
        if cluster.heartbeat_interval_ms == 0
            || cluster.election_timeout_ms < 2 * cluster.heartbeat_interval_ms
        {
            return fail(
                "cluster.election_timeout_ms",
                "must be at least twice cluster.heartbeat_interval_ms, which must be at least 1"
                    .into(),
            );
        }
        if cluster.nodes.is_empty() {
            return Ok(());
        }
        let node_id = self.server.node_id;
        if cluster.node(node_id).is_none() {
            return fail(
                "cluster.nodes",
                format!("this node's id {node_id} (server.node_id) is not in the list"),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addresses = std::collections::BTreeSet::new();
        for node in &cluster.nodes {
            if node.id == 0 || !ids.insert(node.id) {
                return fail(
                    "cluster.nodes",
                    format!("node id {} is 0 or listed twice", node.id),
                );
            }
            for address in [&node.client, &node.peer] {
                if address.is_empty() || !addresses.insert(address.as_str()) {
                    return fail(
                        "cluster.nodes",
                        format!(
                            "address '{address}' (node {}) is empty or listed twice",
                            node.id
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_has_every_key_with_its_default() {
        // krest.example.toml documents the configuration; it must stay complete and true.
        let text = include_str!("../../krest.example.toml");
        let example = Config::from_toml(text).expect("the example parses");
        assert_eq!(
            example,
            Config::default(),
            "every value in the example is the default"
        );
        let keys = |toml_text: &str| -> Vec<String> {
            toml_text
                .lines()
                .filter(|line| !line.starts_with('#') && line.contains(" = "))
                .map(|line| line.split(" = ").next().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(
            keys(text),
            keys(&Config::default().to_toml()),
            "every key, in order"
        );
    }

    #[test]
    fn the_readme_table_has_a_row_for_every_key_with_its_default() {
        // The README's configuration reference is what operators read: one row per key, and
        // the default it states is the real one.
        let readme = include_str!("../../README.md");
        let table = toml::Table::try_from(Config::default()).expect("the config serialises");
        for (section, keys) in &table {
            for (key, value) in keys.as_table().expect("every section is a table") {
                let default = match value {
                    toml::Value::String(text) => format!("`{text}`"),
                    other => other.to_string(),
                };
                let row = format!("| `{section}.{key}` | {default}");
                assert!(
                    readme.lines().any(|line| line.starts_with(&row)),
                    "the README has no row starting with {row}"
                );
            }
        }
    }

    #[test]
    fn a_cluster_list_must_name_this_node_once_with_distinct_addresses() {
        let node = |id: u64, port: u16| {
            format!(
                "{{ id = {id}, client = \"127.0.0.1:{port}\", peer = \"127.0.0.1:{}\" }}",
                port + 1
            )
        };
        let text = |node_id: u64, nodes: &[String]| {
            format!(
                "[server]\nnode_id = {node_id}\n[cluster]\nnodes = [{}]\n",
                nodes.join(", ")
            )
        };
        let three = [node(1, 7000), node(2, 7010), node(3, 7020)];
        let config = Config::from_toml(&text(2, &three)).expect("a valid cluster");
        let voters: Vec<u64> = config.cluster.voters(2).iter().map(|id| id.0).collect();
        assert_eq!(voters, [1, 2, 3]);
        assert_eq!(config.cluster.node(3).unwrap().client, "127.0.0.1:7020");
        let error = Config::from_toml(&text(4, &three)).unwrap_err();
        assert!(error.reason.contains("id 4"), "{error}");
        let twice = [node(1, 7000), node(1, 7010)];
        let error = Config::from_toml(&text(1, &twice)).unwrap_err();
        assert!(error.reason.contains("listed twice"), "{error}");
        let same_address = [node(1, 7000), node(2, 7000)];
        let error = Config::from_toml(&text(1, &same_address)).unwrap_err();
        assert!(error.reason.contains("127.0.0.1:7000"), "{error}");
        assert_eq!(Config::default().cluster.voters(5), [crate::ids::NodeId(5)]);
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let error = Config::from_toml("[limits]\nmax_frame_byts = 5\n").unwrap_err();
        assert!(error.reason.contains("max_frame_byts"), "{error}");
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config = Config::from_toml("[server]\nnode_id = 7\n").unwrap();
        assert_eq!(config.server.node_id, 7);
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn set_parses_by_the_type_of_the_key_and_refuses_unknown_keys() {
        let mut config = Config::default();
        config.set("limits.max_queues", "12").unwrap();
        assert_eq!(config.limits.max_queues, 12);
        config.set("server.listen", "127.0.0.1:1").unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:1");
        assert!(config.set("limits.max_queues", "many").is_err());
        assert!(config.set("limits.nothing", "1").is_err());
        config.set("limits.max_queues", "0").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "limits.max_queues");
    }

    #[test]
    fn limits_that_would_overflow_a_message_entry_are_refused() {
        let mut config = Config::default();
        config
            .set("limits.max_subscriptions_per_queue", "65536")
            .unwrap();
        assert_eq!(
            config.validate().unwrap_err().key,
            "limits.max_subscriptions_per_queue"
        );
        let mut config = Config::default();
        config.set("limits.max_frame_bytes", "2147483648").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "limits.max_frame_bytes");
        let mut config = Config::default();
        config
            .set("limits.max_subscriptions_per_queue", "65535")
            .unwrap();
        config.set("limits.max_frame_bytes", "1073741824").unwrap();
        config.validate().expect("the largest values allowed");
    }

    #[test]
    fn layers_apply_in_order_file_then_environment_then_flags() {
        let file = "[limits]\nmax_queues = 5\nmax_connections = 6\n[server]\nnode_id = 2\n";
        let environment = [
            ("KREST_LIMITS_MAX_CONNECTIONS".to_string(), "7".to_string()),
            ("KREST_SERVER_NODE_ID".to_string(), "3".to_string()),
            ("KREST_SERVER".to_string(), "127.0.0.1:1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let flags = [("server.node_id", "4".to_string())];
        let config = Config::load(Some(file), environment, &flags).unwrap();
        assert_eq!(config.limits.max_queues, 5);
        assert_eq!(config.limits.max_connections, 7);
        assert_eq!(config.server.node_id, 4);
        let unknown = [("KREST_LIMITS_MAX_WIDGETS".to_string(), "1".to_string())];
        let error = Config::load(None, unknown, &[]).unwrap_err();
        assert!(error.key.contains("KREST_LIMITS_MAX_WIDGETS"), "{error}");
    }

    #[test]
    fn the_printed_config_parses_back_to_itself() {
        let config = Config::default();
        assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    }
}
