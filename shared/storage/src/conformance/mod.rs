//! The conformance suite every [`PostStore`], [`GraphStore`] and [`AuthStore`]
//! implementation must pass.
//!
//! Each check is a public async function that panics on failure, so an implementation's
//! tests call them one by one (a failure then names its check) or all at once through
//! [`run_post_store`] / [`run_graph_store`] / [`run_auth_store`] ([`concurrent_take_grant`]
//! is called on its own: it needs a shared store and a multi-threaded runtime).
//!
//! The checks may share one store with each other and with unrelated tests (a ScyllaDB
//! server shared by a CI run): every id they use is freshly drawn from a random range, and
//! they look only at outbox entries whose sequence numbers or records are their own. They
//! acknowledge what they commit, so the outbox does not grow across runs. They do assume
//! the outbox holds fewer than [`SCAN`] pending entries from others.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use starling_events::{Record, Topic};
use starling_ids::{PostId, UserId};

use crate::embedded::{Durability, EmbeddedStore};
use crate::{
    AuthorClass, Counts, CreatePost, EdgeChange, GraphStore, Order, Outbox, OutboxEntry, PostRecord, PostStore,
    StoreResult, UserRecord, Window,
};

mod auth;
mod interactions;
pub use auth::*;
pub use interactions::*;

/// How many pending entries a check reads when looking for its own.
pub const SCAN: usize = 100_000;

/// Opens an [`EmbeddedStore`] in a fresh temporary directory, removed when the returned
/// guard drops. For tests of code built on the stores.
pub fn embedded_in_tempdir() -> StoreResult<(tempfile::TempDir, EmbeddedStore)> {
    let dir = tempfile::tempdir().map_err(|e| crate::StoreError::Backend(e.to_string()))?;
    let store = EmbeddedStore::open(dir.path(), Durability::Buffer)?;
    Ok((dir, store))
}

/// Runs every post-store check on `store`.
pub async fn run_post_store<S: PostStore>(store: &S) {
    create_and_get_posts(store).await;
    idempotency_key_replay(store).await;
    delete_post(store).await;
    posts_by_author_windows(store).await;
    post_outbox_order_and_ack(store).await;
    run_interactions(store).await;
}

/// Runs every graph-store check on `store`.
pub async fn run_graph_store<S: GraphStore>(store: &S) {
    users_and_handles(store).await;
    follow_and_unfollow(store).await;
    block_and_unblock(store).await;
    followers_and_following_pages(store).await;
    author_class(store).await;
    graph_outbox_order_and_ack(store).await;
    mute_and_unmute(store).await;
    notifications_add_remove_and_list(store).await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Consecutive ids from a random base: increasing (so post order is known) and, with 61
/// random bits, disjoint from any other run's. Below 2^63 so signed 64-bit columns hold them.
pub(crate) struct Ids {
    next: u64,
}

impl Ids {
    pub(crate) fn new() -> Ids {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        // RandomState is seeded from the OS per process; the counter and the clock keep
        // bases from the same process apart.
        let random = RandomState::new().hash_one((nanos, CALLS.fetch_add(1, Ordering::Relaxed)));
        Ids { next: (1 << 62) | (random & ((1 << 61) - 1)) }
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(crate) fn user(&mut self) -> UserId {
        UserId(self.next())
    }

    fn post(&mut self) -> PostId {
        PostId(self.next())
    }
}

/// A record no other test produces: its key and payload carry a fresh id.
fn marker(topic: Topic, ids: &mut Ids, what: &str) -> Record {
    let key = ids.next();
    Record {
        topic,
        key,
        payload: Bytes::from(format!("conformance {what} {key}")),
        headers: vec![
            ("traceparent".to_owned(), Bytes::from(format!("00-{key:032x}-{key:016x}-01"))),
            ("empty".to_owned(), Bytes::new()),
        ],
    }
}

fn post(ids: &mut Ids, author: UserId, text: &str) -> PostRecord {
    PostRecord {
        id: ids.post(),
        author,
        author_handle: format!("Author{}", author.get()),
        text: text.to_owned(),
        reply_to: None,
        reblog_of: None,
    }
}

/// The events of a delete that commits none.
pub(crate) fn no_events(_: &PostRecord) -> Vec<Record> {
    Vec::new()
}

/// A delete's events: `records` for each post it removes.
pub(crate) fn events_of(records: &[Record]) -> impl Fn(&PostRecord) -> Vec<Record> + Send + Sync + use<> {
    let records = records.to_vec();
    move |_| records.clone()
}

/// The outbox sequence numbers of a delete that must have found its post.
pub(crate) fn deleted(result: StoreResult<Option<crate::Deleted>>) -> Vec<u64> {
    result.expect("delete").expect("the post exists").outbox
}

async fn pending_all<S: Outbox + ?Sized>(store: &S) -> Vec<OutboxEntry> {
    let pending = store.pending(SCAN).await.expect("pending");
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq), "pending must be oldest first, seqs increasing");
    pending
}

async fn assert_not_committed<S: Outbox + ?Sized>(store: &S, records: &[Record], context: &str) {
    let pending = pending_all(store).await;
    for record in records {
        assert!(!pending.iter().any(|e| &e.record == record), "{context}: an event was committed to the outbox");
    }
}

/// Asserts the entries with `seqs` are pending with exactly `records`, in that order.
async fn assert_pending<S: Outbox + ?Sized>(store: &S, seqs: &[u64], records: &[Record], context: &str) {
    let ours: Vec<OutboxEntry> = pending_all(store).await.into_iter().filter(|e| seqs.contains(&e.seq)).collect();
    assert_eq!(ours.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs, "{context}: pending seqs");
    assert_eq!(ours.iter().map(|e| e.record.clone()).collect::<Vec<_>>(), records, "{context}: pending records");
}

async fn create<S: PostStore>(store: &S, post: &PostRecord, key: Option<&str>, events: Vec<Record>) -> Vec<u64> {
    let expected = events.len();
    match store.create_post(post, key, events).await.expect("create_post") {
        CreatePost::Created { outbox } => {
            assert_eq!(outbox.len(), expected, "one outbox seq per event");
            outbox
        }
        other => panic!("create_post of a new post returned {other:?}"),
    }
}

fn changed(change: EdgeChange, events: usize, context: &str) -> Vec<u64> {
    match change {
        EdgeChange::Changed { outbox } => {
            assert_eq!(outbox.len(), events, "{context}: one outbox seq per event");
            assert!(outbox.windows(2).all(|w| w[0] < w[1]), "{context}: seqs increase");
            outbox
        }
        other => panic!("{context}: expected Changed, got {other:?}"),
    }
}

fn ids_of(posts: &[PostRecord]) -> Vec<PostId> {
    posts.iter().map(|p| p.id).collect()
}

// ---------------------------------------------------------------------------------------
// Posts
// ---------------------------------------------------------------------------------------

/// `get_posts` answers in the order asked, `None` for unknown ids, and keeps every field.
pub async fn create_and_get_posts<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let author = ids.user();
    let first = post(&mut ids, author, "first: unicode ✓ and \"quotes\"");
    let reply = PostRecord { reply_to: Some(first.id), text: String::new(), ..post(&mut ids, author, "") };
    let unknown = ids.post();

    let mut seqs = create(store, &first, None, vec![marker(Topic::Posts, &mut ids, "create")]).await;
    seqs.extend(create(store, &reply, None, Vec::new()).await);

    let got = store.get_posts(&[reply.id, unknown, first.id, reply.id]).await.expect("get_posts");
    assert_eq!(got, vec![Some(reply.clone()), None, Some(first.clone()), Some(reply.clone())]);
    assert_eq!(store.get_posts(&[]).await.expect("get_posts of nothing"), Vec::<Option<PostRecord>>::new());

    store.ack(&seqs).await.expect("ack");
}

/// Same author and key: replayed with the original post; another author's identical key is
/// independent; a replay after the delete returns `Replayed(None)`.
pub async fn idempotency_key_replay<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let (alice, bob) = (ids.user(), ids.user());
    let key = format!("idem-{}", ids.next());
    let original = post(&mut ids, alice, "original");
    let mut acks = create(store, &original, Some(&key), vec![marker(Topic::Posts, &mut ids, "original")]).await;

    let retry = post(&mut ids, alice, "retry with a new id");
    let retry_events = vec![marker(Topic::Posts, &mut ids, "retry")];
    let replay = store.create_post(&retry, Some(&key), retry_events.clone()).await.expect("replay");
    assert_eq!(replay, CreatePost::Replayed(Some(original.clone())), "same author, same key");
    assert_eq!(store.get_posts(&[retry.id]).await.expect("get_posts"), vec![None], "a replay stores nothing");
    assert!(
        !ids_of(&store.posts_by_author(alice, Window::newest(10)).await.expect("posts_by_author")).contains(&retry.id),
        "a replay adds nothing to the author's posts"
    );
    assert_not_committed(store, &retry_events, "replayed create").await;

    let bobs = post(&mut ids, bob, "same key, other author");
    acks.extend(create(store, &bobs, Some(&key), Vec::new()).await);
    assert_eq!(store.get_posts(&[bobs.id]).await.expect("get_posts"), vec![Some(bobs.clone())]);

    // Without a key nothing is deduplicated.
    let unkeyed = post(&mut ids, alice, "no key");
    acks.extend(create(store, &unkeyed, None, Vec::new()).await);
    let unkeyed_again = post(&mut ids, alice, "no key");
    acks.extend(create(store, &unkeyed_again, None, Vec::new()).await);

    let seqs = deleted(store.delete_post(original.id, &no_events).await);
    acks.extend(seqs);
    let after_delete = store.create_post(&retry, Some(&key), retry_events.clone()).await.expect("replay after delete");
    assert_eq!(after_delete, CreatePost::Replayed(None), "replay of a deleted post");
    assert_eq!(store.get_posts(&[retry.id]).await.expect("get_posts"), vec![None], "a replay stores nothing");
    assert_not_committed(store, &retry_events, "replay after delete").await;

    // Bob's post is untouched by Alice's delete.
    assert_eq!(
        store.create_post(&post(&mut ids, bob, "x"), Some(&key), Vec::new()).await.expect("bob replay"),
        CreatePost::Replayed(Some(bobs))
    );

    store.ack(&acks).await.expect("ack");
}

/// Deleting returns the post and commits its events; deleting an unknown or already
/// deleted post returns `None` and commits nothing.
pub async fn delete_post<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let author = ids.user();
    let keep = post(&mut ids, author, "keep");
    let doomed = PostRecord { reply_to: Some(keep.id), ..post(&mut ids, author, "doomed") };
    let mut acks = create(store, &keep, None, Vec::new()).await;
    acks.extend(create(store, &doomed, None, Vec::new()).await);

    let events = vec![marker(Topic::Posts, &mut ids, "delete a"), marker(Topic::Posts, &mut ids, "delete b")];
    let given = events.clone();
    let removed = store.delete_post(doomed.id, &move |_| given.clone()).await.expect("delete").expect("post exists");
    assert_eq!(removed.events, events, "delete returns the events it committed");
    let (deleted, seqs) = (removed.posts, removed.outbox);
    assert_eq!(deleted, vec![doomed.clone()], "delete returns the deleted post");
    assert_eq!(seqs.len(), 2, "one seq per event");
    assert_pending(store, &seqs, &events, "delete events").await;
    acks.extend(seqs);

    assert_eq!(store.get_posts(&[doomed.id, keep.id]).await.expect("get_posts"), vec![None, Some(keep.clone())]);
    assert_eq!(store.posts_by_author(author, Window::newest(10)).await.expect("posts_by_author"), vec![keep.clone()]);

    let again = vec![marker(Topic::Posts, &mut ids, "delete again")];
    assert_eq!(store.delete_post(doomed.id, &events_of(&again)).await.expect("second delete"), None);
    assert_not_committed(store, &again, "second delete").await;

    let unknown = vec![marker(Topic::Posts, &mut ids, "delete unknown")];
    assert_eq!(store.delete_post(ids.post(), &events_of(&unknown)).await.expect("delete unknown"), None);
    assert_not_committed(store, &unknown, "delete of an unknown post").await;

    store.ack(&acks).await.expect("ack");
}

/// Windows: exclusive bounds, limits, both orders, deleted posts left out, authors apart.
pub async fn posts_by_author_windows<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let (author, other) = (ids.user(), ids.user());
    let mut acks = Vec::new();
    let mut posts = Vec::new();
    for n in 0..10 {
        let p = post(&mut ids, author, &format!("post {n}"));
        acks.extend(create(store, &p, None, Vec::new()).await);
        posts.push(p);
        // Interleaved ids of another author must not show up.
        acks.extend(create(store, &post(&mut ids, other, "noise"), None, Vec::new()).await);
    }
    let id = |n: usize| posts[n].id;
    let window = |before: Option<usize>, after: Option<usize>, limit, order| Window {
        before: before.map(id),
        after: after.map(id),
        limit,
        order,
    };
    // Every window is asked twice, for records and for ids only: both must agree.
    let query = |w: Window<PostId>| async move {
        let ids = ids_of(&store.posts_by_author(author, w).await.expect("posts_by_author"));
        assert_eq!(store.post_ids_by_author(author, w).await.expect("post_ids_by_author"), ids, "{w:?}");
        ids
    };
    let newest_first = |ns: &[usize]| ns.iter().map(|&n| id(n)).collect::<Vec<_>>();

    let all = store.posts_by_author(author, Window::newest(100)).await.expect("posts_by_author");
    assert_eq!(all, posts.iter().rev().cloned().collect::<Vec<_>>(), "full records, newest first");

    assert_eq!(query(Window::newest(3)).await, newest_first(&[9, 8, 7]), "newest(3)");
    assert_eq!(query(Window::before(id(8), 3)).await, newest_first(&[7, 6, 5]), "before is exclusive");
    assert_eq!(query(Window::before(id(2), 10)).await, newest_first(&[1, 0]), "short last page");
    assert_eq!(query(Window::before(id(0), 10)).await, Vec::<PostId>::new(), "nothing before the oldest");
    assert_eq!(
        query(window(None, Some(3), 3, Order::OldestFirst)).await,
        newest_first(&[4, 5, 6]),
        "after, oldest first"
    );
    assert_eq!(
        query(window(None, Some(3), 3, Order::NewestFirst)).await,
        newest_first(&[9, 8, 7]),
        "after, newest first"
    );
    assert_eq!(
        query(window(None, Some(9), 3, Order::OldestFirst)).await,
        Vec::<PostId>::new(),
        "nothing after the newest"
    );
    assert_eq!(
        query(window(Some(8), Some(3), 10, Order::NewestFirst)).await,
        newest_first(&[7, 6, 5, 4]),
        "both bounds, newest first"
    );
    assert_eq!(
        query(window(Some(8), Some(3), 2, Order::OldestFirst)).await,
        newest_first(&[4, 5]),
        "both bounds, oldest first, limited"
    );
    assert_eq!(query(window(Some(4), Some(3), 10, Order::NewestFirst)).await, Vec::<PostId>::new(), "adjacent bounds");
    assert_eq!(query(window(Some(3), Some(8), 10, Order::NewestFirst)).await, Vec::<PostId>::new(), "inverted bounds");
    assert_eq!(query(window(None, None, 0, Order::NewestFirst)).await, Vec::<PostId>::new(), "limit 0");
    assert_eq!(query(window(None, None, 100, Order::OldestFirst)).await, newest_first(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));

    // Bounds need not be ids of this author's posts.
    let between = PostId(id(5).get() + 1);
    assert_eq!(query(Window::before(between, 2)).await, newest_first(&[5, 4]), "foreign before bound");

    for n in [9, 5] {
        let seqs = deleted(store.delete_post(id(n), &no_events).await);
        acks.extend(seqs);
    }
    assert_eq!(query(Window::newest(3)).await, newest_first(&[8, 7, 6]), "deleted newest left out");
    assert_eq!(query(Window::before(id(7), 3)).await, newest_first(&[6, 4, 3]), "deleted middle left out");
    assert_eq!(query(window(None, Some(3), 3, Order::OldestFirst)).await, newest_first(&[4, 6, 7]));

    assert_eq!(query(Window::newest(10)).await.len(), 8);
    let nobody = ids.user();
    assert!(store.posts_by_author(nobody, Window::newest(10)).await.expect("posts_by_author").is_empty());

    store.ack(&acks).await.expect("ack");
}

/// Events are pending in commit order with increasing seqs, exactly as given; `ack`
/// removes them and ignores unknown seqs.
pub async fn post_outbox_order_and_ack<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let author = ids.user();
    let mut seqs = Vec::new();
    let mut records = Vec::new();
    for n in 0..3 {
        let events = vec![
            marker(Topic::Posts, &mut ids, &format!("post {n} a")),
            marker(Topic::Graph, &mut ids, &format!("post {n} b")),
        ];
        seqs.extend(create(store, &post(&mut ids, author, "p"), None, events.clone()).await);
        records.extend(events);
    }
    outbox_order_and_ack(store, &mut ids, seqs, records).await;
}

async fn outbox_order_and_ack<S: Outbox + ?Sized>(store: &S, ids: &mut Ids, seqs: Vec<u64>, records: Vec<Record>) {
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase in commit order: {seqs:?}");
    assert_pending(store, &seqs, &records, "after commit").await;
    assert!(store.pending(1).await.expect("pending").len() <= 1, "pending honours its limit");
    assert!(store.pending(0).await.expect("pending").is_empty(), "pending(0)");

    store.ack(&seqs[..3]).await.expect("ack");
    assert_pending(store, &seqs[3..], &records[3..], "after a partial ack").await;
    let pending = pending_all(store).await;
    assert!(!pending.iter().any(|e| seqs[..3].contains(&e.seq)), "acked entries are gone");

    // Acked again, and a seq far beyond anything committed: both ignored.
    let unknown = seqs[seqs.len() - 1] + (1 << 40) + (ids.next() & 0xffff);
    store.ack(&[seqs[0], unknown]).await.expect("ack of unknown seqs");
    assert_pending(store, &seqs[3..], &records[3..], "after acking unknown seqs").await;
    store.ack(&[]).await.expect("ack of nothing");

    store.ack(&seqs[3..]).await.expect("ack");
    let pending = pending_all(store).await;
    assert!(!pending.iter().any(|e| seqs.contains(&e.seq)), "everything acked is gone");
}

// ---------------------------------------------------------------------------------------
// Graph
// ---------------------------------------------------------------------------------------

/// Handles are unique ignoring case, stored as given, and found in any case.
pub async fn users_and_handles<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (alice, imposter, other) = (ids.user(), ids.user(), ids.user());
    let handle = format!("Conf_Ab{:x}", alice.get());
    let user = UserRecord { id: alice, handle: handle.clone() };

    assert_eq!(store.user(alice).await.expect("user"), None);
    assert!(store.create_user(&user).await.expect("create_user"), "a fresh handle is free");
    assert_eq!(store.user(alice).await.expect("user"), Some(user.clone()), "stored as given");
    assert_eq!(store.user_by_handle(&handle).await.expect("by handle"), Some(user.clone()));
    assert_eq!(store.user_by_handle(&handle.to_lowercase()).await.expect("by handle"), Some(user.clone()));
    assert_eq!(store.user_by_handle(&handle.to_uppercase()).await.expect("by handle"), Some(user.clone()));

    let taken = UserRecord { id: imposter, handle: handle.to_uppercase() };
    assert!(!store.create_user(&taken).await.expect("create_user"), "the handle is taken, ignoring case");
    assert_eq!(store.user(imposter).await.expect("user"), None, "a refused user is not stored");
    assert_eq!(store.user_by_handle(&handle).await.expect("by handle"), Some(user.clone()), "the owner keeps it");

    let second = UserRecord { id: other, handle: format!("{handle}2") };
    assert!(store.create_user(&second).await.expect("create_user"), "a handle extending another is distinct");
    assert_eq!(store.user_by_handle(&second.handle).await.expect("by handle"), Some(second));

    assert_eq!(store.user_by_handle(&format!("nobody{:x}", ids.next())).await.expect("by handle"), None);
    assert_eq!(store.user(ids.user()).await.expect("user"), None);
}

/// Follow, duplicate follow, unfollow, duplicate unfollow, with counts and events.
pub async fn follow_and_unfollow<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (a, b, c) = (ids.user(), ids.user(), ids.user());
    let mut acks = Vec::new();

    assert_eq!(store.counts(a).await.expect("counts"), Counts::default(), "unknown user has zero counts");

    let events = vec![marker(Topic::Graph, &mut ids, "follow")];
    let seqs = changed(store.follow(a, b, events.clone()).await.expect("follow"), 1, "follow");
    assert_pending(store, &seqs, &events, "follow").await;
    acks.extend(seqs);
    assert!(store.follows(a, b).await.expect("follows"));
    assert!(!store.follows(b, a).await.expect("follows"), "following is directed");

    let dup = vec![marker(Topic::Graph, &mut ids, "duplicate follow")];
    assert_eq!(store.follow(a, b, dup.clone()).await.expect("follow"), EdgeChange::Unchanged);
    assert_not_committed(store, &dup, "duplicate follow").await;

    acks.extend(changed(store.follow(c, b, Vec::new()).await.expect("follow"), 0, "c follows b"));
    acks.extend(changed(store.follow(b, a, Vec::new()).await.expect("follow"), 0, "b follows a"));
    assert_eq!(store.counts(a).await.expect("counts"), Counts { followers: 1, following: 1 });
    assert_eq!(store.counts(b).await.expect("counts"), Counts { followers: 2, following: 1 });
    assert_eq!(store.counts(c).await.expect("counts"), Counts { followers: 0, following: 1 });

    let events = vec![marker(Topic::Graph, &mut ids, "unfollow")];
    let seqs = changed(store.unfollow(a, b, events.clone()).await.expect("unfollow"), 1, "unfollow");
    assert_pending(store, &seqs, &events, "unfollow").await;
    acks.extend(seqs);
    assert!(!store.follows(a, b).await.expect("follows"));
    assert!(store.follows(b, a).await.expect("follows"), "the reverse edge stays");
    assert_eq!(store.counts(a).await.expect("counts"), Counts { followers: 1, following: 0 });
    assert_eq!(store.counts(b).await.expect("counts"), Counts { followers: 1, following: 1 });

    let dup = vec![marker(Topic::Graph, &mut ids, "duplicate unfollow")];
    assert_eq!(store.unfollow(a, b, dup.clone()).await.expect("unfollow"), EdgeChange::Unchanged);
    let never = vec![marker(Topic::Graph, &mut ids, "unfollow never followed")];
    assert_eq!(store.unfollow(c, a, never.clone()).await.expect("unfollow"), EdgeChange::Unchanged);
    assert_not_committed(store, &[dup, never].concat(), "unfollow without an edge").await;
    assert_eq!(store.counts(a).await.expect("counts"), Counts { followers: 1, following: 0 }, "unchanged counts");

    // Following again after an unfollow works.
    acks.extend(changed(store.follow(a, b, Vec::new()).await.expect("follow"), 0, "refollow"));
    assert!(store.follows(a, b).await.expect("follows"));
    assert_eq!(store.counts(b).await.expect("counts"), Counts { followers: 2, following: 1 });

    store.ack(&acks).await.expect("ack");
}

/// A block removes both follows (and their counts) and refuses follows either way until
/// it is lifted; lifting it restores nothing.
pub async fn block_and_unblock<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (a, b, c) = (ids.user(), ids.user(), ids.user());
    let mut acks = Vec::new();
    for (follower, followee) in [(a, b), (b, a), (c, a), (b, c)] {
        acks.extend(changed(store.follow(follower, followee, Vec::new()).await.expect("follow"), 0, "setup"));
    }

    let events = vec![marker(Topic::Graph, &mut ids, "block"), marker(Topic::Graph, &mut ids, "block 2")];
    let seqs = changed(store.block(a, b, events.clone()).await.expect("block"), 2, "block");
    assert_pending(store, &seqs, &events, "block").await;
    acks.extend(seqs);

    assert!(store.blocks(a, b).await.expect("blocks"));
    assert!(!store.blocks(b, a).await.expect("blocks"), "blocking is directed");
    assert!(!store.follows(a, b).await.expect("follows"), "block removes blocker → blocked");
    assert!(!store.follows(b, a).await.expect("follows"), "block removes blocked → blocker");
    assert!(store.follows(c, a).await.expect("follows"), "third parties keep their edges");
    assert!(store.follows(b, c).await.expect("follows"), "third parties keep their edges");
    assert_eq!(store.counts(a).await.expect("counts"), Counts { followers: 1, following: 0 });
    assert_eq!(store.counts(b).await.expect("counts"), Counts { followers: 0, following: 1 });
    assert_eq!(store.counts(c).await.expect("counts"), Counts { followers: 1, following: 1 });
    assert!(!store.followers(a, None, 10).await.expect("followers").contains(&b));
    assert!(!store.following(a, None, 10).await.expect("following").contains(&b));

    let refused = vec![
        marker(Topic::Graph, &mut ids, "block again"),
        marker(Topic::Graph, &mut ids, "blocker follows"),
        marker(Topic::Graph, &mut ids, "blocked follows"),
        marker(Topic::Graph, &mut ids, "unblock by the blocked"),
    ];
    assert_eq!(store.block(a, b, vec![refused[0].clone()]).await.expect("block"), EdgeChange::Unchanged);
    assert_eq!(store.follow(a, b, vec![refused[1].clone()]).await.expect("follow"), EdgeChange::Blocked);
    assert_eq!(store.follow(b, a, vec![refused[2].clone()]).await.expect("follow"), EdgeChange::Blocked);
    assert_eq!(store.unblock(b, a, vec![refused[3].clone()]).await.expect("unblock"), EdgeChange::Unchanged);
    assert_not_committed(store, &refused, "refused graph changes").await;
    assert!(!store.follows(a, b).await.expect("follows") && !store.follows(b, a).await.expect("follows"));
    assert_eq!(store.counts(a).await.expect("counts"), Counts { followers: 1, following: 0 });

    // Blocking someone with no edges touches no counts; mutual blocks are independent.
    acks.extend(changed(store.block(b, a, Vec::new()).await.expect("block"), 0, "mutual block"));
    assert!(store.blocks(b, a).await.expect("blocks"));
    assert_eq!(store.counts(b).await.expect("counts"), Counts { followers: 0, following: 1 });

    let events = vec![marker(Topic::Graph, &mut ids, "unblock")];
    let seqs = changed(store.unblock(a, b, events.clone()).await.expect("unblock"), 1, "unblock");
    assert_pending(store, &seqs, &events, "unblock").await;
    acks.extend(seqs);
    assert!(!store.blocks(a, b).await.expect("blocks"));
    assert!(!store.follows(a, b).await.expect("follows"), "unblock restores no follow");
    assert_eq!(store.follow(a, b, Vec::new()).await.expect("follow"), EdgeChange::Blocked, "b still blocks a");

    acks.extend(changed(store.unblock(b, a, Vec::new()).await.expect("unblock"), 0, "unblock mutual"));
    let dup = vec![marker(Topic::Graph, &mut ids, "duplicate unblock")];
    assert_eq!(store.unblock(b, a, dup.clone()).await.expect("unblock"), EdgeChange::Unchanged);
    assert_not_committed(store, &dup, "duplicate unblock").await;

    acks.extend(changed(store.follow(a, b, Vec::new()).await.expect("follow"), 0, "follow after unblock"));
    assert!(store.follows(a, b).await.expect("follows"));
    assert_eq!(store.counts(b).await.expect("counts"), Counts { followers: 1, following: 1 });

    store.ack(&acks).await.expect("ack");
}

/// Followers and following: ascending ids, `after` exclusive, limits, no leaks between users.
pub async fn followers_and_following_pages<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (star, fan) = (ids.user(), ids.user());
    let mut users: Vec<UserId> = (0..5).map(|_| ids.user()).collect();
    let outsider = ids.user();
    let mut acks = Vec::new();
    // Follow in a scrambled order: the answer must be sorted by id, not by time.
    for &i in &[3, 0, 4, 1, 2] {
        acks.extend(changed(store.follow(users[i], star, Vec::new()).await.expect("follow"), 0, "setup"));
        acks.extend(changed(store.follow(fan, users[i], Vec::new()).await.expect("follow"), 0, "setup"));
    }
    // Edges of neighbouring users must not leak into the pages.
    acks.extend(changed(store.follow(outsider, fan, Vec::new()).await.expect("follow"), 0, "setup"));
    acks.extend(changed(store.follow(star, outsider, Vec::new()).await.expect("follow"), 0, "setup"));
    users.sort();

    for (what, owner) in [("followers", star), ("following", fan)] {
        let page = |after: Option<UserId>, limit| async move {
            if what == "followers" {
                store.followers(owner, after, limit).await.expect("followers")
            } else {
                store.following(owner, after, limit).await.expect("following")
            }
        };
        assert_eq!(page(None, 100).await, users, "{what}: everything, ascending");
        assert_eq!(page(None, 2).await, users[..2], "{what}: first page");
        assert_eq!(page(Some(users[1]), 2).await, users[2..4], "{what}: after is exclusive");
        assert_eq!(page(Some(users[3]), 2).await, users[4..], "{what}: last page");
        assert_eq!(page(Some(users[4]), 2).await, Vec::<UserId>::new(), "{what}: past the end");
        assert_eq!(page(None, 0).await, Vec::<UserId>::new(), "{what}: limit 0");
        assert_eq!(page(Some(users[2]), 100).await, users[3..], "{what}: after a member");
        assert_eq!(page(Some(UserId(star.get().min(fan.get()) - 1)), 100).await, users, "{what}: after a smaller id");
    }
    assert_eq!(store.counts(star).await.expect("counts"), Counts { followers: 5, following: 1 });
    assert_eq!(store.counts(fan).await.expect("counts"), Counts { followers: 1, following: 5 });
    assert!(store.followers(ids.user(), None, 10).await.expect("followers").is_empty(), "unknown user");

    acks.extend(changed(store.unfollow(users[2], star, Vec::new()).await.expect("unfollow"), 0, "unfollow"));
    assert_eq!(
        store.followers(star, Some(users[1]), 2).await.expect("followers"),
        vec![users[3], users[4]],
        "an unfollowed user leaves the list"
    );

    store.ack(&acks).await.expect("ack");
}

/// Ordinary by default; setting the same class is `Unchanged`; celebrities are listed.
pub async fn author_class<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (star, other) = (ids.user(), ids.user());
    let mut acks = Vec::new();

    assert_eq!(store.author_class(star).await.expect("author_class"), AuthorClass::Ordinary, "default");
    let same = vec![marker(Topic::Graph, &mut ids, "ordinary again")];
    assert_eq!(
        store.set_author_class(star, AuthorClass::Ordinary, same.clone()).await.expect("set"),
        EdgeChange::Unchanged,
        "ordinary by default, so setting ordinary changes nothing"
    );
    assert_not_committed(store, &same, "unchanged class").await;

    let events = vec![marker(Topic::Graph, &mut ids, "celebrity")];
    let seqs =
        changed(store.set_author_class(star, AuthorClass::Celebrity, events.clone()).await.expect("set"), 1, "promote");
    assert_pending(store, &seqs, &events, "promote").await;
    acks.extend(seqs);
    assert_eq!(store.author_class(star).await.expect("author_class"), AuthorClass::Celebrity);
    assert_eq!(store.author_class(other).await.expect("author_class"), AuthorClass::Ordinary);
    let celebrities = store.celebrities().await.expect("celebrities");
    assert!(celebrities.contains(&star) && !celebrities.contains(&other));

    let same = vec![marker(Topic::Graph, &mut ids, "celebrity again")];
    assert_eq!(
        store.set_author_class(star, AuthorClass::Celebrity, same.clone()).await.expect("set"),
        EdgeChange::Unchanged
    );
    assert_not_committed(store, &same, "unchanged class").await;

    acks.extend(changed(
        store.set_author_class(other, AuthorClass::Celebrity, Vec::new()).await.expect("set"),
        0,
        "promote",
    ));
    let celebrities = store.celebrities().await.expect("celebrities");
    assert!(celebrities.contains(&star) && celebrities.contains(&other));

    acks.extend(changed(
        store.set_author_class(star, AuthorClass::Ordinary, Vec::new()).await.expect("set"),
        0,
        "demote",
    ));
    assert_eq!(store.author_class(star).await.expect("author_class"), AuthorClass::Ordinary);
    let celebrities = store.celebrities().await.expect("celebrities");
    assert!(!celebrities.contains(&star) && celebrities.contains(&other));

    acks.extend(changed(
        store.set_author_class(other, AuthorClass::Ordinary, Vec::new()).await.expect("set"),
        0,
        "demote",
    ));
    assert!(!store.celebrities().await.expect("celebrities").contains(&other));

    store.ack(&acks).await.expect("ack");
}

/// The graph outbox behaves like the post outbox: commit order, exact records, acks.
pub async fn graph_outbox_order_and_ack<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (a, b) = (ids.user(), ids.user());
    let mut seqs = Vec::new();
    let mut records = Vec::new();
    let mut step = |ids: &mut Ids, what: &str| {
        let events = vec![marker(Topic::Graph, ids, what), marker(Topic::Posts, ids, what)];
        records.extend(events.clone());
        events
    };
    let follow = step(&mut ids, "follow");
    seqs.extend(changed(store.follow(a, b, follow).await.expect("follow"), 2, "follow"));
    let block = step(&mut ids, "block");
    seqs.extend(changed(store.block(b, a, block).await.expect("block"), 2, "block"));
    let class = step(&mut ids, "class");
    seqs.extend(changed(store.set_author_class(a, AuthorClass::Celebrity, class).await.expect("set"), 2, "class"));
    let unblock = step(&mut ids, "unblock");
    seqs.extend(changed(store.unblock(b, a, unblock).await.expect("unblock"), 2, "unblock"));
    outbox_order_and_ack(store, &mut ids, seqs, records).await;

    // Leave no celebrity behind for other tests sharing the store.
    let demote = changed(store.set_author_class(a, AuthorClass::Ordinary, Vec::new()).await.expect("set"), 0, "demote");
    store.ack(&demote).await.expect("ack");
}
