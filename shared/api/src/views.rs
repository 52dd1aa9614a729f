//! JSON shapes shared by several services, so a post looks the same wherever it appears.

use serde::Serialize;
use starling_ids::{PostId, UserId};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UserRef {
    pub id: UserId,
    pub handle: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PostView {
    pub id: PostId,
    pub author: UserRef,
    pub text: String,
    pub reply_to: Option<PostId>,
    /// Derived from the id (Snowflake timestamp), RFC 3339.
    pub created_at: String,
}

/// A page of posts with the cursors for its neighbours.
#[derive(Clone, Debug, Serialize)]
pub struct PostPage {
    pub posts: Vec<PostView>,
    /// Pass as `max_id` for the next (older) page; absent when there is none.
    pub next_max_id: Option<PostId>,
    /// Pass as `min_id` for newer posts than this page.
    pub prev_min_id: Option<PostId>,
}

impl From<starling_storage::PostRecord> for PostView {
    fn from(p: starling_storage::PostRecord) -> PostView {
        PostView {
            created_at: p.id.created_at(),
            id: p.id,
            author: UserRef { id: p.author, handle: p.author_handle },
            text: p.text,
            reply_to: p.reply_to,
        }
    }
}
