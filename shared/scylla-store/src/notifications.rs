//! [`NotificationStore`] on ScyllaDB, for both stores: `notification_keys`,
//! `notifications` (time-bucketed, with the `notification_buckets` index), from
//! `migrations/0004_notifications.cql`. Like the embedded store, the post store and the
//! graph store share these tables, so each lists every notification of a recipient (the
//! post-service merges the two lists by id).
//!
//! # One notification per key
//!
//! A key `(recipient, kind, account, status)` is one row of `notification_keys`, in a
//! partition of its own, written only by lightweight transactions (never mixed with plain
//! writes, whose timestamps could order them wrongly against the LWTs). The row names the
//! notification (`id`) and the write timestamp of its list row (`written_at`, µs); the list
//! row itself, `notifications (recipient, bucket, id)`, is the notification. There is no
//! "committed" flag to rewrite after the claim: whether a claim's notification exists is
//! read from the list.
//!
//! - **add**: `INSERT ... IF NOT EXISTS` claims the key; of concurrent adds of one key only
//!   one applies. The winner then writes the bucket index row and the list row (`USING
//!   TIMESTAMP written_at`), in that order, so a listed row is always in an indexed bucket
//!   (a crash between the two leaves an empty bucket, which costs one read). A refused add
//!   returns `false`, unless the claim it lost to is an orphan: older than
//!   [`ORPHAN_CLAIM_US`] and without its list row (the adder died between the claim and the
//!   row, or a remove died between removing the row and the key). Then `UPDATE ... IF id =
//!   <orphan>` takes the key over, so a lost notification blocks its key for a minute, not
//!   forever. A crash between the claim and the row loses that notification, which the
//!   trait allows.
//! - **remove**: a SERIAL read finds the key's notification; its list row is deleted stamped
//!   above `written_at` ([`crate::model::delete_timestamp`]), then `DELETE ... IF id =
//!   <it>` removes the key; only one of concurrent removes applies and returns `true`.
//!   Because the delete is stamped above the row's planned write, it also shadows the row of
//!   an add whose claim has applied but whose row has not landed yet (that add is ordered
//!   before the remove). Removing the row first means that a crash in between leaves a key
//!   without a row, an orphan that the next add takes over, never a listed notification
//!   whose key is gone (which a later add would duplicate).
//!
//! What is not exact: an add whose list write stalls for longer than [`ORPHAN_CLAIM_US`]
//! (far beyond the driver's request timeout) can land after another add took its key over,
//! leaving two notifications for the key, of which a remove takes back only the newer. The
//! age of a claim is measured against the clock of whichever service reads it, so clocks
//! apart by about a minute shorten or lengthen the wait for an orphan.
//!
//! # Partitions
//!
//! A recipient's list is bucketed by the id clock (~18.6 h,
//! [`NOTIFICATION_BUCKET_SHIFT`](crate::model::NOTIFICATION_BUCKET_SHIFT)): what fills it
//! is everyone else's activity, so it is narrower than an author's post buckets (see the
//! constant for the bound). The bucket index partition grows by at most one
//! row per bucket (~470 a year). A page reads the index lazily in the window's order and
//! stops at the first bucket that fills it, so old buckets are never listed for a recent
//! page.

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::MaybeUnset;
use starling_ids::{PostId, UserId};
use starling_storage::{
    NotificationKind, NotificationRecord, NotificationStore, Order, StoreError, StoreResult, Window,
};

use crate::model::{
    NotificationKey, NotificationRow, bucket_span, delete_timestamp, id_range, notification_bucket,
    notification_from_row, notification_key, to_cql,
};
use crate::{
    ScyllaError, backend, first_row, lwt_applied, now_us, prepare_idempotent, prepare_once, prepare_serial_read,
};

/// A claim this old (µs) whose notification is not in the list was left by an add or a
/// remove that died half-way, and may be taken over.
pub const ORPHAN_CLAIM_US: i64 = 60_000_000;
/// A claim that keeps changing under an add (removed, taken over) is retried this often.
const MAX_ATTEMPTS: usize = 3;
const PAGE_SIZE: i32 = 500;
/// Buckets fetched per page of the index: most windows are served by the first few.
const BUCKET_PAGE_SIZE: i32 = 16;

const KEY_WHERE: &str = "recipient = ? AND kind = ? AND account = ? AND status = ?";

/// The notification statements, held by both stores.
pub(crate) struct Notifications {
    session: Arc<Session>,
    claim: PreparedStatement,
    read_key: PreparedStatement,
    take_over: PreparedStatement,
    release: PreparedStatement,
    put_bucket: PreparedStatement,
    put_row: PreparedStatement,
    has_row: PreparedStatement,
    delete_row: PreparedStatement,
    buckets_newest: PreparedStatement,
    buckets_oldest: PreparedStatement,
    page_newest: PreparedStatement,
    page_oldest: PreparedStatement,
}

impl Notifications {
    pub(crate) async fn prepare(session: Arc<Session>) -> Result<Notifications, ScyllaError> {
        let s = &session;
        let paged = |mut p: PreparedStatement, size: i32| {
            p.set_page_size(size);
            p
        };
        let page = |order: &str| {
            format!(
                "SELECT id, kind, account, status FROM notifications WHERE recipient = ? AND bucket = ? AND id >= ? \
                 AND id <= ? ORDER BY id {order} LIMIT ?"
            )
        };
        let buckets = |order: &str| {
            format!(
                "SELECT bucket FROM notification_buckets WHERE recipient = ? AND bucket >= ? AND bucket <= ? \
                 ORDER BY bucket {order}"
            )
        };
        Ok(Notifications {
            claim: prepare_once(
                s,
                "INSERT INTO notification_keys (recipient, kind, account, status, id, written_at) \
                 VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            read_key: prepare_serial_read(
                s,
                &format!("SELECT id, written_at FROM notification_keys WHERE {KEY_WHERE}"),
            )
            .await?,
            take_over: prepare_once(
                s,
                &format!("UPDATE notification_keys SET id = ?, written_at = ? WHERE {KEY_WHERE} IF id = ?"),
            )
            .await?,
            release: prepare_once(s, &format!("DELETE FROM notification_keys WHERE {KEY_WHERE} IF id = ?")).await?,
            put_bucket: prepare_idempotent(s, "INSERT INTO notification_buckets (recipient, bucket) VALUES (?, ?)")
                .await?,
            put_row: prepare_idempotent(
                s,
                "INSERT INTO notifications (recipient, bucket, id, kind, account, status) VALUES (?, ?, ?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            has_row: prepare_idempotent(
                s,
                "SELECT id FROM notifications WHERE recipient = ? AND bucket = ? AND id = ?",
            )
            .await?,
            delete_row: prepare_idempotent(
                s,
                "DELETE FROM notifications USING TIMESTAMP ? WHERE recipient = ? AND bucket = ? AND id = ?",
            )
            .await?,
            buckets_newest: paged(prepare_idempotent(s, &buckets("DESC")).await?, BUCKET_PAGE_SIZE),
            buckets_oldest: paged(prepare_idempotent(s, &buckets("ASC")).await?, BUCKET_PAGE_SIZE),
            page_newest: paged(prepare_idempotent(s, &page("DESC")).await?, PAGE_SIZE),
            page_oldest: paged(prepare_idempotent(s, &page("ASC")).await?, PAGE_SIZE),
            session,
        })
    }

    async fn conditional(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> StoreResult<bool> {
        lwt_applied(self.session.execute_unpaged(statement, values).await.map_err(backend)?)
    }

    /// The key's claim, read through Paxos: its notification id and `written_at`.
    async fn holder(&self, key: NotificationKey) -> StoreResult<Option<(i64, Option<i64>)>> {
        let row: Option<(Option<i64>, Option<i64>)> = first_row(&self.session, &self.read_key, key).await?;
        row.map(|(id, written_at)| {
            let id = id.ok_or_else(|| StoreError::Corrupt("notification key without an id".into()))?;
            Ok((id, written_at))
        })
        .transpose()
    }

    async fn listed(&self, recipient: i64, id: i64) -> StoreResult<bool> {
        let row: Option<(i64,)> =
            first_row(&self.session, &self.has_row, (recipient, notification_bucket(id), id)).await?;
        Ok(row.is_some())
    }

    /// Writes the list row of a notification whose key this add holds: the bucket first, so
    /// a listed row is always in an indexed bucket.
    async fn write(&self, n: &NotificationRecord, key: NotificationKey, id: i64, written_at: i64) -> StoreResult<()> {
        let (recipient, kind, account, _) = key;
        let bucket = notification_bucket(id);
        // Unset, not null: a null would write a tombstone into every follow notification.
        let status = MaybeUnset::from_option(n.status.map(|s| to_cql(s.get())).transpose()?);
        self.session.execute_unpaged(&self.put_bucket, (recipient, bucket)).await.map_err(backend)?;
        self.session
            .execute_unpaged(&self.put_row, (recipient, bucket, id, kind, account, status, written_at))
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn add(&self, n: &NotificationRecord) -> StoreResult<bool> {
        let key = notification_key(n.recipient, n.kind, n.account, n.status)?;
        let (recipient, kind, account, status) = key;
        let id = to_cql(n.id)?;
        for _ in 0..MAX_ATTEMPTS {
            let written_at = now_us();
            if self.conditional(&self.claim, (recipient, kind, account, status, id, written_at)).await? {
                self.write(n, key, id, written_at).await?;
                return Ok(true);
            }
            // Removed since the claim was refused: claim again.
            let Some((holder, held_since)) = self.holder(key).await? else { continue };
            // In flight, or stored: either way this add stores nothing.
            let young = now_us().saturating_sub(held_since.unwrap_or(0)) < ORPHAN_CLAIM_US;
            if young || self.listed(recipient, holder).await? {
                return Ok(false);
            }
            let written_at = now_us();
            let values = (id, written_at, recipient, kind, account, status, holder);
            if self.conditional(&self.take_over, values).await? {
                self.write(n, key, id, written_at).await?;
                return Ok(true);
            }
            // Another add took it over, or a remove released it, meanwhile: look again.
        }
        Err(StoreError::Backend("the notification's key kept changing under this add; retry".into()))
    }

    pub(crate) async fn remove(
        &self,
        recipient: UserId,
        kind: NotificationKind,
        account: UserId,
        status: Option<PostId>,
    ) -> StoreResult<bool> {
        // Ids that no column can hold were never stored.
        let Ok(key) = notification_key(recipient, kind, account, status) else {
            return Ok(false);
        };
        let Some((holder, written_at)) = self.holder(key).await? else {
            return Ok(false);
        };
        // The row first (see the module docs): stamped above its write, even one in flight.
        let (r, kind, account, status) = key;
        let ts = delete_timestamp(written_at, now_us());
        self.session
            .execute_unpaged(&self.delete_row, (ts, r, notification_bucket(holder), holder))
            .await
            .map_err(backend)?;
        self.conditional(&self.release, (r, kind, account, status, holder)).await
    }

    pub(crate) async fn list(&self, recipient: UserId, window: Window<u64>) -> StoreResult<Vec<NotificationRecord>> {
        let Some((lo, hi)) = id_range(window.before, window.after, window.limit) else {
            return Ok(Vec::new());
        };
        let Ok(r) = i64::try_from(recipient.get()) else {
            return Ok(Vec::new());
        };
        let (first, last) = bucket_span((lo, hi), window.order, notification_bucket);
        let (buckets, page) = match window.order {
            Order::NewestFirst => (&self.buckets_newest, &self.page_newest),
            Order::OldestFirst => (&self.buckets_oldest, &self.page_oldest),
        };
        // Read lazily: the pager fetches the next few buckets only when these are used up.
        let mut buckets = self
            .session
            .execute_iter(buckets.clone(), (r, first.min(last), first.max(last)))
            .await
            .map_err(backend)?
            .rows_stream::<(i32,)>()
            .map_err(backend)?;
        let mut out = Vec::new();
        while out.len() < window.limit
            && let Some((bucket,)) = buckets.try_next().await.map_err(backend)?
        {
            let limit = i32::try_from(window.limit - out.len()).unwrap_or(i32::MAX);
            let mut rows = self
                .session
                .execute_iter(page.clone(), (r, bucket, lo, hi, limit))
                .await
                .map_err(backend)?
                .rows_stream::<NotificationRow>()
                .map_err(backend)?;
            while let Some(row) = rows.try_next().await.map_err(backend)? {
                out.push(notification_from_row(recipient, row)?);
            }
        }
        out.truncate(window.limit);
        Ok(out)
    }
}

/// Both stores hold a [`Notifications`] as `notifications`.
macro_rules! impl_notifications {
    ($store:ty) => {
        #[async_trait]
        impl NotificationStore for $store {
            #[tracing::instrument(level = "debug", skip_all, fields(recipient = n.recipient.get()))]
            async fn add_notification(&self, n: &NotificationRecord) -> StoreResult<bool> {
                self.notifications.add(n).await
            }

            #[tracing::instrument(level = "debug", skip_all, fields(recipient = recipient.get(), kind = kind.name()))]
            async fn remove_notification(
                &self,
                recipient: UserId,
                kind: NotificationKind,
                account: UserId,
                status: Option<PostId>,
            ) -> StoreResult<bool> {
                self.notifications.remove(recipient, kind, account, status).await
            }

            #[tracing::instrument(level = "debug", skip_all, fields(recipient = recipient.get(), limit = window.limit))]
            async fn notifications(
                &self,
                recipient: UserId,
                window: Window<u64>,
            ) -> StoreResult<Vec<NotificationRecord>> {
                self.notifications.list(recipient, window).await
            }
        }
    };
}

impl_notifications!(crate::ScyllaPostStore);
impl_notifications!(crate::ScyllaGraphStore);
