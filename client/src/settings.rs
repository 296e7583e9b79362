//! Settings from the environment or from TOML, one way for every settings type: the
//! connection ([`ClientConfig`]), a producer's defaults ([`ProducerSettings`]) and, with the
//! `listeners` feature, a listener's (`ListenerSettings`).
//!
//! Each type names its settings once ([`Settings::set`]); the environment reaches them as
//! `KREST_<GROUP>_<KEY>` (`KREST_CLIENT_REQUEST_TIMEOUT_MS`), TOML as `key = value` in one table.
//! An unknown name and a value that does not parse are errors naming the variable or the key.

use std::str::FromStr;
use std::time::Duration;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::producer::{ConfirmPolicy, ProducerSettings};

/// A settings type whose fields are set by name, from text.
pub(crate) trait Settings: Default {
    /// The environment prefix: `KREST_CLIENT_` names `KREST_CLIENT_SERVERS`.
    const ENV_PREFIX: &'static str;

    /// Sets the field `key` (lower case, as in TOML) from `value`; `Err` says why not.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String>;

    /// Checks the settings as a whole, once every field is set.
    fn validate(self) -> Result<Self, String> {
        Ok(self)
    }
}

/// Defaults overridden by the variables of `vars` that start with `T::ENV_PREFIX`.
pub(crate) fn from_env<T: Settings>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ClientError> {
    let mut settings = T::default();
    for (name, value) in vars {
        let Some(key) = name.strip_prefix(T::ENV_PREFIX) else {
            continue;
        };
        settings
            .set(&key.to_ascii_lowercase(), &value)
            .map_err(|reason| ClientError::InvalidArgument(format!("{name}: {reason}")))?;
    }
    settings.validate().map_err(ClientError::InvalidArgument)
}

/// Defaults overridden by the keys of one TOML table (`what` names it in errors). Strings,
/// numbers and booleans are values; an array of strings is a list (`servers = ["a:1", "b:1"]`).
pub(crate) fn from_toml<T: Settings>(text: &str, what: &str) -> Result<T, ClientError> {
    let invalid = |reason: String| ClientError::InvalidArgument(format!("{what}: {reason}"));
    let table: toml::Table = text.parse().map_err(|error| invalid(format!("{error}")))?;
    let mut settings = T::default();
    for (key, value) in table {
        let text = toml_text(&value).ok_or_else(|| {
            invalid(format!(
                "{key}: a {} is not a setting's value",
                value.type_str()
            ))
        })?;
        settings
            .set(&key, &text)
            .map_err(|reason| invalid(format!("{key}: {reason}")))?;
    }
    settings.validate().map_err(invalid)
}

fn toml_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        _ => None,
    }
}

/// `value` parsed as a `T`, or a sentence saying it is not one.
pub(crate) fn parse<T: FromStr>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a valid {}", std::any::type_name::<T>()))
}

fn millis(value: &str) -> Result<Duration, String> {
    parse::<u64>(value).map(Duration::from_millis)
}

fn unknown(key: &str) -> Result<(), String> {
    Err(format!("unknown setting {key:?}"))
}

impl Settings for ClientConfig {
    const ENV_PREFIX: &'static str = "KREST_CLIENT_";

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "servers" => {
                self.servers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|server| !server.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "name" | "client_name" => self.client_name = value.to_string(),
            "connect_timeout_ms" => self.connect_timeout = millis(value)?,
            "request_timeout_ms" => self.request_timeout = millis(value)?,
            "reconnect_backoff_min_ms" => self.reconnect_backoff_min = millis(value)?,
            "reconnect_backoff_max_ms" => self.reconnect_backoff_max = millis(value)?,
            "reconnect_attempts_per_request" => self.reconnect_attempts_per_request = parse(value)?,
            "max_frame_bytes" => self.max_frame_bytes = parse(value)?,
            _ => return unknown(key),
        }
        Ok(())
    }

    fn validate(self) -> Result<Self, String> {
        if self.servers.is_empty() {
            return Err("servers: at least one HOST:PORT is needed".into());
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err("reconnect_backoff_min_ms is above reconnect_backoff_max_ms".into());
        }
        Ok(self)
    }
}

impl Settings for ProducerSettings {
    const ENV_PREFIX: &'static str = "KREST_PRODUCER_";

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "queue" => self.queue = value.trim().to_string(),
            "confirm" => self.confirm = value.parse()?,
            "retries" => self.retries = parse(value)?,
            _ => return unknown(key),
        }
        Ok(())
    }
}

impl FromStr for ConfirmPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<ConfirmPolicy, String> {
        match value.trim() {
            "wait" => Ok(ConfirmPolicy::Wait),
            "no-wait" | "none" => Ok(ConfirmPolicy::NoWait),
            other => Err(format!("{other:?} is not a confirm policy (wait, no-wait)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn client_config_from_env_reads_its_variables_and_ignores_others() {
        let config: ClientConfig = from_env(vars(&[
            ("KREST_CLIENT_SERVERS", "a:1, b:2"),
            ("KREST_CLIENT_NAME", "billing"),
            ("KREST_CLIENT_REQUEST_TIMEOUT_MS", "2500"),
            ("KREST_CLIENT_RECONNECT_ATTEMPTS_PER_REQUEST", "3"),
            ("KREST_PRODUCER_QUEUE", "not mine"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(config.servers, ["a:1", "b:2"]);
        assert_eq!(config.client_name, "billing");
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.reconnect_attempts_per_request, 3);
        assert_eq!(
            config.connect_timeout,
            ClientConfig::default().connect_timeout
        );
    }

    #[test]
    fn an_unknown_variable_or_a_bad_value_is_an_error_naming_it() {
        let error = from_env::<ClientConfig>(vars(&[("KREST_CLIENT_SERVRES", "a:1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KREST_CLIENT_SERVRES"), "{error}");
        let error = from_env::<ClientConfig>(vars(&[("KREST_CLIENT_CONNECT_TIMEOUT_MS", "5s")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KREST_CLIENT_CONNECT_TIMEOUT_MS"), "{error}");
        assert!(error.contains("\"5s\""), "{error}");
        let error = from_env::<ClientConfig>(vars(&[("KREST_CLIENT_SERVERS", " , ")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("at least one"), "{error}");
    }

    #[test]
    fn client_config_from_toml_takes_lists_and_refuses_unknown_keys() {
        let config: ClientConfig = from_toml(
            "servers = [\"a:1\", \"b:2\"]\nconnect_timeout_ms = 750\nmax_frame_bytes = 65536\n",
            "client",
        )
        .unwrap();
        assert_eq!(config.servers, ["a:1", "b:2"]);
        assert_eq!(config.connect_timeout, Duration::from_millis(750));
        assert_eq!(config.max_frame_bytes, 65536);
        let error = from_toml::<ClientConfig>("timeout = 5", "client")
            .unwrap_err()
            .to_string();
        assert!(error.contains("client: timeout"), "{error}");
        let error = from_toml::<ClientConfig>("servers = { a = 1 }", "client")
            .unwrap_err()
            .to_string();
        assert!(error.contains("servers"), "{error}");
        let error = from_toml::<ClientConfig>(
            "reconnect_backoff_min_ms = 9000\nreconnect_backoff_max_ms = 10",
            "client",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("reconnect_backoff_min_ms"), "{error}");
    }

    #[test]
    fn producer_settings_from_env_and_toml() {
        let settings: ProducerSettings = from_env(vars(&[
            ("KREST_PRODUCER_QUEUE", "orders"),
            ("KREST_PRODUCER_CONFIRM", "no-wait"),
            ("KREST_PRODUCER_RETRIES", "9"),
        ]))
        .unwrap();
        assert_eq!(settings.queue, "orders");
        assert_eq!(settings.confirm, ConfirmPolicy::NoWait);
        assert_eq!(settings.retries, 9);
        let settings: ProducerSettings = from_toml("queue = \"audit\"", "producer").unwrap();
        assert_eq!(settings.queue, "audit");
        assert_eq!(settings.confirm, ConfirmPolicy::Wait);
        assert_eq!(settings.retries, crate::DEFAULT_PRODUCER_RETRIES);
        let error = from_toml::<ProducerSettings>("confirm = \"maybe\"", "producer")
            .unwrap_err()
            .to_string();
        assert!(error.contains("producer: confirm"), "{error}");
        assert!(error.contains("wait, no-wait"), "{error}");
    }
}
