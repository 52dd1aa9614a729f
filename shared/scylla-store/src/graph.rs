//! The graph-service's store on ScyllaDB.
//!
//! Every follow and block between two users is one row of `pairs`, keyed by the unordered
//! pair, so the trait's read-check-write operations ("refuse if either blocks the other",
//! "unchanged if already following", "a block removes both follows") are decided by one
//! lightweight transaction on one partition, serialised per pair by its `version`.
//!
//! A change runs in four steps:
//! 1. an *intent* (the pair's key) goes into outbox stream 3, so recovery can find the pair;
//! 2. an LWT moves the row to its new state, `version + 1`, with the events in `pending`;
//! 3. a LOGGED BATCH writes the derived rows (follow lists, with `USING TIMESTAMP version`
//!    so an older state landing late cannot overwrite a newer one) and the events into
//!    outbox stream 2;
//! 4. an LWT sets `applied = version`; its winner updates the follower counters.
//!
//! A row with `applied < version` is finished (steps 3–4) by whoever sees it next: the next
//! change of that pair, or the recovery sweep that the relay's `pending` calls drive.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;
use starling_events::{Record, Topic};
use starling_ids::{IdGenerator, UserId};
use starling_storage::{
    AuthorClass, Counts, EdgeChange, GraphStore, Outbox, OutboxEntry, StoreError, StoreResult, UserRecord,
};

use crate::model::{RecordTuple, edge_bucket, from_cql, record_from_tuple, record_to_tuple, to_cql};
use crate::outbox::{OutboxQueue, Stream};
use crate::{ScyllaError, Staged, backend, lwt_applied, now_ms, prepare_idempotent, prepare_once, prepare_serial_read};

/// Conditional updates that lose to a concurrent change of the same pair are retried
/// after re-reading it; a pair changed this often at once is answered with an error.
const MAX_ATTEMPTS: usize = 8;
/// A handle claim older than this whose user row never appeared belongs to a sign-up that
/// died half-way, and may be taken over.
const ORPHAN_CLAIM_MS: i64 = 60_000;
/// Intents younger than this may belong to a change still in flight.
const INTENT_SETTLE_MS: u64 = 60_000;
const RECOVER_EVERY: Duration = Duration::from_secs(30);
const RECOVER_BATCH: usize = 1000;
const PAGE_SIZE: i32 = 1000;
const KIND_FOLLOWERS: i8 = 1;
const KIND_FOLLOWING: i8 = 2;

// ---------------------------------------------------------------------------------------
// Pair state (pure)
// ---------------------------------------------------------------------------------------

/// Who follows and blocks whom between users `lo <= hi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairState {
    pub lo_follows: bool,
    pub hi_follows: bool,
    pub lo_blocks: bool,
    pub hi_blocks: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Follow,
    Unfollow,
    Block,
    Unblock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Blocked,
    Unchanged,
    Change(PairState),
}

/// What `op` by the actor (`lo` if `actor_is_lo`) does to the pair, as the embedded store
/// decides it. For a user paired with themselves both halves describe the same edge.
pub fn decide(state: PairState, actor_is_lo: bool, same: bool, op: Op) -> Decision {
    let (follows, blocks) =
        if actor_is_lo { (state.lo_follows, state.lo_blocks) } else { (state.hi_follows, state.hi_blocks) };
    let mut next = state;
    let mut set = |follows: bool, blocks: bool| {
        if actor_is_lo {
            (next.lo_follows, next.lo_blocks) = (follows, blocks);
        } else {
            (next.hi_follows, next.hi_blocks) = (follows, blocks);
        }
    };
    match op {
        Op::Follow if state.lo_blocks || state.hi_blocks => return Decision::Blocked,
        Op::Follow | Op::Unfollow => {
            let want = op == Op::Follow;
            if follows == want {
                return Decision::Unchanged;
            }
            set(want, blocks);
        }
        Op::Block | Op::Unblock => {
            let want = op == Op::Block;
            if blocks == want {
                return Decision::Unchanged;
            }
            set(follows, want);
            if want {
                next.lo_follows = false;
                next.hi_follows = false;
            }
        }
    }
    if same {
        next.hi_follows = next.lo_follows;
        next.hi_blocks = next.lo_blocks;
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

/// The pair row as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PairRow {
    state: PairState,
    prev: PairState,
    version: i64,
    applied: i64,
    pending: Vec<Record>,
}

type PairColumns = (
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

fn pair_from_row(row: PairColumns) -> StoreResult<PairRow> {
    let (lf, hf, lb, hb, plf, phf, version, applied, pending) = row;
    let b = |v: Option<bool>| v.unwrap_or(false);
    Ok(PairRow {
        state: PairState { lo_follows: b(lf), hi_follows: b(hf), lo_blocks: b(lb), hi_blocks: b(hb) },
        prev: PairState { lo_follows: b(plf), hi_follows: b(phf), ..PairState::default() },
        version: version.unwrap_or(0),
        applied: applied.unwrap_or(0),
        pending: pending.unwrap_or_default().into_iter().map(record_from_tuple).collect::<StoreResult<_>>()?,
    })
}

/// An intent names a pair: the key is `lo`, the payload `hi` (8 bytes, big-endian).
fn intent_record(lo: i64, hi: i64) -> Record {
    Record { topic: Topic::Graph, key: lo as u64, payload: hi.to_be_bytes().to_vec().into(), headers: Vec::new() }
}

fn intent_pair(record: &Record) -> StoreResult<(i64, i64)> {
    let hi = record
        .payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("graph intent: payload is not 8 bytes".into()))?;
    Ok((record.key as i64, hi))
}

// ---------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------

pub struct ScyllaGraphStore {
    pub(crate) session: Arc<Session>,
    outbox: OutboxQueue,
    intents: OutboxQueue,
    last_recovery: Mutex<Option<Instant>>,
    pub(crate) s: Statements,
    pub(crate) auth: crate::auth::Statements,
}

pub(crate) struct Statements {
    claim_handle: PreparedStatement,
    read_handle: PreparedStatement,
    read_handle_serial: PreparedStatement,
    take_handle: PreparedStatement,
    pub(crate) release_handle: PreparedStatement,
    insert_user: PreparedStatement,
    get_user: PreparedStatement,
    pub(crate) delete_user: PreparedStatement,
    read_pair: PreparedStatement,
    read_pair_serial: PreparedStatement,
    insert_pair: PreparedStatement,
    update_pair: PreparedStatement,
    mark_applied: PreparedStatement,
    put_following: PreparedStatement,
    put_follower: PreparedStatement,
    del_following: PreparedStatement,
    del_follower: PreparedStatement,
    put_bucket: PreparedStatement,
    buckets: PreparedStatement,
    page_followers: PreparedStatement,
    page_following: PreparedStatement,
    add_counts: PreparedStatement,
    get_counts: PreparedStatement,
    get_class: PreparedStatement,
    set_class: PreparedStatement,
    add_celebrity: PreparedStatement,
    remove_celebrity: PreparedStatement,
    celebrities: PreparedStatement,
}

const PAIR_COLUMNS: &str =
    "lo_follows, hi_follows, lo_blocks, hi_blocks, prev_lo_follows, prev_hi_follows, version, applied, pending";

impl Statements {
    async fn prepare(s: &Session) -> Result<Statements, ScyllaError> {
        let paged = |mut p: PreparedStatement| {
            p.set_page_size(PAGE_SIZE);
            p
        };
        Ok(Statements {
            claim_handle: prepare_once(
                s,
                "INSERT INTO handles (handle_key, id, claimed_at) VALUES (?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            read_handle: prepare_idempotent(s, "SELECT id, claimed_at FROM handles WHERE handle_key = ?").await?,
            read_handle_serial: prepare_serial_read(s, "SELECT id, claimed_at FROM handles WHERE handle_key = ?")
                .await?,
            take_handle: prepare_once(s, "UPDATE handles SET id = ?, claimed_at = ? WHERE handle_key = ? IF id = ?")
                .await?,
            release_handle: prepare_once(s, "DELETE FROM handles WHERE handle_key = ? IF id = ?").await?,
            insert_user: prepare_once(s, "INSERT INTO users (id, handle) VALUES (?, ?) IF NOT EXISTS").await?,
            get_user: prepare_idempotent(s, "SELECT id, handle FROM users WHERE id = ?").await?,
            delete_user: prepare_idempotent(s, "DELETE FROM users WHERE id = ?").await?,
            read_pair: prepare_idempotent(s, &format!("SELECT {PAIR_COLUMNS} FROM pairs WHERE lo = ? AND hi = ?"))
                .await?,
            read_pair_serial: prepare_serial_read(
                s,
                &format!("SELECT {PAIR_COLUMNS} FROM pairs WHERE lo = ? AND hi = ?"),
            )
            .await?,
            insert_pair: prepare_once(
                s,
                "INSERT INTO pairs (lo, hi, lo_follows, hi_follows, lo_blocks, hi_blocks, prev_lo_follows, \
                 prev_hi_follows, version, applied, pending) VALUES (?, ?, ?, ?, ?, ?, false, false, 1, 0, ?) \
                 IF NOT EXISTS",
            )
            .await?,
            update_pair: prepare_once(
                s,
                "UPDATE pairs SET lo_follows = ?, hi_follows = ?, lo_blocks = ?, hi_blocks = ?, prev_lo_follows = ?, \
                 prev_hi_follows = ?, version = ?, pending = ? WHERE lo = ? AND hi = ? IF version = ? AND applied = ?",
            )
            .await?,
            mark_applied: prepare_once(
                s,
                "UPDATE pairs SET applied = ?, pending = null WHERE lo = ? AND hi = ? IF version = ? AND applied = ?",
            )
            .await?,
            put_following: prepare_idempotent(
                s,
                "INSERT INTO following (follower, bucket, followee) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            put_follower: prepare_idempotent(
                s,
                "INSERT INTO followers (followee, bucket, follower) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            del_following: prepare_idempotent(
                s,
                "DELETE FROM following USING TIMESTAMP ? WHERE follower = ? AND bucket = ? AND followee = ?",
            )
            .await?,
            del_follower: prepare_idempotent(
                s,
                "DELETE FROM followers USING TIMESTAMP ? WHERE followee = ? AND bucket = ? AND follower = ?",
            )
            .await?,
            put_bucket: prepare_idempotent(s, "INSERT INTO follow_buckets (owner, kind, bucket) VALUES (?, ?, ?)")
                .await?,
            buckets: paged(
                prepare_idempotent(s, "SELECT bucket FROM follow_buckets WHERE owner = ? AND kind = ? AND bucket >= ?")
                    .await?,
            ),
            page_followers: paged(
                prepare_idempotent(
                    s,
                    "SELECT follower FROM followers WHERE followee = ? AND bucket = ? AND follower >= ? LIMIT ?",
                )
                .await?,
            ),
            page_following: paged(
                prepare_idempotent(
                    s,
                    "SELECT followee FROM following WHERE follower = ? AND bucket = ? AND followee >= ? LIMIT ?",
                )
                .await?,
            ),
            add_counts: prepare_once(
                s,
                "UPDATE follow_counts SET followers = followers + ?, following = following + ? WHERE user_id = ?",
            )
            .await?,
            get_counts: prepare_idempotent(s, "SELECT followers, following FROM follow_counts WHERE user_id = ?")
                .await?,
            get_class: prepare_idempotent(s, "SELECT celebrity FROM author_class WHERE user_id = ?").await?,
            set_class: prepare_idempotent(s, "INSERT INTO author_class (user_id, celebrity) VALUES (?, ?)").await?,
            add_celebrity: prepare_idempotent(s, "INSERT INTO celebrities (shard, user_id) VALUES (0, ?)").await?,
            remove_celebrity: prepare_idempotent(s, "DELETE FROM celebrities WHERE shard = 0 AND user_id = ?").await?,
            celebrities: paged(prepare_idempotent(s, "SELECT user_id FROM celebrities WHERE shard = 0").await?),
        })
    }
}

impl ScyllaGraphStore {
    pub(crate) async fn prepare(session: Arc<Session>, seqs: Arc<IdGenerator>) -> Result<Self, ScyllaError> {
        Ok(ScyllaGraphStore {
            s: Statements::prepare(&session).await?,
            auth: crate::auth::Statements::prepare(&session).await?,
            outbox: OutboxQueue::prepare(session.clone(), Stream::Graph, seqs.clone()).await?,
            intents: OutboxQueue::prepare(session.clone(), Stream::GraphIntents, seqs).await?,
            last_recovery: Mutex::new(None),
            session,
        })
    }

    pub(crate) async fn first_row<T>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> StoreResult<Option<T>>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(backend)?
            .into_rows_result()
            .map_err(backend)?
            .maybe_first_row::<T>()
            .map_err(backend)
    }

    pub(crate) async fn conditional(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> StoreResult<bool> {
        lwt_applied(self.session.execute_unpaged(statement, values).await.map_err(backend)?)
    }

    async fn load_user(&self, id: i64) -> StoreResult<Option<UserRecord>> {
        let row: Option<(i64, Option<String>)> = self.first_row(&self.s.get_user, (id,)).await?;
        row.map(|(id, handle)| {
            Ok(UserRecord { id: UserId(from_cql(id, "user id")?), handle: handle.unwrap_or_default() })
        })
        .transpose()
    }

    async fn read_pair(&self, lo: i64, hi: i64, serial: bool) -> StoreResult<Option<PairRow>> {
        let statement = if serial { &self.s.read_pair_serial } else { &self.s.read_pair };
        let row: Option<PairColumns> = self.first_row(statement, (lo, hi)).await?;
        row.map(pair_from_row).transpose()
    }

    /// The pair as seen from `a` (`a`'s flags first). Unknown pairs have no edges.
    async fn pair_from(&self, a: UserId, b: UserId) -> StoreResult<(bool, bool, bool, bool)> {
        let (Ok(a), Ok(b)) = (to_cql(a.get()), to_cql(b.get())) else {
            return Ok((false, false, false, false));
        };
        let (lo, hi) = (a.min(b), a.max(b));
        let state = self.read_pair(lo, hi, false).await?.map(|r| r.state).unwrap_or_default();
        Ok(if a == lo {
            (state.lo_follows, state.lo_blocks, state.hi_follows, state.hi_blocks)
        } else {
            (state.hi_follows, state.hi_blocks, state.lo_follows, state.lo_blocks)
        })
    }

    /// Steps 1–4 of the module docs for one operation.
    async fn change(&self, actor: UserId, other: UserId, op: Op, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let (a, b) = (to_cql(actor.get())?, to_cql(other.get())?);
        let (lo, hi) = (a.min(b), a.max(b));
        let mut intent = None;
        let result = self.change_pair(lo, hi, a == lo, op, &events, &mut intent).await;
        if let Some(seq) = intent
            && result.is_ok()
        {
            // Done with the pair either way; a failed ack only leaves recovery a no-op.
            if let Err(e) = self.intents.ack(&[seq]).await {
                tracing::warn!(error = %e, "graph intent ack failed");
            }
        }
        result
    }

    async fn change_pair(
        &self,
        lo: i64,
        hi: i64,
        actor_is_lo: bool,
        op: Op,
        events: &[Record],
        intent: &mut Option<u64>,
    ) -> StoreResult<EdgeChange> {
        for _ in 0..MAX_ATTEMPTS {
            let row = self.read_pair(lo, hi, true).await?;
            if let Some(row) = &row
                && row.applied < row.version
            {
                // A change nobody finished (or one finishing right now): complete it first,
                // so this decision is made on a settled state.
                self.finish(lo, hi, row).await?;
                continue;
            }
            let current = row.as_ref().map(|r| r.state).unwrap_or_default();
            let next = match decide(current, actor_is_lo, lo == hi, op) {
                Decision::Blocked => return Ok(EdgeChange::Blocked),
                Decision::Unchanged => return Ok(EdgeChange::Unchanged),
                Decision::Change(next) => next,
            };
            if intent.is_none() {
                let mut batch = Staged::logged();
                let seqs = self.intents.stage(&mut batch, &[intent_record(lo, hi)]);
                batch.run(&self.session).await?;
                *intent = seqs.first().copied();
            }
            let pending: Vec<RecordTuple> = events.iter().map(record_to_tuple).collect();
            let n = next;
            let (applied, version) = match &row {
                None => (
                    self.conditional(
                        &self.s.insert_pair,
                        (lo, hi, n.lo_follows, n.hi_follows, n.lo_blocks, n.hi_blocks, pending),
                    )
                    .await?,
                    1,
                ),
                Some(row) => (
                    self.conditional(
                        &self.s.update_pair,
                        (
                            n.lo_follows,
                            n.hi_follows,
                            n.lo_blocks,
                            n.hi_blocks,
                            current.lo_follows,
                            current.hi_follows,
                            row.version + 1,
                            pending,
                            lo,
                            hi,
                            row.version,
                            row.version,
                        ),
                    )
                    .await?,
                    row.version + 1,
                ),
            };
            if !applied {
                continue;
            }
            let row = PairRow { state: next, prev: current, version, applied: version - 1, pending: events.to_vec() };
            let outbox = self.finish(lo, hi, &row).await?;
            return Ok(EdgeChange::Changed { outbox });
        }
        Err(StoreError::Backend(format!("users {lo} and {hi} changed concurrently too often; retry")))
    }

    /// Steps 3–4: derived rows and events, then the applied mark and the counters.
    /// Returns the outbox seqs of the pending events it committed.
    async fn finish(&self, lo: i64, hi: i64, row: &PairRow) -> StoreResult<Vec<u64>> {
        let mut batch = Staged::logged();
        let ts = row.version;
        let mut directions = vec![(lo, hi, row.state.lo_follows)];
        if lo != hi {
            directions.push((hi, lo, row.state.hi_follows));
        }
        for (follower, followee, follows) in directions {
            let (fb, eb) = (edge_bucket(followee), edge_bucket(follower));
            if follows {
                batch.push(&self.s.put_following, (follower, fb, followee, ts));
                batch.push(&self.s.put_follower, (followee, eb, follower, ts));
                batch.push(&self.s.put_bucket, (follower, KIND_FOLLOWING, fb));
                batch.push(&self.s.put_bucket, (followee, KIND_FOLLOWERS, eb));
            } else {
                batch.push(&self.s.del_following, (ts, follower, fb, followee));
                batch.push(&self.s.del_follower, (ts, followee, eb, follower));
            }
        }
        let outbox = self.outbox.stage(&mut batch, &row.pending);
        batch.run(&self.session).await?;

        let won = self.conditional(&self.s.mark_applied, (row.version, lo, hi, row.version, row.version - 1)).await?;
        if won {
            for (user, followers, following) in count_deltas(lo, hi, row.prev, row.state) {
                // Not idempotent, so never retried: a failure leaves the count off by the
                // delta (logged), while the edge itself is complete.
                if let Err(e) = self
                    .session
                    .execute_unpaged(&self.s.add_counts, (Counter(followers), Counter(following), user))
                    .await
                {
                    tracing::warn!(user, followers, following, error = %e, "follower counter update failed");
                }
            }
        }
        Ok(outbox)
    }

    /// Finishes changes whose process died between their LWT and their batch. Driven by
    /// the relay's calls to [`Outbox::pending`], at most every [`RECOVER_EVERY`].
    async fn recover(&self) -> StoreResult<usize> {
        let now = now_ms();
        let mut finished = 0;
        let mut done = Vec::new();
        for entry in self.intents.pending(RECOVER_BATCH).await? {
            let written = (entry.seq >> 22) + starling_ids::EPOCH_MS;
            if now.saturating_sub(written) < INTENT_SETTLE_MS {
                continue;
            }
            let (lo, hi) = intent_pair(&entry.record)?;
            if let Some(row) = self.read_pair(lo, hi, true).await?
                && row.applied < row.version
            {
                self.finish(lo, hi, &row).await?;
                finished += 1;
            }
            done.push(entry.seq);
        }
        self.intents.ack(&done).await?;
        Ok(finished)
    }

    async fn list(&self, owner: UserId, kind: i8, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Ok(owner) = to_cql(owner.get()) else { return Ok(Vec::new()) };
        let from = match after {
            None => 0i64,
            Some(after) => match i64::try_from(after.get()).ok().and_then(|a| a.checked_add(1)) {
                Some(from) => from,
                None => return Ok(Vec::new()),
            },
        };
        let page = if kind == KIND_FOLLOWERS { &self.s.page_followers } else { &self.s.page_following };
        let mut buckets = self
            .session
            .execute_iter(self.s.buckets.clone(), (owner, kind, edge_bucket(from)))
            .await
            .map_err(backend)?
            .rows_stream::<(i32,)>()
            .map_err(backend)?;
        let mut users = Vec::new();
        while let Some((bucket,)) = buckets.try_next().await.map_err(backend)? {
            let want = i32::try_from(limit - users.len()).unwrap_or(i32::MAX);
            let mut rows = self
                .session
                .execute_iter(page.clone(), (owner, bucket, from, want))
                .await
                .map_err(backend)?
                .rows_stream::<(i64,)>()
                .map_err(backend)?;
            while let Some((id,)) = rows.try_next().await.map_err(backend)? {
                users.push(UserId(from_cql(id, "follow list")?));
            }
            if users.len() >= limit {
                break;
            }
        }
        users.truncate(limit);
        Ok(users)
    }

    async fn load_class(&self, user: i64) -> StoreResult<AuthorClass> {
        let row: Option<(Option<bool>,)> = self.first_row(&self.s.get_class, (user,)).await?;
        Ok(if row.and_then(|(c,)| c).unwrap_or(false) { AuthorClass::Celebrity } else { AuthorClass::Ordinary })
    }
}

#[async_trait]
impl Outbox for ScyllaGraphStore {
    #[tracing::instrument(level = "debug", skip_all, fields(limit))]
    async fn pending(&self, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        let due = {
            let mut last =
                self.last_recovery.lock().map_err(|_| StoreError::Backend("recovery lock poisoned".into()))?;
            let due = last.is_none_or(|t| t.elapsed() >= RECOVER_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match self.recover().await {
                Ok(0) => {}
                Ok(finished) => tracing::info!(finished, "finished interrupted graph changes"),
                Err(e) => tracing::warn!(error = %e, "graph recovery sweep failed; the next one retries"),
            }
        }
        self.outbox.pending(limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = seqs.len()))]
    async fn ack(&self, seqs: &[u64]) -> StoreResult<()> {
        self.outbox.ack(seqs).await
    }
}

#[async_trait]
impl GraphStore for ScyllaGraphStore {
    #[tracing::instrument(level = "debug", skip_all, fields(user = user.id.get()))]
    async fn create_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let id = to_cql(user.id.get())?;
        let key = user.handle.to_lowercase();
        let now = now_ms() as i64;
        if !self.conditional(&self.s.claim_handle, (key.as_str(), id, now)).await? {
            let holder: Option<(Option<i64>, Option<i64>)> =
                self.first_row(&self.s.read_handle_serial, (key.as_str(),)).await?;
            let Some((Some(holder), claimed_at)) = holder else { return Ok(false) };
            if self.load_user(holder).await?.is_some() {
                return Ok(false);
            }
            // The holder has no user: this very sign-up retried, one still in flight, or
            // one that died half-way (taken over once it is old enough).
            let orphaned = now.saturating_sub(claimed_at.unwrap_or(0)) >= ORPHAN_CLAIM_MS;
            if holder != id
                && !(orphaned && self.conditional(&self.s.take_handle, (id, now, key.as_str(), holder)).await?)
            {
                return Ok(false);
            }
        }
        if !self.conditional(&self.s.insert_user, (id, user.handle.as_str())).await? {
            // The id exists already: a completed earlier attempt keeps its handle; any other
            // owner of the id means the claim we just made must go.
            let existing = self.load_user(id).await?;
            if existing.is_none_or(|u| u.handle.to_lowercase() != key) {
                self.conditional(&self.s.release_handle, (key.as_str(), id)).await?;
            }
            return Ok(false);
        }
        // A sign-up that stalled for longer than ORPHAN_CLAIM_MS may have lost its claim to
        // another; then its user row must not stay behind with a handle it does not own.
        let holder: Option<(Option<i64>, Option<i64>)> =
            self.first_row(&self.s.read_handle_serial, (key.as_str(),)).await?;
        if holder.and_then(|(h, _)| h) != Some(id) {
            self.session.execute_unpaged(&self.s.delete_user, (id,)).await.map_err(backend)?;
            return Ok(false);
        }
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = id.get()))]
    async fn user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        match i64::try_from(id.get()) {
            Ok(id) => self.load_user(id).await,
            Err(_) => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_by_handle(&self, handle: &str) -> StoreResult<Option<UserRecord>> {
        let key = handle.to_lowercase();
        let holder: Option<(Option<i64>, Option<i64>)> = self.first_row(&self.s.read_handle, (key.as_str(),)).await?;
        let Some((Some(id), _)) = holder else { return Ok(None) };
        // A claim without its user (a sign-up in flight or interrupted) is nobody yet.
        Ok(self.load_user(id).await?.filter(|u| u.handle.to_lowercase() == key))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(follower = follower.get(), followee = followee.get()))]
    async fn follow(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.change(follower, followee, Op::Follow, events).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(follower = follower.get(), followee = followee.get()))]
    async fn unfollow(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.change(follower, followee, Op::Unfollow, events).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(blocker = blocker.get(), blocked = blocked.get()))]
    async fn block(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.change(blocker, blocked, Op::Block, events).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(blocker = blocker.get(), blocked = blocked.get()))]
    async fn unblock(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.change(blocker, blocked, Op::Unblock, events).await
    }

    async fn follows(&self, follower: UserId, followee: UserId) -> StoreResult<bool> {
        Ok(self.pair_from(follower, followee).await?.0)
    }

    async fn blocks(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        Ok(self.pair_from(blocker, blocked).await?.1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(user, KIND_FOLLOWERS, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn following(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(user, KIND_FOLLOWING, after, limit).await
    }

    async fn counts(&self, user: UserId) -> StoreResult<Counts> {
        let Ok(user) = to_cql(user.get()) else { return Ok(Counts::default()) };
        let row: Option<(Option<Counter>, Option<Counter>)> = self.first_row(&self.s.get_counts, (user,)).await?;
        let (followers, following) = row.unwrap_or((None, None));
        // A counter cannot go below zero unless an update was lost or doubled; show 0.
        let n = |c: Option<Counter>| c.map_or(0, |c| u64::try_from(c.0).unwrap_or(0));
        Ok(Counts { followers: n(followers), following: n(following) })
    }

    async fn author_class(&self, user: UserId) -> StoreResult<AuthorClass> {
        match i64::try_from(user.get()) {
            Ok(user) => self.load_class(user).await,
            Err(_) => Ok(AuthorClass::Ordinary),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), ?class))]
    async fn set_author_class(&self, user: UserId, class: AuthorClass, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let user = to_cql(user.get())?;
        if self.load_class(user).await? == class {
            return Ok(EdgeChange::Unchanged);
        }
        // One batch, one write timestamp: the class and the celebrity set agree even when
        // two changes race (the later one wins in both tables).
        let mut batch = Staged::logged();
        let celebrity = class == AuthorClass::Celebrity;
        batch.push(&self.s.set_class, (user, celebrity));
        if celebrity {
            batch.push(&self.s.add_celebrity, (user,));
        } else {
            batch.push(&self.s.remove_celebrity, (user,));
        }
        let outbox = self.outbox.stage(&mut batch, &events);
        batch.run(&self.session).await?;
        Ok(EdgeChange::Changed { outbox })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn celebrities(&self) -> StoreResult<Vec<UserId>> {
        let mut rows = self
            .session
            .execute_iter(self.s.celebrities.clone(), ())
            .await
            .map_err(backend)?
            .rows_stream::<(i64,)>()
            .map_err(backend)?;
        let mut users = Vec::new();
        while let Some((id,)) = rows.try_next().await.map_err(backend)? {
            users.push(UserId(from_cql(id, "celebrity")?));
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: PairState = PairState { lo_follows: false, hi_follows: false, lo_blocks: false, hi_blocks: false };

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
            Some(false),
            None,
            Some(3),
            Some(2),
            Some(vec![record_to_tuple(&record)]),
        ))
        .unwrap();
        assert_eq!(row.state, PairState { lo_follows: true, hi_blocks: true, ..NONE });
        assert_eq!((row.version, row.applied), (3, 2));
        assert_eq!(row.pending, vec![record]);
        let empty = pair_from_row((None, None, None, None, None, None, None, None, None)).unwrap();
        assert_eq!((empty.state, empty.version, empty.applied), (NONE, 0, 0));

        assert_eq!(intent_pair(&intent_record(7, i64::MAX)).unwrap(), (7, i64::MAX));
        let bad = Record { payload: bytes::Bytes::from_static(b"short"), ..intent_record(1, 2) };
        assert!(intent_pair(&bad).is_err());
    }
}
