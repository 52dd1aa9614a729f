//! [`PostStore`] for the embedded store: posts, their author index, idempotency keys,
//! reblogs, favourites, replies and each status's counts.
//!
//! Every change to a status's reblogs, favourites or replies holds that status's stripe
//! lock (a reply holds its parent's), so counts are read-modify-written without races and
//! a delete cannot interleave with a reblog of the same status.

use std::ops::Bound;

use async_trait::async_trait;
use fjall::{Keyspace, OwnedWriteBatch, Readable};
use starling_events::Record;
use starling_ids::{PostId, UserId};

use super::{Decoder, EMPTY, Encoder, OutboxLog, Shared, StripeGuards, Stripes, decode_u64, id_pair, pair_key};
use crate::{
    CreatePost, Deleted, EventsFor, Interactions, Order, PostRecord, PostStore, Reblogged, StoreError, StoreResult,
    Window,
};

/// The post-service's store. Obtain it from [`super::EmbeddedStore::posts`].
pub struct EmbeddedPostStore {
    pub(super) posts: Keyspace,
    pub(super) by_author: Keyspace,
    pub(super) idempotency: Keyspace,
    /// original ‖ reblog → reblogger.
    pub(super) reblogs: Keyspace,
    /// original ‖ reblogger → reblog.
    pub(super) reblogs_by_user: Keyspace,
    /// status ‖ user → empty.
    pub(super) favourites: Keyspace,
    /// parent ‖ reply → empty.
    pub(super) replies: Keyspace,
    /// status → reblogs ‖ favourites ‖ replies.
    pub(super) stats: Keyspace,
    pub(super) outbox: OutboxLog,
    pub(super) notifications: super::notifications::Notifications,
    /// Create locks the author (idempotency check then write) and a reply's parent; delete
    /// locks the post (read then remove, so two deletes cannot both commit events) and
    /// what its counts live on; see the module docs.
    pub(super) locks: Stripes,
    pub(super) shared: Shared,
}

/// Which of a status's counts a change moves.
#[derive(Clone, Copy)]
enum Stat {
    Reblogs = 0,
    Favourites = 1,
    Replies = 2,
}

impl EmbeddedPostStore {
    fn create_post_sync(
        &self,
        post: &PostRecord,
        idempotency_key: Option<&str>,
        events: Vec<Record>,
    ) -> StoreResult<CreatePost> {
        let idempotency = idempotency_key.map(|k| pair_key(post.author.get(), k.as_bytes())).transpose()?;
        let _guard = self.lock_create(post.author, idempotency.is_some(), post.reply_to);

        if let Some(key) = &idempotency
            && let Some(original) = self.idempotency.get(key)?
        {
            let original = PostId(decode_u64(&original, "idempotency entry")?);
            return Ok(CreatePost::Replayed(self.load_post(original)?));
        }

        let mut batch = self.shared.batch();
        self.stage_post(&mut batch, post);
        if let Some(key) = idempotency {
            batch.insert(&self.idempotency, key, post.id.to_be_bytes());
        }
        if let Some(parent) = post.reply_to {
            batch.insert(&self.replies, id_pair(parent.get(), post.id.get()), EMPTY);
            self.stage_stat(&mut batch, parent, Stat::Replies, 1)?;
        }
        let outbox = self.outbox.commit(batch, events)?;
        Ok(CreatePost::Created { outbox })
    }

    /// The locks a create needs: the author's for an idempotency check, the parent's for
    /// its replies count.
    fn lock_create(&self, author: UserId, idempotent: bool, parent: Option<PostId>) -> Option<StripeGuards<'_>> {
        match (idempotent, parent) {
            (true, Some(p)) => Some(self.locks.two(author.get(), p.get())),
            (true, None) => Some((self.locks.one(author.get()), None)),
            (false, Some(p)) => Some((self.locks.one(p.get()), None)),
            (false, None) => None,
        }
    }

    fn stage_post(&self, batch: &mut OwnedWriteBatch, post: &PostRecord) {
        batch.insert(&self.posts, post.id.to_be_bytes(), encode_post(post));
        batch.insert(&self.by_author, id_pair(post.author.get(), !post.id.get()), EMPTY);
    }

    fn unstage_post(&self, batch: &mut OwnedWriteBatch, post: &PostRecord) {
        batch.remove(&self.posts, post.id.to_be_bytes());
        batch.remove(&self.by_author, id_pair(post.author.get(), !post.id.get()));
    }

    fn reblog_sync(&self, reblog: &PostRecord, events: Vec<Record>) -> StoreResult<Reblogged> {
        let Some(original) = reblog.reblog_of else {
            return Err(StoreError::Backend(format!("post {} is not a reblog", reblog.id)));
        };
        let _guard = self.locks.one(original.get());
        match self.load_post(original)? {
            Some(o) if o.reblog_of.is_none() => {}
            _ => return Ok(Reblogged::NoOriginal),
        }
        if let Some(existing) = self.reblog_by_sync(original, reblog.author)?
            && let Some(post) = self.load_post(existing)?
        {
            return Ok(Reblogged::Existing(post));
        }
        let mut batch = self.shared.batch();
        self.stage_post(&mut batch, reblog);
        batch.insert(&self.reblogs, id_pair(original.get(), reblog.id.get()), reblog.author.get().to_be_bytes());
        batch.insert(&self.reblogs_by_user, id_pair(original.get(), reblog.author.get()), reblog.id.to_be_bytes());
        self.stage_stat(&mut batch, original, Stat::Reblogs, 1)?;
        let outbox = self.outbox.commit(batch, events)?;
        Ok(Reblogged::Created { outbox })
    }

    fn reblog_by_sync(&self, original: PostId, user: UserId) -> StoreResult<Option<PostId>> {
        let found = self.reblogs_by_user.get(id_pair(original.get(), user.get()))?;
        found.map(|v| decode_u64(&v, "reblog entry").map(PostId)).transpose()
    }

    fn delete_post_sync(&self, id: PostId, events: &EventsFor) -> StoreResult<Option<Deleted>> {
        // The post's own stripe makes deletes of it exclusive; the stripe its counts live
        // on (a reblog's original, a reply's parent) orders it with the changes to those.
        let Some(peek) = self.load_post(id)? else {
            return Ok(None);
        };
        let on = peek.reblog_of.or(peek.reply_to);
        let _guard = match on {
            Some(other) => self.locks.two(id.get(), other.get()),
            None => (self.locks.one(id.get()), None),
        };
        let Some(post) = self.load_post(id)? else {
            return Ok(None);
        };
        // The idempotency entry stays, so a replay of the creating request answers
        // "created, since deleted" instead of creating the post again.
        let mut batch = self.shared.batch();
        let mut removed = vec![post.clone()];
        self.unstage_post(&mut batch, &post);
        if let Some(original) = post.reblog_of {
            batch.remove(&self.reblogs, id_pair(original.get(), id.get()));
            batch.remove(&self.reblogs_by_user, id_pair(original.get(), post.author.get()));
            self.stage_stat(&mut batch, original, Stat::Reblogs, -1)?;
        }
        if let Some(parent) = post.reply_to {
            batch.remove(&self.replies, id_pair(parent.get(), id.get()));
            self.stage_stat(&mut batch, parent, Stat::Replies, -1)?;
        }
        // A status takes its reblogs and favourites with it (its replies stay).
        let snapshot = self.shared.db.snapshot();
        for guard in snapshot.prefix(&self.reblogs, id.to_be_bytes()) {
            let (key, value) = guard.into_inner()?;
            let reblog = PostId(decode_u64(key.get(8..).unwrap_or_default(), "reblogs key")?);
            let reblogger = UserId(decode_u64(&value, "reblogs value")?);
            batch.remove(&self.reblogs, key);
            batch.remove(&self.reblogs_by_user, id_pair(id.get(), reblogger.get()));
            if let Some(r) = self.load_post(reblog)? {
                self.unstage_post(&mut batch, &r);
                removed.push(r);
            }
        }
        for guard in snapshot.prefix(&self.favourites, id.to_be_bytes()) {
            batch.remove(&self.favourites, guard.key()?);
        }
        batch.remove(&self.stats, id.to_be_bytes());
        let events: Vec<Record> = removed.iter().flat_map(events).collect();
        let outbox = self.outbox.commit(batch, events.clone())?;
        Ok(Some(Deleted { posts: removed, events, outbox }))
    }

    fn set_favourite_sync(&self, status: PostId, user: UserId, on: bool) -> StoreResult<Option<bool>> {
        let _guard = self.locks.one(status.get());
        match self.load_post(status)? {
            Some(p) if p.reblog_of.is_none() => {}
            _ => return Ok(None),
        }
        let key = id_pair(status.get(), user.get());
        if self.favourites.contains_key(key)? == on {
            return Ok(Some(false));
        }
        let mut batch = self.shared.batch();
        if on {
            batch.insert(&self.favourites, key, EMPTY);
        } else {
            batch.remove(&self.favourites, key);
        }
        self.stage_stat(&mut batch, status, Stat::Favourites, if on { 1 } else { -1 })?;
        batch.commit()?;
        Ok(Some(true))
    }

    /// Moves one of `status`'s counts by `delta`; the caller holds its stripe. A status
    /// that is gone has no counts to move.
    fn stage_stat(&self, batch: &mut OwnedWriteBatch, status: PostId, stat: Stat, delta: i64) -> StoreResult<()> {
        if !self.posts.contains_key(status.to_be_bytes())? {
            return Ok(());
        }
        let mut counts = self.load_stats(status)?;
        let c = &mut counts[stat as usize];
        *c = c.saturating_add_signed(delta);
        let mut e = Encoder::new();
        counts.iter().for_each(|&n| e.u64(n));
        batch.insert(&self.stats, status.to_be_bytes(), e.finish());
        Ok(())
    }

    fn load_stats(&self, status: PostId) -> StoreResult<[u64; 3]> {
        let Some(v) = self.stats.get(status.to_be_bytes())? else {
            return Ok([0; 3]);
        };
        let mut d = Decoder::new(&v, "post stats")?;
        let counts = [d.u64()?, d.u64()?, d.u64()?];
        d.finish()?;
        Ok(counts)
    }

    pub(super) fn load_post(&self, id: PostId) -> StoreResult<Option<PostRecord>> {
        self.posts.get(id.to_be_bytes())?.map(|v| decode_post(id, &v)).transpose()
    }

    /// Ids of one author's posts in the window, read from the index only.
    fn ids_by_author(
        &self,
        snapshot: &fjall::Snapshot,
        author: UserId,
        window: Window<PostId>,
    ) -> StoreResult<Vec<PostId>> {
        // Keys hold !post: "before" bounds the scan from below, "after" from above.
        let flipped = Window {
            before: window.after.map(|a| PostId(!a.get())),
            after: window.before.map(|b| PostId(!b.get())),
            limit: window.limit,
            order: match window.order {
                Order::NewestFirst => Order::OldestFirst,
                Order::OldestFirst => Order::NewestFirst,
            },
        };
        let ids = scan_pairs(snapshot, &self.by_author, author.get(), flipped, "posts_by_author key")?;
        Ok(ids.into_iter().map(|(id, _)| PostId(!id)).collect())
    }

    fn posts_by_author_sync(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostRecord>> {
        // One snapshot for the index scan and the lookups: a post deleted meanwhile is
        // either in both or in neither.
        let snapshot = self.shared.db.snapshot();
        let ids = self.ids_by_author(&snapshot, author, window)?;
        let mut posts = Vec::with_capacity(ids.len());
        for id in ids {
            match snapshot.get(&self.posts, id.to_be_bytes())? {
                Some(value) => posts.push(decode_post(id, &value)?),
                None => tracing::warn!(post = id.get(), "posts_by_author entry without a post"),
            }
        }
        Ok(posts)
    }
}

/// The `owner ‖ id` keys of `ks` with `id` in the window (`OldestFirst` = ascending ids),
/// with their values.
fn scan_pairs(
    snapshot: &fjall::Snapshot,
    ks: &Keyspace,
    owner: u64,
    window: Window<PostId>,
    what: &'static str,
) -> StoreResult<Vec<(u64, fjall::Slice)>> {
    if window.limit == 0 {
        return Ok(Vec::new());
    }
    if let (Some(after), Some(before)) = (window.after, window.before)
        && after >= before
    {
        return Ok(Vec::new());
    }
    let lower = match window.after {
        Some(after) => Bound::Excluded(id_pair(owner, after.get())),
        None => Bound::Included(id_pair(owner, 0)),
    };
    let upper = match window.before {
        Some(before) => Bound::Excluded(id_pair(owner, before.get())),
        None => Bound::Included(id_pair(owner, u64::MAX)),
    };
    let range = snapshot.range(ks, (lower, upper));
    let entries: Box<dyn Iterator<Item = fjall::Guard>> = match window.order {
        Order::OldestFirst => Box::new(range),
        Order::NewestFirst => Box::new(range.rev()),
    };
    let mut out = Vec::with_capacity(window.limit.min(256));
    for guard in entries.take(window.limit) {
        let (key, value) = guard.into_inner()?;
        out.push((decode_u64(key.get(8..).unwrap_or_default(), what)?, value));
    }
    Ok(out)
}

#[async_trait]
impl PostStore for EmbeddedPostStore {
    #[tracing::instrument(level = "debug", skip_all, fields(post = post.id.get(), author = post.author.get()))]
    async fn create_post(
        &self,
        post: &PostRecord,
        idempotency_key: Option<&str>,
        events: Vec<Record>,
    ) -> StoreResult<CreatePost> {
        self.create_post_sync(post, idempotency_key, events)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(post = id.get()))]
    async fn delete_post(&self, id: PostId, events: &EventsFor) -> StoreResult<Option<Deleted>> {
        self.delete_post_sync(id, events)
    }

    async fn reblog(&self, reblog: &PostRecord, events: Vec<Record>) -> StoreResult<Reblogged> {
        self.reblog_sync(reblog, events)
    }

    async fn reblog_by(&self, original: PostId, user: UserId) -> StoreResult<Option<PostId>> {
        self.reblog_by_sync(original, user)
    }

    async fn reblogs(&self, original: PostId, window: Window<PostId>) -> StoreResult<Vec<(PostId, UserId)>> {
        let found = scan_pairs(&self.shared.db.snapshot(), &self.reblogs, original.get(), window, "reblogs key")?;
        found.into_iter().map(|(id, user)| Ok((PostId(id), UserId(decode_u64(&user, "reblogs value")?)))).collect()
    }

    async fn set_favourite(&self, status: PostId, user: UserId, on: bool) -> StoreResult<Option<bool>> {
        self.set_favourite_sync(status, user, on)
    }

    async fn favourited_by(&self, status: PostId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        let window = Window { before: None, after: after.map(|a| PostId(a.get())), limit, order: Order::OldestFirst };
        let found = scan_pairs(&self.shared.db.snapshot(), &self.favourites, status.get(), window, "favourites key")?;
        Ok(found.into_iter().map(|(user, _)| UserId(user)).collect())
    }

    async fn interactions(&self, ids: &[PostId], viewer: Option<UserId>) -> StoreResult<Vec<Interactions>> {
        ids.iter()
            .map(|&id| {
                let [reblogs, favourites, replies] = self.load_stats(id)?;
                let (reblogged, favourited) = match viewer {
                    Some(v) => (
                        self.reblogs_by_user.contains_key(id_pair(id.get(), v.get()))?,
                        self.favourites.contains_key(id_pair(id.get(), v.get()))?,
                    ),
                    None => (false, false),
                };
                Ok(Interactions { reblogs, favourites, replies, reblogged, favourited })
            })
            .collect()
    }

    async fn replies(&self, parent: PostId, limit: usize) -> StoreResult<Vec<PostId>> {
        let window = Window { before: None, after: None, limit, order: Order::OldestFirst };
        let found = scan_pairs(&self.shared.db.snapshot(), &self.replies, parent.get(), window, "replies key")?;
        Ok(found.into_iter().map(|(id, _)| PostId(id)).collect())
    }

    async fn get_posts(&self, ids: &[PostId]) -> StoreResult<Vec<Option<PostRecord>>> {
        let snapshot = self.shared.db.snapshot();
        ids.iter()
            .map(|&id| snapshot.get(&self.posts, id.to_be_bytes())?.map(|v| decode_post(id, &v)).transpose())
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(author = author.get(), limit = window.limit))]
    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostRecord>> {
        self.posts_by_author_sync(author, window)
    }

    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostId>> {
        self.ids_by_author(&self.shared.db.snapshot(), author, window)
    }
}

/// `author ‖ kind ‖ [target] ‖ handle ‖ text`, where kind 0 is a plain post, 1 a reply
/// (target: the parent) and 2 a reblog (target: the original). Posts written before
/// reblogs existed decode unchanged.
pub(super) fn encode_post(post: &PostRecord) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(post.author.get());
    match (post.reply_to, post.reblog_of) {
        (_, Some(original)) => {
            e.u8(2);
            e.u64(original.get());
        }
        (Some(parent), None) => {
            e.u8(1);
            e.u64(parent.get());
        }
        (None, None) => e.u8(0),
    }
    e.bytes(post.author_handle.as_bytes());
    e.bytes(post.text.as_bytes());
    e.finish()
}

pub(super) fn decode_post(id: PostId, value: &[u8]) -> StoreResult<PostRecord> {
    let mut d = Decoder::new(value, "post")?;
    let author = UserId(d.u64()?);
    let (reply_to, reblog_of) = match d.u8()? {
        0 => (None, None),
        1 => (Some(PostId(d.u64()?)), None),
        2 => (None, Some(PostId(d.u64()?))),
        other => return Err(StoreError::Corrupt(format!("post {id}: bad kind tag {other}"))),
    };
    let author_handle = d.string()?;
    let text = d.string()?;
    d.finish()?;
    Ok(PostRecord { id, author, author_handle, text, reply_to, reblog_of })
}
