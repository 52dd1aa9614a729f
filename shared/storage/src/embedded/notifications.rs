//! [`NotificationStore`] for both embedded stores, over two keyspaces they share when they
//! share a database (standalone: then both list every notification, which is what the
//! post-service's merge of the two expects, by id):
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `notifications` | recipient ‖ !id | kind ‖ account ‖ status (0 = none) |
//! | `notification_keys` | recipient ‖ kind ‖ account ‖ status | id |
//!
//! The complemented id makes a forward scan newest first, as for an author's posts.

use std::ops::Bound;

use async_trait::async_trait;
use fjall::Keyspace;
use starling_ids::{PostId, UserId};

use super::{Decoder, Encoder, Shared, Stripes, decode_u64, id_pair};
use crate::{NotificationKind, NotificationRecord, NotificationStore, Order, StoreError, StoreResult, Window};

pub(super) struct Notifications {
    pub(super) list: Keyspace,
    pub(super) keys: Keyspace,
    /// Per recipient: a check-then-write of the key and the list.
    pub(super) locks: Stripes,
    pub(super) shared: Shared,
}

fn key_of(recipient: UserId, kind: NotificationKind, account: UserId, status: Option<PostId>) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(&recipient.get().to_be_bytes());
    k.push(kind.tag());
    k.extend_from_slice(&account.get().to_be_bytes());
    k.extend_from_slice(&status.map_or(0, PostId::get).to_be_bytes());
    k
}

impl Notifications {
    fn add(&self, n: &NotificationRecord) -> StoreResult<bool> {
        let key = key_of(n.recipient, n.kind, n.account, n.status);
        let _guard = self.locks.one(n.recipient.get());
        if self.keys.contains_key(&key)? {
            return Ok(false);
        }
        let mut value = Encoder::new();
        value.u8(n.kind.tag());
        value.u64(n.account.get());
        value.u64(n.status.map_or(0, PostId::get));
        let mut batch = self.shared.batch();
        batch.insert(&self.list, id_pair(n.recipient.get(), !n.id), value.finish());
        batch.insert(&self.keys, key, n.id.to_be_bytes());
        batch.commit()?;
        Ok(true)
    }

    fn remove(
        &self,
        recipient: UserId,
        kind: NotificationKind,
        account: UserId,
        status: Option<PostId>,
    ) -> StoreResult<bool> {
        let key = key_of(recipient, kind, account, status);
        let _guard = self.locks.one(recipient.get());
        let Some(id) = self.keys.get(&key)? else {
            return Ok(false);
        };
        let id = decode_u64(&id, "notification key")?;
        let mut batch = self.shared.batch();
        batch.remove(&self.keys, key);
        batch.remove(&self.list, id_pair(recipient.get(), !id));
        batch.commit()?;
        Ok(true)
    }

    fn list(&self, recipient: UserId, window: Window<u64>) -> StoreResult<Vec<NotificationRecord>> {
        if window.limit == 0 || matches!((window.after, window.before), (Some(a), Some(b)) if a >= b) {
            return Ok(Vec::new());
        }
        let r = recipient.get();
        // Keys hold !id: "before" bounds the scan from below, "after" from above.
        let lower = match window.before {
            Some(before) => Bound::Excluded(id_pair(r, !before)),
            None => Bound::Included(id_pair(r, 0)),
        };
        let upper = match window.after {
            Some(after) => Bound::Excluded(id_pair(r, !after)),
            None => Bound::Included(id_pair(r, u64::MAX)),
        };
        let snapshot = self.shared.db.snapshot();
        let range = fjall::Readable::range(&snapshot, &self.list, (lower, upper));
        let entries: Box<dyn Iterator<Item = fjall::Guard>> = match window.order {
            Order::NewestFirst => Box::new(range),
            Order::OldestFirst => Box::new(range.rev()),
        };
        let mut out = Vec::with_capacity(window.limit.min(64));
        for guard in entries.take(window.limit) {
            let (key, value) = guard.into_inner()?;
            let id = !decode_u64(key.get(8..).unwrap_or_default(), "notification id")?;
            let mut d = Decoder::new(&value, "notification")?;
            let tag = d.u8()?;
            let kind = NotificationKind::from_tag(tag)
                .ok_or_else(|| StoreError::Corrupt(format!("notification {id}: unknown kind {tag}")))?;
            let (account, status) = (UserId(d.u64()?), d.u64()?);
            d.finish()?;
            out.push(NotificationRecord {
                id,
                recipient,
                kind,
                account,
                status: (status != 0).then_some(PostId(status)),
            });
        }
        Ok(out)
    }
}

/// Both embedded stores hold a [`Notifications`] as `notifications`.
macro_rules! impl_notifications {
    ($store:ty) => {
        #[async_trait]
        impl NotificationStore for $store {
            async fn add_notification(&self, n: &NotificationRecord) -> StoreResult<bool> {
                self.notifications.add(n)
            }

            async fn remove_notification(
                &self,
                recipient: UserId,
                kind: NotificationKind,
                account: UserId,
                status: Option<PostId>,
            ) -> StoreResult<bool> {
                self.notifications.remove(recipient, kind, account, status)
            }

            async fn notifications(
                &self,
                recipient: UserId,
                window: Window<u64>,
            ) -> StoreResult<Vec<NotificationRecord>> {
                self.notifications.list(recipient, window)
            }
        }
    };
}

impl_notifications!(super::EmbeddedPostStore);
impl_notifications!(super::EmbeddedGraphStore);
