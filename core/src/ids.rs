//! Identifier newtypes, so that a queue id can never be passed where a sequence is expected.
//!
//! Every id is allocated from a counter, never drawn at random, so a replay of the same inputs
//! produces the same ids.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A queue, for the lifetime of the data directory (names can be reused after a delete;
    /// ids are not).
    QueueId
);
id_type!(
    /// A client connection, chosen by the runtime (unique while the node runs).
    ConnId
);
id_type!(
    /// One consumer: the id a client names in Fetch, Settle, Credit and Unsubscribe (the
    /// protocol's `subscription_id`).
    ConsumerId
);
id_type!(
    /// A subscription of a queue (a cursor plus its in-flight table), unique within the node.
    SubscriptionId
);
id_type!(
    /// A message's position in its queue: strictly increasing, never reused.
    Sequence
);
id_type!(
    /// A Raft term. A single node stays in term 1.
    Term
);
id_type!(
    /// The position of a record in one log, starting at 1.
    LogIndex
);
id_type!(
    /// A producer identity stated in the handshake, for idempotent publishing.
    ProducerId
);
id_type!(
    /// This node in a cluster.
    NodeId
);
id_type!(
    /// An admin HTTP request, chosen by the runtime.
    AdminRequestId
);
id_type!(
    /// Something waiting for storage to become durable.
    WaiterId
);

impl Sequence {
    /// The sequence after this one.
    pub fn next(self) -> Sequence {
        Sequence(self.0 + 1)
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
}
