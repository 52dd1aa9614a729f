//! The pure part of the graph store ([`crate::graph`]): what a `pairs` row says about two
//! users (who follows, blocks and mutes whom), what an operation does to it, and the row
//! and intent conversions. Nothing here talks to a node, so all of it is unit-tested.

use starling_events::{Record, Topic};
use starling_storage::{StoreError, StoreResult};

use crate::model::{RecordTuple, record_from_tuple};

/// Who follows, blocks and mutes whom between users `lo <= hi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairState {
    pub lo_follows: bool,
    pub hi_follows: bool,
    pub lo_blocks: bool,
    pub hi_blocks: bool,
    pub lo_mutes: bool,
    pub hi_mutes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Follow,
    Unfollow,
    Block,
    Unblock,
    Mute,
    Unmute,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Blocked,
    Unchanged,
    Change(PairState),
}

/// One user's half of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side {
    pub follows: bool,
    pub blocks: bool,
    pub mutes: bool,
}

impl PairState {
    /// The half of `lo` (`is_lo`) or of `hi`.
    pub fn side(&self, is_lo: bool) -> Side {
        if is_lo {
            Side { follows: self.lo_follows, blocks: self.lo_blocks, mutes: self.lo_mutes }
        } else {
            Side { follows: self.hi_follows, blocks: self.hi_blocks, mutes: self.hi_mutes }
        }
    }

    fn set_side(&mut self, is_lo: bool, side: Side) {
        if is_lo {
            (self.lo_follows, self.lo_blocks, self.lo_mutes) = (side.follows, side.blocks, side.mutes);
        } else {
            (self.hi_follows, self.hi_blocks, self.hi_mutes) = (side.follows, side.blocks, side.mutes);
        }
    }
}

/// What `op` by the actor (`lo` if `actor_is_lo`) does to the pair, as the embedded store
/// decides it. For a user paired with themselves both halves describe the same edge.
/// Mutes are independent of follows and blocks: a block keeps them, a mute keeps follows.
pub fn decide(state: PairState, actor_is_lo: bool, same: bool, op: Op) -> Decision {
    let current = state.side(actor_is_lo);
    let mut side = current;
    match op {
        Op::Follow if state.lo_blocks || state.hi_blocks => return Decision::Blocked,
        Op::Follow | Op::Unfollow => side.follows = op == Op::Follow,
        Op::Block | Op::Unblock => side.blocks = op == Op::Block,
        Op::Mute | Op::Unmute => side.mutes = op == Op::Mute,
    }
    if side == current {
        return Decision::Unchanged;
    }
    let mut next = state;
    next.set_side(actor_is_lo, side);
    if op == Op::Block {
        next.lo_follows = false;
        next.hi_follows = false;
    }
    if same {
        next.set_side(false, next.side(true));
    }
    Decision::Change(next)
}

/// Counter changes from `prev` to `next`: `(user, followers delta, following delta)`.
pub fn count_deltas(lo: i64, hi: i64, prev: PairState, next: PairState) -> Vec<(i64, i64, i64)> {
    let step = |before: bool, after: bool| i64::from(after) - i64::from(before);
    let lo_to_hi = step(prev.lo_follows, next.lo_follows);
    let hi_to_lo = if lo == hi { 0 } else { step(prev.hi_follows, next.hi_follows) };
    if lo == hi {
        return if lo_to_hi == 0 { Vec::new() } else { vec![(lo, lo_to_hi, lo_to_hi)] };
    }
    // lo follows hi: lo's following and hi's followers move; and the other way round.
    [(lo, hi_to_lo, lo_to_hi), (hi, lo_to_hi, hi_to_lo)].into_iter().filter(|&(_, a, b)| a != 0 || b != 0).collect()
}

/// The mutes that change from `prev` to `next`: `(muter, muted, now muted)`. Only changes,
/// so that a follow or block writes no mute tombstones.
pub fn mute_changes(lo: i64, hi: i64, prev: PairState, next: PairState) -> Vec<(i64, i64, bool)> {
    let mut changes = Vec::new();
    if prev.lo_mutes != next.lo_mutes {
        changes.push((lo, hi, next.lo_mutes));
    }
    if lo != hi && prev.hi_mutes != next.hi_mutes {
        changes.push((hi, lo, next.hi_mutes));
    }
    changes
}

/// The pair row as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PairRow {
    pub(crate) state: PairState,
    /// The state before the change `version` made (its follows and mutes).
    pub(crate) prev: PairState,
    pub(crate) version: i64,
    pub(crate) applied: i64,
    pub(crate) pending: Vec<Record>,
}

/// The columns of [`PAIR_COLUMNS`], in order.
pub(crate) type PairColumns = (
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
    Option<Vec<RecordTuple>>,
);

pub(crate) const PAIR_COLUMNS: &str = "lo_follows, hi_follows, lo_blocks, hi_blocks, lo_mutes, hi_mutes, \
                                       prev_lo_follows, prev_hi_follows, prev_lo_mutes, prev_hi_mutes, version, \
                                       applied, pending";

/// Rows written before mutes existed have null mute columns: nobody mutes anybody.
pub(crate) fn pair_from_row(row: PairColumns) -> StoreResult<PairRow> {
    let (lf, hf, lb, hb, lm, hm, plf, phf, plm, phm, version, applied, pending) = row;
    let b = |v: Option<bool>| v.unwrap_or(false);
    Ok(PairRow {
        state: PairState {
            lo_follows: b(lf),
            hi_follows: b(hf),
            lo_blocks: b(lb),
            hi_blocks: b(hb),
            lo_mutes: b(lm),
            hi_mutes: b(hm),
        },
        prev: PairState {
            lo_follows: b(plf),
            hi_follows: b(phf),
            lo_mutes: b(plm),
            hi_mutes: b(phm),
            ..PairState::default()
        },
        version: version.unwrap_or(0),
        applied: applied.unwrap_or(0),
        pending: pending.unwrap_or_default().into_iter().map(record_from_tuple).collect::<StoreResult<_>>()?,
    })
}

/// An intent names a pair: the key is `lo`, the payload `hi` (8 bytes, big-endian).
pub(crate) fn intent_record(lo: i64, hi: i64) -> Record {
    Record { topic: Topic::Graph, key: lo as u64, payload: hi.to_be_bytes().to_vec().into(), headers: Vec::new() }
}

pub(crate) fn intent_pair(record: &Record) -> StoreResult<(i64, i64)> {
    let hi = record
        .payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("graph intent: payload is not 8 bytes".into()))?;
    Ok((record.key as i64, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record_to_tuple;

    const NONE: PairState = PairState {
        lo_follows: false,
        hi_follows: false,
        lo_blocks: false,
        hi_blocks: false,
        lo_mutes: false,
        hi_mutes: false,
    };

    #[test]
    fn follow_and_unfollow_decisions() {
        let Decision::Change(s) = decide(NONE, true, false, Op::Follow) else { panic!() };
        assert_eq!(s, PairState { lo_follows: true, ..NONE });
        assert_eq!(decide(s, true, false, Op::Follow), Decision::Unchanged);
        let Decision::Change(both) = decide(s, false, false, Op::Follow) else { panic!() };
        assert_eq!(both, PairState { lo_follows: true, hi_follows: true, ..NONE });
        assert_eq!(decide(both, false, false, Op::Unfollow), Decision::Change(s), "the other edge stays");
        assert_eq!(decide(NONE, false, false, Op::Unfollow), Decision::Unchanged);
    }

    #[test]
    fn blocks_remove_both_follows_and_refuse_follows_either_way() {
        let both = PairState { lo_follows: true, hi_follows: true, ..NONE };
        let Decision::Change(blocked) = decide(both, true, false, Op::Block) else { panic!() };
        assert_eq!(blocked, PairState { lo_blocks: true, ..NONE });
        assert_eq!(decide(blocked, true, false, Op::Block), Decision::Unchanged);
        assert_eq!(decide(blocked, true, false, Op::Follow), Decision::Blocked, "the blocker cannot follow");
        assert_eq!(decide(blocked, false, false, Op::Follow), Decision::Blocked, "the blocked cannot follow");
        assert_eq!(decide(blocked, false, false, Op::Unblock), Decision::Unchanged, "only the blocker unblocks");
        let Decision::Change(mutual) = decide(blocked, false, false, Op::Block) else { panic!() };
        assert_eq!(mutual, PairState { lo_blocks: true, hi_blocks: true, ..NONE });
        assert_eq!(decide(mutual, true, false, Op::Unblock), Decision::Change(PairState { hi_blocks: true, ..NONE }));
        assert_eq!(decide(NONE, true, false, Op::Unfollow), Decision::Unchanged);
    }

    #[test]
    fn mutes_are_per_direction_and_leave_follows_and_blocks_alone() {
        let follows = PairState { lo_follows: true, ..NONE };
        let Decision::Change(muted) = decide(follows, true, false, Op::Mute) else { panic!() };
        assert_eq!(muted, PairState { lo_follows: true, lo_mutes: true, ..NONE }, "a mute keeps the follow");
        assert_eq!(decide(muted, true, false, Op::Mute), Decision::Unchanged);
        assert_eq!(decide(muted, false, false, Op::Unmute), Decision::Unchanged, "the other direction");
        let Decision::Change(blocked) = decide(muted, false, false, Op::Block) else { panic!() };
        assert_eq!(blocked, PairState { hi_blocks: true, lo_mutes: true, ..NONE }, "a block keeps the mute");
        let Decision::Change(both) = decide(blocked, false, false, Op::Mute) else { panic!() };
        assert!(both.lo_mutes && both.hi_mutes, "muting someone blocked is no follow: allowed");
        assert_eq!(decide(muted, true, false, Op::Unmute), Decision::Change(follows));
        let Decision::Change(own) = decide(NONE, true, true, Op::Mute) else { panic!() };
        assert!(own.lo_mutes && own.hi_mutes, "a user paired with themselves has one mute");
    }

    #[test]
    fn only_changed_mutes_are_written() {
        let lo_mutes = PairState { lo_mutes: true, ..NONE };
        assert_eq!(mute_changes(1, 2, NONE, lo_mutes), vec![(1, 2, true)]);
        assert_eq!(
            mute_changes(1, 2, lo_mutes, PairState { hi_mutes: true, ..NONE }),
            vec![(1, 2, false), (2, 1, true)]
        );
        assert!(mute_changes(1, 2, lo_mutes, PairState { lo_follows: true, ..lo_mutes }).is_empty(), "a follow");
        let own = PairState { lo_mutes: true, hi_mutes: true, ..NONE };
        assert_eq!(mute_changes(5, 5, NONE, own), vec![(5, 5, true)]);
    }

    #[test]
    fn a_user_paired_with_themselves_has_one_edge() {
        let Decision::Change(s) = decide(NONE, true, true, Op::Follow) else { panic!() };
        assert!(s.lo_follows && s.hi_follows);
        assert_eq!(count_deltas(5, 5, NONE, s), vec![(5, 1, 1)]);
        let Decision::Change(b) = decide(s, true, true, Op::Block) else { panic!() };
        assert_eq!(b, PairState { lo_blocks: true, hi_blocks: true, ..NONE });
        assert_eq!(count_deltas(5, 5, s, b), vec![(5, -1, -1)]);
    }

    #[test]
    fn counter_deltas_follow_the_edges() {
        let lo_follows = PairState { lo_follows: true, ..NONE };
        assert_eq!(count_deltas(1, 2, NONE, lo_follows), vec![(1, 0, 1), (2, 1, 0)]);
        let both = PairState { lo_follows: true, hi_follows: true, ..NONE };
        assert_eq!(count_deltas(1, 2, both, PairState { lo_blocks: true, ..NONE }), vec![(1, -1, -1), (2, -1, -1)]);
        assert!(count_deltas(1, 2, both, both).is_empty());
        assert!(count_deltas(1, 2, NONE, PairState { hi_blocks: true, ..NONE }).is_empty());
        assert!(count_deltas(1, 2, NONE, PairState { lo_mutes: true, ..NONE }).is_empty(), "mutes are not counted");
    }

    #[test]
    fn pair_rows_and_intents_convert() {
        let record =
            Record { topic: Topic::Graph, key: 9, payload: bytes::Bytes::from_static(b"x"), headers: Vec::new() };
        let row = pair_from_row((
            Some(true),
            None,
            None,
            Some(true),
            None,
            Some(true),
            Some(false),
            None,
            None,
            Some(true),
            Some(3),
            Some(2),
            Some(vec![record_to_tuple(&record)]),
        ))
        .unwrap();
        assert_eq!(row.state, PairState { lo_follows: true, hi_blocks: true, hi_mutes: true, ..NONE });
        assert_eq!(row.prev, PairState { hi_mutes: true, ..NONE });
        assert_eq!((row.version, row.applied), (3, 2));
        assert_eq!(row.pending, vec![record]);
        let empty =
            pair_from_row((None, None, None, None, None, None, None, None, None, None, None, None, None)).unwrap();
        assert_eq!((empty.state, empty.version, empty.applied), (NONE, 0, 0));

        assert_eq!(intent_pair(&intent_record(7, i64::MAX)).unwrap(), (7, i64::MAX));
        let bad = Record { payload: bytes::Bytes::from_static(b"short"), ..intent_record(1, 2) };
        assert!(intent_pair(&bad).is_err());
    }
}
