//! Reblogs, favourites, replies and their counts on ScyllaDB, implemented on
//! [`ScyllaPostStore`] (`migrations/0003_interactions.cql`), and the delete of a status
//! with its reblogs.
//!
//! The embedded store serialises these changes with a lock per status. Here each decision
//! is an LWT on one partition, followed by idempotent writes, like the rest of the crate:
//!
//! - **reblog**: "one reblog per user and status" is the claim row `reblogs_by_user
//!   (original, reblogger)`, taken by an LWT `IF reblog = null AND closed = null` before the
//!   reblog's batch (its post rows, its `reblogs` row, its events). Of concurrent reblogs by
//!   one user exactly one claim applies; the others read it and answer
//!   [`Reblogged::Existing`]. The claim holds the timestamp the batch is written with
//!   (`written_at`). A crash between claim and batch leaves a claim naming a post that never
//!   appears: until the claim is older than [`CLAIM_TTL_SECS`], a new reblog by that user
//!   answers "in progress, retry", then takes the claim over (LWT `IF reblog = <old>`).
//! - **delete of a status** first sets the static `closed` of its `reblogs_by_user` and
//!   `favourites` partitions, by LWT. Every later claim or favourite fails its `closed = null`
//!   condition, and Paxos completes every earlier one before the close applies, so the
//!   claims read after it (at quorum) are all there will ever be. Each claimed reblog is
//!   removed stamped above its `written_at`, so a reblog whose batch lands after the delete
//!   stays deleted; claims and favourites go by range deletes stamped above the close
//!   (every LWT that applied before it wrote with a lower ballot). The status's own rows go
//!   in the last batch: until it lands the status is still there, so a delete that failed
//!   half-way is finished by retrying it. Two concurrent deletes both commit events
//!   (duplicates, as before).
//! - **unreblog** (a delete of a reblog): an LWT deletes the claim `IF reblog = <this
//!   reblog>`; of concurrent unreblogs only one applies, and only that one uncounts it.
//! - **favourites** are LWTs on their row (`IF favourited = null AND closed = null` to add,
//!   `IF EXISTS` to remove): only a change that applied answers "changed" and moves the count.
//! - **replies** are indexed in the reply's own batch and counted after it; a replay of an
//!   idempotency key returns before either. The delete that closed the reply (the first
//!   one) uncounts it.
//! - **counts** are counters (`post_stats`), like follower counts: moved once per change by
//!   whoever won its decision, never retried, so a crash right after the decision or a
//!   counter update that times out leaves a count off by one. Counts move only while their
//!   status exists, and a status's counters are deleted after the status.
//!
//! Not isolated: a reblog whose batch lands after its original's delete is invisible, but
//! its create events are published after the delete's events for it; readers hydrating it
//! find nothing. Between a reblog's claim and its batch, `reblog_by` names a post that does
//! not exist yet (forever, after a crash there, until the user reblogs again).

use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;
use starling_events::Record;
use starling_ids::{PostId, UserId};
use starling_storage::{
    Deleted, EventsFor, Interactions, Order, PostRecord, Reblogged, StoreError, StoreResult, Window,
};

use crate::model::{count, delete_timestamp, from_cql, to_cql, window_range};
use crate::outbox::OutboxQueue;
use crate::posts::{CLAIM_TTL_SECS, GET_CONCURRENCY, ScyllaPostStore};
use crate::{ScyllaError, Staged, backend, now_us, prepare_idempotent, prepare_once, prepare_serial_read};

const PAGE_SIZE: i32 = 1000;
/// Reblogs removed per batch when a status is deleted: a logged batch must stay small
/// (ScyllaDB warns from 128 KiB), and each reblog adds its two deletes and its events.
const REBLOGS_PER_BATCH: usize = 50;
/// Claims of one user on one status that keep changing under a reblog are answered with
/// an error after this many tries.
const MAX_ATTEMPTS: usize = 8;

/// Which of a status's counts a change moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Reblogs = 0,
    Favourites = 1,
    Replies = 2,
}

impl Stat {
    /// The deltas of the `reblogs`, `favourites` and `replies` counters.
    pub fn deltas(self, delta: i64) -> [i64; 3] {
        let mut deltas = [0; 3];
        deltas[self as usize] = delta;
        deltas
    }
}

/// May a reblog claim written at `written_at` (µs) be taken over at `now_us`? Only once
/// its batch cannot land any more (as for idempotency keys); a claim without a time is
/// from no writer of this crate.
pub fn claim_orphaned(written_at: Option<i64>, now_us: i64) -> bool {
    let ttl_us = i64::from(CLAIM_TTL_SECS) * 1_000_000;
    written_at.is_none_or(|w| now_us.saturating_sub(w) > ttl_us)
}

/// A user's claim on reblogging a status: the reblog, and the timestamp of its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Claim {
    reblogger: i64,
    reblog: i64,
    written_at: Option<i64>,
}

/// A claimed reblog as a delete of its original finds it: the post and the write time of
/// its rows, or nothing if its batch has not landed (or never will).
type Found = (Claim, Option<(PostRecord, Option<i64>)>);

/// The latest time a claimed reblog's rows are known to be written at: the claim's, or the
/// post's own if it is later (the two agree unless something else wrote the post).
fn written_at(claim: &Claim, found: &Option<(PostRecord, Option<i64>)>) -> Option<i64> {
    found.as_ref().and_then(|(_, written)| *written).max(claim.written_at)
}

pub(crate) struct Statements {
    pub(crate) insert_reply: PreparedStatement,
    delete_reply: PreparedStatement,
    replies: PreparedStatement,
    insert_reblog: PreparedStatement,
    delete_reblog: PreparedStatement,
    delete_reblogs_of: PreparedStatement,
    reblogs_oldest: PreparedStatement,
    reblogs_newest: PreparedStatement,
    claim: PreparedStatement,
    take_claim: PreparedStatement,
    drop_claim: PreparedStatement,
    read_claim: PreparedStatement,
    read_claim_serial: PreparedStatement,
    claims_of: PreparedStatement,
    claims_closed: PreparedStatement,
    close_claims: PreparedStatement,
    delete_claims: PreparedStatement,
    favourite: PreparedStatement,
    unfavourite: PreparedStatement,
    favourited: PreparedStatement,
    favouriters: PreparedStatement,
    favourites_closed: PreparedStatement,
    close_favourites: PreparedStatement,
    delete_favourites: PreparedStatement,
    add_stats: PreparedStatement,
    get_stats: PreparedStatement,
    delete_stats: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(s: &Session) -> Result<Statements, ScyllaError> {
        let paged = |mut p: PreparedStatement| {
            p.set_page_size(PAGE_SIZE);
            p
        };
        let reblogs = |order: &str| {
            format!(
                "SELECT reblog, reblogger FROM reblogs WHERE original = ? AND reblog >= ? AND reblog <= ? \
                 ORDER BY reblog {order} LIMIT ?"
            )
        };
        let claim_columns = "SELECT reblog, written_at FROM reblogs_by_user WHERE original = ? AND reblogger = ?";
        Ok(Statements {
            insert_reply: prepare_idempotent(s, "INSERT INTO replies (parent, reply) VALUES (?, ?) USING TIMESTAMP ?")
                .await?,
            delete_reply: prepare_idempotent(s, "DELETE FROM replies USING TIMESTAMP ? WHERE parent = ? AND reply = ?")
                .await?,
            replies: paged(prepare_idempotent(s, "SELECT reply FROM replies WHERE parent = ? LIMIT ?").await?),
            insert_reblog: prepare_idempotent(
                s,
                "INSERT INTO reblogs (original, reblog, reblogger) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            delete_reblog: prepare_idempotent(
                s,
                "DELETE FROM reblogs USING TIMESTAMP ? WHERE original = ? AND reblog = ?",
            )
            .await?,
            delete_reblogs_of: prepare_idempotent(s, "DELETE FROM reblogs USING TIMESTAMP ? WHERE original = ?")
                .await?,
            reblogs_oldest: paged(prepare_idempotent(s, &reblogs("ASC")).await?),
            reblogs_newest: paged(prepare_idempotent(s, &reblogs("DESC")).await?),
            claim: prepare_once(
                s,
                "UPDATE reblogs_by_user SET reblog = ?, written_at = ? WHERE original = ? AND reblogger = ? \
                 IF reblog = null AND closed = null",
            )
            .await?,
            take_claim: prepare_once(
                s,
                "UPDATE reblogs_by_user SET reblog = ?, written_at = ? WHERE original = ? AND reblogger = ? \
                 IF reblog = ? AND closed = null",
            )
            .await?,
            drop_claim: prepare_once(
                s,
                "DELETE FROM reblogs_by_user WHERE original = ? AND reblogger = ? IF reblog = ?",
            )
            .await?,
            read_claim: prepare_idempotent(s, claim_columns).await?,
            read_claim_serial: prepare_serial_read(s, claim_columns).await?,
            claims_of: paged(
                prepare_idempotent(s, "SELECT reblogger, reblog, written_at FROM reblogs_by_user WHERE original = ?")
                    .await?,
            ),
            claims_closed: prepare_serial_read(
                s,
                "SELECT closed, WRITETIME(closed) FROM reblogs_by_user WHERE original = ? LIMIT 1",
            )
            .await?,
            close_claims: prepare_once(
                s,
                "UPDATE reblogs_by_user SET closed = true WHERE original = ? IF closed = null",
            )
            .await?,
            delete_claims: prepare_idempotent(
                s,
                "DELETE FROM reblogs_by_user USING TIMESTAMP ? WHERE original = ? AND reblogger >= ?",
            )
            .await?,
            favourite: prepare_once(
                s,
                "UPDATE favourites SET favourited = true WHERE status = ? AND user_id = ? \
                 IF favourited = null AND closed = null",
            )
            .await?,
            unfavourite: prepare_once(s, "DELETE FROM favourites WHERE status = ? AND user_id = ? IF EXISTS").await?,
            favourited: prepare_idempotent(s, "SELECT favourited FROM favourites WHERE status = ? AND user_id = ?")
                .await?,
            favouriters: paged(
                prepare_idempotent(s, "SELECT user_id FROM favourites WHERE status = ? AND user_id > ? LIMIT ?")
                    .await?,
            ),
            favourites_closed: prepare_serial_read(
                s,
                "SELECT closed, WRITETIME(closed) FROM favourites WHERE status = ? LIMIT 1",
            )
            .await?,
            close_favourites: prepare_once(s, "UPDATE favourites SET closed = true WHERE status = ? IF closed = null")
                .await?,
            delete_favourites: prepare_idempotent(
                s,
                "DELETE FROM favourites USING TIMESTAMP ? WHERE status = ? AND user_id >= ?",
            )
            .await?,
            add_stats: prepare_once(
                s,
                "UPDATE post_stats SET reblogs = reblogs + ?, favourites = favourites + ?, replies = replies + ? \
                 WHERE id = ?",
            )
            .await?,
            get_stats: prepare_idempotent(s, "SELECT reblogs, favourites, replies FROM post_stats WHERE id = ?")
                .await?,
            delete_stats: prepare_idempotent(s, "DELETE FROM post_stats WHERE id = ?").await?,
        })
    }
}

/// What a delete has removed so far, in the order it commits them.
struct Removed<'e> {
    events: &'e EventsFor,
    posts: Vec<PostRecord>,
    records: Vec<Record>,
    outbox: Vec<u64>,
}

impl<'e> Removed<'e> {
    fn new(events: &'e EventsFor) -> Self {
        Removed { events, posts: Vec::new(), records: Vec::new(), outbox: Vec::new() }
    }

    /// Stages `post`'s events into `batch`, which removes the post.
    fn push(&mut self, outbox: &OutboxQueue, batch: &mut Staged, post: PostRecord) {
        let records = (self.events)(&post);
        self.outbox.extend(outbox.stage(batch, &records));
        self.records.extend(records);
        self.posts.push(post);
    }

    fn into_deleted(self) -> Deleted {
        Deleted { posts: self.posts, events: self.records, outbox: self.outbox }
    }
}

// ---------------------------------------------------------------------------------------
// Reblogs
// ---------------------------------------------------------------------------------------

impl ScyllaPostStore {
    pub(crate) async fn reblog_post(&self, reblog: &PostRecord, events: Vec<Record>) -> StoreResult<Reblogged> {
        let Some(original) = reblog.reblog_of else {
            return Err(StoreError::Backend(format!("post {} is not a reblog", reblog.id)));
        };
        if !self.is_status(original).await? {
            return Ok(Reblogged::NoOriginal);
        }
        let (o, user, id) = (to_cql(original.get())?, to_cql(reblog.author.get())?, to_cql(reblog.id.get())?);
        // The timestamp of the reblog's rows goes into the claim before they are written,
        // so a delete of the original that finds the claim can stamp its deletes above it.
        let ts = now_us();
        let mut take_over = None;
        for _ in 0..MAX_ATTEMPTS {
            let claimed = match take_over {
                None => self.conditional(&self.ix.claim, (id, ts, o, user)).await?,
                Some(old) => self.conditional(&self.ix.take_claim, (id, ts, o, user, old)).await?,
            };
            if claimed {
                return self.write_reblog(reblog, original, ts, events).await;
            }
            if self.closed_at(&self.ix.claims_closed, o).await?.is_some() {
                // The original is being deleted.
                return Ok(Reblogged::NoOriginal);
            }
            let Some(claim) = self.claim_of(o, user, true).await? else {
                // Unreblogged in the meantime: the claim is free again.
                take_over = None;
                continue;
            };
            if let Some(existing) = self.load(PostId(from_cql(claim.reblog, "reblog claim")?)).await? {
                return Ok(Reblogged::Existing(existing));
            }
            if !claim_orphaned(claim.written_at, now_us()) {
                return Err(StoreError::Backend(format!(
                    "an earlier reblog of {original} by {} is in progress or was interrupted; retry after \
                     {CLAIM_TTL_SECS} s",
                    reblog.author
                )));
            }
            take_over = Some(claim.reblog);
        }
        Err(StoreError::Backend(format!(
            "reblogs of {original} by {} changed concurrently too often; retry",
            reblog.author
        )))
    }

    /// The reblog's batch, after its claim.
    async fn write_reblog(
        &self,
        reblog: &PostRecord,
        original: PostId,
        ts: i64,
        events: Vec<Record>,
    ) -> StoreResult<Reblogged> {
        let (o, id, user) = (to_cql(original.get())?, to_cql(reblog.id.get())?, to_cql(reblog.author.get())?);
        let mut batch = Staged::logged();
        self.stage_post(&mut batch, reblog, ts)?;
        batch.push(&self.ix.insert_reblog, (o, id, user, ts));
        let outbox = self.outbox.stage(&mut batch, &events);
        batch.run(&self.session).await?;
        self.count_on(original, Stat::Reblogs, 1).await;
        Ok(Reblogged::Created { outbox })
    }

    /// Deletes `post`, a reblog of `original`.
    pub(crate) async fn unreblog(
        &self,
        post: PostRecord,
        written: Option<i64>,
        original: PostId,
        events: &EventsFor,
    ) -> StoreResult<Deleted> {
        let (id, author, o) = (to_cql(post.id.get())?, to_cql(post.author.get())?, to_cql(original.get())?);
        // Of concurrent unreblogs only one deletes the claim, and only it uncounts.
        let won = self.conditional(&self.ix.drop_claim, (o, author, id)).await?;
        let ts = delete_timestamp(written, now_us());
        let mut batch = Staged::logged();
        self.unstage_post(&mut batch, id, author, ts);
        batch.push(&self.ix.delete_reblog, (ts, o, id));
        let mut removed = Removed::new(events);
        removed.push(&self.outbox, &mut batch, post);
        batch.run(&self.session).await?;
        if won {
            self.count_on(original, Stat::Reblogs, -1).await;
        }
        Ok(removed.into_deleted())
    }

    pub(crate) async fn claimed_reblog(&self, original: PostId, user: UserId) -> StoreResult<Option<PostId>> {
        let (Ok(o), Ok(user)) = (to_cql(original.get()), to_cql(user.get())) else {
            return Ok(None);
        };
        let claim = self.claim_of(o, user, false).await?;
        claim.map(|c| Ok(PostId(from_cql(c.reblog, "reblog claim")?))).transpose()
    }

    pub(crate) async fn reblogs_in(
        &self,
        original: PostId,
        window: Window<PostId>,
    ) -> StoreResult<Vec<(PostId, UserId)>> {
        let (Some((lo, hi)), Ok(o)) = (window_range(&window), to_cql(original.get())) else {
            return Ok(Vec::new());
        };
        let statement = match window.order {
            Order::OldestFirst => &self.ix.reblogs_oldest,
            Order::NewestFirst => &self.ix.reblogs_newest,
        };
        let limit = i32::try_from(window.limit).unwrap_or(i32::MAX);
        let mut rows = self
            .session
            .execute_iter(statement.clone(), (o, lo, hi, limit))
            .await
            .map_err(backend)?
            .rows_stream::<(i64, Option<i64>)>()
            .map_err(backend)?;
        let mut reblogs = Vec::new();
        while let Some((reblog, reblogger)) = rows.try_next().await.map_err(backend)? {
            let reblogger =
                reblogger.ok_or_else(|| StoreError::Corrupt(format!("reblog {reblog} without reblogger")))?;
            reblogs.push((PostId(from_cql(reblog, "reblog")?), UserId(from_cql(reblogger, "reblogger")?)));
        }
        Ok(reblogs)
    }

    async fn claim_of(&self, original: i64, user: i64, serial: bool) -> StoreResult<Option<Claim>> {
        let statement = if serial { &self.ix.read_claim_serial } else { &self.ix.read_claim };
        let row: Option<(Option<i64>, Option<i64>)> = self.first_row(statement, (original, user)).await?;
        Ok(row.and_then(|(reblog, written_at)| Some(Claim { reblogger: user, reblog: reblog?, written_at })))
    }

    /// Every claim on reblogging `original`, by reblog id. Read after the status is closed
    /// (no claim can be added any more), at quorum: the close's Paxos round completed
    /// every claim that applied before it.
    async fn claims_of(&self, original: i64) -> StoreResult<Vec<Claim>> {
        let mut rows = self
            .session
            .execute_iter(self.ix.claims_of.clone(), (original,))
            .await
            .map_err(backend)?
            .rows_stream::<(Option<i64>, Option<i64>, Option<i64>)>()
            .map_err(backend)?;
        let mut claims = Vec::new();
        while let Some((reblogger, reblog, written_at)) = rows.try_next().await.map_err(backend)? {
            // A partition holding only its static `closed` reads as one row without a key.
            let (Some(reblogger), Some(reblog)) = (reblogger, reblog) else { continue };
            from_cql(reblog, "reblog claim")?;
            claims.push(Claim { reblogger, reblog, written_at });
        }
        claims.sort_by_key(|c| c.reblog);
        Ok(claims)
    }

    /// Is `id` a status (a post that is no reblog)? Only those can be reblogged or favourited.
    async fn is_status(&self, id: PostId) -> StoreResult<bool> {
        Ok(self.load(id).await?.is_some_and(|p| p.reblog_of.is_none()))
    }
}

// ---------------------------------------------------------------------------------------
// Deleting a status
// ---------------------------------------------------------------------------------------

impl ScyllaPostStore {
    /// Deletes `post` (no reblog) with its reblogs, favourites and counts.
    pub(crate) async fn delete_status(
        &self,
        post: PostRecord,
        written: Option<i64>,
        events: &EventsFor,
    ) -> StoreResult<Deleted> {
        let (id, author) = (to_cql(post.id.get())?, to_cql(post.author.get())?);
        let parent = post.reply_to.map(|p| to_cql(p.get())).transpose()?;
        let first = self.close(id).await?;
        let claims = self.claims_of(id).await?;
        let claims_closed = self.closed_at(&self.ix.claims_closed, id).await?;
        let favourites_closed = self.closed_at(&self.ix.favourites_closed, id).await?;
        let reblogs = self.load_reblogs(claims).await?;

        // The status's own batch runs last (see the module docs), but is staged first, so
        // that its events come first in the outbox, before its reblogs'.
        let now = now_us();
        let ts = delete_timestamp(written, now);
        let newest_reblog = reblogs.iter().filter_map(|(claim, found)| written_at(claim, found)).max();
        let mut removed = Removed::new(events);
        let mut last = Staged::logged();
        removed.push(&self.outbox, &mut last, post.clone());
        self.unstage_post(&mut last, id, author, ts);
        if let Some(parent) = parent {
            last.push(&self.ix.delete_reply, (ts, parent, id));
        }
        last.push(&self.ix.delete_reblogs_of, (delete_timestamp(newest_reblog, now), id));
        last.push(&self.ix.delete_claims, (delete_timestamp(claims_closed, now), id, i64::MIN));
        last.push(&self.ix.delete_favourites, (delete_timestamp(favourites_closed, now), id, i64::MIN));

        // Most statuses have few reblogs: they go in the status's batch, and only a long
        // tail in batches of their own ahead of it.
        let (early, tail) = reblogs.split_at(reblogs.len().saturating_sub(REBLOGS_PER_BATCH));
        for chunk in early.chunks(REBLOGS_PER_BATCH) {
            let mut batch = Staged::logged();
            self.stage_reblog_removals(&mut batch, chunk, now, &mut removed);
            batch.run(&self.session).await?;
        }
        self.stage_reblog_removals(&mut last, tail, now, &mut removed);
        last.run(&self.session).await?;

        self.forget_stats(id).await;
        if first && let Some(parent) = post.reply_to {
            self.count_on(parent, Stat::Replies, -1).await;
        }
        Ok(removed.into_deleted())
    }

    /// Closes the status to new reblogs and favourites; true for the delete that closed it
    /// (the first), which alone may move counts that must move once.
    async fn close(&self, id: i64) -> StoreResult<bool> {
        let first = self.conditional(&self.ix.close_claims, (id,)).await?;
        // Closed either way: by this delete or an earlier one.
        self.conditional(&self.ix.close_favourites, (id,)).await?;
        Ok(first)
    }

    /// When `id`'s partition of `statement`'s table was closed, if it was (the write time
    /// of `closed`, µs; `i64::MIN` if the server gave none).
    async fn closed_at(&self, statement: &PreparedStatement, id: i64) -> StoreResult<Option<i64>> {
        let row: Option<(Option<bool>, Option<i64>)> = self.first_row(statement, (id,)).await?;
        Ok(match row {
            Some((Some(true), at)) => Some(at.unwrap_or(i64::MIN)),
            _ => None,
        })
    }

    async fn load_reblogs(&self, claims: Vec<Claim>) -> StoreResult<Vec<Found>> {
        // Claimed ids were checked to be at least 0 when read.
        let loads: Vec<_> = claims.iter().map(|c| Box::pin(self.load_written(PostId(c.reblog as u64)))).collect();
        let found: Vec<_> = futures::stream::iter(loads).buffered(GET_CONCURRENCY).try_collect().await?;
        Ok(claims.into_iter().zip(found).collect())
    }

    /// Stages the removal of claimed reblogs, stamped above their claims: a reblog whose
    /// batch has not landed is removed ahead of it (its keys are in the claim), but has no
    /// post yet to commit events for.
    fn stage_reblog_removals(&self, batch: &mut Staged, reblogs: &[Found], now: i64, removed: &mut Removed<'_>) {
        for (claim, found) in reblogs {
            let ts = delete_timestamp(written_at(claim, found), now);
            self.unstage_post(batch, claim.reblog, claim.reblogger, ts);
            if let Some((reblog, _)) = found {
                removed.push(&self.outbox, batch, reblog.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Favourites, replies, counts
// ---------------------------------------------------------------------------------------

impl ScyllaPostStore {
    pub(crate) async fn favourite(&self, status: PostId, user: UserId, on: bool) -> StoreResult<Option<bool>> {
        if !self.is_status(status).await? {
            return Ok(None);
        }
        let (s, u) = (to_cql(status.get())?, to_cql(user.get())?);
        let statement = if on { &self.ix.favourite } else { &self.ix.unfavourite };
        if !self.conditional(statement, (s, u)).await? {
            // Already so; or the status is being deleted, and then it is gone for everyone.
            let closed = self.closed_at(&self.ix.favourites_closed, s).await?.is_some();
            return Ok((!closed).then_some(false));
        }
        self.count_on(status, Stat::Favourites, if on { 1 } else { -1 }).await;
        Ok(Some(true))
    }

    pub(crate) async fn favouriters(
        &self,
        status: PostId,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>> {
        let Ok(s) = to_cql(status.get()) else { return Ok(Vec::new()) };
        // User ids are at least 0; nothing storable comes after one above i64::MAX.
        let from = match after.map(|a| i64::try_from(a.get())) {
            None => -1,
            Some(Ok(after)) => after,
            Some(Err(_)) => return Ok(Vec::new()),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let want = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut rows = self
            .session
            .execute_iter(self.ix.favouriters.clone(), (s, from, want))
            .await
            .map_err(backend)?
            .rows_stream::<(i64,)>()
            .map_err(backend)?;
        let mut users = Vec::new();
        while let Some((user,)) = rows.try_next().await.map_err(backend)? {
            users.push(UserId(from_cql(user, "favourite")?));
        }
        Ok(users)
    }

    pub(crate) async fn replies_to(&self, parent: PostId, limit: usize) -> StoreResult<Vec<PostId>> {
        let Ok(p) = to_cql(parent.get()) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let want = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut rows = self
            .session
            .execute_iter(self.ix.replies.clone(), (p, want))
            .await
            .map_err(backend)?
            .rows_stream::<(i64,)>()
            .map_err(backend)?;
        let mut replies = Vec::new();
        while let Some((reply,)) = rows.try_next().await.map_err(backend)? {
            replies.push(PostId(from_cql(reply, "reply")?));
        }
        Ok(replies)
    }

    /// One status's counts and what `viewer` did to it: three point reads at once.
    pub(crate) async fn interactions_of(&self, id: PostId, viewer: Option<UserId>) -> StoreResult<Interactions> {
        let Ok(s) = to_cql(id.get()) else { return Ok(Interactions::default()) };
        let viewer = viewer.and_then(|v| to_cql(v.get()).ok());
        let stats = self.first_row::<(Option<Counter>, Option<Counter>, Option<Counter>)>(&self.ix.get_stats, (s,));
        let reblogged = async {
            match viewer {
                Some(v) => Ok(self.claim_of(s, v, false).await?.is_some()),
                None => Ok::<_, StoreError>(false),
            }
        };
        let favourited = async {
            match viewer {
                Some(v) => {
                    let row: Option<(Option<bool>,)> = self.first_row(&self.ix.favourited, (s, v)).await?;
                    Ok(row.is_some_and(|(f,)| f == Some(true)))
                }
                None => Ok::<_, StoreError>(false),
            }
        };
        let (stats, reblogged, favourited) = futures::try_join!(stats, reblogged, favourited)?;
        let (reblogs, favourites, replies) = stats.unwrap_or_default();
        let n = |c: Option<Counter>| count(c.map(|c| c.0));
        Ok(Interactions { reblogs: n(reblogs), favourites: n(favourites), replies: n(replies), reblogged, favourited })
    }

    /// Moves one of `status`'s counts, if the status still exists (one that is gone has no
    /// counts to move). Counter updates are not idempotent, so never retried: a failure
    /// leaves the count off by `delta` (logged), while the change itself is complete.
    pub(crate) async fn count_on(&self, status: PostId, stat: Stat, delta: i64) {
        let result = async {
            if self.load(status).await?.is_none() {
                return Ok(());
            }
            let [reblogs, favourites, replies] = stat.deltas(delta);
            let values = (Counter(reblogs), Counter(favourites), Counter(replies), to_cql(status.get())?);
            self.session.execute_unpaged(&self.ix.add_stats, values).await.map_err(backend)?;
            Ok::<_, StoreError>(())
        };
        if let Err(e) = result.await {
            tracing::warn!(status = status.get(), ?stat, delta, error = %e, "post counter update failed");
        }
    }

    /// Deletes a deleted status's counters. A failure leaves counts on a post nobody reads.
    async fn forget_stats(&self, id: i64) {
        if let Err(e) = self.session.execute_unpaged(&self.ix.delete_stats, (id,)).await {
            tracing::warn!(status = id, error = %e, "post counters of a deleted status remain");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stat_moves_its_own_counter() {
        assert_eq!(Stat::Reblogs.deltas(1), [1, 0, 0]);
        assert_eq!(Stat::Favourites.deltas(-1), [0, -1, 0]);
        assert_eq!(Stat::Replies.deltas(1), [0, 0, 1]);
    }

    #[test]
    fn claims_are_taken_over_only_once_their_batch_cannot_land() {
        let ttl_us = i64::from(CLAIM_TTL_SECS) * 1_000_000;
        let now = 10 * ttl_us;
        assert!(!claim_orphaned(Some(now), now), "just claimed");
        assert!(!claim_orphaned(Some(now - ttl_us), now), "at the limit");
        assert!(claim_orphaned(Some(now - ttl_us - 1), now));
        assert!(!claim_orphaned(Some(now + 5_000_000), now), "from a clock running ahead");
        assert!(claim_orphaned(None, now), "no time: written by nobody we know");
    }
}
