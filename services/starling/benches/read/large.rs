//! The read bench's large data set, the shape of `scripts/sql-baseline.sh large`: 100,000
//! users (ids 1..=100,000, handles `user<id>`), each following 49 others drawn uniformly at
//! random (4.9M follows; no self-follows, no duplicates), and 20 posts each (2M), posted
//! in rounds (round p is every user's p-th post, so a reader's newest posts come from many
//! followees). With ~49 followers each, nobody comes near the celebrity line: every page
//! is a materialised timeline.
//!
//! It is written once, straight into an embedded store through the store API (no HTTP, no
//! events), under Cargo's `target/tmp`, and reused by later runs: a run copies the store
//! into each process's data directory that needs it. Delete the directory to rebuild it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use starling_ids::{IdGenerator, UserId};
use starling_storage::embedded::{Durability, EmbeddedStore};
use starling_storage::{GraphStore as _, PostRecord, PostStore as _, UserRecord};

pub const USERS: u64 = 100_000;
pub const FOLLOWS_EACH: usize = 49;
pub const POSTS_EACH: u64 = 20;
/// Bumped whenever the data's shape changes, so a stale copy is never reused.
const VERSION: u32 = 1;
/// Snowflake worker id of the generated posts: no service of a run uses it.
const WORKER: u16 = 900;

pub fn user(i: u64) -> UserId {
    UserId(i + 1)
}

pub fn handle(id: UserId) -> String {
    format!("user{id}")
}

/// The store with the data set, built first if no complete copy exists.
pub async fn store() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("read-bench-large-v{VERSION}"));
    let store = root.join("store");
    let complete = root.join("complete");
    if complete.exists() {
        eprintln!("large data: reusing {}", root.display());
        return store;
    }
    let _ = std::fs::remove_dir_all(&root);
    let started = Instant::now();
    let db = EmbeddedStore::open(&store, Durability::Buffer).expect("opening the bench store");
    let (graph, posts) = (db.graph(), db.posts());
    eprintln!("large data: writing {USERS} users into {} (once; later runs reuse it)", root.display());
    for i in 0..USERS {
        let id = user(i);
        graph.create_user(&UserRecord { id, handle: handle(id) }).await.unwrap();
    }
    let mut rng = SmallRng::seed_from_u64(49);
    let total = USERS * FOLLOWS_EACH as u64;
    let mut written = 0u64;
    for i in 0..USERS {
        let mut followees: Vec<u64> = Vec::with_capacity(FOLLOWS_EACH);
        while followees.len() < FOLLOWS_EACH {
            let f = rng.random_range(0..USERS);
            if f != i && !followees.contains(&f) {
                followees.push(f);
            }
        }
        for f in followees {
            graph.follow(user(i), user(f), Vec::new()).await.unwrap();
        }
        written += FOLLOWS_EACH as u64;
        if written % (total / 10) == 0 {
            eprintln!("large data: {written} of {total} follows ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    let ids = IdGenerator::new(WORKER).unwrap();
    let total = USERS * POSTS_EACH;
    for round in 0..POSTS_EACH {
        for i in 0..USERS {
            let author = user(i);
            let text = format!("post {round} from user {author}");
            let post = PostRecord {
                id: ids.next_post(),
                author,
                author_handle: handle(author),
                text,
                reply_to: None,
                reblog_of: None,
            };
            posts.create_post(&post, None, Vec::new()).await.unwrap();
        }
        let written = (round + 1) * USERS;
        if written % (total / 10) == 0 {
            eprintln!("large data: {written} of {total} posts ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    db.persist().unwrap();
    drop(db);
    let summary = format!(
        "{USERS} users, {} follows, {} posts, written in {:.0} s\n",
        USERS * FOLLOWS_EACH as u64,
        USERS * POSTS_EACH,
        started.elapsed().as_secs_f64()
    );
    std::fs::write(&complete, &summary).unwrap();
    eprint!("large data: {summary}");
    store
}

/// Copies the store into `data_dir/store`, where a node opens it.
pub fn copy_into(store: &Path, data_dir: &Path) {
    let status =
        std::process::Command::new("cp").arg("-r").arg(store).arg(data_dir.join("store")).status().expect("running cp");
    assert!(status.success(), "copying the bench store failed");
}
