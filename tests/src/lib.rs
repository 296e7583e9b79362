//! krest-tests: black-box test support.
//!
//! [`Server`] starts a real server binary on free ports (127.0.0.1, port 0) with its own data
//! directory, and can kill it with SIGKILL and start it again on the same data. [`RawClient`]
//! speaks the frame protocol byte by byte, for tests that send what a well-behaved client never
//! would.

pub mod raw;
pub mod server;

pub use raw::RawClient;
pub use server::{cli_binary, Server, ServerKind};
