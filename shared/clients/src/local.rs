//! In-process clients: the standalone mode composes all services in one process, so a
//! cross-service call is a direct call on the owning service's store handle.

use std::sync::Arc;

use async_trait::async_trait;
use starling_ids::{PostId, UserId};
use starling_storage::{AuthorClass, Counts, GraphStore, PostRecord, PostStore, UserRecord, Window};

use crate::{ClientResult, GraphClient, PostClient};

/// Page size when collecting a full following list.
const FOLLOWING_PAGE: usize = 1_000;

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
        let mut all = Vec::new();
        loop {
            let page = self.0.following(user, all.last().copied(), FOLLOWING_PAGE).await?;
            let done = page.len() < FOLLOWING_PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    async fn follows(&self, follower: UserId, followee: UserId) -> ClientResult<bool> {
        Ok(self.0.follows(follower, followee).await?)
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
}
