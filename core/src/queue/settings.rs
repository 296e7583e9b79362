//! A queue's settings, resolved: every zero of the wire form replaced by the node's default.

use krest_proto::client as wire;

use crate::config::QueueDefaults;
use crate::time::Millis;

/// Where a queue's messages live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueKind {
    /// Memory only: gone after a restart; publishes are confirmed at once.
    Temporary,
    /// On disk: survives restarts; publishes are confirmed after fsync.
    Persistent,
    /// Persistent, and every message carries a deliver-at time: earliest due first.
    Delay,
}

impl QueueKind {
    /// Whether messages are written to a log.
    pub fn is_durable(self) -> bool {
        !matches!(self, QueueKind::Temporary)
    }

    /// The name used by the CLI and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Temporary => "temporary",
            QueueKind::Persistent => "persistent",
            QueueKind::Delay => "delay",
        }
    }

    /// From the wire enum; `None` for unspecified or unknown values.
    pub fn from_wire(value: i32) -> Option<QueueKind> {
        match wire::QueueKind::try_from(value).ok()? {
            wire::QueueKind::Temporary => Some(QueueKind::Temporary),
            wire::QueueKind::Persistent => Some(QueueKind::Persistent),
            wire::QueueKind::Delay => Some(QueueKind::Delay),
            wire::QueueKind::Unspecified => None,
        }
    }

    /// To the wire enum.
    pub fn to_wire(self) -> wire::QueueKind {
        match self {
            QueueKind::Temporary => wire::QueueKind::Temporary,
            QueueKind::Persistent => wire::QueueKind::Persistent,
            QueueKind::Delay => wire::QueueKind::Delay,
        }
    }
}

/// What happens when a publish would pass a queue's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the publish with `QUEUE_FULL` (the default).
    RejectPublish,
    /// Remove the oldest messages to make room (the original's "overwrite the oldest file").
    DropOldest,
}

/// A queue's settings with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Storage kind.
    pub kind: QueueKind,
    /// Bound on stored messages.
    pub max_messages: u64,
    /// Bound on stored payload bytes.
    pub max_bytes: u64,
    /// What a publish past the bounds does.
    pub overflow: Overflow,
    /// Lease of an unacked delivery.
    pub ack_timeout: Millis,
    /// Deliveries before dead-lettering; 0: unlimited.
    pub max_deliveries: u32,
    /// Where dead letters go.
    pub dead_letter_queue: String,
}

/// Why settings from the wire cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl QueueSettings {
    /// Resolves wire settings for queue `name`. `kind_if_unspecified` is used when the wire
    /// leaves the kind open.
    pub fn resolve(
        name: &str,
        settings: &wire::QueueSettings,
        defaults: &QueueDefaults,
        max_ack_timeout_ms: u64,
        kind_if_unspecified: Option<QueueKind>,
    ) -> Result<QueueSettings, SettingsError> {
        let kind = match QueueKind::from_wire(settings.kind) {
            Some(kind) => kind,
            None if settings.kind == 0 => kind_if_unspecified.ok_or_else(|| {
                SettingsError("a queue kind is required: temporary, persistent or delay".into())
            })?,
            None => {
                return Err(SettingsError(format!(
                    "unknown queue kind {}",
                    settings.kind
                )))
            }
        };
        let overflow = match wire::OverflowPolicy::try_from(settings.overflow) {
            Ok(wire::OverflowPolicy::Unspecified | wire::OverflowPolicy::RejectPublish) => {
                Overflow::RejectPublish
            }
            Ok(wire::OverflowPolicy::DropOldest) => Overflow::DropOldest,
            Err(_) => {
                return Err(SettingsError(format!(
                    "unknown overflow policy {}",
                    settings.overflow
                )))
            }
        };
        let or_default = |value: u64, default: u64| if value == 0 { default } else { value };
        let ack_timeout_ms = or_default(settings.ack_timeout_ms, defaults.ack_timeout_ms);
        if ack_timeout_ms > max_ack_timeout_ms {
            return Err(SettingsError(format!(
                "ack_timeout_ms {ack_timeout_ms} exceeds the limit of {max_ack_timeout_ms}"
            )));
        }
        let dead_letter_queue = if settings.dead_letter_queue.is_empty() {
            format!("{name}.dlq")
        } else {
            settings.dead_letter_queue.clone()
        };
        Ok(QueueSettings {
            kind,
            max_messages: or_default(settings.max_messages, defaults.max_messages),
            max_bytes: or_default(settings.max_bytes, defaults.max_bytes),
            overflow,
            ack_timeout: Millis(ack_timeout_ms),
            max_deliveries: if settings.max_deliveries == 0 {
                defaults.max_deliveries
            } else {
                settings.max_deliveries
            },
            dead_letter_queue,
        })
    }

    /// The wire form, every field explicit.
    pub fn to_wire(&self) -> wire::QueueSettings {
        wire::QueueSettings {
            kind: self.kind.to_wire() as i32,
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            overflow: match self.overflow {
                Overflow::RejectPublish => wire::OverflowPolicy::RejectPublish,
                Overflow::DropOldest => wire::OverflowPolicy::DropOldest,
            } as i32,
            ack_timeout_ms: self.ack_timeout.0,
            max_deliveries: self.max_deliveries,
            dead_letter_queue: self.dead_letter_queue.clone(),
        }
    }
}

/// Checks a queue name: 1 to 200 characters of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a queue name must not be empty".into());
    }
    if name.len() > 200 {
        return Err(format!(
            "queue name is {} bytes long; the limit is 200",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("queue name '{name}' must not start with a dot"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "queue name {name:?} contains {bad:?}; allowed are letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}
