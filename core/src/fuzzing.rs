//! Fuzz target bodies for the core, public so that the cargo-fuzz targets in `fuzz/` and the
//! corpus replay test in `tests/fuzz_corpus.rs` run exactly the same checks.
//!
//! - [`config_toml`]: configuration text, environment and flags never panic; whatever loads is
//!   valid, whatever does not says which key is wrong and why, and a valid configuration prints
//!   as TOML that parses back to itself.
//! - [`core_inputs`]: a sequence of inputs decoded from the bytes (clients connecting, sending
//!   mostly well-formed requests and some garbage, going away; time passing; storage completing
//!   or failing; admin requests; crashes and restarts) is driven into a [`Node`], with this module
//!   acting as the runtime, the clients and an in-memory storage. After every input the node's
//!   invariants are checked ([`Node::check_invariants`]) along with what the runtime can see:
//!   every frame decodes and fits the frame limit, no request is answered twice or without being
//!   asked, storage is asked for consecutive records and synced only what was appended, and a
//!   node restarts from its own records.
//!
//! - [`peer_frames`]: arbitrary peer frames and Raft messages from several peers, with time
//!   passing: the node's invariants hold, every frame is counted, nothing is trusted, and what
//!   the Raft wire decoding accepts encodes back to itself.
//!
//! [`Node`]: crate::Node
//! [`Node::check_invariants`]: crate::Node::check_invariants
//! [`config_toml`]: crate::fuzzing::config_toml
//! [`core_inputs`]: crate::fuzzing::core_inputs
//! [`peer_frames`]: crate::fuzzing::peer_frames

mod byte_source;
mod config_text;
mod peers;
mod requests;
mod runtime;

pub use config_text::config_toml;
pub use peers::peer_frames;
pub use runtime::{core_inputs, core_inputs_traced};
