//! The timeline contract, checked end to end.
//!
//! A seeded random trace (posts, deletes, follows, unfollows, blocks, reads; a few
//! authors pushed across the celebrity threshold and back; readers going idle long
//! enough to lose their materialised timeline) is driven through the HTTP API of the real
//! standalone binary. After the fan-out goes quiet, every user's home timeline, read page
//! by page, must equal what [`starling_oracle::Oracle`] computes from the same trace.
//!
//! Variants disturb the run: SIGKILL and restart in the middle of a burst of concurrent
//! posts (retried with their Idempotency-Keys), the timeline cache wiped mid-trace, and a
//! graceful SIGTERM restart at the end.

mod common;

use std::collections::HashMap;

use common::{ADMIN_TOKEN, Api, Server};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::json;
use starling_ids::{PostId, UserId};
use starling_oracle::{Oracle, Refusal, compare};

/// Small numbers on purpose: a 30-entry cap makes timelines overflow into storage, a
/// threshold of 6 lets a 40-user trace push authors across it both ways, and a 3 s
/// activity window makes the rarely reading half of the users go idle mid-trace while
/// the frequent readers keep materialised timelines up to the final check.
const SETTINGS: &[(&str, &str)] = &[
    ("STARLING__TIMELINE__MAX_ENTRIES", "30"),
    ("STARLING__TIMELINE__ACTIVE_FOR_SECS", "3"),
    ("STARLING__TIMELINE__SWEEP_EVERY_MS", "200"),
    ("STARLING__TIMELINE__CELEBRITY_REFRESH_MS", "100"),
    ("STARLING__CELEBRITY__THRESHOLD", "6"),
    ("STARLING__CELEBRITY__DEMOTE_BELOW", "4"),
    ("STARLING__FANOUT__FOLLOWER_PAGE", "5"),
];

const USERS: usize = 40;
/// Users below this index read often; the rest rarely (and go idle).
const HOT: usize = USERS / 2;
const STARS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Disturbance {
    None,
    KillMidBurst,
    WipeCache,
}

struct Driver {
    api: Api,
    oracle: Oracle,
    users: Vec<(UserId, String)>,
    rng: SmallRng,
    next_key: u64,
}

impl Driver {
    fn token(&self, u: usize) -> &str {
        &self.users[u].1
    }

    fn id(&self, u: usize) -> UserId {
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
            Err(Refusal::SelfTarget) => StatusCode::UNPROCESSABLE_ENTITY,
            Err(Refusal::Blocked) => StatusCode::FORBIDDEN,
            Err(Refusal::NotAuthor) => StatusCode::FORBIDDEN,
            Err(Refusal::UnknownPost) => StatusCode::NOT_FOUND,
            Err(_) => StatusCode::CONFLICT,
        };
        assert_eq!(status, want, "{what}: the oracle expected {expected:?}");
    }

    async fn post(&mut self, u: usize) {
        let key = format!("k{}", self.next_key);
        self.next_key += 1;
        let text = format!("post {} by {}", self.next_key, self.users[u].0);
        let r = self
            .api
            .call_with(
                Method::POST,
                "/api/v1/posts",
                Some(self.token(u)),
                Some(json!({ "text": text })),
                &[("Idempotency-Key", &key)],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "post: {}", r.body);
        let id: u64 = r.body["id"].as_str().unwrap().parse().unwrap();
        self.oracle.post(PostId(id), self.id(u));
    }

    async fn step(&mut self) {
        let u = self.rng.random_range(0..USERS);
        let me = self.id(u);
        match self.rng.random_range(0..100) {
            0..=34 => self.post(u).await,
            35..=39 => {
                let mine = self.oracle.posts_of(me);
                let Some(&victim) = mine.choose(&mut self.rng) else { return };
                let r =
                    self.api.call(Method::DELETE, &format!("/api/v1/posts/{victim}"), Some(self.token(u)), None).await;
                assert_eq!(r.status, StatusCode::NO_CONTENT, "delete: {}", r.body);
                self.oracle.delete(victim, me).unwrap();
            }
            40..=41 => {
                // Someone else's post: must be refused and change nothing.
                let other = self.rng.random_range(0..USERS);
                let theirs = self.oracle.posts_of(self.id(other));
                let Some(&victim) = theirs.choose(&mut self.rng) else { return };
                let r =
                    self.api.call(Method::DELETE, &format!("/api/v1/posts/{victim}"), Some(self.token(u)), None).await;
                self.expect(
                    "delete other's post",
                    if r.status == StatusCode::NO_CONTENT { StatusCode::OK } else { r.status },
                    self.oracle.check_delete(victim, me),
                );
                if r.status == StatusCode::NO_CONTENT {
                    self.oracle.delete(victim, me).unwrap();
                }
            }
            42..=66 => {
                let t = self.pick_target(u);
                let them = self.id(t);
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/users/{them}/follow"), Some(self.token(u)), None)
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
                    .call(Method::DELETE, &format!("/api/v1/users/{them}/follow"), Some(self.token(u)), None)
                    .await;
                self.expect("unfollow", r.status, self.oracle.check_unfollow(me, them));
                let _ = self.oracle.unfollow(me, them);
            }
            79..=80 => {
                let t = self.rng.random_range(0..USERS);
                let them = self.id(t);
                let r = self
                    .api
                    .call(Method::POST, &format!("/api/v1/users/{them}/block"), Some(self.token(u)), None)
                    .await;
                self.expect("block", r.status, self.oracle.check_block(me, them));
                let _ = self.oracle.block(me, them);
            }
            81 => {
                let t = self.rng.random_range(0..USERS);
                let them = self.id(t);
                let r = self
                    .api
                    .call(Method::DELETE, &format!("/api/v1/users/{them}/block"), Some(self.token(u)), None)
                    .await;
                let expected = self.oracle.clone().unblock(me, them);
                self.expect("unblock", r.status, expected);
                let _ = self.oracle.unblock(me, them);
            }
            _ => {
                // A read before quiet: may lag, but is always well formed. Mostly hot readers.
                let u = if self.rng.random_bool(0.9) { self.rng.random_range(0..HOT) } else { u };
                let limit = self.rng.random_range(1..=20);
                let r = self
                    .api
                    .call(Method::GET, &format!("/api/v1/timelines/home?limit={limit}"), Some(self.token(u)), None)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "read: {}", r.body);
                let ids: Vec<u64> = r.body["posts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().parse().unwrap())
                    .collect();
                assert!(ids.len() <= limit);
                assert!(ids.windows(2).all(|w| w[0] > w[1]), "a page must be strictly newest first: {ids:?}");
            }
        }
    }

    /// Posts concurrently from many users while the server is SIGKILLed, then retries every
    /// request with its Idempotency-Key after the restart. Every post the server
    /// acknowledged (before or after) must exist exactly once.
    async fn burst_with_kill(&mut self, server: &mut Server) {
        let mut requests = Vec::new();
        for n in 0..300 {
            let u = n % USERS;
            let key = format!("burst-{n}");
            requests.push((u, key, format!("burst post {n}")));
        }
        let tasks: Vec<_> = requests
            .iter()
            .map(|(u, key, text)| {
                let (api, token, key, text) = (self.api.clone(), self.token(*u).to_owned(), key.clone(), text.clone());
                tokio::spawn(async move {
                    api.try_call(
                        Method::POST,
                        "/api/v1/posts",
                        Some(&token),
                        Some(json!({ "text": text })),
                        &[("Idempotency-Key", &key)],
                    )
                    .await
                    .ok()
                    .filter(|r| r.status == StatusCode::CREATED)
                    .map(|r| r.body["id"].as_str().unwrap().to_owned())
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        server.kill();
        let mut acknowledged = HashMap::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if let Some(id) = t.await.unwrap() {
                acknowledged.insert(i, id);
            }
        }
        server.restart();
        self.api = Api::new(&server.base);
        for (i, (u, key, text)) in requests.iter().enumerate() {
            let r = self
                .api
                .call_with(
                    Method::POST,
                    "/api/v1/posts",
                    Some(self.token(*u)),
                    Some(json!({ "text": text })),
                    &[("Idempotency-Key", key)],
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "retry: {}", r.body);
            let id = r.body["id"].as_str().unwrap().to_owned();
            if let Some(before) = acknowledged.get(&i) {
                assert_eq!(before, &id, "a retried post must return the acknowledged one, not post twice");
            }
            self.oracle.post(PostId(id.parse().unwrap()), self.id(*u));
        }
        eprintln!("burst: {} of {} posts acknowledged before the kill", acknowledged.len(), requests.len());
    }

    /// Returns how many users were served from a materialised timeline (not rebuilt).
    async fn verify_all(&self, label: &str) -> usize {
        self.api.wait_quiet().await;
        let mut checked = 0;
        let mut from_cache = 0;
        for (u, (id, token)) in self.users.iter().enumerate() {
            let limit = [7, 20, 3][u % 3];
            let rebuilds = self.api.metric("starling_timeline_rebuilds_total").await;
            let served: Vec<PostId> = self.api.home_all(token, limit).await.into_iter().map(PostId).collect();
            if self.api.metric("starling_timeline_rebuilds_total").await == rebuilds {
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
            let got: Vec<PostId> = r.body["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| PostId(p["id"].as_str().unwrap().parse().unwrap()))
                .collect();
            assert_eq!(got, expected[6..10].to_vec(), "{label}: min_id page for user {u}");
        }
        eprintln!(
            "{label}: {} users ({from_cache} from materialised timelines), {checked} timeline entries equal to the oracle",
            self.users.len()
        );
        from_cache
    }
}

async fn run(seed: u64, steps: usize, disturbance: Disturbance) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), SETTINGS);
    let api = Api::new(&server.base);
    let mut users = Vec::new();
    for i in 0..USERS {
        let (id, token) = api.register(&format!("u{seed}_{i}")).await;
        users.push((UserId(id), token));
    }
    let mut d = Driver { api, oracle: Oracle::new(), users, rng: SmallRng::seed_from_u64(seed), next_key: 0 };
    let mut celebrity_seen = false;

    for step in 0..steps {
        d.step().await;
        if step == steps / 2 {
            match disturbance {
                Disturbance::KillMidBurst => d.burst_with_kill(&mut server).await,
                Disturbance::WipeCache => {
                    let r = d.api.call(Method::POST, "/admin/v1/cache/clear", Some(ADMIN_TOKEN), None).await;
                    assert_eq!(r.status, StatusCode::NO_CONTENT);
                }
                Disturbance::None => {}
            }
        }
        if step % 200 == 0 {
            for s in 0..STARS {
                let r = d.api.call(Method::GET, &format!("/api/v1/users/{}", d.id(s)), None, None).await;
                celebrity_seen |= r.body["celebrity"].as_bool().unwrap();
            }
        }
    }
    assert!(celebrity_seen, "the trace never made anyone a celebrity; it does not test the hybrid path");
    assert!(d.api.metric("starling_timeline_rebuilds_total").await > 0, "no reader ever went idle and got rebuilt");
    let from_cache = d.verify_all("after the trace").await;
    // Otherwise the check only exercised the rebuild path, not what fan-out maintained.
    assert!(from_cache >= HOT / 2, "only {from_cache} users were served from materialised timelines");

    if disturbance == Disturbance::WipeCache {
        let r = d.api.call(Method::POST, "/admin/v1/cache/clear", Some(ADMIN_TOKEN), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        d.verify_all("after wiping the cache").await;
    }

    // A graceful restart keeps everything.
    let status = server.terminate();
    assert!(status.success(), "SIGTERM must stop the server cleanly, got {status}");
    server.restart();
    d.api = Api::new(&server.base);
    d.verify_all("after a graceful restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_match_the_oracle() {
    run(1, 2_500, Disturbance::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_match_the_oracle_after_sigkill_mid_burst() {
    run(2, 2_000, Disturbance::KillMidBurst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_match_the_oracle_with_the_cache_wiped() {
    run(3, 2_000, Disturbance::WipeCache).await;
}
