//! JSON shapes of the internal APIs (`/internal/v1/...`), shared by the services that
//! serve them and the HTTP clients that call them. Ids are strings, as on the public API.

use serde::{Deserialize, Serialize};
use starling_ids::{PostId, UserId};
use starling_storage::{AuthorClass, Order, PostRecord, UserRecord, Window};

#[derive(Debug, Serialize, Deserialize)]
pub struct WireUser {
    pub id: UserId,
    pub handle: String,
}

impl From<UserRecord> for WireUser {
    fn from(u: UserRecord) -> Self {
        WireUser { id: u.id, handle: u.handle }
    }
}

impl From<WireUser> for UserRecord {
    fn from(u: WireUser) -> Self {
        UserRecord { id: u.id, handle: u.handle }
    }
}

/// `GET /internal/v1/users/{id}/counts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireCounts {
    pub followers: u64,
    pub following: u64,
}

/// What an OAuth access token stands for (`GET /internal/v1/grants/{hash}`).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireGrant {
    /// `None` for an app's own token.
    pub user: Option<WireUser>,
    pub client_id: String,
    /// Space-separated.
    pub scopes: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WirePost {
    pub id: PostId,
    pub author: UserId,
    pub author_handle: String,
    pub text: String,
    pub reply_to: Option<PostId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reblog_of: Option<PostId>,
}

impl From<PostRecord> for WirePost {
    fn from(p: PostRecord) -> Self {
        let PostRecord { id, author, author_handle, text, reply_to, reblog_of } = p;
        WirePost { id, author, author_handle, text, reply_to, reblog_of }
    }
}

impl From<WirePost> for PostRecord {
    fn from(p: WirePost) -> Self {
        let WirePost { id, author, author_handle, text, reply_to, reblog_of } = p;
        PostRecord { id, author, author_handle, text, reply_to, reblog_of }
    }
}

/// One reblog: its id and who made it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reblogs {
    pub reblogs: Vec<(PostId, UserId)>,
}

/// Statuses whose counts a viewer asks for.
#[derive(Debug, Serialize, Deserialize)]
pub struct InteractionsQuery {
    pub ids: Vec<PostId>,
    pub viewer: Option<UserId>,
}

/// [`starling_storage::Interactions`] on the wire, one per id asked for.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireInteractions {
    pub counts: Vec<(u64, u64, u64, bool, bool)>,
}

impl WireInteractions {
    pub fn from_store(all: &[starling_storage::Interactions]) -> Self {
        WireInteractions {
            counts: all.iter().map(|i| (i.reblogs, i.favourites, i.replies, i.reblogged, i.favourited)).collect(),
        }
    }

    pub fn into_store(self) -> Vec<starling_storage::Interactions> {
        self.counts
            .into_iter()
            .map(|(reblogs, favourites, replies, reblogged, favourited)| starling_storage::Interactions {
                reblogs,
                favourites,
                replies,
                reblogged,
                favourited,
            })
            .collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UserIds {
    pub ids: Vec<UserId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PostIds {
    pub ids: Vec<PostId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Posts {
    pub posts: Vec<Option<WirePost>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Follows {
    pub follows: bool,
}

/// Whether a removal found what it removed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    pub removed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Class {
    pub celebrity: bool,
}

impl From<AuthorClass> for Class {
    fn from(c: AuthorClass) -> Self {
        Class { celebrity: c == AuthorClass::Celebrity }
    }
}

/// Query of `/internal/v1/users/{id}/followers`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AfterQuery {
    pub after: Option<UserId>,
    pub limit: usize,
}

/// A [`Window`] as query parameters.
#[derive(Debug, Serialize, Deserialize)]
pub struct WindowQuery {
    pub before: Option<PostId>,
    pub after: Option<PostId>,
    pub limit: usize,
    pub oldest_first: bool,
}

impl From<Window<PostId>> for WindowQuery {
    fn from(w: Window<PostId>) -> Self {
        WindowQuery { before: w.before, after: w.after, limit: w.limit, oldest_first: w.order == Order::OldestFirst }
    }
}

impl From<WindowQuery> for Window<PostId> {
    fn from(q: WindowQuery) -> Self {
        Window {
            before: q.before,
            after: q.after,
            limit: q.limit,
            order: if q.oldest_first { Order::OldestFirst } else { Order::NewestFirst },
        }
    }
}

impl WindowQuery {
    /// As URL query parameters (absent bounds left out).
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("limit", self.limit.to_string()), ("oldest_first", self.oldest_first.to_string())];
        if let Some(b) = self.before {
            q.push(("before", b.to_string()));
        }
        if let Some(a) = self.after {
            q.push(("after", a.to_string()));
        }
        q
    }
}

/// Largest page an internal list call returns, whatever is asked; also the most edges one
/// `POST /internal/v1/edges` takes.
pub const MAX_INTERNAL_PAGE: usize = 10_000;

/// Body of `POST /internal/v1/edges`: `(follower, followee)` pairs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Edges {
    pub edges: Vec<(UserId, UserId)>,
}

/// Answer of `POST /internal/v1/edges`, in the order asked.
#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeStates {
    pub edges: Vec<crate::EdgeState>,
}

/// Body of `POST /internal/v1/posts/ids-by-authors`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdsByAuthorsQuery {
    pub authors: Vec<UserId>,
    pub window: WindowQuery,
}

/// Answer of `POST /internal/v1/posts/ids-by-authors`: one list per author, in the order
/// asked.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdsByAuthors {
    pub ids: Vec<Vec<PostId>>,
}

/// Most authors one `ids-by-authors` call takes (each up to [`MAX_INTERNAL_PAGE`] ids): an
/// answer holds at most a million ids (~20 MB of JSON). Clients send far fewer at once.
pub const MAX_AUTHORS_PER_CALL: usize = 100;

/// Store calls an internal batch endpoint keeps in flight (a store across the network
/// answers many at once).
pub const STORE_CALLS_IN_FLIGHT: usize = 32;

/// Notifications on the wire: (id, kind tag, account, status or 0).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireNotifications {
    pub notifications: Vec<(u64, u8, UserId, u64)>,
}

impl WireNotifications {
    pub fn from_store(all: &[starling_storage::NotificationRecord]) -> Self {
        let notifications =
            all.iter().map(|n| (n.id, n.kind.tag(), n.account, n.status.map_or(0, PostId::get))).collect();
        WireNotifications { notifications }
    }

    /// For `recipient`; `None` if a kind is unknown (a newer peer).
    pub fn into_store(self, recipient: UserId) -> Option<Vec<starling_storage::NotificationRecord>> {
        self.notifications
            .into_iter()
            .map(|(id, tag, account, status)| {
                Some(starling_storage::NotificationRecord {
                    id,
                    recipient,
                    kind: starling_storage::NotificationKind::from_tag(tag)?,
                    account,
                    status: (status != 0).then_some(PostId(status)),
                })
            })
            .collect()
    }
}
