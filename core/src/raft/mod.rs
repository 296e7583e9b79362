//! Raft, written here: one implementation for every replicated log of a node (the metadata
//! group of all nodes, one group per queue), deterministic and sans-IO like the rest of the core.
//!
//! A [`RaftGroup`] is one member of one group. Its driver feeds it messages from the other
//! members ([`RaftGroup::step`]), time ([`RaftGroup::tick`], by [`RaftGroup::poll_timeout`]),
//! proposals ([`RaftGroup::propose`]) and durability reports ([`RaftGroup::on_persisted`]), and
//! after each input carries out its [`Ready`]: messages that may go now, the term, vote and
//! entries to make durable, messages that may go only after that (votes and append
//! acknowledgements: the split is in the type, not in a comment), and committed entries.
//!
//! What it keeps, and the tests of [`tests`] check under partitions, loss, duplication,
//! reordering and crashes, with a planted bug ([`planted`]) for each checker:
//!
//! - terms, pre-vote (a member that cannot win does not disturb the others) and check-quorum (a
//!   leader that hears from no majority for an election timeout steps down);
//! - at most one leader per term; a vote only for a candidate whose log is at least as up to date;
//!   term and vote durable before a vote or a vote request is sent;
//! - log matching: a conflicting suffix is truncated (durably, before anything is appended
//!   after it), a committed entry never;
//! - the commit index is what a majority of *durable* match indexes hold, counting only entries
//!   of the leader's own term ([`quorum`]); a follower acknowledges only after its fsync;
//! - among up-to-date candidates the member with the higher id has the shorter election
//!   timeout (the original Krest-MQ's "Kid" rule) plus jitter from the seeded rng, so it
//!   normally wins; a member whose log is behind never does.
//!
//! The node runs its metadata group through [`crate::cluster::GroupDriver`]. Not yet here (the
//! cluster issues build on this): queue groups of several members, membership changes,
//! learners, log compaction and snapshots.

mod group;
mod message;
pub mod planted;
pub mod quorum;
#[cfg(test)]
mod tests;
pub mod wire;

pub use group::{RaftConfig, RaftGroup, Role};
pub use message::{Entry, Envelope, HardState, Message, Ready};
