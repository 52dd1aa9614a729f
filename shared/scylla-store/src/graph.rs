//! The graph-service's store on ScyllaDB.
//!
//! Every follow, block and mute between two users is one row of `pairs`, keyed by the
//! unordered pair, so the trait's read-check-write operations ("refuse if either blocks the
//! other", "unchanged if already following", "a block removes both follows", "unchanged if
//! already muted") are decided by one lightweight transaction on one partition, serialised
//! per pair by its `version`. What a change does to the row is decided in `pairs.rs`.
//!
//! A change runs in four steps:
//! 1. an *intent* (the pair's key) goes into outbox stream 3, so recovery can find the pair;
//! 2. an LWT moves the row to its new state, `version + 1`, with the events in `pending`;
//! 3. a LOGGED BATCH writes the derived rows (follow and mute lists, with `USING TIMESTAMP
//!    version` so an older state landing late cannot overwrite a newer one) and the events
//!    into outbox stream 2;
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
use starling_events::Record;
use starling_ids::{IdGenerator, UserId};
use starling_storage::{
    AuthorClass, Counts, EdgeChange, GraphStore, Outbox, OutboxEntry, StoreError, StoreResult, UserRecord,
};

use crate::model::{RecordTuple, edge_bucket, from_cql, record_to_tuple, to_cql};
use crate::outbox::{OutboxQueue, Stream};
pub use crate::pairs::{Decision, Op, PairState, count_deltas, decide};
use crate::pairs::{PAIR_COLUMNS, PairColumns, PairRow, Side, intent_pair, intent_record, mute_changes, pair_from_row};
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
/// Kinds of list in `follow_buckets`.
const KIND_FOLLOWERS: i8 = 1;
const KIND_FOLLOWING: i8 = 2;
const KIND_MUTES: i8 = 3;
const KIND_MUTERS: i8 = 4;

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
    pub(crate) notifications: crate::notifications::Notifications,
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
    put_mute: PreparedStatement,
    put_muter: PreparedStatement,
    del_mute: PreparedStatement,
    del_muter: PreparedStatement,
    put_bucket: PreparedStatement,
    buckets: PreparedStatement,
    page_followers: PreparedStatement,
    page_following: PreparedStatement,
    page_mutes: PreparedStatement,
    page_muters: PreparedStatement,
    add_counts: PreparedStatement,
    get_counts: PreparedStatement,
    get_class: PreparedStatement,
    set_class: PreparedStatement,
    add_celebrity: PreparedStatement,
    remove_celebrity: PreparedStatement,
    celebrities: PreparedStatement,
}

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
                "INSERT INTO pairs (lo, hi, lo_follows, hi_follows, lo_blocks, hi_blocks, lo_mutes, hi_mutes, \
                 prev_lo_follows, prev_hi_follows, prev_lo_mutes, prev_hi_mutes, version, applied, pending) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, false, false, false, false, 1, 0, ?) IF NOT EXISTS",
            )
            .await?,
            update_pair: prepare_once(
                s,
                "UPDATE pairs SET lo_follows = ?, hi_follows = ?, lo_blocks = ?, hi_blocks = ?, lo_mutes = ?, \
                 hi_mutes = ?, prev_lo_follows = ?, prev_hi_follows = ?, prev_lo_mutes = ?, prev_hi_mutes = ?, \
                 version = ?, pending = ? WHERE lo = ? AND hi = ? IF version = ? AND applied = ?",
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
            put_mute: prepare_idempotent(
                s,
                "INSERT INTO mutes (muter, bucket, muted) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            put_muter: prepare_idempotent(
                s,
                "INSERT INTO muted_by (muted, bucket, muter) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            del_mute: prepare_idempotent(
                s,
                "DELETE FROM mutes USING TIMESTAMP ? WHERE muter = ? AND bucket = ? AND muted = ?",
            )
            .await?,
            del_muter: prepare_idempotent(
                s,
                "DELETE FROM muted_by USING TIMESTAMP ? WHERE muted = ? AND bucket = ? AND muter = ?",
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
            page_mutes: paged(
                prepare_idempotent(s, "SELECT muted FROM mutes WHERE muter = ? AND bucket = ? AND muted >= ? LIMIT ?")
                    .await?,
            ),
            page_muters: paged(
                prepare_idempotent(
                    s,
                    "SELECT muter FROM muted_by WHERE muted = ? AND bucket = ? AND muter >= ? LIMIT ?",
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
            notifications: crate::notifications::Notifications::prepare(session.clone()).await?,
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
        crate::first_row(&self.session, statement, values).await
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

    /// What `a` does to `b`. Unknown pairs have no edges.
    async fn side_of(&self, a: UserId, b: UserId) -> StoreResult<Side> {
        let (Ok(a), Ok(b)) = (to_cql(a.get()), to_cql(b.get())) else {
            return Ok(PairState::default().side(true));
        };
        let (lo, hi) = (a.min(b), a.max(b));
        let state = self.read_pair(lo, hi, false).await?.map(|r| r.state).unwrap_or_default();
        Ok(state.side(a == lo))
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
                        (lo, hi, n.lo_follows, n.hi_follows, n.lo_blocks, n.hi_blocks, n.lo_mutes, n.hi_mutes, pending),
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
                            n.lo_mutes,
                            n.hi_mutes,
                            current.lo_follows,
                            current.hi_follows,
                            current.lo_mutes,
                            current.hi_mutes,
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
        for (muter, muted, mutes) in mute_changes(lo, hi, row.prev, row.state) {
            let (mb, rb) = (edge_bucket(muted), edge_bucket(muter));
            if mutes {
                batch.push(&self.s.put_mute, (muter, mb, muted, ts));
                batch.push(&self.s.put_muter, (muted, rb, muter, ts));
                batch.push(&self.s.put_bucket, (muter, KIND_MUTES, mb));
                batch.push(&self.s.put_bucket, (muted, KIND_MUTERS, rb));
            } else {
                batch.push(&self.s.del_mute, (ts, muter, mb, muted));
                batch.push(&self.s.del_muter, (ts, muted, rb, muter));
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

    /// One of `owner`'s lists (a `KIND_*` of `follow_buckets`), ascending, strictly after `after`.
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
        let page = match kind {
            KIND_FOLLOWERS => &self.s.page_followers,
            KIND_FOLLOWING => &self.s.page_following,
            KIND_MUTES => &self.s.page_mutes,
            _ => &self.s.page_muters,
        };
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
        Ok(self.side_of(follower, followee).await?.follows)
    }

    async fn blocks(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        Ok(self.side_of(blocker, blocked).await?.blocks)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(user, KIND_FOLLOWERS, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn following(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(user, KIND_FOLLOWING, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(muter = muter.get(), muted = muted.get()))]
    async fn mute(&self, muter: UserId, muted: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.change(muter, muted, Op::Mute, events).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(muter = muter.get(), muted = muted.get()))]
    async fn unmute(&self, muter: UserId, muted: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.change(muter, muted, Op::Unmute, events).await
    }

    async fn mutes(&self, muter: UserId, muted: UserId) -> StoreResult<bool> {
        Ok(self.side_of(muter, muted).await?.mutes)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn muted(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(user, KIND_MUTES, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn muters(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(user, KIND_MUTERS, after, limit).await
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
