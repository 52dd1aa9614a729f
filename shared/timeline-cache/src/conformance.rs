//! The conformance suite every [`TimelineCache`] implementation runs (memory and Redis).
//!
//! Each check takes the cache and an `owner_base`: it only touches owners
//! `owner_base .. owner_base + 1000`, so checks sharing a server stay apart when callers
//! pick bases far apart (e.g. random high ids). [`clear_and_len`] is the exception: it
//! needs a cache instance no one else uses (for Redis, its own key prefix).
//!
//! Post ids are realistic Snowflakes above 2^53, with neighbours one apart, so an
//! implementation that stores ids in an `f64` (a Redis sorted-set score) fails here.
//!
//! Checks panic on failure.

use starling_ids::{PostId, UserId};

use crate::{Entry, Push, Range, Slice, TimelineCache};

/// A Snowflake from 2025: well above 2^53.
const POST_BASE: u64 = 0x0123_4567_89AB_C000;
/// An author id that no check uses as an owner.
const AUTHOR_BASE: u64 = 0x0100_0000_0000_0000;

/// Runs every check except [`clear_and_len`]. `max_entries` is the cache's configured
/// cap (at least 10).
pub async fn all(cache: &dyn TimelineCache, owner_base: u64, max_entries: usize) {
    insert_skips_absent_owners(cache, owner_base).await;
    rebuild_merges_pulled_and_raced_entries(cache, owner_base + 1_000).await;
    inserts_are_idempotent(cache, owner_base + 2_000).await;
    reads_honour_ranges(cache, owner_base + 3_000).await;
    trimming_raises_the_floor(cache, owner_base + 4_000, max_entries).await;
    removals(cache, owner_base + 5_000).await;
    insert_all_is_insert_for_each_push(cache, owner_base + 6_000, max_entries).await;
}

fn post(n: u64) -> PostId {
    PostId(POST_BASE + n)
}

fn author(n: u64) -> UserId {
    UserId(AUTHOR_BASE + n)
}

/// Post `n` by author `n % 3`.
fn e(n: u64) -> Entry {
    Entry { post: post(n), author: author(n % 3) }
}

fn newest(limit: usize) -> Range {
    Range { before: None, after: None, limit, oldest_first: false }
}

/// The post numbers of a slice, in its order.
fn ns(s: &Slice) -> Vec<u64> {
    s.entries.iter().map(|x| x.post.0 - POST_BASE).collect()
}

async fn read_all(cache: &dyn TimelineCache, owner: UserId) -> Slice {
    cache.read(owner, newest(100_000)).await.expect("read").expect("a ready timeline")
}

/// Makes `owner` a ready timeline holding `entries`.
async fn ready(cache: &dyn TimelineCache, owner: UserId, entries: &[Entry], complete: bool) {
    cache.evict(owner).await.expect("evict");
    assert!(cache.begin_rebuild(owner).await.expect("begin"), "a fresh owner can begin a rebuild");
    cache.finish_rebuild(owner, entries, complete).await.expect("finish");
}

/// Inserts reach ready and rebuilding timelines, skip owners without one, and the count
/// says how many received the entry.
pub async fn insert_skips_absent_owners(cache: &dyn TimelineCache, owner_base: u64) {
    let (ready_owner, rebuilding, absent) = (UserId(owner_base), UserId(owner_base + 1), UserId(owner_base + 2));
    for o in [ready_owner, rebuilding, absent] {
        cache.evict(o).await.expect("evict");
    }
    ready(cache, ready_owner, &[], true).await;
    assert!(cache.begin_rebuild(rebuilding).await.unwrap());

    let n = cache.insert(&[ready_owner, rebuilding, absent], e(1)).await.expect("insert");
    assert_eq!(n, 2, "two timelines exist");
    assert_eq!(cache.insert(&[], e(2)).await.unwrap(), 0);
    let again = cache.insert(&[ready_owner, rebuilding, absent], e(1)).await.unwrap();
    assert_eq!(again, 2, "a duplicate still counts the timelines that have it");
    assert_eq!(ns(&read_all(cache, ready_owner).await), vec![1]);
    assert!(cache.read(absent, newest(10)).await.unwrap().is_none(), "no timeline was created");

    cache.finish_rebuild(rebuilding, &[], true).await.unwrap();
    assert_eq!(ns(&read_all(cache, rebuilding).await), vec![1], "the rebuilding timeline kept it");
    assert!(cache.begin_rebuild(absent).await.unwrap());
    cache.finish_rebuild(absent, &[], true).await.unwrap();
    assert!(read_all(cache, absent).await.entries.is_empty(), "the skipped insert left nothing behind");
}

/// The rebuild protocol: begin → not readable but accepts inserts → finish merges pulled
/// and raced entries without duplicates → readable, with the floor `complete` implies.
pub async fn rebuild_merges_pulled_and_raced_entries(cache: &dyn TimelineCache, owner_base: u64) {
    let o = UserId(owner_base);
    cache.evict(o).await.unwrap();
    assert!(cache.begin_rebuild(o).await.unwrap(), "no timeline yet");
    assert!(!cache.begin_rebuild(o).await.unwrap(), "someone is already rebuilding");
    assert!(cache.read(o, newest(10)).await.unwrap().is_none(), "not readable while rebuilding");

    assert_eq!(cache.insert(&[o], e(20)).await.unwrap(), 1, "a rebuilding timeline accepts pushes");
    cache.insert(&[o], e(21)).await.unwrap();
    // The pull (newest first, as storage returns it) overlaps the raced push of 20.
    cache.finish_rebuild(o, &[e(20), e(15), e(12), e(10)], false).await.unwrap();
    let s = read_all(cache, o).await;
    assert_eq!(ns(&s), vec![21, 20, 15, 12, 10]);
    assert_eq!(s.entries[1], e(20));
    assert_eq!(s.floor, Some(post(10)), "an incomplete pull is authoritative from its oldest entry up");
    assert!(!cache.begin_rebuild(o).await.unwrap(), "it is ready now");

    // Unsorted pull, complete: no floor.
    let p = UserId(owner_base + 1);
    cache.evict(p).await.unwrap();
    assert!(cache.begin_rebuild(p).await.unwrap());
    cache.insert(&[p], e(9)).await.unwrap();
    cache.finish_rebuild(p, &[e(3), e(8), e(1), e(9)], true).await.unwrap();
    let s = read_all(cache, p).await;
    assert_eq!((ns(&s), s.floor), (vec![9, 8, 3, 1], None));

    // A timeline evicted during its rebuild stays gone.
    let q = UserId(owner_base + 2);
    cache.evict(q).await.unwrap();
    assert!(cache.begin_rebuild(q).await.unwrap());
    cache.evict(q).await.unwrap();
    cache.finish_rebuild(q, &[e(1)], true).await.unwrap();
    assert!(cache.read(q, newest(10)).await.unwrap().is_none(), "finish does nothing once the timeline vanished");
    assert!(cache.begin_rebuild(q).await.unwrap(), "and no half-made timeline is left behind");
    cache.evict(q).await.unwrap();
}

/// Applying the same insert twice leaves the same timeline.
pub async fn inserts_are_idempotent(cache: &dyn TimelineCache, owner_base: u64) {
    let o = UserId(owner_base);
    ready(cache, o, &[e(1), e(2)], true).await;
    cache.insert(&[o], e(3)).await.unwrap();
    cache.insert(&[o], e(3)).await.unwrap();
    cache.insert(&[o], e(2)).await.unwrap();
    cache.insert_many(o, &[e(4), e(1), e(4), e(5)]).await.unwrap();
    cache.insert_many(o, &[]).await.unwrap();
    assert_eq!(ns(&read_all(cache, o).await), vec![5, 4, 3, 2, 1]);
}

/// Newest first by default; `before`/`after` are exclusive; `limit` caps; `oldest_first`
/// returns the oldest entries above `after`, oldest first.
pub async fn reads_honour_ranges(cache: &dyn TimelineCache, owner_base: u64) {
    let o = UserId(owner_base);
    ready(cache, o, &[], true).await;
    // Out of order, with neighbours one apart.
    for n in [5, 1, 9, 3, 10, 2, 8, 4, 7, 6] {
        cache.insert(&[o], e(n)).await.unwrap();
    }
    let read = |before: Option<u64>, after: Option<u64>, limit: usize, oldest_first: bool| async move {
        let range = Range { before: before.map(post), after: after.map(post), limit, oldest_first };
        ns(&cache.read(o, range).await.unwrap().expect("ready"))
    };
    assert_eq!(read(None, None, 20, false).await, vec![10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(read(None, None, 3, false).await, vec![10, 9, 8]);
    assert_eq!(read(Some(7), None, 3, false).await, vec![6, 5, 4], "max_id: strictly older");
    assert_eq!(read(None, Some(3), 3, false).await, vec![10, 9, 8], "since_id: newest above");
    assert_eq!(read(None, Some(3), 3, true).await, vec![4, 5, 6], "min_id: oldest above, oldest first");
    assert_eq!(read(Some(8), Some(3), 20, false).await, vec![7, 6, 5, 4]);
    assert_eq!(read(Some(8), Some(3), 20, true).await, vec![4, 5, 6, 7]);
    assert_eq!(read(Some(8), Some(6), 20, false).await, vec![7]);
    assert_eq!(read(Some(4), Some(4), 20, false).await, Vec::<u64>::new());
    assert_eq!(read(Some(1), None, 20, false).await, Vec::<u64>::new());
    assert_eq!(read(None, Some(10), 20, true).await, Vec::<u64>::new());
    assert_eq!(read(Some(100), Some(0), 2, true).await, vec![1, 2], "bounds outside the timeline");
    assert_eq!(cache.read(o, newest(20)).await.unwrap().unwrap().floor, None);
}

/// Past `max_entries` the oldest entries go and the floor rises to the oldest kept one;
/// inserts below the floor are then ignored. A pull larger than the cap is trimmed too.
pub async fn trimming_raises_the_floor(cache: &dyn TimelineCache, owner_base: u64, max_entries: usize) {
    assert!(max_entries >= 10, "the suite needs a cap of at least 10");
    let max = max_entries as u64;
    let o = UserId(owner_base);
    ready(cache, o, &[], true).await;
    for n in 100..100 + max {
        cache.insert(&[o], e(n)).await.unwrap();
    }
    let s = read_all(cache, o).await;
    assert_eq!((s.entries.len(), s.floor), (max_entries, None), "exactly full is not trimmed");

    let batch: Vec<u64> = (100 + max..100 + max + 5).collect();
    for &n in &batch {
        cache.insert(&[o], e(n)).await.unwrap();
    }
    let s = read_all(cache, o).await;
    let expected: Vec<u64> = (105..100 + max + 5).rev().collect();
    assert_eq!(ns(&s), expected, "the five oldest were dropped");
    assert_eq!(s.floor, Some(post(105)));

    cache.insert(&[o], e(104)).await.unwrap();
    cache.insert(&[o], e(50)).await.unwrap();
    cache.insert_many(o, &[e(1), e(2)]).await.unwrap();
    let s = read_all(cache, o).await;
    assert_eq!((ns(&s), s.floor), (expected, Some(post(105))), "inserts below the floor are ignored");

    // A complete pull of more than the cap.
    let p = UserId(owner_base + 1);
    let pulled: Vec<Entry> = (0..max + 3).rev().map(e).collect();
    ready(cache, p, &pulled, true).await;
    let s = read_all(cache, p).await;
    assert_eq!(ns(&s), (3..max + 3).rev().collect::<Vec<_>>());
    assert_eq!(s.floor, Some(post(3)));
}

/// `remove_post` over several owners, `remove_author` for one, `evict`.
pub async fn removals(cache: &dyn TimelineCache, owner_base: u64) {
    let (a, b, absent) = (UserId(owner_base), UserId(owner_base + 1), UserId(owner_base + 2));
    cache.evict(absent).await.unwrap();
    let entries: Vec<Entry> = (1..=9).map(e).collect();
    ready(cache, a, &entries, true).await;
    ready(cache, b, &entries, true).await;

    cache.remove_post(&[a, b, absent], post(5)).await.unwrap();
    cache.remove_post(&[a], post(1000)).await.unwrap();
    assert_eq!(ns(&read_all(cache, a).await), vec![9, 8, 7, 6, 4, 3, 2, 1]);
    assert_eq!(ns(&read_all(cache, b).await), vec![9, 8, 7, 6, 4, 3, 2, 1]);
    assert!(cache.read(absent, newest(10)).await.unwrap().is_none());

    // Author 1 wrote posts 1, 4, 7 (n % 3 == 1).
    cache.remove_author(a, author(1)).await.unwrap();
    cache.remove_author(absent, author(1)).await.unwrap();
    assert_eq!(ns(&read_all(cache, a).await), vec![9, 8, 6, 3, 2]);
    assert_eq!(ns(&read_all(cache, b).await), vec![9, 8, 7, 6, 4, 3, 2, 1], "only the given owner");

    cache.evict(a).await.unwrap();
    assert!(cache.read(a, newest(10)).await.unwrap().is_none());
    assert_eq!(cache.insert(&[a, b], e(20)).await.unwrap(), 1);
    assert!(cache.begin_rebuild(a).await.unwrap(), "evicted: a rebuild can begin");
    cache.evict(a).await.unwrap();
    cache.evict(b).await.unwrap();
}

/// `len` counts ready and rebuilding timelines; `clear` drops them all. Needs a cache no
/// other test uses at the same time.
pub async fn clear_and_len(cache: &dyn TimelineCache, owner_base: u64) {
    cache.clear().await.expect("clear");
    assert_eq!(cache.len().await.unwrap(), 0);
    ready(cache, UserId(owner_base), &[e(1)], true).await;
    ready(cache, UserId(owner_base + 1), &[], false).await;
    assert!(cache.begin_rebuild(UserId(owner_base + 2)).await.unwrap());
    assert_eq!(cache.len().await.unwrap(), 3);
    cache.evict(UserId(owner_base + 1)).await.unwrap();
    cache.evict(UserId(owner_base + 9)).await.unwrap();
    assert_eq!(cache.len().await.unwrap(), 2);
    cache.clear().await.unwrap();
    assert_eq!(cache.len().await.unwrap(), 0);
    assert!(cache.read(UserId(owner_base), newest(10)).await.unwrap().is_none());
    assert_eq!(cache.insert(&[UserId(owner_base)], e(2)).await.unwrap(), 0);
}

/// `insert_all` leaves the same timelines, and counts the same, as `insert` called for
/// each push: with owners shared between pushes, repeated pushes, entries out of order,
/// absent and rebuilding owners, and more entries than the cap.
pub async fn insert_all_is_insert_for_each_push(cache: &dyn TimelineCache, owner_base: u64, max_entries: usize) {
    // Two identical sets of owners: ready, ready, rebuilding, absent.
    let set = |base: u64| [UserId(base), UserId(base + 1), UserId(base + 2), UserId(base + 3)];
    let (batched, single) = (set(owner_base), set(owner_base + 10));
    for owners in [batched, single] {
        ready(cache, owners[0], &[e(1)], true).await;
        ready(cache, owners[1], &[], true).await;
        cache.evict(owners[2]).await.unwrap();
        assert!(cache.begin_rebuild(owners[2]).await.unwrap());
        cache.evict(owners[3]).await.unwrap();
    }
    let n = max_entries as u64 + 20;
    // Shuffled post numbers; every fifth one pushed twice.
    let mut posts: Vec<u64> = (0..n).map(|i| 100 + (i * 7919) % n).collect();
    posts.extend((0..n).step_by(5).map(|i| 100 + i));
    let audience = |p: u64, owners: &[UserId; 4]| -> Vec<UserId> {
        match p % 3 {
            0 => vec![owners[0], owners[1], owners[3]],
            1 => vec![owners[0], owners[2]],
            _ => vec![owners[1], owners[2], owners[3], owners[0]],
        }
    };
    let batched_owners: Vec<Vec<UserId>> = posts.iter().map(|&p| audience(p, &batched)).collect();
    let pushes: Vec<Push<'_>> =
        posts.iter().zip(&batched_owners).map(|(&p, owners)| Push { entry: e(p), owners }).collect();
    let got = cache.insert_all(&pushes).await.expect("insert_all");
    let mut expected = 0;
    for &p in &posts {
        expected += cache.insert(&audience(p, &single), e(p)).await.expect("insert");
    }
    assert_eq!(got, expected, "insert_all counts what insert would");
    assert_eq!(cache.insert_all(&[]).await.unwrap(), 0);
    assert_eq!(cache.insert_all(&[Push { entry: e(2), owners: &[] }]).await.unwrap(), 0);

    for (b, s) in batched.iter().zip(&single).take(3) {
        cache.finish_rebuild(*b, &[], true).await.unwrap();
        cache.finish_rebuild(*s, &[], true).await.unwrap();
        let (b_read, s_read) = (read_all(cache, *b).await, read_all(cache, *s).await);
        assert_eq!(b_read, s_read, "owner {} differs between insert_all and insert", b.0 - owner_base);
        assert!(b_read.entries.len() <= max_entries);
    }
    for owners in [batched, single] {
        assert!(cache.read(owners[3], newest(10)).await.unwrap().is_none(), "no timeline was created");
        for o in owners {
            cache.evict(o).await.unwrap();
        }
    }
}
