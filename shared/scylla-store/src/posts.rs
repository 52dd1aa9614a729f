//! The post-service's store on ScyllaDB: `posts`, `posts_by_author` (time-bucketed, with
//! the `post_buckets` index), `idempotency`, and outbox stream 1.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use starling_events::Record;
use starling_ids::{IdGenerator, PostId, UserId};
use starling_storage::{
    CreatePost, Order, Outbox, OutboxEntry, PostRecord, PostStore, StoreError, StoreResult, Window,
};

use crate::model::{PostColumns, post_bucket, post_from_row, post_to_row, to_cql, window_buckets, window_range};
use crate::outbox::{OutboxQueue, Stream};
use crate::{ScyllaError, Staged, backend, lwt_applied, prepare_idempotent, prepare_once, prepare_serial_read};

/// How long an idempotency key stays claimed by a request that has not written its post
/// yet. Longer than any write can take to land (including a batch-log replay after a
/// coordinator failure), so a retry never races the original attempt; short enough that a
/// client retrying after a crash of the service gets its post created within minutes.
pub const CLAIM_TTL_SECS: u32 = 300;

/// Point reads issued at once by `get_posts` (one partition per post).
const GET_CONCURRENCY: usize = 32;
const PAGE_SIZE: i32 = 500;

pub struct ScyllaPostStore {
    session: Arc<Session>,
    outbox: OutboxQueue,
    insert_post: PreparedStatement,
    insert_by_author: PreparedStatement,
    insert_bucket: PreparedStatement,
    claim_key: PreparedStatement,
    commit_key: PreparedStatement,
    read_key: PreparedStatement,
    get_post: PreparedStatement,
    delete_post: PreparedStatement,
    delete_by_author: PreparedStatement,
    buckets_newest: PreparedStatement,
    buckets_oldest: PreparedStatement,
    page_newest: PreparedStatement,
    page_oldest: PreparedStatement,
    ids_newest: PreparedStatement,
    ids_oldest: PreparedStatement,
}

const POST_COLUMNS: &str = "id, author, author_handle, body, reply_to";

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
            insert_post: prepare_idempotent(
                s,
                "INSERT INTO posts (id, author, author_handle, body, reply_to) VALUES (?, ?, ?, ?, ?)",
            )
            .await?,
            insert_by_author: prepare_idempotent(
                s,
                "INSERT INTO posts_by_author (author, bucket, id, author_handle, body, reply_to) VALUES (?, ?, ?, ?, ?, ?)",
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
            delete_post: prepare_idempotent(s, "DELETE FROM posts WHERE id = ?").await?,
            delete_by_author: prepare_idempotent(
                s,
                "DELETE FROM posts_by_author WHERE author = ? AND bucket = ? AND id = ?",
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

    async fn load(&self, id: PostId) -> StoreResult<Option<PostRecord>> {
        let Ok(id) = i64::try_from(id.get()) else {
            return Ok(None);
        };
        let row = self
            .session
            .execute_unpaged(&self.get_post, (id,))
            .await
            .map_err(backend)?
            .into_rows_result()
            .map_err(backend)?
            .maybe_first_row::<(i64, i64, String, String, Option<i64>)>()
            .map_err(backend)?;
        row.map(|(id, author, handle, text, reply_to)| post_from_row(id, (author, handle, text, reply_to))).transpose()
    }

    /// Claims `key` for `post`; `Err(replay)` if an earlier request holds it.
    async fn claim(&self, author: i64, key: &str, post: i64) -> StoreResult<Result<(), CreatePost>> {
        // A claim read as absent right after a refused insert has just expired: try again.
        for _ in 0..3 {
            let result = self.session.execute_unpaged(&self.claim_key, (author, key, post)).await.map_err(backend)?;
            if lwt_applied(result)? {
                return Ok(Ok(()));
            }
            let existing = self
                .session
                .execute_unpaged(&self.read_key, (author, key))
                .await
                .map_err(backend)?
                .into_rows_result()
                .map_err(backend)?
                .maybe_first_row::<(Option<i64>, Option<bool>)>()
                .map_err(backend)?;
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
        let (id, (author, handle, text, reply_to)): (i64, PostColumns) = post_to_row(post)?;
        if let Some(key) = idempotency_key
            && let Err(replay) = self.claim(author, key, id).await?
        {
            return Ok(replay);
        }
        let mut batch = Staged::logged();
        batch.push(&self.insert_post, (id, author, handle.clone(), text.clone(), reply_to));
        batch.push(&self.insert_by_author, (author, post_bucket(id), id, handle, text, reply_to));
        batch.push(&self.insert_bucket, (author, post_bucket(id)));
        if let Some(key) = idempotency_key {
            batch.push(&self.commit_key, (author, key.to_owned(), id));
        }
        let outbox = self.outbox.stage(&mut batch, &events);
        batch.run(&self.session).await?;
        Ok(CreatePost::Created { outbox })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(post = id.get()))]
    async fn delete_post(&self, id: PostId, events: Vec<Record>) -> StoreResult<Option<(PostRecord, Vec<u64>)>> {
        let Some(post) = self.load(id).await? else {
            return Ok(None);
        };
        let (id, author) = (to_cql(post.id.get())?, to_cql(post.author.get())?);
        // The idempotency entry stays, so a replay of the creating request answers
        // "created, since deleted" instead of creating the post again.
        let mut batch = Staged::logged();
        batch.push(&self.delete_post, (id,));
        batch.push(&self.delete_by_author, (author, post_bucket(id), id));
        let outbox = self.outbox.stage(&mut batch, &events);
        batch.run(&self.session).await?;
        Ok(Some((post, outbox)))
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
        let rows: Vec<(i64, i64, String, String, Option<i64>)> =
            self.window_rows(author, window, (&self.page_newest, &self.page_oldest)).await?;
        rows.into_iter()
            .map(|(id, author, handle, text, reply)| post_from_row(id, (author, handle, text, reply)))
            .collect()
    }

    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostId>> {
        let rows: Vec<(i64,)> = self.window_rows(author, window, (&self.ids_newest, &self.ids_oldest)).await?;
        rows.into_iter().map(|(id,)| Ok(PostId(crate::model::from_cql(id, "post id")?))).collect()
    }
}
