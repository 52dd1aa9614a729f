//! The in-process timeline cache used in standalone mode.
//!
//! Timelines live in `shards` hash maps, each behind its own mutex, chosen by a mix of
//! the owner id; a fan-out `insert` groups its owners by shard and takes each shard lock
//! once. A timeline is a `VecDeque` sorted ascending by post id: new posts nearly always
//! go at the back and trimming pops the front, both O(1).
//!
//! Idle timelines (not read for `active_for`) count as absent at once and are removed
//! lazily when touched, or by [`MemoryCache::sweep`] (see [`MemoryCache::spawn_sweeper`]).
//!
//! All methods are synchronous underneath (`*_now`); the [`TimelineCache`] impl just
//! calls them, so in-process callers in a hot loop may use them directly.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use starling_ids::{PostId, UserId};
use tokio_util::sync::CancellationToken;

use crate::{CacheResult, Entry, Range, Slice, TimelineCache};

#[derive(Clone, Debug)]
pub struct MemoryCacheOptions {
    /// Entries kept per timeline; older ones are dropped and the floor raised.
    pub max_entries: usize,
    /// A timeline not read for this long is dropped.
    pub active_for: Duration,
    /// Lock shards; rounded up to a power of two.
    pub shards: usize,
    /// A rebuild that has not finished after this long may be started again, so a
    /// rebuilder that failed between `begin_rebuild` and `finish_rebuild` does not leave
    /// its owner without a readable timeline until the timeline goes idle.
    pub rebuild_timeout: Duration,
}

impl Default for MemoryCacheOptions {
    fn default() -> Self {
        Self {
            max_entries: 800,
            active_for: Duration::from_secs(7 * 24 * 3600),
            shards: 64,
            rebuild_timeout: Duration::from_secs(60),
        }
    }
}

/// See the module docs.
pub struct MemoryCache {
    shards: Box<[Padded]>,
    mask: usize,
    max_entries: usize,
    active_for: Duration,
    rebuild_timeout: Duration,
}

type Shard = HashMap<UserId, Timeline, IdHash>;

/// What [`MemoryCache::usage_now`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Timelines that are not idle ([`MemoryCache::len_now`]).
    pub timelines: usize,
    pub entries: usize,
    pub bytes: usize,
}

/// One shard per cache-line pair, so two cores locking neighbouring shards do not fight
/// over one line (a lock and its map are ~56 bytes; unpadded, two cores slowed each other).
#[repr(align(128))]
struct Padded(Mutex<Shard>);

impl std::ops::Deref for Padded {
    type Target = Mutex<Shard>;
    fn deref(&self) -> &Mutex<Shard> {
        &self.0
    }
}

struct Timeline {
    /// Ascending by post id, no two with the same post; none below `floor`.
    entries: VecDeque<Entry>,
    /// See the crate docs.
    floor: Option<PostId>,
    /// `false` between `begin_rebuild` and `finish_rebuild`.
    ready: bool,
    /// Last read of a ready timeline; for a rebuilding one, when the rebuild began.
    last_read: Instant,
}

impl Timeline {
    fn rebuilding(now: Instant) -> Self {
        Self { entries: VecDeque::new(), floor: None, ready: false, last_read: now }
    }

    /// Returns whether the entry was added.
    fn insert(&mut self, e: Entry, max: usize) -> bool {
        if self.floor.is_some_and(|f| e.post < f) {
            return false;
        }
        match self.entries.back() {
            Some(last) if last.post >= e.post => match self.entries.binary_search_by_key(&e.post, |x| x.post) {
                Ok(_) => return false,
                Err(0) if self.entries.len() >= max => {
                    // It would be trimmed at once; but now an older entry exists that
                    // this timeline does not hold, so the floor must say so.
                    self.floor = self.entries.front().map(|f| f.post);
                    return false;
                }
                Err(i) => self.entries.insert(i, e),
            },
            _ => self.entries.push_back(e),
        }
        self.trim(max);
        true
    }

    fn trim(&mut self, max: usize) {
        if self.entries.len() > max {
            let excess = self.entries.len() - max;
            self.entries.drain(..excess);
            self.floor = self.entries.front().map(|f| f.post);
        }
    }

    fn slice(&self, range: &Range) -> Slice {
        let e = &self.entries;
        let lo = range.after.map_or(0, |a| e.partition_point(|x| x.post <= a));
        let hi = range.before.map_or(e.len(), |b| e.partition_point(|x| x.post < b));
        let entries = if lo >= hi {
            Vec::new()
        } else if range.oldest_first {
            e.range(lo..hi.min(lo.saturating_add(range.limit))).copied().collect()
        } else {
            e.range(hi.saturating_sub(range.limit).max(lo)..hi).rev().copied().collect()
        };
        Slice { entries, floor: self.floor }
    }
}

impl MemoryCache {
    pub fn new(options: MemoryCacheOptions) -> Self {
        let shards = options.shards.max(1).next_power_of_two();
        Self {
            shards: (0..shards).map(|_| Padded(Mutex::new(Shard::default()))).collect(),
            mask: shards - 1,
            max_entries: options.max_entries.max(1),
            active_for: options.active_for,
            rebuild_timeout: options.rebuild_timeout,
        }
    }

    fn shard_of(&self, owner: UserId) -> usize {
        // Bits 32.. of the mix: the maps' own buckets use the low bits and the top 7,
        // so owners in one shard still spread over a shard's buckets.
        (mix(owner.0) >> 32) as usize & self.mask
    }

    fn idle(&self, t: &Timeline, now: Instant) -> bool {
        now.saturating_duration_since(t.last_read) > self.active_for
    }

    /// Runs `f` on each owner's live timeline, locking each shard once, and returns how
    /// often `f` returned `true`. Idle timelines met on the way are removed.
    fn for_owners(&self, owners: &[UserId], mut f: impl FnMut(&mut Timeline) -> bool) -> usize {
        let now = Instant::now();
        let mut hits = 0;
        let mut apply = |shard: &mut Shard, owner: UserId| {
            let Some(t) = shard.get_mut(&owner) else { return };
            if self.idle(t, now) {
                shard.remove(&owner);
            } else if f(t) {
                hits += 1;
            }
        };
        if let [owner] = owners {
            apply(&mut self.shards[self.shard_of(*owner)].lock(), *owner);
            return hits;
        }
        let mut keyed: Vec<(usize, UserId)> = owners.iter().map(|&o| (self.shard_of(o), o)).collect();
        keyed.sort_unstable_by_key(|&(s, _)| s);
        // Two fan-outs walking the shards in the same order would queue behind each other
        // at every shard, so a busy shard is skipped and visited at the end.
        let mut deferred: Vec<&[(usize, UserId)]> = Vec::new();
        for run in keyed.chunk_by(|a, b| a.0 == b.0) {
            match self.shards[run[0].0].try_lock() {
                Some(mut shard) => run.iter().for_each(|&(_, owner)| apply(&mut shard, owner)),
                None => deferred.push(run),
            }
        }
        for run in deferred {
            let mut shard = self.shards[run[0].0].lock();
            run.iter().for_each(|&(_, owner)| apply(&mut shard, owner));
        }
        hits
    }

    /// [`TimelineCache::insert`]. Counts the owners that have a timeline.
    pub fn insert_now(&self, owners: &[UserId], entry: Entry) -> usize {
        let max = self.max_entries;
        self.for_owners(owners, |t| {
            t.insert(entry, max);
            true
        })
    }

    pub fn insert_many_now(&self, owner: UserId, entries: &[Entry]) {
        let max = self.max_entries;
        self.for_owners(&[owner], |t| {
            for &e in entries {
                t.insert(e, max);
            }
            true
        });
    }

    pub fn remove_post_now(&self, owners: &[UserId], post: PostId) {
        self.for_owners(owners, |t| match t.entries.binary_search_by_key(&post, |x| x.post) {
            Ok(i) => t.entries.remove(i).is_some(),
            Err(_) => false,
        });
    }

    pub fn remove_author_now(&self, owner: UserId, author: UserId) {
        self.for_owners(&[owner], |t| {
            t.entries.retain(|e| e.author != author);
            true
        });
    }

    pub fn read_now(&self, owner: UserId, range: Range) -> Option<Slice> {
        let now = Instant::now();
        let mut shard = self.shards[self.shard_of(owner)].lock();
        let t = shard.get(&owner)?;
        if self.idle(t, now) {
            shard.remove(&owner);
            return None;
        }
        let t = shard.get_mut(&owner)?;
        if !t.ready {
            return None;
        }
        t.last_read = now;
        Some(t.slice(&range))
    }

    pub fn begin_rebuild_now(&self, owner: UserId) -> bool {
        let now = Instant::now();
        let mut shard = self.shards[self.shard_of(owner)].lock();
        match shard.get_mut(&owner) {
            Some(t) if self.idle(t, now) => {
                *t = Timeline::rebuilding(now);
                true
            }
            Some(t) if !t.ready && now.saturating_duration_since(t.last_read) > self.rebuild_timeout => {
                // The first rebuilder seems gone. Entries pushed since it began are still
                // valid, so keep them; merging two pulls is harmless.
                tracing::warn!(owner = owner.0, "taking over a stalled timeline rebuild");
                t.last_read = now;
                true
            }
            Some(_) => false,
            None => {
                shard.insert(owner, Timeline::rebuilding(now));
                true
            }
        }
    }

    pub fn finish_rebuild_now(&self, owner: UserId, pulled: &[Entry], complete: bool) {
        let now = Instant::now();
        let max = self.max_entries;
        let mut shard = self.shards[self.shard_of(owner)].lock();
        let Some(t) = shard.get_mut(&owner) else { return };
        let pulled_from = pulled.iter().map(|e| e.post).min();
        t.floor = match (t.ready, complete, pulled_from) {
            // Pushes have landed since the rebuild began, so the union covers what the
            // pull covers; a trim during the rebuild can only have raised the floor.
            (false, true, _) => t.floor,
            (false, false, Some(p)) => t.floor.max(Some(p)),
            // An incomplete pull that found nothing proves nothing: trust only what
            // arrived by push.
            (false, false, None) => t.floor.max(t.entries.front().map(|e| e.post)),
            // Already ready (a rebuild was taken over and the other one finished first):
            // the union covers whichever reaches further back.
            (true, true, _) => None,
            (true, false, Some(p)) => t.floor.map(|f| f.min(p)),
            (true, false, None) => t.floor,
        };
        let mut merged: Vec<Entry> = t.entries.iter().chain(pulled).copied().collect();
        merged.sort_unstable_by_key(|e| e.post);
        merged.dedup_by_key(|e| e.post);
        // Nothing below the floor: a reader would take it as part of the authoritative run.
        if let Some(f) = t.floor {
            merged.retain(|e| e.post >= f);
        }
        t.entries = merged.into();
        t.trim(max);
        t.ready = true;
        t.last_read = now;
    }

    pub fn evict_now(&self, owner: UserId) {
        self.shards[self.shard_of(owner)].lock().remove(&owner);
    }

    pub fn clear_now(&self) {
        for shard in self.shards.iter() {
            shard.lock().clear();
        }
    }

    /// Timelines held that are not idle.
    pub fn len_now(&self) -> usize {
        let now = Instant::now();
        self.shards.iter().map(|s| s.lock().values().filter(|t| !self.idle(t, now)).count()).sum()
    }

    /// The timelines that are not idle, and the entries held and the bytes they and their
    /// timelines take, idle timelines not yet swept included (they still hold the memory),
    /// in one pass. Bytes count each timeline's entry buffer at its capacity plus its
    /// header and key, not the hash maps' spare slots.
    pub fn usage_now(&self) -> Usage {
        let per_timeline = std::mem::size_of::<(UserId, Timeline)>();
        let now = Instant::now();
        let mut usage = Usage::default();
        for shard in self.shards.iter() {
            for t in shard.lock().values() {
                usage.timelines += usize::from(!self.idle(t, now));
                usage.entries += t.entries.len();
                usage.bytes += per_timeline + t.entries.capacity() * std::mem::size_of::<Entry>();
            }
        }
        usage
    }

    /// Drops idle timelines; returns how many. Takes one shard lock at a time.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, t| !self.idle(t, now));
            dropped += before - shard.len();
            if shard.capacity() > 4 * shard.len().max(16) {
                shard.shrink_to_fit();
            }
        }
        dropped
    }

    /// Runs [`MemoryCache::sweep`] every `every` until `cancel` fires.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Weak, so a forgotten sweeper does not keep the cache alive.
                let Some(cache) = cache.upgrade() else { return };
                let dropped = cache.sweep();
                if dropped > 0 {
                    tracing::debug!(dropped, "swept idle timelines");
                }
            }
        })
    }
}

#[async_trait]
impl TimelineCache for MemoryCache {
    async fn insert(&self, owners: &[UserId], entry: Entry) -> CacheResult<usize> {
        Ok(self.insert_now(owners, entry))
    }

    async fn insert_many(&self, owner: UserId, entries: &[Entry]) -> CacheResult<()> {
        self.insert_many_now(owner, entries);
        Ok(())
    }

    async fn remove_post(&self, owners: &[UserId], post: PostId) -> CacheResult<()> {
        self.remove_post_now(owners, post);
        Ok(())
    }

    async fn remove_author(&self, owner: UserId, author: UserId) -> CacheResult<()> {
        self.remove_author_now(owner, author);
        Ok(())
    }

    async fn read(&self, owner: UserId, range: Range) -> CacheResult<Option<Slice>> {
        Ok(self.read_now(owner, range))
    }

    async fn begin_rebuild(&self, owner: UserId) -> CacheResult<bool> {
        Ok(self.begin_rebuild_now(owner))
    }

    async fn finish_rebuild(&self, owner: UserId, entries: &[Entry], complete: bool) -> CacheResult<()> {
        self.finish_rebuild_now(owner, entries, complete);
        Ok(())
    }

    async fn evict(&self, owner: UserId) -> CacheResult<()> {
        self.evict_now(owner);
        Ok(())
    }

    async fn clear(&self) -> CacheResult<()> {
        self.clear_now();
        Ok(())
    }

    async fn len(&self) -> CacheResult<usize> {
        Ok(self.len_now())
    }
}

/// The murmur3 finaliser: every input bit affects every output bit. Snowflake ids share
/// their low (sequence) bits and high (time) bits, so they need real mixing.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A hasher for `UserId` keys: one `mix` instead of SipHash. Owner ids are assigned by
/// the server, not chosen by clients, so flooding resistance buys nothing here.
#[derive(Clone, Copy, Default)]
struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = mix(self.0 ^ v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn cache(max_entries: usize) -> MemoryCache {
        MemoryCache::new(MemoryCacheOptions { max_entries, ..Default::default() })
    }

    fn e(post: u64, author: u64) -> Entry {
        Entry { post: PostId(post), author: UserId(author) }
    }

    fn newest(limit: usize) -> Range {
        Range { before: None, after: None, limit, oldest_first: false }
    }

    #[tokio::test]
    async fn conformance_suite() {
        conformance::all(&cache(40), 1_000, 40).await;
    }

    #[tokio::test]
    async fn conformance_suite_default_cap() {
        conformance::all(&MemoryCache::new(MemoryCacheOptions::default()), 5_000_000, 800).await;
    }

    #[tokio::test]
    async fn conformance_clear_and_len() {
        conformance::clear_and_len(&cache(10), 7).await;
    }

    #[tokio::test]
    async fn idle_timelines_expire() {
        let c = MemoryCache::new(MemoryCacheOptions { active_for: Duration::from_millis(50), ..Default::default() });
        let (a, b) = (UserId(1), UserId(2));
        for o in [a, b] {
            assert!(c.begin_rebuild_now(o));
            c.finish_rebuild_now(o, &[e(10, 9)], true);
        }
        assert!(c.read_now(a, newest(10)).is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.len_now(), 0, "idle timelines do not count");
        assert_eq!(c.insert_now(&[a], e(11, 9)), 0, "inserts skip an idle timeline");
        assert!(c.read_now(a, newest(10)).is_none());
        assert_eq!(c.sweep(), 1, "b was not touched, so the sweep removes it");
        assert!(c.begin_rebuild_now(a), "a rebuild starts afresh");
        c.finish_rebuild_now(a, &[], true);
        assert_eq!(c.read_now(a, newest(10)).unwrap().entries, Vec::new());
    }

    #[test]
    fn usage_counts_entries_and_their_buffers() {
        let c = cache(40);
        assert_eq!(c.usage_now(), Usage::default());
        for owner in [UserId(1), UserId(2)] {
            assert!(c.begin_rebuild_now(owner));
            c.finish_rebuild_now(owner, &[e(10, 9), e(11, 9), e(12, 9)], true);
        }
        let usage = c.usage_now();
        assert_eq!((usage.timelines, usage.entries), (2, 6));
        // At least the entries themselves and a header per timeline.
        assert!(usage.bytes >= 6 * 16 + 2 * std::mem::size_of::<Timeline>(), "{usage:?}");
        c.clear_now();
        assert_eq!(c.usage_now(), Usage::default());
    }

    #[tokio::test]
    async fn sweeper_stops_on_cancel() {
        let c = Arc::new(MemoryCache::new(MemoryCacheOptions {
            active_for: Duration::from_millis(10),
            ..Default::default()
        }));
        assert!(c.begin_rebuild_now(UserId(1)));
        let cancel = CancellationToken::new();
        let task = c.spawn_sweeper(Duration::from_millis(5), cancel.clone());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(c.shards.iter().map(|s| s.lock().len()).sum::<usize>(), 0);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
    }

    #[test]
    fn stalled_rebuild_can_be_taken_over() {
        let c =
            MemoryCache::new(MemoryCacheOptions { rebuild_timeout: Duration::from_millis(20), ..Default::default() });
        let o = UserId(3);
        assert!(c.begin_rebuild_now(o));
        c.insert_now(&[o], e(50, 1));
        assert!(!c.begin_rebuild_now(o));
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.begin_rebuild_now(o));
        c.finish_rebuild_now(o, &[e(40, 1)], false);
        let s = c.read_now(o, newest(10)).unwrap();
        assert_eq!(s.entries, vec![e(50, 1), e(40, 1)], "the push before the takeover is kept");
        assert_eq!(s.floor, Some(PostId(40)));
    }

    #[test]
    fn floor_rules() {
        let c = cache(3);
        let o = UserId(4);
        assert!(c.begin_rebuild_now(o));
        // A backfill older than the pull lands during the rebuild; the floor drops it.
        c.insert_many_now(o, &[e(5, 1)]);
        c.finish_rebuild_now(o, &[e(20, 1), e(10, 1)], false);
        let s = c.read_now(o, newest(10)).unwrap();
        assert_eq!((s.entries, s.floor), (vec![e(20, 1), e(10, 1)], Some(PostId(10))));
        assert_eq!(c.insert_now(&[o], e(9, 1)), 1, "below the floor: ignored, but the timeline exists");
        assert_eq!(c.insert_now(&[o], e(30, 1)), 1);
        assert_eq!(c.insert_now(&[o], e(30, 1)), 1, "a duplicate: nothing added, the timeline exists");
        assert_eq!(c.insert_now(&[o], e(40, 1)), 1);
        let s = c.read_now(o, newest(10)).unwrap();
        assert_eq!((s.entries, s.floor), (vec![e(40, 1), e(30, 1), e(20, 1)], Some(PostId(20))));

        // Full with no floor: an older insert is dropped, and now the floor must show it.
        let p = UserId(5);
        assert!(c.begin_rebuild_now(p));
        c.finish_rebuild_now(p, &[e(10, 1), e(20, 1), e(30, 1)], true);
        assert_eq!(c.read_now(p, newest(10)).unwrap().floor, None);
        assert_eq!(c.insert_now(&[p], e(5, 1)), 1);
        assert_eq!(c.read_now(p, newest(10)).unwrap().floor, Some(PostId(10)));

        // An incomplete pull that found nothing trusts only what was pushed.
        let q = UserId(6);
        assert!(c.begin_rebuild_now(q));
        c.insert_now(&[q], e(70, 1));
        c.finish_rebuild_now(q, &[], false);
        assert_eq!(c.read_now(q, newest(10)).unwrap().floor, Some(PostId(70)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_stay_sorted_and_unique() {
        let c = Arc::new(cache(10_000));
        let owners: Vec<UserId> = (1..=50).map(UserId).collect();
        for &o in &owners {
            assert!(c.begin_rebuild_now(o));
            c.finish_rebuild_now(o, &[], true);
        }
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let (c, owners) = (c.clone(), owners.clone());
            tasks.push(tokio::spawn(async move {
                // Each task walks the same 2000 posts in its own scrambled order, so
                // every post is inserted 8 times, racing.
                let mut x = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for i in 0..2000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let post = (i * 7919 + task * 13) % 2000 + 1;
                    let who = &owners[(x % 40) as usize..][..10];
                    c.insert(who, e(post, post % 17)).await.unwrap();
                    if i % 500 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for &o in &owners {
            let s = c.read_now(o, newest(100_000)).unwrap();
            assert!(s.entries.windows(2).all(|w| w[0].post > w[1].post), "newest first, no duplicates");
            assert!(s.entries.iter().all(|x| x.author.0 == x.post.0 % 17));
        }
    }

    /// Fan-out throughput in steady state (every timeline full, so each insert appends
    /// one entry and drops the oldest), 75 random followers per post. Run with:
    /// `cargo test -p starling-timeline-cache --release -- --ignored --nocapture insert_throughput`
    #[test]
    #[ignore = "benchmark"]
    fn insert_throughput() {
        const OWNERS: u64 = 20_000;
        const FOLLOWERS: usize = 75;
        const POSTS: u64 = 200_000;
        let c = Arc::new(cache(800));
        let prefill: Vec<Entry> = (1..=800).map(|p| e(p, 1)).collect();
        for o in 0..OWNERS {
            assert!(c.begin_rebuild_now(UserId(o)));
            c.finish_rebuild_now(UserId(o), &prefill, false);
        }
        for (round, threads) in [1u64, 2, 1, 2].into_iter().enumerate() {
            let started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let c = c.clone();
                    s.spawn(move || {
                        let mut x = 0x2545_F491_4F6C_DD1Du64 ^ t;
                        let mut owners = Vec::with_capacity(FOLLOWERS);
                        for i in 0..POSTS / threads {
                            owners.clear();
                            for _ in 0..FOLLOWERS {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                owners.push(UserId(x % OWNERS));
                            }
                            let post = ((round as u64 + 1) << 40) + i * threads + t;
                            c.insert_now(&owners, e(post, 1));
                        }
                    });
                }
            });
            let inserts = (POSTS as usize * FOLLOWERS) as f64;
            let secs = started.elapsed().as_secs_f64();
            println!("{threads} thread(s): {:.2}M timeline inserts/s", inserts / secs / 1e6);
        }
    }
}
