//! The trace driver shared by the end-to-end oracle tests: a seeded random trace
//! (posts, deletes, follows, unfollows, blocks, unblocks, reblogs, unreblogs, favourites,
//! mutes, unmutes, reads; popular "stars" pushed
//! across the celebrity threshold and back; hot readers who read often and cold ones
//! who go idle) applied to a running deployment and to [`Oracle`] side by side, with the
//! status of every call checked against the oracle's prediction.

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::json;
use starling_ids::{PostId, UserId};
use starling_oracle::{Oracle, Refusal, compare};

use super::Api;
use starling_metrics::names;

/// Small numbers on purpose: a 30-entry cap makes timelines overflow into storage, a
/// threshold of 6 lets a 40-user trace push authors across it both ways, and a 3 s
/// activity window makes the rarely reading half of the users go idle mid-trace while
/// the frequent readers keep materialised timelines up to the final check.
pub const SETTINGS: &[(&str, &str)] = &[
    ("STARLING__TIMELINE__MAX_ENTRIES", "30"),
    ("STARLING__TIMELINE__ACTIVE_FOR_SECS", "3"),
    ("STARLING__TIMELINE__SWEEP_EVERY_MS", "200"),
    ("STARLING__CELEBRITY__THRESHOLD", "6"),
    ("STARLING__CELEBRITY__DEMOTE_BELOW", "4"),
    ("STARLING__FANOUT__FOLLOWER_PAGE", "5"),
    // Ordinary authors with 4 or more followers are pushed in slices of 2.
    ("STARLING__FANOUT__SPLIT_ABOVE", "3"),
    ("STARLING__FANOUT__SLICE_SIZE", "2"),
];

/// `celebrity.mode`, as the oracle tests run it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FanoutMode {
    Hybrid,
    PushAll,
    PullAll,
}

impl FanoutMode {
    pub fn setting(self) -> &'static str {
        match self {
            FanoutMode::Hybrid => "hybrid",
            FanoutMode::PushAll => "push_all",
            FanoutMode::PullAll => "pull_all",
        }
    }
}

pub const USERS: usize = 40;
/// Users below this index read often; the rest rarely (and go idle).
pub const HOT: usize = USERS / 2;
pub const STARS: usize = 3;

pub struct Driver {
    pub api: Api,
    pub oracle: Oracle,
    pub users: Vec<(UserId, String)>,
    rng: SmallRng,
    next_key: u64,
}

impl Driver {
    /// Registers the users (handles made unique by `seed`) and seeds the trace.
    pub async fn new(api: Api, seed: u64) -> Driver {
        let handles: Vec<String> = (0..USERS).map(|i| format!("u{seed}_{i}")).collect();
        let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
        let users = api.register_all(&handles).await.into_iter().map(|(id, token)| (UserId(id), token)).collect();
        Driver { api, oracle: Oracle::new(), users, rng: SmallRng::seed_from_u64(seed), next_key: 0 }
    }

    /// Asserts that the trace exercised the hybrid path: some celebrity posted, and its
    /// posts were merged at read.
    pub async fn assert_celebrity_posted(&self) {
        let merged = self.api.metric(names::FANOUT_POSTS_MERGED_AT_READ).await;
        assert!(merged > 0, "no celebrity ever posted; the trace does not test the hybrid path");
    }

    /// Asserts that the fan-out worked as `mode` says: in push-all no post was merged at
    /// read; in pull-all every post was written to its author's timeline alone.
    pub async fn assert_mode_applied(&self, mode: FanoutMode) {
        let metric = |name| self.api.metric(name);
        let (pushed, merged) =
            (metric(names::FANOUT_POSTS_PUSHED).await, metric(names::FANOUT_POSTS_MERGED_AT_READ).await);
        match mode {
            FanoutMode::Hybrid => self.assert_celebrity_posted().await,
            FanoutMode::PushAll => assert!(pushed > 0 && merged == 0, "push-all: {pushed} pushed, {merged} merged"),
            FanoutMode::PullAll => {
                // Every post goes to its author's timeline; a follower's only when the
                // post was applied before its author's class change (a follow and the
                // post right after it are events of two topics, applied in either
                // order), which must be rare.
                let targeted =
                    metric(names::FANOUT_TIMELINE_INSERTS).await + metric(names::FANOUT_SKIPPED_INACTIVE).await;
                let to_followers = targeted.saturating_sub(pushed + merged);
                assert!(merged > 0, "pull-all merged nothing at read");
                assert!(
                    to_followers * 20 <= pushed + merged,
                    "pull-all wrote {to_followers} follower timelines for {} posts",
                    pushed + merged
                );
            }
        }
    }

    pub fn token(&self, u: usize) -> &str {
        &self.users[u].1
    }

    pub fn id(&self, u: usize) -> UserId {
        self.users[u].0
    }

    /// Picks a follow target: stars are popular, so they cross the threshold.
    fn pick_target(&mut self, me: usize) -> usize {
        loop {
            let t = if self.rng.random_bool(0.5) {
                self.rng.random_range(0..STARS)
            } else {
                self.rng.random_range(0..USERS)
            };
            if t != me || self.rng.random_bool(0.1) {
                // Sometimes keep a self-target: the service must refuse it.
                return t;
            }
        }
    }

    fn expect(&self, what: &str, status: StatusCode, expected: Result<(), Refusal>) {
        let want = match expected {
            Ok(()) => StatusCode::OK,
            Err(refusal) => StatusCode::from_u16(refusal.http_status()).expect("a valid status"),
        };
        assert_eq!(status, want, "{what}: the oracle expected {expected:?}");
    }

    pub async fn post(&mut self, u: usize) {
        let key = format!("k{}", self.next_key);
        self.next_key += 1;
        let text = format!("post {} by {}", self.next_key, self.users[u].0);
        let r = self
            .api
            .call_with(
                Method::POST,
                "/api/v1/statuses",
                Some(self.token(u)),
                Some(json!({ "status": text })),
                &[("Idempotency-Key", &key)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "post: {}", r.body);
        let id: u64 = r.body["id"].as_str().unwrap().parse().unwrap();
        self.oracle.post(PostId(id), self.id(u));
    }

    pub async fn step(&mut self) {
        let u = self.rng.random_range(0..USERS);
        let me = self.id(u);
        match self.rng.random_range(0..120) {
            0..=34 => self.post(u).await,
            35..=39 => {
                let mine = self.oracle.posts_of(me);
                let Some(&victim) = mine.choose(&mut self.rng) else { return };
                let r = self
                    .api
                    .call(Method::DELETE, &format!("/api/v1/statuses/{victim}"), Some(self.token(u)), None)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "delete: {}", r.body);
                self.oracle.delete(victim, me).unwrap();
            }
            40..=41 => {
                // Someone else's post: must be refused and change nothing.
                let other = self.rng.random_range(0..USERS);
                let theirs = self.oracle.posts_of(self.id(other));
                let Some(&victim) = theirs.choose(&mut self.rng) else { return };
                let r = self
                    .api
                    .call(Method::DELETE, &format!("/api/v1/statuses/{victim}"), Some(self.token(u)), None)
                    .await;
                self.expect("delete other's post", r.status, self.oracle.check_delete(victim, me));
                if r.status == StatusCode::OK {
                    self.oracle.delete(victim, me).unwrap();
                }
            }
            42..=66 => {
                let t = self.pick_target(u);
                let them = self.id(t);
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/accounts/{them}/follow"), Some(self.token(u)), None)
                    .await;
                self.expect("follow", r.status, self.oracle.check_follow(me, them));
                let _ = self.oracle.follow(me, them);
            }
            67..=78 => {
                // Mostly real unfollows, sometimes of a star (pulls it back under the line).
                let current: Vec<UserId> = self.oracle.following_of(me).collect();
                let them = match current.choose(&mut self.rng) {
                    Some(&t) if self.rng.random_bool(0.9) => t,
                    _ => {
                        let t = self.rng.random_range(0..USERS);
                        self.id(t)
                    }
                };
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/accounts/{them}/unfollow"), Some(self.token(u)), None)
                    .await;
                self.expect("unfollow", r.status, self.oracle.check_unfollow(me, them));
                let _ = self.oracle.unfollow(me, them);
            }
            79..=80 => {
                let t = self.rng.random_range(0..USERS);
                let them = self.id(t);
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/accounts/{them}/block"), Some(self.token(u)), None)
                    .await;
                self.expect("block", r.status, self.oracle.check_block(me, them));
                let _ = self.oracle.block(me, them);
            }
            81 => {
                let t = self.rng.random_range(0..USERS);
                let them = self.id(t);
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/accounts/{them}/unblock"), Some(self.token(u)), None)
                    .await;
                self.expect("unblock", r.status, self.oracle.check_unblock(me, them));
                let _ = self.oracle.unblock(me, them);
            }
            100..=107 => self.reblog(u).await,
            108..=110 => {
                // Mostly a status this user reblogged, sometimes any: unreblogging what one
                // never reblogged is fine.
                let Some(target) = self.some_status(u) else { return };
                let r = self.status_action(u, target, "unreblog").await;
                self.expect("unreblog", r.status, self.oracle.check_reblog(target));
                let _ = self.oracle.unreblog(target, me);
            }
            111..=113 => {
                let Some(target) = self.some_status(u) else { return };
                let on = self.rng.random_bool(0.7);
                let r = self.status_action(u, target, if on { "favourite" } else { "unfavourite" }).await;
                self.expect("favourite", r.status, self.oracle.check_reblog(target));
                if self.oracle.favourite(target, me, on).is_ok() {
                    let original = self.oracle.original_of(target).expect("a live status");
                    let (reblogs, favourites) = self.oracle.counts(original);
                    assert_eq!(r.body["id"], json!(original.to_string()), "favourite answers the original");
                    assert_eq!(r.body["favourited"], json!(on), "favourited: {}", r.body);
                    assert_eq!(r.body["favourites_count"], json!(favourites), "favourites_count: {}", r.body);
                    assert_eq!(r.body["reblogs_count"], json!(reblogs), "reblogs_count: {}", r.body);
                }
            }
            114..=116 => {
                // Mostly someone this user follows (so the mute shows), sometimes itself.
                let followed: Vec<UserId> = self.oracle.following_of(me).collect();
                let them = match followed.choose(&mut self.rng) {
                    Some(&t) if self.rng.random_bool(0.9) => t,
                    _ => {
                        let t = self.pick_target(u);
                        self.id(t)
                    }
                };
                let on = !self.oracle.mutes(me, them) || self.rng.random_bool(0.2);
                let verb = if on { "mute" } else { "unmute" };
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/accounts/{them}/{verb}"), Some(self.token(u)), None)
                    .await;
                self.expect(verb, r.status, self.oracle.check_mute(me, them));
                if self.oracle.mute(me, them, on).is_ok() {
                    assert_eq!(r.body["muting"], json!(on), "{verb}: {}", r.body);
                    assert_eq!(r.body["following"], json!(self.oracle.follows(me, them)), "{verb}: {}", r.body);
                }
            }
            _ => {
                // A read before quiet: may lag, but is always well formed. Mostly hot readers.
                let u = if self.rng.random_bool(0.9) { self.rng.random_range(0..HOT) } else { u };
                let limit = self.rng.random_range(1..=20);
                self.read(u, limit).await;
            }
        }
    }

    /// A status `u` might act on: mostly one in its home timeline (reblogs there included,
    /// which act on their originals), sometimes any live post, sometimes a deleted one.
    fn some_status(&mut self, u: usize) -> Option<PostId> {
        let home = self.oracle.home(self.id(u));
        if !home.is_empty() && self.rng.random_bool(0.7) {
            return home.choose(&mut self.rng).copied();
        }
        let other = self.rng.random_range(0..USERS);
        let theirs = self.oracle.posts_of(self.id(other));
        match theirs.choose(&mut self.rng) {
            Some(&p) if self.rng.random_bool(0.95) => Some(p),
            // Never a live id: a post id is at least its timestamp, far above this.
            _ => Some(PostId(self.rng.random_range(1..1_000_000))),
        }
    }

    /// `POST /api/v1/statuses/{id}/{action}` as `u`.
    async fn status_action(&self, u: usize, id: PostId, action: &str) -> super::Reply {
        self.api.call(Method::POST, &format!("/api/v1/statuses/{id}/{action}"), Some(self.token(u)), None).await
    }

    /// `u` reblogs a status: the answer is the reblog, wrapping the original; a second
    /// reblog of the same status answers the first.
    pub async fn reblog(&mut self, u: usize) {
        let Some(target) = self.some_status(u) else { return };
        let me = self.id(u);
        let before = self.oracle.reblog_by(target, me);
        let r = self.status_action(u, target, "reblog").await;
        self.expect("reblog", r.status, self.oracle.check_reblog(target));
        if r.status != StatusCode::OK {
            return;
        }
        let original = self.oracle.original_of(target).expect("a live status");
        let reblog = PostId(r.body["id"].as_str().unwrap().parse().unwrap());
        assert_eq!(r.body["reblog"]["id"], json!(original.to_string()), "reblog wraps the original: {}", r.body);
        assert_eq!(r.body["reblogged"], json!(true), "reblog: {}", r.body);
        if let Some(first) = before {
            assert_eq!(reblog, first, "a second reblog answers the first");
        }
        self.oracle.reblog(target, me, reblog).unwrap();
    }

    /// Reads `u`'s first page; returns its post ids. Before quiet it may lag, but it is
    /// always well formed.
    pub async fn read(&self, u: usize, limit: usize) -> Vec<PostId> {
        let path = format!("/api/v1/timelines/home?limit={limit}");
        let r = self.api.call(Method::GET, &path, Some(self.token(u)), None).await;
        assert_eq!(r.status, StatusCode::OK, "read: {}", r.body);
        let ids = page_ids(&r.body);
        assert!(ids.len() <= limit);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "a page must be strictly newest first: {ids:?}");
        ids
    }

    /// Has the author of the newest post in `u`'s timeline delete it. Returns the post, if
    /// there was one.
    pub async fn delete_newest_of(&mut self, u: usize) -> Option<PostId> {
        let &victim = self.oracle.home(self.id(u)).first()?;
        let author = self.oracle.author_of(victim).expect("a known post");
        let a = self.users.iter().position(|(id, _)| *id == author).expect("a known user");
        let r = self.api.call(Method::DELETE, &format!("/api/v1/statuses/{victim}"), Some(self.token(a)), None).await;
        assert_eq!(r.status, StatusCode::OK, "delete: {}", r.body);
        self.oracle.delete(victim, author).unwrap();
        Some(victim)
    }

    /// `u` unfollows (`block: false`) or blocks one of the users it follows whose posts it
    /// sees. Returns whom, if it followed anyone who posted.
    pub async fn drop_a_followee(&mut self, u: usize, block: bool) -> Option<UserId> {
        let me = self.id(u);
        let home = self.oracle.home(me);
        let them = home.iter().filter_map(|p| self.oracle.author_of(*p)).find(|a| *a != me)?;
        let path = format!("/api/v1/accounts/{them}/{}", if block { "block" } else { "unfollow" });
        let r = self.api.call(Method::POST, &path, Some(self.token(u)), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        if block {
            self.oracle.block(me, them).unwrap();
        } else {
            self.oracle.unfollow(me, them).unwrap();
        }
        Some(them)
    }

    /// Returns how many users were served from a materialised timeline (not rebuilt).
    pub async fn verify_all(&self, label: &str) -> usize {
        self.api.wait_quiet().await;
        let mut checked = 0;
        let mut from_cache = 0;
        for (u, (id, token)) in self.users.iter().enumerate() {
            let limit = [7, 20, 3][u % 3];
            let rebuilds = self.api.metric(names::TIMELINE_REBUILDS).await;
            let served: Vec<PostId> = self.api.home_all(token, limit).await.into_iter().map(PostId).collect();
            if self.api.metric(names::TIMELINE_REBUILDS).await == rebuilds {
                from_cache += 1;
            }
            let expected = self.oracle.home(*id);
            let d = compare(&expected, &served);
            assert!(
                d.is_empty(),
                "{label}: user {u} timeline diverges from the oracle: {d:?}\nexpected {expected:?}\nserved   {served:?}"
            );
            checked += expected.len();
        }
        // min_id walks upwards from an older post: the ids just above it, newest first.
        for u in 0..5 {
            let expected = self.oracle.home(self.id(u));
            if expected.len() < 12 {
                continue;
            }
            let anchor = expected[10];
            let r = self
                .api
                .call(
                    Method::GET,
                    &format!("/api/v1/timelines/home?min_id={anchor}&limit=4"),
                    Some(self.token(u)),
                    None,
                )
                .await;
            let got = page_ids(&r.body);
            assert_eq!(got, expected[6..10].to_vec(), "{label}: min_id page for user {u}");
        }
        eprintln!(
            "{label}: {} users ({from_cache} from materialised timelines), {checked} timeline entries equal to the oracle",
            self.users.len()
        );
        from_cache
    }
}

/// The post ids of a timeline page, in its order.
fn page_ids(body: &serde_json::Value) -> Vec<PostId> {
    body.as_array().unwrap().iter().map(|p| PostId(p["id"].as_str().unwrap().parse().unwrap())).collect()
}
