//! The embedded backend: posts, the social graph and both outboxes in one fjall database
//! on local disk, so a single machine needs no database server.
//!
//! Layout. Every id is stored big-endian, so byte order is numeric order and a range scan
//! over `owner || id` walks one owner's list in id (= time) order. One keyspace per index:
//!
//! | keyspace          | key                     | value                         |
//! |-------------------|-------------------------|-------------------------------|
//! | `posts`           | post                    | encoded [`PostRecord`]        |
//! | `posts_by_author` | author ‖ !post          | empty                         |
//! | `idempotency`     | author ‖ key bytes      | post                          |
//! | `reblogs`         | original ‖ reblog       | reblogger                     |
//! | `reblogs_by_user` | original ‖ reblogger    | reblog                        |
//! | `favourites`      | status ‖ user           | empty                         |
//! | `replies`         | parent ‖ reply          | empty                         |
//! | `post_stats`      | status                  | reblogs ‖ favourites ‖ replies |
//! | `posts_outbox`    | seq                     | encoded [`Record`]            |
//! | `users`           | user                    | encoded [`UserRecord`]        |
//! | `handles`         | lower-cased handle      | user                          |
//! | `following`       | follower ‖ followee     | empty                         |
//! | `followers`       | followee ‖ follower     | empty                         |
//! | `blocks`          | blocker ‖ blocked       | empty                         |
//! | `mutes`           | muter ‖ muted           | empty                         |
//! | `muted_by`        | muted ‖ muter           | empty                         |
//! | `counts`          | user                    | followers ‖ following         |
//! | `celebrities`     | user                    | empty (absent = ordinary)     |
//! | `graph_outbox`    | seq                     | encoded [`Record`]            |
//! | `apps`            | client id               | encoded [`AppRecord`]         |
//! | `credentials`     | user                    | encoded [`CredentialRecord`]  |
//! | `emails`          | lower-cased email       | user                          |
//! | `grants`          | secret hash             | encoded [`GrantRecord`]       |
//! | `notifications`, `notification_keys` | see `notifications.rs` (shared by both stores) | |
//!
//! [`AppRecord`]: crate::AppRecord
//! [`CredentialRecord`]: crate::CredentialRecord
//! [`GrantRecord`]: crate::GrantRecord
//!
//! `posts_by_author` stores the bitwise complement of the post id, so an author's newest
//! posts come first in a *forward* scan: the read path asks for newest-first on every
//! request, and reverse iteration in the LSM memtable costs a skiplist search per step.
//!
//! Atomicity. Each operation is one fjall write batch, so a change, its secondary indexes
//! and its outbox events become visible (and durable) together or not at all. fjall has no
//! read-write transactions on a plain database, so read-modify-write operations (follow
//! checks blocks and the edge, then writes; counts are read then rewritten) take striped
//! in-process locks; a second process must not open the same directory, which fjall's lock
//! file already refuses.
//!
//! Blocking. fjall calls block the thread. Point reads and writes take microseconds with
//! [`Durability::Buffer`], so they run inline in the async functions; with
//! [`Durability::SyncData`] each write waits for an fdatasync, which is the price of that mode.

mod auth;
mod graph;
mod notifications;
mod posts;

pub use graph::EmbeddedGraphStore;
pub use posts::EmbeddedPostStore;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use parking_lot::{Mutex, MutexGuard};

use notifications::Notifications;
use starling_events::{Record, Topic};

use crate::{Outbox, OutboxEntry, StoreError, StoreResult};

/// How far a write has gone when the call returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Written to OS buffers on every commit: survives a crash or SIGKILL of the process,
    /// not a power loss or kernel crash.
    #[default]
    Buffer,
    /// fdatasync on every commit: survives a power loss, at the cost of a disk flush per write.
    SyncData,
}

impl Durability {
    fn persist_mode(self) -> PersistMode {
        match self {
            Durability::Buffer => PersistMode::Buffer,
            Durability::SyncData => PersistMode::SyncData,
        }
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// One fjall database holding the post store and the graph store.
///
/// The two stores are separate types because each service owns its own outbox, and both
/// [`PostStore`] and [`GraphStore`] require [`Outbox`]: one type implementing both would
/// have to merge the two outboxes.
#[derive(Clone)]
pub struct EmbeddedStore {
    posts: Arc<EmbeddedPostStore>,
    graph: Arc<EmbeddedGraphStore>,
}

impl EmbeddedStore {
    /// Opens (or creates) the database in `path`. Fails if another open store holds it.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<EmbeddedStore> {
        let db = Database::builder(path).open()?;
        let shared = Shared { db: db.clone(), persist: durability.persist_mode() };
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);

        // Both stores keep notifications in the same keyspaces (see `notifications`).
        let notifications = || -> StoreResult<Notifications> {
            Ok(Notifications {
                list: ks("notifications")?,
                keys: ks("notification_keys")?,
                locks: Stripes::new(),
                shared: shared.clone(),
            })
        };
        let posts = EmbeddedPostStore {
            notifications: notifications()?,
            posts: ks("posts")?,
            by_author: ks("posts_by_author")?,
            idempotency: ks("idempotency")?,
            reblogs: ks("reblogs")?,
            reblogs_by_user: ks("reblogs_by_user")?,
            favourites: ks("favourites")?,
            replies: ks("replies")?,
            stats: ks("post_stats")?,
            outbox: OutboxLog::open(ks("posts_outbox")?)?,
            locks: Stripes::new(),
            shared: shared.clone(),
        };
        let graph = EmbeddedGraphStore {
            notifications: notifications()?,
            users: ks("users")?,
            handles: ks("handles")?,
            following: ks("following")?,
            followers: ks("followers")?,
            blocks: ks("blocks")?,
            mutes: ks("mutes")?,
            muted_by: ks("muted_by")?,
            counts: ks("counts")?,
            celebrities: ks("celebrities")?,
            outbox: OutboxLog::open(ks("graph_outbox")?)?,
            apps: ks("apps")?,
            credentials: ks("credentials")?,
            emails: ks("emails")?,
            grants: ks("grants")?,
            locks: Stripes::new(),
            grant_locks: Stripes::new(),
            handle_lock: Mutex::new(()),
            shared,
        };
        tracing::debug!(path = %path.display(), ?durability, "embedded store opened");
        Ok(EmbeddedStore { posts: Arc::new(posts), graph: Arc::new(graph) })
    }

    /// The post-service's store, with its own outbox.
    pub fn posts(&self) -> Arc<EmbeddedPostStore> {
        Arc::clone(&self.posts)
    }

    /// The graph-service's store, with its own outbox.
    pub fn graph(&self) -> Arc<EmbeddedGraphStore> {
        Arc::clone(&self.graph)
    }

    /// Syncs everything written so far to disk, whatever the [`Durability`]: at a clean
    /// shutdown, so that a power loss right after it loses nothing either.
    pub fn persist(&self) -> StoreResult<()> {
        self.posts.shared.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

/// What both stores need from the database.
#[derive(Clone)]
struct Shared {
    db: Database,
    persist: PersistMode,
}

impl Shared {
    /// A batch that reaches the configured durability on commit. Set explicitly on every
    /// batch: a batch without a persist mode may sit in a userspace buffer after commit.
    fn batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(self.persist))
    }
}

// ---------------------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------------------

/// An outbox keyspace and its sequence counter.
struct OutboxLog {
    ks: Keyspace,
    /// Next sequence number. Recovered on open from the last pending entry, so numbers are
    /// unique and increasing among pending entries; once everything was acked, a reopened
    /// store may reuse numbers that were handed out (and acked) before.
    next_seq: AtomicU64,
    /// Held from sequence allocation to commit, so sequence order is commit order even when
    /// unrelated writers race (fjall serialises journal writes anyway, so this costs little).
    commit_lock: Mutex<()>,
    /// No pending entry lies below this seq. Acks leave tombstones at the head of the
    /// keyspace until compaction drops them; starting scans here skips them.
    scan_from: AtomicU64,
}

impl OutboxLog {
    fn open(ks: Keyspace) -> StoreResult<OutboxLog> {
        let next = match ks.last_key_value() {
            Some(guard) => decode_u64(&guard.key()?, "outbox seq")? + 1,
            None => 1,
        };
        Ok(OutboxLog { ks, next_seq: AtomicU64::new(next), commit_lock: Mutex::new(()), scan_from: AtomicU64::new(0) })
    }

    /// Adds `events` to `batch` and commits it; returns their sequence numbers.
    fn commit(&self, mut batch: OwnedWriteBatch, events: Vec<Record>) -> StoreResult<Vec<u64>> {
        let _commit = self.commit_lock.lock();
        let count = events.len() as u64;
        let first = self.next_seq.fetch_add(count, Ordering::Relaxed);
        let seqs: Vec<u64> = (first..first + count).collect();
        for (seq, record) in seqs.iter().zip(&events) {
            batch.insert(&self.ks, seq.to_be_bytes(), encode_record(record));
        }
        batch.commit()?;
        Ok(seqs)
    }

    fn pending(&self, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Seqs are allocated and committed under the commit lock, so every seq below
        // `committed` is already in the keyspace (or acked), and every later entry is above it.
        let committed = {
            let _commit = self.commit_lock.lock();
            self.next_seq.load(Ordering::Relaxed)
        };
        let from = self.scan_from.load(Ordering::Relaxed);
        let entries = self
            .ks
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                Ok(OutboxEntry { seq: decode_u64(&key, "outbox seq")?, record: decode_record(&value)? })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // The first entry found is the oldest pending one; nothing older can appear later.
        let floor = entries.first().map_or(committed, |e| e.seq.min(committed));
        self.scan_from.fetch_max(floor, Ordering::Relaxed);
        Ok(entries)
    }

    fn ack(&self, shared: &Shared, seqs: &[u64]) -> StoreResult<()> {
        // Removing an absent key only writes a tombstone, so unknown seqs need no lookup.
        let mut batch = shared.batch();
        for seq in seqs {
            batch.remove(&self.ks, seq.to_be_bytes());
        }
        batch.commit()?;
        Ok(())
    }
}

macro_rules! impl_outbox {
    ($store:ty) => {
        #[async_trait]
        impl Outbox for $store {
            #[tracing::instrument(level = "debug", skip_all, fields(limit))]
            async fn pending(&self, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
                self.outbox.pending(limit)
            }

            #[tracing::instrument(level = "debug", skip_all, fields(count = seqs.len()))]
            async fn ack(&self, seqs: &[u64]) -> StoreResult<()> {
                self.outbox.ack(&self.shared, seqs)
            }
        }
    };
}

impl_outbox!(EmbeddedPostStore);
impl_outbox!(EmbeddedGraphStore);

// ---------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------

/// Striped mutexes keyed by id: operations on unrelated ids rarely contend, and a fixed
/// array needs no cleanup.
struct Stripes([Mutex<()>; Stripes::COUNT]);

/// One or two stripe guards, released together.
type StripeGuards<'a> = (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>);

impl Stripes {
    const COUNT: usize = 64;

    fn new() -> Stripes {
        Stripes(std::array::from_fn(|_| Mutex::new(())))
    }

    fn index(id: u64) -> usize {
        // Fibonacci hashing: Snowflake ids share their low (sequence) bits, so plain modulo
        // would put most ids on a few stripes.
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Stripes::COUNT.trailing_zeros())) as usize
    }

    fn one(&self, id: u64) -> MutexGuard<'_, ()> {
        self.0[Stripes::index(id)].lock()
    }

    /// Locks the stripes of both ids, lower stripe first so two callers cannot deadlock.
    fn two(&self, a: u64, b: u64) -> StripeGuards<'_> {
        let (i, j) = (Stripes::index(a), Stripes::index(b));
        match i.cmp(&j) {
            std::cmp::Ordering::Equal => (self.0[i].lock(), None),
            std::cmp::Ordering::Less => (self.0[i].lock(), Some(self.0[j].lock())),
            std::cmp::Ordering::Greater => (self.0[j].lock(), Some(self.0[i].lock())),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Keys and values
// ---------------------------------------------------------------------------------------

/// fjall rejects (by panicking) keys longer than `u16::MAX` bytes; refuse them earlier.
fn check_key_len(len: usize) -> StoreResult<()> {
    if len + 8 > usize::from(u16::MAX) {
        return Err(StoreError::Backend(format!("key of {len} bytes is too long to store")));
    }
    Ok(())
}

/// Index entries carry everything in their key.
const EMPTY: [u8; 0] = [];

fn id_pair(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

/// `owner ‖ suffix`: the owner has a fixed width, so no two (owner, suffix) pairs collide.
fn pair_key(owner: u64, suffix: &[u8]) -> StoreResult<Vec<u8>> {
    check_key_len(suffix.len())?;
    let mut key = Vec::with_capacity(8 + suffix.len());
    key.extend_from_slice(&owner.to_be_bytes());
    key.extend_from_slice(suffix);
    Ok(key)
}

fn decode_u64(bytes: &[u8], what: &str) -> StoreResult<u64> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("{what}: expected 8 bytes, found {}", bytes.len())))
}

/// Leads every encoded value, so a later layout can be told apart from this one.
const FORMAT: u8 = 1;

/// A minimal length-prefixed binary encoding (big-endian integers, u32 lengths).
struct Encoder(Vec<u8>);

impl Encoder {
    fn new() -> Encoder {
        Encoder(vec![FORMAT])
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        // Values are bounded far below 4 GiB by the API (request size limits).
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

struct Decoder<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> StoreResult<Decoder<'a>> {
        let mut d = Decoder { rest: buf, what };
        match d.u8()? {
            FORMAT => Ok(d),
            other => Err(StoreError::Corrupt(format!("{what}: unknown format {other}"))),
        }
    }

    fn take(&mut self, n: usize) -> StoreResult<&'a [u8]> {
        if self.rest.len() < n {
            return Err(StoreError::Corrupt(format!("{}: truncated", self.what)));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> StoreResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> StoreResult<u64> {
        decode_u64(self.take(8)?, self.what)
    }

    fn bytes(&mut self) -> StoreResult<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default());
        self.take(len as usize)
    }

    fn string(&mut self) -> StoreResult<String> {
        let what = self.what;
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| StoreError::Corrupt(format!("{what}: invalid UTF-8")))
    }

    fn finish(self) -> StoreResult<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!("{}: {} trailing bytes", self.what, self.rest.len())))
        }
    }
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u8(record.topic.tag());
    e.u64(record.key);
    e.bytes(&record.payload);
    e.0.extend_from_slice(&(record.headers.len() as u32).to_be_bytes());
    for (name, value) in &record.headers {
        e.bytes(name.as_bytes());
        e.bytes(value);
    }
    e.finish()
}

fn decode_record(value: &[u8]) -> StoreResult<Record> {
    let mut d = Decoder::new(value, "outbox record")?;
    let tag = d.u8()?;
    let topic =
        Topic::from_tag(tag).ok_or_else(|| StoreError::Corrupt(format!("outbox record: unknown topic tag {tag}")))?;
    let key = d.u64()?;
    let payload = Bytes::copy_from_slice(d.bytes()?);
    let count = u32::from_be_bytes(d.take(4)?.try_into().unwrap_or_default());
    let mut headers = Vec::with_capacity((count as usize).min(64));
    for _ in 0..count {
        let name = d.string()?;
        headers.push((name, Bytes::copy_from_slice(d.bytes()?)));
    }
    d.finish()?;
    Ok(Record { topic, key, payload, headers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use crate::{AuthorClass, Counts, CreatePost, EdgeChange, GraphStore, PostRecord, PostStore, UserRecord, Window};
    use starling_ids::{PostId, UserId};

    fn open(dir: &Path) -> EmbeddedStore {
        EmbeddedStore::open(dir, Durability::Buffer).expect("open embedded store")
    }

    /// One test per conformance check, each on a fresh store, so a failure names its check.
    macro_rules! conformance_tests {
        ($($kind:ident :: $name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let store = open(dir.path());
                conformance_tests!(@run $kind, $name, store);
            }
        )*};
        (@run posts, $name:ident, $store:ident) => { conformance::$name(&*$store.posts()).await };
        (@run graph, $name:ident, $store:ident) => { conformance::$name(&*$store.graph()).await };
        (@run auth, $name:ident, $store:ident) => { conformance::$name(&*$store.graph()).await };
    }

    conformance_tests!(
        posts::create_and_get_posts,
        posts::idempotency_key_replay,
        posts::delete_post,
        posts::posts_by_author_windows,
        posts::post_outbox_order_and_ack,
        posts::reblog_and_unreblog,
        posts::deleting_a_status_takes_its_reblogs,
        posts::favourite_and_unfavourite,
        posts::replies_are_counted_and_listed,
        posts::notifications_add_remove_and_list,
        graph::users_and_handles,
        graph::follow_and_unfollow,
        graph::block_and_unblock,
        graph::followers_and_following_pages,
        graph::author_class,
        graph::graph_outbox_order_and_ack,
        graph::mute_and_unmute,
        auth::apps_round_trip,
        auth::create_account_and_credentials,
        auth::create_account_refuses_a_taken_handle,
        auth::create_account_refuses_a_taken_email,
        auth::grants_round_trip,
        auth::take_grant_once,
    );

    #[tokio::test]
    async fn whole_suite_on_one_store() {
        // The suite must also pass when every check shares one store, as it will on a
        // shared ScyllaDB server.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        conformance::run_post_store(&*store.posts()).await;
        conformance::run_graph_store(&*store.graph()).await;
        conformance::run_auth_store(&*store.graph()).await;
    }

    #[tokio::test]
    async fn graph_store_notifications() {
        let dir = tempfile::tempdir().unwrap();
        conformance::notifications_add_remove_and_list(&*open(dir.path()).graph()).await;
    }

    #[tokio::test]
    async fn sync_data_durability_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Durability::SyncData).unwrap();
        conformance::follow_and_unfollow(&*store.graph()).await;
    }

    fn record(topic: Topic, key: u64, payload: &'static [u8]) -> Record {
        Record {
            topic,
            key,
            payload: Bytes::from_static(payload),
            headers: vec![("traceparent".to_owned(), Bytes::from_static(b"00-abc-def-01"))],
        }
    }

    #[tokio::test]
    async fn data_and_pending_outbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let post = PostRecord {
            id: PostId(42),
            author: UserId(7),
            author_handle: "Alice".to_owned(),
            text: "hello".to_owned(),
            reply_to: Some(PostId(41)),
            reblog_of: None,
        };
        let (post_seqs, graph_seqs) = {
            let store = open(dir.path());
            let (posts, graph) = (store.posts(), store.graph());
            let CreatePost::Created { outbox: post_seqs } =
                posts.create_post(&post, Some("key-1"), vec![record(Topic::Posts, 7, b"created")]).await.unwrap()
            else {
                panic!("first create must store the post");
            };
            assert!(graph.create_user(&UserRecord { id: UserId(7), handle: "Alice".to_owned() }).await.unwrap());
            let EdgeChange::Changed { outbox: graph_seqs } =
                graph.follow(UserId(8), UserId(7), vec![record(Topic::Graph, 8, b"followed")]).await.unwrap()
            else {
                panic!("follow must change the graph");
            };
            graph.set_author_class(UserId(7), AuthorClass::Celebrity, Vec::new()).await.unwrap();
            store.persist().unwrap();
            (post_seqs, graph_seqs)
            // Every handle to the database drops here, releasing its lock file.
        };

        let store = open(dir.path());
        let (posts, graph) = (store.posts(), store.graph());
        assert_eq!(posts.get_posts(&[post.id]).await.unwrap(), vec![Some(post.clone())]);
        assert_eq!(posts.posts_by_author(UserId(7), Window::newest(10)).await.unwrap(), vec![post.clone()]);
        assert_eq!(
            posts.create_post(&post, Some("key-1"), Vec::new()).await.unwrap(),
            CreatePost::Replayed(Some(post.clone()))
        );
        assert_eq!(graph.user_by_handle("alice").await.unwrap().map(|u| u.id), Some(UserId(7)));
        assert!(graph.follows(UserId(8), UserId(7)).await.unwrap());
        assert_eq!(graph.counts(UserId(7)).await.unwrap(), Counts { followers: 1, following: 0 });
        assert_eq!(graph.celebrities().await.unwrap(), vec![UserId(7)]);

        let pending = posts.pending(10).await.unwrap();
        assert_eq!(pending.iter().map(|e| e.seq).collect::<Vec<_>>(), post_seqs);
        assert_eq!(pending[0].record, record(Topic::Posts, 7, b"created"));
        let pending = graph.pending(10).await.unwrap();
        assert_eq!(pending.iter().map(|e| e.seq).collect::<Vec<_>>(), graph_seqs);
        assert_eq!(pending[0].record, record(Topic::Graph, 8, b"followed"));

        // New sequence numbers continue after the recovered ones.
        let CreatePost::Created { outbox } = posts
            .create_post(&PostRecord { id: PostId(43), ..post.clone() }, None, vec![record(Topic::Posts, 7, b"again")])
            .await
            .unwrap()
        else {
            panic!("a new post must be stored");
        };
        assert!(outbox[0] > post_seqs[0]);
    }

    /// Set in the child process of [`writes_survive_an_abort`]: the directory to write to.
    const ABORT_CHILD_DIR: &str = "STARLING_STORAGE_ABORT_CHILD_DIR";

    #[tokio::test]
    async fn writes_survive_an_abort() {
        // The child writes and dies without running destructors or flushing userspace
        // buffers, as a SIGKILL would; every acknowledged write must be readable afterwards.
        if let Ok(dir) = std::env::var(ABORT_CHILD_DIR) {
            let store = open(Path::new(&dir));
            let graph = store.graph();
            for i in 1..=20u64 {
                graph.follow(UserId(i), UserId(1000), vec![record(Topic::Graph, i, b"f")]).await.unwrap();
            }
            std::process::abort();
        }

        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "embedded::tests::writes_survive_an_abort", "--test-threads=1"])
            .env(ABORT_CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child must die by abort");

        let store = open(dir.path());
        let graph = store.graph();
        assert_eq!(graph.counts(UserId(1000)).await.unwrap().followers, 20);
        assert_eq!(graph.followers(UserId(1000), None, 100).await.unwrap().len(), 20);
        assert_eq!(graph.pending(100).await.unwrap().len(), 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_graph_changes_keep_counts_exact() {
        // Many tasks follow, unfollow and block among a few users at once; the striped locks
        // must keep every read-modify-write whole (counts equal the edges) without deadlock.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let users: Vec<UserId> = (1..=6).map(UserId).collect();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let graph = store.graph();
            let users = users.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..300u64 {
                    let n = t * 7919 + i * 31;
                    let a = users[(n % 6) as usize];
                    let b = users[((n / 6) % 6) as usize];
                    match n % 5 {
                        0 | 1 => graph.follow(a, b, Vec::new()).await.unwrap(),
                        2 => graph.unfollow(a, b, Vec::new()).await.unwrap(),
                        3 if i % 4 == 0 => graph.block(a, b, Vec::new()).await.unwrap(),
                        _ => graph.unblock(a, b, Vec::new()).await.unwrap(),
                    };
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let graph = store.graph();
        for &u in &users {
            let followers = graph.followers(u, None, 100).await.unwrap();
            let following = graph.following(u, None, 100).await.unwrap();
            let counts = graph.counts(u).await.unwrap();
            assert_eq!(counts, Counts { followers: followers.len() as u64, following: following.len() as u64 });
            for &v in &following {
                assert!(graph.followers(v, None, 100).await.unwrap().contains(&u), "both indexes agree");
                assert!(
                    !graph.blocks(u, v).await.unwrap() && !graph.blocks(v, u).await.unwrap(),
                    "no edge across a block"
                );
            }
        }
    }

    #[tokio::test]
    async fn acked_entries_stay_acked_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let graph = store.graph();
            let EdgeChange::Changed { outbox } = graph
                .follow(UserId(1), UserId(2), vec![record(Topic::Graph, 1, b"a"), record(Topic::Graph, 1, b"b")])
                .await
                .unwrap()
            else {
                panic!("follow must change the graph");
            };
            graph.ack(&outbox[..1]).await.unwrap();
        }
        let store = open(dir.path());
        let pending = store.graph().pending(10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].record, record(Topic::Graph, 1, b"b"));
    }

    #[tokio::test]
    async fn pending_finds_entries_after_the_outbox_emptied() {
        // pending() remembers where the oldest entry was; that must never hide a later one.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let graph = store.graph();
        let follow = |n: u64| {
            let graph = graph.clone();
            async move {
                match graph.follow(UserId(n), UserId(0), vec![record(Topic::Graph, n, b"x")]).await.unwrap() {
                    EdgeChange::Changed { outbox } => outbox,
                    other => panic!("follow returned {other:?}"),
                }
            }
        };
        let seqs_of = |entries: Vec<OutboxEntry>| entries.into_iter().map(|e| e.seq).collect::<Vec<_>>();

        let (s1, s2, s3) = (follow(1).await, follow(2).await, follow(3).await);
        assert_eq!(seqs_of(graph.pending(1).await.unwrap()), s1);
        graph.ack(&s1).await.unwrap();
        assert_eq!(seqs_of(graph.pending(10).await.unwrap()), [s2.clone(), s3.clone()].concat());
        // Acked out of order: the older entry stays visible.
        graph.ack(&s3).await.unwrap();
        assert_eq!(seqs_of(graph.pending(10).await.unwrap()), s2);
        graph.ack(&s2).await.unwrap();
        assert!(graph.pending(10).await.unwrap().is_empty());
        let s4 = follow(4).await;
        assert_eq!(seqs_of(graph.pending(10).await.unwrap()), s4);
        assert!(graph.pending(0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path());
        assert!(EmbeddedStore::open(dir.path(), Durability::Buffer).is_err());
    }

    #[test]
    fn records_round_trip_through_the_encoding() {
        let original = Record {
            topic: Topic::Graph,
            key: u64::MAX,
            payload: Bytes::from_static(&[0, 1, 2, 255]),
            headers: vec![("a".to_owned(), Bytes::new()), ("b".to_owned(), Bytes::from_static(b"xyz"))],
        };
        assert_eq!(decode_record(&encode_record(&original)).unwrap(), original);
        let mut truncated = encode_record(&original);
        truncated.pop();
        assert!(matches!(decode_record(&truncated), Err(StoreError::Corrupt(_))));
    }
}
