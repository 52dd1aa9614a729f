//! The post-service's store on ScyllaDB: `posts`, `posts_by_author` (time-bucketed, with
//! the `post_buckets` index), `idempotency`, and outbox stream 1. Reblogs, favourites,
//! replies, counts and the delete of a status with its reblogs are in
//! [`crate::interactions`].
//!
//! The rows of one post (`posts`, `posts_by_author`, and its `replies` and `reblogs` rows)
//! are written once, in one batch stamped `USING TIMESTAMP` a time the writer chose, and
//! deleted once, stamped above it ([`crate::model::delete_timestamp`]). A delete learns that time from
//! the post (`WRITETIME`) or, for a reblog whose batch may still be in flight, from its
//! claim; so a delete shadows the write even when the write lands after it, and whatever
//! the clocks of the nodes and services involved. Post ids are never reused, so nothing
//! writes those rows after their delete.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::MaybeUnset;
use starling_events::Record;
use starling_ids::{IdGenerator, PostId, UserId};
use starling_storage::{
    CreatePost, Deleted, EventsFor, Interactions, Order, Outbox, OutboxEntry, PostRecord, PostStore, Reblogged,
    StoreError, StoreResult, Window,
};

use crate::interactions::Stat;
use crate::model::{
    PostRow, post_bucket, post_from_full_row, post_from_row, post_to_row, to_cql, window_buckets, window_range,
};
use crate::outbox::{OutboxQueue, Stream};
use crate::{ScyllaError, Staged, backend, lwt_applied, now_us, prepare_idempotent, prepare_once, prepare_serial_read};

/// How long an idempotency key stays claimed by a request that has not written its post
/// yet. Longer than any write can take to land (including a batch-log replay after a
/// coordinator failure), so a retry never races the original attempt; short enough that a
/// client retrying after a crash of the service gets its post created within minutes.
pub const CLAIM_TTL_SECS: u32 = 300;

/// Point reads issued at once by `get_posts` (one partition per post).
pub(crate) const GET_CONCURRENCY: usize = 32;
const PAGE_SIZE: i32 = 500;

pub struct ScyllaPostStore {
    pub(crate) session: Arc<Session>,
    pub(crate) outbox: OutboxQueue,
    pub(crate) ix: crate::interactions::Statements,
    pub(crate) notifications: crate::notifications::Notifications,
    insert_post: PreparedStatement,
    insert_by_author: PreparedStatement,
    insert_bucket: PreparedStatement,
    claim_key: PreparedStatement,
    commit_key: PreparedStatement,
    read_key: PreparedStatement,
    get_post: PreparedStatement,
    get_post_written: PreparedStatement,
    delete_post: PreparedStatement,
    delete_by_author: PreparedStatement,
    buckets_newest: PreparedStatement,
    buckets_oldest: PreparedStatement,
    page_newest: PreparedStatement,
    page_oldest: PreparedStatement,
    ids_newest: PreparedStatement,
    ids_oldest: PreparedStatement,
}

const POST_COLUMNS: &str = "id, author, author_handle, body, reply_to, reblog_of";

impl ScyllaPostStore {
    pub(crate) async fn prepare(session: Arc<Session>, seqs: Arc<IdGenerator>) -> Result<Self, ScyllaError> {
        let s = &session;
        let page = |order: &str, columns: &str| {
            format!(
                "SELECT {columns} FROM posts_by_author WHERE author = ? AND bucket = ? AND id >= ? AND id <= ? \
                 ORDER BY id {order} LIMIT ?"
            )
        };
        let mut paged = Vec::new();
        for cql in [
            page("DESC", POST_COLUMNS),
            page("ASC", POST_COLUMNS),
            page("DESC", "id"),
            page("ASC", "id"),
            "SELECT bucket FROM post_buckets WHERE author = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket DESC"
                .to_owned(),
            "SELECT bucket FROM post_buckets WHERE author = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket ASC"
                .to_owned(),
        ] {
            let mut prepared = prepare_idempotent(s, &cql).await?;
            prepared.set_page_size(PAGE_SIZE);
            paged.push(prepared);
        }
        let [page_newest, page_oldest, ids_newest, ids_oldest, buckets_newest, buckets_oldest] =
            <[PreparedStatement; 6]>::try_from(paged).map_err(|_| ScyllaError::Config("statement count".into()))?;
        Ok(ScyllaPostStore {
            outbox: OutboxQueue::prepare(session.clone(), Stream::Posts, seqs).await?,
            ix: crate::interactions::Statements::prepare(s).await?,
            notifications: crate::notifications::Notifications::prepare(session.clone()).await?,
            insert_post: prepare_idempotent(
                s,
                &format!("INSERT INTO posts ({POST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"),
            )
            .await?,
            insert_by_author: prepare_idempotent(
                s,
                "INSERT INTO posts_by_author (author, bucket, id, author_handle, body, reply_to, reblog_of) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            insert_bucket: prepare_idempotent(s, "INSERT INTO post_buckets (author, bucket) VALUES (?, ?)").await?,
            claim_key: prepare_once(
                s,
                &format!(
                    "INSERT INTO idempotency (author, idem_key, post, committed) VALUES (?, ?, ?, false) IF NOT EXISTS \
                     USING TTL {CLAIM_TTL_SECS}"
                ),
            )
            .await?,
            commit_key: prepare_idempotent(
                s,
                "INSERT INTO idempotency (author, idem_key, post, committed) VALUES (?, ?, ?, true)",
            )
            .await?,
            read_key: prepare_serial_read(
                s,
                "SELECT post, committed FROM idempotency WHERE author = ? AND idem_key = ?",
            )
            .await?,
            get_post: prepare_idempotent(s, &format!("SELECT {POST_COLUMNS} FROM posts WHERE id = ?")).await?,
            get_post_written: prepare_idempotent(
                s,
                &format!("SELECT {POST_COLUMNS}, WRITETIME(author) FROM posts WHERE id = ?"),
            )
            .await?,
            delete_post: prepare_idempotent(s, "DELETE FROM posts USING TIMESTAMP ? WHERE id = ?").await?,
            delete_by_author: prepare_idempotent(
                s,
                "DELETE FROM posts_by_author USING TIMESTAMP ? WHERE author = ? AND bucket = ? AND id = ?",
            )
            .await?,
            buckets_newest,
            buckets_oldest,
            page_newest,
            page_oldest,
            ids_newest,
            ids_oldest,
            session,
        })
    }

    pub(crate) async fn load(&self, id: PostId) -> StoreResult<Option<PostRecord>> {
        let Ok(id) = i64::try_from(id.get()) else {
            return Ok(None);
        };
        let row: Option<PostRow> = self.first_row(&self.get_post, (id,)).await?;
        row.map(post_from_full_row).transpose()
    }

    /// The post with the write timestamp of its rows (µs), for deleting them.
    pub(crate) async fn load_written(&self, id: PostId) -> StoreResult<Option<(PostRecord, Option<i64>)>> {
        let Ok(id) = i64::try_from(id.get()) else {
            return Ok(None);
        };
        type Written = (i64, i64, String, String, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<Written> = self.first_row(&self.get_post_written, (id,)).await?;
        row.map(|(id, author, handle, text, reply_to, reblog_of, written)| {
            Ok((post_from_row(id, (author, handle, text, reply_to, reblog_of))?, written))
        })
        .transpose()
    }

    /// Stages `post`'s rows (the post, its author index entry and bucket), stamped `ts`.
    pub(crate) fn stage_post(&self, batch: &mut Staged, post: &PostRecord, ts: i64) -> StoreResult<()> {
        let (id, (author, handle, text, reply_to, reblog_of)) = post_to_row(post)?;
        // Unset, not null: a null would write a tombstone into every post without one.
        let (reply_to, reblog_of) = (MaybeUnset::from_option(reply_to), MaybeUnset::from_option(reblog_of));
        batch.push(&self.insert_post, (id, author, handle.clone(), text.clone(), reply_to, reblog_of, ts));
        batch.push(&self.insert_by_author, (author, post_bucket(id), id, handle, text, reply_to, reblog_of, ts));
        batch.push(&self.insert_bucket, (author, post_bucket(id)));
        Ok(())
    }

    /// Stages the removal of post `id`'s rows (by `author`), stamped `ts`. Needs only the
    /// keys, so a reblog whose batch has not landed yet can be removed ahead of it.
    pub(crate) fn unstage_post(&self, batch: &mut Staged, id: i64, author: i64, ts: i64) {
        batch.push(&self.delete_post, (ts, id));
        batch.push(&self.delete_by_author, (ts, author, post_bucket(id), id));
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

    /// Claims `key` for `post`; `Err(replay)` if an earlier request holds it.
    async fn claim(&self, author: i64, key: &str, post: i64) -> StoreResult<Result<(), CreatePost>> {
        // A claim read as absent right after a refused insert has just expired: try again.
        for _ in 0..3 {
            let result = self.session.execute_unpaged(&self.claim_key, (author, key, post)).await.map_err(backend)?;
            if lwt_applied(result)? {
                return Ok(Ok(()));
            }
            let existing: Option<(Option<i64>, Option<bool>)> = self.first_row(&self.read_key, (author, key)).await?;
            let Some((Some(original), committed)) = existing else { continue };
            let original = self.load(PostId(crate::model::from_cql(original, "idempotency post")?)).await?;
            return match (committed, original) {
                // Committed: the post was created (and may since have been deleted).
                (Some(true), original) => Ok(Err(CreatePost::Replayed(original))),
                // Not marked committed, but its batch has landed.
                (_, Some(original)) => Ok(Err(CreatePost::Replayed(Some(original)))),
                (_, None) => Err(StoreError::Backend(format!(
                    "an earlier request with this idempotency key is in progress or was interrupted; retry after \
                     {CLAIM_TTL_SECS} s"
                ))),
            };
        }
        Err(StoreError::Backend("idempotency key claim kept expiring; retry".into()))
    }

    async fn window_rows<T>(
        &self,
        author: UserId,
        window: Window<PostId>,
        statements: (&PreparedStatement, &PreparedStatement),
    ) -> StoreResult<Vec<T>>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send,
    {
        let Some((lo, hi)) = window_range(&window) else {
            return Ok(Vec::new());
        };
        let author = to_cql(author.get())?;
        let (first, last) = window_buckets((lo, hi), window.order);
        let (buckets, page) = match window.order {
            Order::NewestFirst => (&self.buckets_newest, statements.0),
            Order::OldestFirst => (&self.buckets_oldest, statements.1),
        };
        let buckets: Vec<i32> = self
            .session
            .execute_iter(buckets.clone(), (author, first.min(last), first.max(last)))
            .await
            .map_err(backend)?
            .rows_stream::<(i32,)>()
            .map_err(backend)?
            .map_ok(|(b,)| b)
            .try_collect()
            .await
            .map_err(backend)?;

        let mut rows = Vec::new();
        for bucket in buckets {
            let remaining = window.limit - rows.len();
            let limit = i32::try_from(remaining).unwrap_or(i32::MAX);
            let mut stream = self
                .session
                .execute_iter(page.clone(), (author, bucket, lo, hi, limit))
                .await
                .map_err(backend)?
                .rows_stream::<T>()
                .map_err(backend)?;
            while let Some(row) = stream.try_next().await.map_err(backend)? {
                rows.push(row);
            }
            if rows.len() >= window.limit {
                break;
            }
        }
        rows.truncate(window.limit);
        Ok(rows)
    }
}

#[async_trait]
impl Outbox for ScyllaPostStore {
    #[tracing::instrument(level = "debug", skip_all, fields(limit))]
    async fn pending(&self, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        self.outbox.pending(limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = seqs.len()))]
    async fn ack(&self, seqs: &[u64]) -> StoreResult<()> {
        self.outbox.ack(seqs).await
    }
}

#[async_trait]
impl PostStore for ScyllaPostStore {
    #[tracing::instrument(level = "debug", skip_all, fields(post = post.id.get(), author = post.author.get()))]
    async fn create_post(
        &self,
        post: &PostRecord,
        idempotency_key: Option<&str>,
        events: Vec<Record>,
    ) -> StoreResult<CreatePost> {
        let (id, (author, ..)) = post_to_row(post)?;
        let parent = post.reply_to.map(|p| to_cql(p.get())).transpose()?;
        // The claim makes a replay return before anything below, so a reply is counted
        // once however often its request is retried.
        if let Some(key) = idempotency_key
            && let Err(replay) = self.claim(author, key, id).await?
        {
            return Ok(replay);
        }
        let ts = now_us();
        let mut batch = Staged::logged();
        self.stage_post(&mut batch, post, ts)?;
        if let Some(parent) = parent {
            batch.push(&self.ix.insert_reply, (parent, id, ts));
        }
        if let Some(key) = idempotency_key {
            batch.push(&self.commit_key, (author, key.to_owned(), id));
        }
        let outbox = self.outbox.stage(&mut batch, &events);
        batch.run(&self.session).await?;
        if let Some(parent) = post.reply_to {
            self.count_on(parent, Stat::Replies, 1).await;
        }
        Ok(CreatePost::Created { outbox })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(post = id.get()))]
    async fn delete_post(&self, id: PostId, events: &EventsFor) -> StoreResult<Option<Deleted>> {
        let Some((post, written)) = self.load_written(id).await? else {
            return Ok(None);
        };
        // The idempotency entry stays, so a replay of the creating request answers
        // "created, since deleted" instead of creating the post again.
        let deleted = match post.reblog_of {
            Some(original) => self.unreblog(post, written, original, events).await?,
            None => self.delete_status(post, written, events).await?,
        };
        Ok(Some(deleted))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(post = reblog.id.get(), author = reblog.author.get()))]
    async fn reblog(&self, reblog: &PostRecord, events: Vec<Record>) -> StoreResult<Reblogged> {
        self.reblog_post(reblog, events).await
    }

    async fn reblog_by(&self, original: PostId, user: UserId) -> StoreResult<Option<PostId>> {
        self.claimed_reblog(original, user).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(original = original.get(), limit = window.limit))]
    async fn reblogs(&self, original: PostId, window: Window<PostId>) -> StoreResult<Vec<(PostId, UserId)>> {
        self.reblogs_in(original, window).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(status = status.get(), user = user.get(), on))]
    async fn set_favourite(&self, status: PostId, user: UserId, on: bool) -> StoreResult<Option<bool>> {
        self.favourite(status, user, on).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(status = status.get(), limit))]
    async fn favourited_by(&self, status: PostId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.favouriters(status, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = ids.len()))]
    async fn interactions(&self, ids: &[PostId], viewer: Option<UserId>) -> StoreResult<Vec<Interactions>> {
        let reads: Vec<_> = ids.iter().map(|&id| Box::pin(self.interactions_of(id, viewer))).collect();
        futures::stream::iter(reads).buffered(GET_CONCURRENCY).try_collect().await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(parent = parent.get(), limit))]
    async fn replies(&self, parent: PostId, limit: usize) -> StoreResult<Vec<PostId>> {
        self.replies_to(parent, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = ids.len()))]
    async fn get_posts(&self, ids: &[PostId]) -> StoreResult<Vec<Option<PostRecord>>> {
        // One partition per post: parallel point reads, each routed to its replicas,
        // instead of an IN query that one coordinator would have to fan out.
        let loads: Vec<_> = ids.iter().map(|&id| Box::pin(self.load(id))).collect();
        futures::stream::iter(loads).buffered(GET_CONCURRENCY).try_collect().await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(author = author.get(), limit = window.limit))]
    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostRecord>> {
        let rows: Vec<PostRow> = self.window_rows(author, window, (&self.page_newest, &self.page_oldest)).await?;
        rows.into_iter().map(post_from_full_row).collect()
    }

    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostId>> {
        let rows: Vec<(i64,)> = self.window_rows(author, window, (&self.ids_newest, &self.ids_oldest)).await?;
        rows.into_iter().map(|(id,)| Ok(PostId(crate::model::from_cql(id, "post id")?))).collect()
    }
}
