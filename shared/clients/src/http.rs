//! HTTP clients for the internal APIs, used when services run as separate processes.

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use starling_ids::{PostId, UserId};
use starling_storage::{AuthorClass, Counts, Interactions, NotificationRecord, PostRecord, UserRecord, Window};
use tracing::Instrument as _;

use crate::wire::{
    Class, EdgeStates, Edges, Follows, IdsByAuthors, IdsByAuthorsQuery, InteractionsQuery, MAX_INTERNAL_PAGE, PostIds,
    Posts, Reblogs, Removed, UserIds, WindowQuery, WireCounts, WireGrant, WireInteractions, WireNotifications,
    WireUser,
};
use crate::{ClientError, ClientResult, EdgeState, GraphClient, PostClient};

/// Authors per `ids-by-authors` call: up to ~64 × 800 ids (~1.5 MB) an answer.
const AUTHORS_PER_CALL: usize = 64;

/// A base URL and a pooled HTTP/1.1 client with bounded timeouts: a slow peer must not
/// hold a fan-out partition or a read forever.
#[derive(Clone)]
struct Peer {
    base: String,
    http: reqwest::Client,
}

impl Peer {
    fn new(base: &str) -> ClientResult<Peer> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ClientError::Remote(e.to_string()))?;
        Ok(Peer { base: base.trim_end_matches('/').to_owned(), http })
    }

    /// Sends `req` in a client span of its own (when traces are exported) whose context
    /// the request carries, so the peer's server span is its child.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> ClientResult<Option<T>> {
        let mut req = req.build().map_err(remote)?;
        let span = starling_telemetry::span!(
            "http.client",
            otel.name = format!("{} {}", req.method(), route_of(req.url().path())),
            otel.kind = "client",
            http.request.method = req.method().as_str(),
            server.address = req.url().host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
        );
        starling_telemetry::propagation::inject_http(&span, req.headers_mut());
        let res = self.http.execute(req).instrument(span.clone()).await.map_err(remote)?;
        span.record("http.response.status_code", res.status().as_u16());
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !res.status().is_success() {
            return Err(ClientError::Remote(format!("{} answered {}", res.url(), res.status())));
        }
        res.json().await.map(Some).map_err(remote)
    }

    /// POSTs `body` as JSON to a path that must exist.
    async fn post_some<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> ClientResult<T> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(req).await?.ok_or_else(|| ClientError::Remote(format!("{path}: not found")))
    }

    /// DELETEs a path whose parent must exist.
    async fn delete_some<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        let req = self.http.delete(format!("{}{path}", self.base));
        self.send(req).await?.ok_or_else(|| ClientError::Remote(format!("{path}: not found")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> ClientResult<Option<T>> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query)).await
    }

    /// Like `get`, but a 404 is an error: the path names something that must exist.
    async fn get_some<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> ClientResult<T> {
        self.get(path, query).await?.ok_or_else(|| ClientError::Remote(format!("{path}: not found")))
    }
}

/// An internal path as a route template, for span names: ids become `{id}` (one name per
/// endpoint, not per user), and a grant's key, a token's hash, never leaves the process.
fn route_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut after_grants = false;
    for segment in path.split('/').skip(1) {
        out.push('/');
        if after_grants {
            out.push_str("{key}");
        } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
        after_grants = segment == "grants";
    }
    out
}

/// A failed call, with the causes reqwest keeps in its source chain ("error sending
/// request" alone does not say whether the connection was refused, reset or timed out).
fn remote(e: reqwest::Error) -> ClientError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ClientError::Remote(message)
}

/// The graph-service over HTTP.
pub struct HttpGraph(Peer);

impl HttpGraph {
    pub fn new(base: &str) -> ClientResult<HttpGraph> {
        Ok(HttpGraph(Peer::new(base)?))
    }

    /// What the OAuth access token whose SHA-256 is `hash` stands for; `None` if nothing
    /// live. Asked on every request that presents one, so a revocation holds at once.
    pub async fn grant(&self, hash: &[u8; 32]) -> ClientResult<Option<WireGrant>> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash);
        self.0.get(&format!("/internal/v1/grants/{key}"), &[]).await
    }
}

#[async_trait]
impl GraphClient for HttpGraph {
    async fn user(&self, id: UserId) -> ClientResult<Option<UserRecord>> {
        Ok(self.0.get::<WireUser>(&format!("/internal/v1/users/{id}"), &[]).await?.map(Into::into))
    }

    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> ClientResult<Vec<UserId>> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        Ok(self.0.get_some::<UserIds>(&format!("/internal/v1/users/{user}/followers"), &query).await?.ids)
    }

    async fn following(&self, user: UserId) -> ClientResult<Vec<UserId>> {
        Ok(self.0.get_some::<UserIds>(&format!("/internal/v1/users/{user}/following"), &[]).await?.ids)
    }

    async fn follows(&self, follower: UserId, followee: UserId) -> ClientResult<bool> {
        let path = format!("/internal/v1/users/{follower}/follows/{followee}");
        Ok(self.0.get_some::<Follows>(&path, &[]).await?.follows)
    }

    async fn muters(&self, user: UserId) -> ClientResult<Vec<UserId>> {
        Ok(self.0.get_some::<UserIds>(&format!("/internal/v1/users/{user}/muters"), &[]).await?.ids)
    }

    async fn notifications(&self, user: UserId, window: Window<u64>) -> ClientResult<Vec<NotificationRecord>> {
        let as_posts = Window {
            before: window.before.map(PostId),
            after: window.after.map(PostId),
            limit: window.limit,
            order: window.order,
        };
        let q = WindowQuery::from(as_posts).to_query();
        let answer: WireNotifications =
            self.0.get_some(&format!("/internal/v1/users/{user}/notifications"), &q).await?;
        answer.into_store(user).ok_or_else(|| ClientError::Remote("a notification of an unknown kind".into()))
    }

    async fn remove_follow_notification(&self, recipient: UserId, follower: UserId) -> ClientResult<bool> {
        let path = format!("/internal/v1/users/{recipient}/notifications/follow/{follower}");
        Ok(self.0.delete_some::<Removed>(&path).await?.removed)
    }

    async fn author_class(&self, user: UserId) -> ClientResult<AuthorClass> {
        let class = self.0.get_some::<Class>(&format!("/internal/v1/users/{user}/class"), &[]).await?;
        Ok(if class.celebrity { AuthorClass::Celebrity } else { AuthorClass::Ordinary })
    }

    async fn celebrities(&self) -> ClientResult<Vec<UserId>> {
        Ok(self.0.get_some::<UserIds>("/internal/v1/celebrities", &[]).await?.ids)
    }

    async fn counts(&self, user: UserId) -> ClientResult<Counts> {
        let c = self.0.get_some::<WireCounts>(&format!("/internal/v1/users/{user}/counts"), &[]).await?;
        Ok(Counts { followers: c.followers, following: c.following })
    }

    async fn edges(&self, edges: &[(UserId, UserId)]) -> ClientResult<Vec<EdgeState>> {
        let mut states = Vec::with_capacity(edges.len());
        for chunk in edges.chunks(MAX_INTERNAL_PAGE) {
            let body = Edges { edges: chunk.to_vec() };
            let answer: EdgeStates = self.0.post_some("/internal/v1/edges", &body).await?;
            if answer.edges.len() != chunk.len() {
                return Err(ClientError::Remote("edges answered the wrong number of edges".into()));
            }
            states.extend(answer.edges);
        }
        Ok(states)
    }
}

/// The post-service over HTTP.
pub struct HttpPosts(Peer);

impl HttpPosts {
    pub fn new(base: &str) -> ClientResult<HttpPosts> {
        Ok(HttpPosts(Peer::new(base)?))
    }
}

#[async_trait]
impl PostClient for HttpPosts {
    async fn get_posts(&self, ids: &[PostId]) -> ClientResult<Vec<Option<PostRecord>>> {
        let posts: Posts = self.0.post_some("/internal/v1/posts/lookup", &PostIds { ids: ids.to_vec() }).await?;
        if posts.posts.len() != ids.len() {
            return Err(ClientError::Remote("lookup answered the wrong number of posts".into()));
        }
        Ok(posts.posts.into_iter().map(|p| p.map(Into::into)).collect())
    }

    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostRecord>> {
        let q = WindowQuery::from(window).to_query();
        let posts: Posts = self.0.get_some(&format!("/internal/v1/users/{author}/posts"), &q).await?;
        Ok(posts.posts.into_iter().flatten().map(Into::into).collect())
    }

    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostId>> {
        let q = WindowQuery::from(window).to_query();
        Ok(self.0.get_some::<PostIds>(&format!("/internal/v1/users/{author}/post-ids"), &q).await?.ids)
    }

    async fn reblogs(&self, original: PostId, window: Window<PostId>) -> ClientResult<Vec<(PostId, UserId)>> {
        let q = WindowQuery::from(window).to_query();
        Ok(self.0.get_some::<Reblogs>(&format!("/internal/v1/posts/{original}/reblogs"), &q).await?.reblogs)
    }

    async fn interactions(&self, ids: &[PostId], viewer: Option<UserId>) -> ClientResult<Vec<Interactions>> {
        let body = InteractionsQuery { ids: ids.to_vec(), viewer };
        let answer: WireInteractions = self.0.post_some("/internal/v1/posts/interactions", &body).await?;
        if answer.counts.len() != ids.len() {
            return Err(ClientError::Remote("interactions answered the wrong number of posts".into()));
        }
        Ok(answer.into_store())
    }

    async fn post_ids_by_authors(&self, authors: &[UserId], window: Window<PostId>) -> ClientResult<Vec<Vec<PostId>>> {
        let mut all = Vec::with_capacity(authors.len());
        for chunk in authors.chunks(AUTHORS_PER_CALL) {
            let body = IdsByAuthorsQuery { authors: chunk.to_vec(), window: WindowQuery::from(window) };
            let answer: IdsByAuthors = self.0.post_some("/internal/v1/posts/ids-by-authors", &body).await?;
            if answer.ids.len() != chunk.len() {
                return Err(ClientError::Remote("ids-by-authors answered the wrong number of authors".into()));
            }
            all.extend(answer.ids);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn span_names_template_ids_and_hide_grant_keys() {
        assert_eq!(super::route_of("/internal/v1/users/123/followers"), "/internal/v1/users/{id}/followers");
        assert_eq!(super::route_of("/internal/v1/users/1/follows/22"), "/internal/v1/users/{id}/follows/{id}");
        assert_eq!(super::route_of("/internal/v1/grants/abcdef0123"), "/internal/v1/grants/{key}");
        assert_eq!(super::route_of("/internal/v1/posts/lookup"), "/internal/v1/posts/lookup");
    }
}
