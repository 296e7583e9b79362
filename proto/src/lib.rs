//! krest-proto: the wire formats of Krest-MQ, without any I/O.
//!
//! - [`client`]: the protobuf messages of the client protocol (`client.proto`).
//! - [`peer`]: the protobuf messages of the peer protocol between cluster nodes (`peer.proto`).
//! - [`storage`]: the protobuf bodies of on-disk log records (`storage.proto`).
//! - [`frame`]: the length-prefixed frame codec, bounded before anything is allocated.
//! - [`http`]: a small HTTP/1.1 codec for the admin listener.

pub mod frame;
pub mod http;

/// Fuzz target bodies (run by `fuzz/` and by the corpus replay test).
#[cfg(feature = "testing")]
pub mod fuzzing;

/// The generated code, nested as prost expects (`krest.client.v1` is `krest::client::v1`).
#[allow(clippy::all, missing_docs)]
mod generated {
    pub mod krest {
        pub mod client {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/krest.client.v1.rs"));
            }
        }
        pub mod peer {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/krest.peer.v1.rs"));
            }
        }
        pub mod storage {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/krest.storage.v1.rs"));
            }
        }
    }
}

/// Client protocol messages, generated from `proto/client.proto`.
pub use generated::krest::client::v1 as client;
/// Peer protocol messages, generated from `proto/peer.proto`.
pub use generated::krest::peer::v1 as peer;
/// On-disk record bodies, generated from `proto/storage.proto`.
pub use generated::krest::storage::v1 as storage;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

pub use prost::Message;
