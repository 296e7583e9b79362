//! Quorum arithmetic as small pure functions: how many make a majority, which log index a
//! majority holds, and whether an election is won, lost or still open.

use crate::ids::LogIndex;

/// How many of `voters` make a majority.
pub fn majority(voters: usize) -> usize {
    assert!(voters > 0, "a group has at least one voter");
    voters / 2 + 1
}

/// The highest index that a majority of voters hold durably, given each voter's durable match
/// index (the leader's own included). Raft commits it only if it is of the leader's term.
pub fn majority_index(match_indexes: &[LogIndex]) -> LogIndex {
    let mut sorted = match_indexes.to_vec();
    sorted.sort_unstable_by(|left, right| right.cmp(left));
    sorted[majority(sorted.len()) - 1]
}

/// Where an election stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority can no longer be reached.
    Lost,
    /// Neither yet.
    Pending,
}

/// The state of an election among `voters` with `granted` and `rejected` answers so far.
pub fn vote_result(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    assert!(granted + rejected <= voters, "at most one answer per voter");
    let needed = majority(voters);
    if granted >= needed {
        VoteResult::Won
    } else if voters - rejected < needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A majority is more than half, whatever the parity.
    #[test]
    fn majority_is_more_than_half() {
        for (voters, expected) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            assert_eq!(majority(voters), expected, "{voters} voters");
        }
    }

    /// The majority index is the highest index at least a majority has reached.
    #[test]
    fn majority_index_is_what_a_majority_holds() {
        let table: [(&[u64], u64); 9] = [
            (&[5], 5),
            (&[5, 3], 3),
            (&[5, 3, 1], 3),
            (&[1, 3, 5], 3),
            (&[0, 0, 7], 0),
            (&[7, 7, 0], 7),
            (&[9, 8, 7, 6], 7),
            (&[2, 9, 4, 4, 1], 4),
            (&[10, 10, 1, 1, 1], 1),
        ];
        for (indexes, expected) in table {
            let indexes: Vec<LogIndex> = indexes.iter().map(|index| LogIndex(*index)).collect();
            assert_eq!(majority_index(&indexes), LogIndex(expected), "{indexes:?}");
        }
    }

    /// An election is won by a majority of grants and lost once a majority is out of reach.
    #[test]
    fn vote_results() {
        use VoteResult::*;
        let table = [
            ((1, 1, 0), Won),
            ((1, 0, 0), Pending),
            ((3, 1, 0), Pending),
            ((3, 2, 0), Won),
            ((3, 1, 1), Pending),
            ((3, 1, 2), Lost),
            ((4, 2, 0), Pending),
            ((4, 2, 2), Lost),
            ((4, 3, 1), Won),
            ((5, 2, 2), Pending),
            ((5, 2, 3), Lost),
            ((5, 3, 2), Won),
        ];
        for ((voters, granted, rejected), expected) in table {
            assert_eq!(
                vote_result(voters, granted, rejected),
                expected,
                "{voters} voters, {granted} granted, {rejected} rejected"
            );
        }
    }
}
