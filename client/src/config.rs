//! How a [`crate::Client`] connects: servers, timeouts and the reconnect schedule.
//!
//! The reconnect schedule is a pure function of the number of consecutive failed attempts, so it
//! is tested without a clock: servers are tried in order, round robin; within one round the next
//! server is tried at once, and between rounds the delay doubles from `reconnect_backoff_min` up
//! to `reconnect_backoff_max`.

use std::time::Duration;

use crate::error::ClientError;

/// Connection settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` of each server, tried in order, round robin.
    pub servers: Vec<String>,
    /// Sent in the handshake; shows up in the server's logs.
    pub client_name: String,
    /// Longest time for one TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Longest time a request waits for its answer (including waiting for a reconnect).
    pub request_timeout: Duration,
    /// First delay between two rounds of connection attempts.
    pub reconnect_backoff_min: Duration,
    /// Cap of the doubling delay between rounds of connection attempts.
    pub reconnect_backoff_max: Duration,
    /// How many failed connection attempts a request waits through before it fails.
    pub reconnect_attempts_per_request: u32,
    /// Largest frame accepted from the server.
    pub max_frame_bytes: u32,
}

impl ClientConfig {
    /// Defaults for the given servers.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> ClientConfig {
        ClientConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }

    /// Defaults overridden by the `KREST_CLIENT_*` variables among `vars` (pass
    /// `std::env::vars()`): `SERVERS` (comma-separated `HOST:PORT`s), `NAME`,
    /// `CONNECT_TIMEOUT_MS`, `REQUEST_TIMEOUT_MS`, `RECONNECT_BACKOFF_MIN_MS`,
    /// `RECONNECT_BACKOFF_MAX_MS`, `RECONNECT_ATTEMPTS_PER_REQUEST`, `MAX_FRAME_BYTES`. Other
    /// `KREST_CLIENT_*` names and values that do not parse are errors naming the variable.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ClientConfig, ClientError> {
        crate::settings::from_env(vars)
    }

    /// Settings from a TOML table with the same keys in lower case (`servers = ["a:7654"]`,
    /// `request_timeout_ms = 5000`, ...); unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<ClientConfig, ClientError> {
        crate::settings::from_toml(text, "client settings")
    }

    /// The wait before connection attempt number `consecutive_failures` (0: the first attempt
    /// after a connection was lost or the client started).
    pub(crate) fn reconnect_delay(&self, consecutive_failures: u32) -> Duration {
        let server_count = self.servers.len().max(1) as u32;
        let round = consecutive_failures / server_count;
        let starts_a_round = round * server_count == consecutive_failures;
        if round == 0 || !starts_a_round {
            return Duration::ZERO;
        }
        self.backoff(round - 1)
    }

    /// The delay before retry number `retry` (0-based) of a request: doubling from
    /// `reconnect_backoff_min`, capped by `reconnect_backoff_max`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.reconnect_backoff_min
            .saturating_mul(factor)
            .min(self.reconnect_backoff_max)
    }
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            servers: vec!["127.0.0.1:7654".to_string()],
            client_name: "krest-client".to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            reconnect_attempts_per_request: 8,
            max_frame_bytes: krest_proto::frame::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_tries_every_server_at_once_and_rounds_back_off_to_the_cap() {
        let config = ClientConfig {
            servers: vec!["a:1".into(), "b:1".into()],
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let table = [
            (0, 0),
            (1, 0),
            (2, 100),
            (3, 0),
            (4, 200),
            (6, 400),
            (8, 500),
            (400, 500),
        ];
        for (failures, expected_ms) in table {
            assert_eq!(
                config.reconnect_delay(failures),
                Duration::from_millis(expected_ms),
                "after {failures} failures"
            );
        }
    }

    #[test]
    fn the_retry_backoff_never_overflows_and_stays_capped() {
        let config = ClientConfig::default();
        assert_eq!(config.backoff(0), config.reconnect_backoff_min);
        assert_eq!(config.backoff(u32::MAX), config.reconnect_backoff_max);
    }
}
