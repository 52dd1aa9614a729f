//! In-process clients: the standalone mode composes all services in one process, so a
//! cross-service call is a direct call on the owning service's store handle.

use std::sync::Arc;

use async_trait::async_trait;
use starling_ids::{PostId, UserId};
use std::collections::HashSet;

use starling_storage::{
    AuthorClass, Counts, GraphStore, Interactions, NotificationKind, NotificationRecord, PostRecord, PostStore,
    StoreResult, UserRecord, Window,
};

use crate::{ClientResult, GraphClient, PostClient};

/// Page size when collecting a full list.
pub const FOLLOWING_PAGE: usize = 1_000;

/// Every id a paged listing gives: `page(after)` lists ascending ids after `after`, at
/// most [`FOLLOWING_PAGE`] of them.
pub async fn all_pages<F, Fut>(mut page: F) -> StoreResult<Vec<UserId>>
where
    F: FnMut(Option<UserId>) -> Fut,
    Fut: Future<Output = StoreResult<Vec<UserId>>>,
{
    let mut all = Vec::new();
    loop {
        let got = page(all.last().copied()).await?;
        let done = got.len() < FOLLOWING_PAGE;
        all.extend(got);
        if done {
            return Ok(all);
        }
    }
}

/// Whom `user` follows and does not mute: the authors of its home timeline.
pub async fn home_following(store: &dyn GraphStore, user: UserId) -> StoreResult<Vec<UserId>> {
    let mut following = all_pages(|after| store.following(user, after, FOLLOWING_PAGE)).await?;
    let muted = all_pages(|after| store.muted(user, after, FOLLOWING_PAGE)).await?;
    if !muted.is_empty() {
        let muted: HashSet<UserId> = muted.into_iter().collect();
        following.retain(|u| !muted.contains(u));
    }
    Ok(following)
}

/// Do `followee`'s posts reach `follower`'s home timeline?
pub async fn delivers(store: &dyn GraphStore, follower: UserId, followee: UserId) -> StoreResult<bool> {
    Ok(store.follows(follower, followee).await? && !store.mutes(follower, followee).await?)
}

pub struct LocalGraph(pub Arc<dyn GraphStore>);

#[async_trait]
impl GraphClient for LocalGraph {
    async fn user(&self, id: UserId) -> ClientResult<Option<UserRecord>> {
        Ok(self.0.user(id).await?)
    }

    async fn counts(&self, user: UserId) -> ClientResult<Counts> {
        Ok(self.0.counts(user).await?)
    }

    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> ClientResult<Vec<UserId>> {
        Ok(self.0.followers(user, after, limit).await?)
    }

    async fn following(&self, user: UserId) -> ClientResult<Vec<UserId>> {
        Ok(home_following(&*self.0, user).await?)
    }

    async fn follows(&self, follower: UserId, followee: UserId) -> ClientResult<bool> {
        Ok(delivers(&*self.0, follower, followee).await?)
    }

    async fn muters(&self, user: UserId) -> ClientResult<Vec<UserId>> {
        Ok(all_pages(|after| self.0.muters(user, after, FOLLOWING_PAGE)).await?)
    }

    async fn notifications(&self, user: UserId, window: Window<u64>) -> ClientResult<Vec<NotificationRecord>> {
        Ok(self.0.notifications(user, window).await?)
    }

    async fn remove_follow_notification(&self, recipient: UserId, follower: UserId) -> ClientResult<bool> {
        Ok(self.0.remove_notification(recipient, NotificationKind::Follow, follower, None).await?)
    }

    async fn author_class(&self, user: UserId) -> ClientResult<AuthorClass> {
        Ok(self.0.author_class(user).await?)
    }

    async fn celebrities(&self) -> ClientResult<Vec<UserId>> {
        Ok(self.0.celebrities().await?)
    }
}

pub struct LocalPosts(pub Arc<dyn PostStore>);

#[async_trait]
impl PostClient for LocalPosts {
    async fn get_posts(&self, ids: &[PostId]) -> ClientResult<Vec<Option<PostRecord>>> {
        Ok(self.0.get_posts(ids).await?)
    }

    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostRecord>> {
        Ok(self.0.posts_by_author(author, window).await?)
    }

    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostId>> {
        Ok(self.0.post_ids_by_author(author, window).await?)
    }

    async fn reblogs(&self, original: PostId, window: Window<PostId>) -> ClientResult<Vec<(PostId, UserId)>> {
        Ok(self.0.reblogs(original, window).await?)
    }

    async fn interactions(&self, ids: &[PostId], viewer: Option<UserId>) -> ClientResult<Vec<Interactions>> {
        Ok(self.0.interactions(ids, viewer).await?)
    }
}
