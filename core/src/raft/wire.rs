//! Raft messages on the peer protocol (`peer.proto`): encoding, and a decoding that trusts
//! nothing. A message that fails any check is refused with the reason; the node drops it and
//! counts it.

use krest_proto::peer as wire;

use super::message::{Entry, Envelope, Message};
use crate::ids::{LogIndex, NodeId, QueueId, Term};
use crate::io::LogId;

/// Why a peer's Raft message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerMessageError {
    /// No message kind.
    #[error("a Raft message without a kind")]
    NoKind,
    /// Node id 0, or a message to itself.
    #[error("bad addresses: from {from} to {to}")]
    BadAddresses {
        /// The sender named.
        from: u64,
        /// The receiver named.
        to: u64,
    },
    /// Term 0 is never a sender's term.
    #[error("term 0")]
    TermZero,
    /// An entry of a later term than its leader's, or entries whose terms go down.
    #[error("entry {index} has term {entry_term} (leader term {term}, previous {previous})")]
    EntryTerm {
        /// Its index.
        index: u64,
        /// Its term.
        entry_term: u64,
        /// The message's term.
        term: u64,
        /// The term of the entry before it.
        previous: u64,
    },
    /// Indexes past what a log can hold.
    #[error("log indexes overflow")]
    IndexOverflow,
}

/// The protobuf form of `envelope`, a message of the group of `log`.
pub fn encode(log: LogId, envelope: &Envelope) -> wire::RaftMessage {
    use wire::raft_message::Kind;
    let kind = match &envelope.message {
        Message::RequestVote {
            last_log_index,
            last_log_term,
            pre_vote,
            ..
        } => Kind::RequestVote(wire::RequestVote {
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            pre_vote: *pre_vote,
        }),
        Message::VoteResponse {
            granted, pre_vote, ..
        } => Kind::VoteResponse(wire::VoteResponse {
            granted: *granted,
            pre_vote: *pre_vote,
        }),
        Message::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            ..
        } => Kind::AppendEntries(wire::AppendEntries {
            prev_log_index: prev_log_index.0,
            prev_log_term: prev_log_term.0,
            leader_commit: leader_commit.0,
            entries: entries
                .iter()
                .map(|entry| wire::Entry {
                    term: entry.term.0,
                    body: entry.body.clone(),
                })
                .collect(),
        }),
        Message::AppendResponse {
            success,
            match_index,
            ..
        } => Kind::AppendResponse(wire::AppendResponse {
            success: *success,
            match_index: match_index.0,
        }),
    };
    wire::RaftMessage {
        group: match log {
            LogId::Metadata => 0,
            LogId::Queue(queue) => queue.0,
        },
        from: envelope.from.0,
        to: envelope.to.0,
        term: envelope.message.term().0,
        kind: Some(kind),
    }
}

/// The message in `message`, checked: addresses, terms, entry terms and indexes.
pub fn decode(message: wire::RaftMessage) -> Result<(LogId, Envelope), PeerMessageError> {
    use wire::raft_message::Kind;
    let wire::RaftMessage {
        group,
        from,
        to,
        term,
        kind,
    } = message;
    if from == 0 || to == 0 || from == to {
        return Err(PeerMessageError::BadAddresses { from, to });
    }
    if term == 0 {
        return Err(PeerMessageError::TermZero);
    }
    let log = match group {
        0 => LogId::Metadata,
        queue => LogId::Queue(QueueId(queue)),
    };
    let message = match kind.ok_or(PeerMessageError::NoKind)? {
        Kind::RequestVote(request) => Message::RequestVote {
            term: Term(term),
            last_log_index: LogIndex(request.last_log_index),
            last_log_term: Term(request.last_log_term),
            pre_vote: request.pre_vote,
        },
        Kind::VoteResponse(response) => Message::VoteResponse {
            term: Term(term),
            granted: response.granted,
            pre_vote: response.pre_vote,
        },
        Kind::AppendEntries(append) => {
            let count = append.entries.len() as u64;
            let last = append.prev_log_index.checked_add(count);
            if last.is_none_or(|last| last == u64::MAX) {
                return Err(PeerMessageError::IndexOverflow);
            }
            let mut previous = append.prev_log_term;
            let mut entries = Vec::with_capacity(append.entries.len());
            for (position, entry) in append.entries.into_iter().enumerate() {
                let index = append.prev_log_index + 1 + position as u64;
                if entry.term > term || entry.term < previous || entry.term == 0 {
                    return Err(PeerMessageError::EntryTerm {
                        index,
                        entry_term: entry.term,
                        term,
                        previous,
                    });
                }
                previous = entry.term;
                entries.push(Entry {
                    term: Term(entry.term),
                    index: LogIndex(index),
                    body: entry.body,
                });
            }
            Message::AppendEntries {
                term: Term(term),
                prev_log_index: LogIndex(append.prev_log_index),
                prev_log_term: Term(append.prev_log_term),
                entries,
                leader_commit: LogIndex(append.leader_commit),
            }
        }
        Kind::AppendResponse(response) => Message::AppendResponse {
            term: Term(term),
            success: response.success,
            match_index: LogIndex(response.match_index),
        },
    };
    let envelope = Envelope {
        from: NodeId(from),
        to: NodeId(to),
        message,
    };
    Ok((log, envelope))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn append(entry_terms: &[u64]) -> Envelope {
        let entries = entry_terms
            .iter()
            .enumerate()
            .map(|(position, term)| Entry {
                term: Term(*term),
                index: LogIndex(4 + position as u64),
                body: Bytes::from_static(b"record"),
            })
            .collect();
        Envelope {
            from: NodeId(1),
            to: NodeId(2),
            message: Message::AppendEntries {
                term: Term(3),
                prev_log_index: LogIndex(3),
                prev_log_term: Term(1),
                entries,
                leader_commit: LogIndex(2),
            },
        }
    }

    /// Every kind of message comes back from the wire as it went.
    #[test]
    fn messages_round_trip() {
        let envelopes = [
            append(&[1, 2, 3]),
            append(&[]),
            Envelope {
                from: NodeId(2),
                to: NodeId(1),
                message: Message::RequestVote {
                    term: Term(9),
                    last_log_index: LogIndex(7),
                    last_log_term: Term(8),
                    pre_vote: true,
                },
            },
            Envelope {
                from: NodeId(3),
                to: NodeId(1),
                message: Message::VoteResponse {
                    term: Term(9),
                    granted: true,
                    pre_vote: false,
                },
            },
            Envelope {
                from: NodeId(3),
                to: NodeId(1),
                message: Message::AppendResponse {
                    term: Term(9),
                    success: false,
                    match_index: LogIndex(5),
                },
            },
        ];
        for log in [LogId::Metadata, LogId::Queue(QueueId(17))] {
            for envelope in &envelopes {
                let decoded = decode(encode(log, envelope)).expect("valid");
                assert_eq!(decoded, (log, envelope.clone()));
            }
        }
    }

    /// A message that could not come from a correct peer is refused, with the reason.
    #[test]
    fn impossible_messages_are_refused() {
        let mut to_itself = encode(LogId::Metadata, &append(&[1]));
        to_itself.to = to_itself.from;
        let mut term_zero = encode(LogId::Metadata, &append(&[]));
        term_zero.term = 0;
        let mut no_kind = encode(LogId::Metadata, &append(&[]));
        no_kind.kind = None;
        let future_entry = encode(LogId::Metadata, &append(&[4]));
        let terms_going_down = encode(LogId::Metadata, &append(&[2, 1]));
        let mut overflowing = encode(LogId::Metadata, &append(&[1]));
        if let Some(wire::raft_message::Kind::AppendEntries(append)) = &mut overflowing.kind {
            append.prev_log_index = u64::MAX - 1;
        }
        let refused = [
            to_itself,
            term_zero,
            no_kind,
            future_entry,
            terms_going_down,
            overflowing,
        ];
        for message in refused {
            let error = decode(message.clone()).expect_err("refused");
            assert!(!error.to_string().is_empty(), "{message:?}");
        }
    }
}
