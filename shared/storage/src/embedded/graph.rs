//! [`GraphStore`] for the embedded store: users and handles, follow edges both ways,
//! blocks, mutes, counts and author classes (auth lives in `auth.rs`, notifications in
//! `notifications.rs`).

use std::ops::Bound;

use async_trait::async_trait;
use fjall::{Keyspace, OwnedWriteBatch};
use parking_lot::Mutex;
use starling_events::Record;
use starling_ids::UserId;

use super::notifications::Notifications;
use super::{Decoder, EMPTY, OutboxLog, Shared, Stripes, check_key_len, decode_u64, id_pair};
use crate::{AuthorClass, Counts, EdgeChange, GraphStore, StoreError, StoreResult, UserRecord};

/// The graph-service's store. Obtain it from [`super::EmbeddedStore::graph`].
pub struct EmbeddedGraphStore {
    pub(super) users: Keyspace,
    pub(super) handles: Keyspace,
    pub(super) following: Keyspace,
    pub(super) followers: Keyspace,
    pub(super) blocks: Keyspace,
    pub(super) mutes: Keyspace,
    pub(super) muted_by: Keyspace,
    pub(super) counts: Keyspace,
    /// Only celebrities are stored, so listing them is a scan of a small keyspace.
    pub(super) celebrities: Keyspace,
    pub(super) outbox: OutboxLog,
    pub(super) apps: Keyspace,
    pub(super) credentials: Keyspace,
    pub(super) emails: Keyspace,
    pub(super) grants: Keyspace,
    pub(super) notifications: Notifications,
    /// Per-user stripes: every mutation locks each user whose edges, blocks, counts or
    /// class it reads and rewrites, so read-modify-write sequences do not interleave.
    pub(super) locks: Stripes,
    /// Keyed by a grant's hash: a take reads then removes.
    pub(super) grant_locks: Stripes,
    /// Sign-ups are rare, so one lock for the handle (and email) uniqueness checks is enough.
    pub(super) handle_lock: Mutex<()>,
    pub(super) shared: Shared,
}

/// Counts of (at most) two users, loaded, adjusted and written back under their locks.
struct CountsUpdate {
    pub(super) entries: Vec<(UserId, Counts)>,
}

impl CountsUpdate {
    fn load(store: &EmbeddedGraphStore, a: UserId, b: UserId) -> StoreResult<CountsUpdate> {
        let mut entries = vec![(a, store.load_counts(a)?)];
        if a != b {
            entries.push((b, store.load_counts(b)?));
        }
        Ok(CountsUpdate { entries })
    }

    fn get(&mut self, user: UserId) -> &mut Counts {
        // Both users were loaded in `load`; the position is found among at most two entries.
        let i = self.entries.iter().position(|(u, _)| *u == user).unwrap_or(0);
        &mut self.entries[i].1
    }

    /// Records the edge `follower → followee` appearing (`+1`) or disappearing (`-1`).
    fn edge(&mut self, follower: UserId, followee: UserId, added: bool) {
        let step = |n: &mut u64| *n = if added { *n + 1 } else { n.saturating_sub(1) };
        step(&mut self.get(follower).following);
        step(&mut self.get(followee).followers);
    }

    fn write(self, store: &EmbeddedGraphStore, batch: &mut OwnedWriteBatch) {
        for (user, counts) in self.entries {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&counts.followers.to_be_bytes());
            value[8..].copy_from_slice(&counts.following.to_be_bytes());
            batch.insert(&store.counts, user.to_be_bytes(), value);
        }
    }
}

impl EmbeddedGraphStore {
    fn load_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let Some(value) = self.users.get(id.to_be_bytes())? else {
            return Ok(None);
        };
        let mut d = Decoder::new(&value, "user")?;
        let handle = d.string()?;
        d.finish()?;
        Ok(Some(UserRecord { id, handle }))
    }

    fn load_counts(&self, user: UserId) -> StoreResult<Counts> {
        match self.counts.get(user.to_be_bytes())? {
            None => Ok(Counts::default()),
            Some(v) if v.len() == 16 => {
                Ok(Counts { followers: decode_u64(&v[..8], "counts")?, following: decode_u64(&v[8..], "counts")? })
            }
            Some(_) => Err(StoreError::Corrupt(format!("counts of user {user} have the wrong length"))),
        }
    }

    fn edge_exists(&self, follower: UserId, followee: UserId) -> StoreResult<bool> {
        Ok(self.following.contains_key(id_pair(follower.get(), followee.get()))?)
    }

    fn block_exists(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        Ok(self.blocks.contains_key(id_pair(blocker.get(), blocked.get()))?)
    }

    fn put_edge(&self, batch: &mut OwnedWriteBatch, follower: UserId, followee: UserId) {
        batch.insert(&self.following, id_pair(follower.get(), followee.get()), EMPTY);
        batch.insert(&self.followers, id_pair(followee.get(), follower.get()), EMPTY);
    }

    fn remove_edge(&self, batch: &mut OwnedWriteBatch, follower: UserId, followee: UserId) {
        batch.remove(&self.following, id_pair(follower.get(), followee.get()));
        batch.remove(&self.followers, id_pair(followee.get(), follower.get()));
    }

    fn follow_sync(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let _guards = self.locks.two(follower.get(), followee.get());
        if self.block_exists(follower, followee)? || self.block_exists(followee, follower)? {
            return Ok(EdgeChange::Blocked);
        }
        if self.edge_exists(follower, followee)? {
            return Ok(EdgeChange::Unchanged);
        }
        let mut counts = CountsUpdate::load(self, follower, followee)?;
        counts.edge(follower, followee, true);
        let mut batch = self.shared.batch();
        self.put_edge(&mut batch, follower, followee);
        counts.write(self, &mut batch);
        let outbox = self.outbox.commit(batch, events)?;
        Ok(EdgeChange::Changed { outbox })
    }

    fn unfollow_sync(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let _guards = self.locks.two(follower.get(), followee.get());
        if !self.edge_exists(follower, followee)? {
            return Ok(EdgeChange::Unchanged);
        }
        let mut counts = CountsUpdate::load(self, follower, followee)?;
        counts.edge(follower, followee, false);
        let mut batch = self.shared.batch();
        self.remove_edge(&mut batch, follower, followee);
        counts.write(self, &mut batch);
        let outbox = self.outbox.commit(batch, events)?;
        Ok(EdgeChange::Changed { outbox })
    }

    fn block_sync(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let _guards = self.locks.two(blocker.get(), blocked.get());
        if self.block_exists(blocker, blocked)? {
            return Ok(EdgeChange::Unchanged);
        }
        let mut counts = CountsUpdate::load(self, blocker, blocked)?;
        let mut batch = self.shared.batch();
        batch.insert(&self.blocks, id_pair(blocker.get(), blocked.get()), EMPTY);
        // With blocker == blocked both directions are the same edge: remove it once.
        let mut directions = vec![(blocker, blocked)];
        if blocker != blocked {
            directions.push((blocked, blocker));
        }
        for (follower, followee) in directions {
            if self.edge_exists(follower, followee)? {
                self.remove_edge(&mut batch, follower, followee);
                counts.edge(follower, followee, false);
            }
        }
        counts.write(self, &mut batch);
        let outbox = self.outbox.commit(batch, events)?;
        Ok(EdgeChange::Changed { outbox })
    }

    fn unblock_sync(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let _guards = self.locks.two(blocker.get(), blocked.get());
        if !self.block_exists(blocker, blocked)? {
            return Ok(EdgeChange::Unchanged);
        }
        let mut batch = self.shared.batch();
        batch.remove(&self.blocks, id_pair(blocker.get(), blocked.get()));
        let outbox = self.outbox.commit(batch, events)?;
        Ok(EdgeChange::Changed { outbox })
    }

    fn set_author_class_sync(&self, user: UserId, class: AuthorClass, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let _guard = self.locks.one(user.get());
        if self.load_class(user)? == class {
            return Ok(EdgeChange::Unchanged);
        }
        let mut batch = self.shared.batch();
        match class {
            AuthorClass::Celebrity => batch.insert(&self.celebrities, user.to_be_bytes(), EMPTY),
            AuthorClass::Ordinary => batch.remove(&self.celebrities, user.to_be_bytes()),
        }
        let outbox = self.outbox.commit(batch, events)?;
        Ok(EdgeChange::Changed { outbox })
    }

    fn load_class(&self, user: UserId) -> StoreResult<AuthorClass> {
        Ok(if self.celebrities.contains_key(user.to_be_bytes())? {
            AuthorClass::Celebrity
        } else {
            AuthorClass::Ordinary
        })
    }

    /// Mutes or unmutes; locked like an edge, so two concurrent mutes commit one event.
    fn set_mute(&self, muter: UserId, muted: UserId, on: bool, events: Vec<Record>) -> StoreResult<EdgeChange> {
        let _guards = self.locks.two(muter.get(), muted.get());
        if self.mutes.contains_key(id_pair(muter.get(), muted.get()))? == on {
            return Ok(EdgeChange::Unchanged);
        }
        let mut batch = self.shared.batch();
        if on {
            batch.insert(&self.mutes, id_pair(muter.get(), muted.get()), EMPTY);
            batch.insert(&self.muted_by, id_pair(muted.get(), muter.get()), EMPTY);
        } else {
            batch.remove(&self.mutes, id_pair(muter.get(), muted.get()));
            batch.remove(&self.muted_by, id_pair(muted.get(), muter.get()));
        }
        let outbox = self.outbox.commit(batch, events)?;
        Ok(EdgeChange::Changed { outbox })
    }

    /// Second halves of the `owner ‖ other` keys in `ks`, ascending, strictly after `after`.
    fn list(&self, ks: &Keyspace, owner: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = match after {
            Some(after) => Bound::Excluded(id_pair(owner.get(), after.get())),
            None => Bound::Included(id_pair(owner.get(), 0)),
        };
        let upper = Bound::Included(id_pair(owner.get(), u64::MAX));
        ks.range::<[u8; 16], _>((lower, upper))
            .take(limit)
            .map(|guard| {
                let key = guard.key()?;
                Ok(UserId(decode_u64(key.get(8..).unwrap_or_default(), "graph edge key")?))
            })
            .collect()
    }
}

#[async_trait]
impl GraphStore for EmbeddedGraphStore {
    #[tracing::instrument(level = "debug", skip_all, fields(user = user.id.get()))]
    async fn create_user(&self, user: &UserRecord) -> StoreResult<bool> {
        self.create_user_sync(user)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = id.get()))]
    async fn user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        self.load_user(id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_by_handle(&self, handle: &str) -> StoreResult<Option<UserRecord>> {
        let handle_key = handle.to_lowercase();
        if check_key_len(handle_key.len()).is_err() {
            return Ok(None);
        }
        match self.handles.get(handle_key)? {
            Some(id) => self.load_user(UserId(decode_u64(&id, "handle entry")?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(follower = follower.get(), followee = followee.get()))]
    async fn follow(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.follow_sync(follower, followee, events)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(follower = follower.get(), followee = followee.get()))]
    async fn unfollow(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.unfollow_sync(follower, followee, events)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(blocker = blocker.get(), blocked = blocked.get()))]
    async fn block(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.block_sync(blocker, blocked, events)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(blocker = blocker.get(), blocked = blocked.get()))]
    async fn unblock(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.unblock_sync(blocker, blocked, events)
    }

    async fn follows(&self, follower: UserId, followee: UserId) -> StoreResult<bool> {
        self.edge_exists(follower, followee)
    }

    async fn blocks(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        self.block_exists(blocker, blocked)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(&self.followers, user, after, limit)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), limit))]
    async fn following(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(&self.following, user, after, limit)
    }

    async fn mute(&self, muter: UserId, muted: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.set_mute(muter, muted, true, events)
    }

    async fn unmute(&self, muter: UserId, muted: UserId, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.set_mute(muter, muted, false, events)
    }

    async fn mutes(&self, muter: UserId, muted: UserId) -> StoreResult<bool> {
        Ok(self.mutes.contains_key(id_pair(muter.get(), muted.get()))?)
    }

    async fn muted(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(&self.mutes, user, after, limit)
    }

    async fn muters(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.list(&self.muted_by, user, after, limit)
    }

    async fn counts(&self, user: UserId) -> StoreResult<Counts> {
        self.load_counts(user)
    }

    async fn author_class(&self, user: UserId) -> StoreResult<AuthorClass> {
        self.load_class(user)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get(), ?class))]
    async fn set_author_class(&self, user: UserId, class: AuthorClass, events: Vec<Record>) -> StoreResult<EdgeChange> {
        self.set_author_class_sync(user, class, events)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn celebrities(&self) -> StoreResult<Vec<UserId>> {
        self.celebrities.iter().map(|guard| Ok(UserId(decode_u64(&guard.key()?, "celebrity key")?))).collect()
    }
}
