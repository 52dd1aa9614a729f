//! The in-process read model used in standalone mode.
//!
//! Posts and follow lists are bounded by count: past `max_posts` / `max_readers` the
//! oldest cached ones are dropped (insertion order), and the next read of them fills again.
//! Nothing expires by time: in one process every change reaches the model through the
//! same events as in Redis, so there is nothing to age out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use foldhash::{HashMap, HashMapExt};
use parking_lot::{Mutex, RwLock};
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, PostRecord};

use super::{
    CHANGE_LOG, CachedPost, Change, Changes, Collection, Fill, FillToken, ReadModel, ReaderView, Recent, check_fill,
    merge_recent,
};
use crate::CacheResult;

#[derive(Clone, Debug)]
pub struct MemoryReadModelOptions {
    /// Posts (and tombstones) kept.
    pub max_posts: usize,
    /// Follow lists kept (and as many grants and authors' counts).
    pub max_readers: usize,
    /// How long cached counts are served.
    pub counts_for: std::time::Duration,
}

impl Default for MemoryReadModelOptions {
    fn default() -> Self {
        Self { max_posts: 1_000_000, max_readers: 200_000, counts_for: std::time::Duration::from_secs(60) }
    }
}

/// A map that forgets its oldest keys past a capacity.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Copy, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap: cap.max(1) }
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.map.len() > self.cap {
                let Some(old) = self.order.pop_front() else { break };
                self.map.remove(&old);
            }
        }
        // Keys removed from `map` stay in `order` until they reach its front; bound that too.
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

/// Each viewer's flags (reblogged, favourited) on the statuses it was shown, with when
/// they were read, kept by viewer: a page's lookups then stay in one small map (one map
/// of every viewer's flags missed the CPU cache on nearly every lookup, ~4 % of a page).
/// Past `cap` flags in all, the viewers cached longest ago are forgotten, all their flags
/// at once.
struct ByViewer {
    viewers: HashMap<UserId, HashMap<PostId, ((bool, bool), std::time::Instant)>>,
    order: VecDeque<UserId>,
    len: usize,
    cap: usize,
}

impl ByViewer {
    fn new(cap: usize) -> Self {
        Self { viewers: HashMap::new(), order: VecDeque::new(), len: 0, cap: cap.max(1) }
    }

    fn get(&self, viewer: UserId, post: PostId) -> Option<&((bool, bool), std::time::Instant)> {
        self.viewers.get(&viewer)?.get(&post)
    }

    fn insert(&mut self, viewer: UserId, post: PostId, flags: ((bool, bool), std::time::Instant)) {
        let posts = self.viewers.entry(viewer).or_insert_with(|| {
            self.order.push_back(viewer);
            HashMap::new()
        });
        if posts.insert(post, flags).is_none() {
            self.len += 1;
        }
        while self.len > self.cap {
            let Some(oldest) = self.order.pop_front() else { break };
            self.len -= self.viewers.remove(&oldest).map_or(0, |p| p.len());
        }
    }
}

/// See the module docs.
pub struct MemoryReadModel {
    posts: RwLock<Bounded<PostId, CachedPost>>,
    grants: RwLock<Bounded<[u8; 32], Option<Vec<u8>>>>,
    counts: RwLock<Bounded<UserId, (Counts, std::time::Instant)>>,
    counts_for: std::time::Duration,
    /// Each status's (reblogs, favourites, replies), and each viewer's flags on it.
    status_counts: RwLock<Bounded<PostId, ([u64; 3], std::time::Instant)>>,
    flags: RwLock<ByViewer>,
    sets: RwLock<Sets>,
    fills: Mutex<Fills>,
    version: AtomicU64,
    changes: Mutex<ChangeLog>,
    /// The log's number, read by every page without taking the log's lock; moved (under
    /// it) after each append.
    changes_seq: AtomicU64,
}

/// The change log (see [`crate::read_model`]): numbers from 1, never reset; a wipe
/// moves `floor` up to the number, so nothing before it is reported complete.
#[derive(Default)]
struct ChangeLog {
    seq: u64,
    floor: u64,
    log: VecDeque<(u64, Change)>,
}

struct Sets {
    following: Bounded<UserId, Vec<UserId>>,
    recent: HashMap<UserId, Recent>,
    celebrities: Option<Vec<UserId>>,
}

#[derive(Default)]
struct Fills {
    pending: HashMap<Collection, u64>,
    next: u64,
}

impl MemoryReadModel {
    pub fn new(options: MemoryReadModelOptions) -> Self {
        Self {
            posts: RwLock::new(Bounded::new(options.max_posts)),
            // A grant is as small as a follow list; as many as readers.
            grants: RwLock::new(Bounded::new(options.max_readers)),
            counts: RwLock::new(Bounded::new(options.max_readers)),
            counts_for: options.counts_for,
            status_counts: RwLock::new(Bounded::new(options.max_posts)),
            flags: RwLock::new(ByViewer::new(options.max_posts)),
            sets: RwLock::new(Sets {
                following: Bounded::new(options.max_readers),
                recent: HashMap::new(),
                celebrities: None,
            }),
            fills: Mutex::new(Fills::default()),
            version: AtomicU64::new(0),
            changes: Mutex::new(ChangeLog::default()),
            changes_seq: AtomicU64::new(0),
        }
    }

    /// Appends `changes` to the change log, after what they announce was stored.
    fn log(&self, changes: impl IntoIterator<Item = Change>) {
        let mut d = self.changes.lock();
        for change in changes {
            d.seq += 1;
            let seq = d.seq;
            d.log.push_back((seq, change));
        }
        while d.log.len() > CHANGE_LOG {
            let Some((seq, _)) = d.log.pop_front() else { break };
            d.floor = seq;
        }
        self.changes_seq.store(d.seq, Ordering::SeqCst);
    }

    /// Caches interactions: over what is cached (`replace`), else only where nothing fresh is.
    fn store_interactions(&self, viewer: UserId, entries: &[(PostId, Interactions)], replace: bool) {
        let (mut counts, mut flags) = (self.status_counts.write(), self.flags.write());
        let now = std::time::Instant::now();
        let stale = |at: Option<&std::time::Instant>| at.is_none_or(|at| at.elapsed() >= self.counts_for);
        for &(id, i) in entries {
            if replace || stale(counts.map.get(&id).map(|e| &e.1)) {
                counts.insert(id, ([i.reblogs, i.favourites, i.replies], now));
            }
            if replace || stale(flags.get(viewer, id).map(|e| &e.1)) {
                flags.insert(viewer, id, ((i.reblogged, i.favourited), now));
            }
        }
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// Cancels a fill in progress. The returned lock is held while the event changes the
    /// collection, so no fill can finish in between (`finish_fill` holds it too).
    fn cancel_fill(&self, collection: Collection) -> parking_lot::MutexGuard<'_, Fills> {
        let mut fills = self.fills.lock();
        fills.pending.remove(&collection);
        fills
    }
}

fn set_member(list: &mut Vec<UserId>, member: UserId, present: bool) {
    let at = list.iter().position(|&m| m == member);
    match (at, present) {
        (None, true) => list.push(member),
        (Some(i), false) => {
            list.swap_remove(i);
        }
        _ => {}
    }
}

#[async_trait]
impl ReadModel for MemoryReadModel {
    async fn posts(&self, ids: &[PostId]) -> CacheResult<Vec<Option<CachedPost>>> {
        let posts = self.posts.read();
        Ok(ids.iter().map(|id| posts.map.get(id).cloned()).collect())
    }

    async fn add_posts(&self, posts: &[PostRecord]) -> CacheResult<()> {
        let mut cached = self.posts.write();
        for p in posts {
            if !cached.map.contains_key(&p.id) {
                cached.insert(p.id, CachedPost::Live(p.clone()));
            }
        }
        Ok(())
    }

    async fn posts_deleted(&self, ids: &[PostId]) -> CacheResult<()> {
        {
            let mut cached = self.posts.write();
            for &id in ids {
                cached.insert(id, CachedPost::Deleted);
            }
        }
        self.log(ids.iter().map(|&id| Change::Deleted(id)));
        Ok(())
    }

    async fn reader_view(&self, reader: UserId) -> CacheResult<ReaderView> {
        let version = self.version.load(Ordering::SeqCst);
        let changes = Some(self.changes_seq.load(Ordering::SeqCst));
        Ok(ReaderView { following: self.sets.read().following.map.get(&reader).cloned(), version, changes })
    }

    async fn changes_since(&self, after: u64) -> CacheResult<Changes> {
        let d = self.changes.lock();
        if after < d.floor || after > d.seq {
            return Ok(Changes { seq: d.seq, changes: Vec::new(), complete: false });
        }
        let changes = d.log.iter().filter(|(seq, _)| *seq > after).map(|(_, c)| *c).collect();
        Ok(Changes { seq: d.seq, changes, complete: true })
    }

    async fn celebrities(&self) -> CacheResult<Option<Vec<UserId>>> {
        Ok(self.sets.read().celebrities.clone())
    }

    async fn recent(&self, authors: &[UserId]) -> CacheResult<Vec<Option<Recent>>> {
        let sets = self.sets.read();
        Ok(authors.iter().map(|a| sets.recent.get(a).cloned()).collect())
    }

    async fn begin_fill(&self, collection: Collection) -> CacheResult<FillToken> {
        let mut fills = self.fills.lock();
        fills.next += 1;
        let token = fills.next;
        fills.pending.insert(collection, token);
        Ok(FillToken(token))
    }

    async fn finish_fill(&self, collection: Collection, token: FillToken, value: Fill) -> CacheResult<bool> {
        check_fill(collection, &value)?;
        // The fill lock is held while writing, so no event can slip in between the token
        // check and the write (events cancel under the same lock, then write).
        let mut fills = self.fills.lock();
        if fills.pending.get(&collection) != Some(&token.0) {
            return Ok(false);
        }
        fills.pending.remove(&collection);
        let mut sets = self.sets.write();
        match (collection, value) {
            (Collection::Following(reader), Fill::Users(users)) => sets.following.insert(reader, users),
            (Collection::Celebrities, Fill::Users(users)) => sets.celebrities = Some(users),
            (Collection::Recent(author), Fill::Recent(mut recent)) => {
                merge_recent(&mut recent, &[]);
                sets.recent.insert(author, recent);
            }
            _ => unreachable!("checked by check_fill"),
        }
        Ok(true)
    }

    async fn set_member(&self, collection: Collection, member: UserId, present: bool) -> CacheResult<()> {
        let _fills = self.cancel_fill(collection);
        let mut sets = self.sets.write();
        match collection {
            Collection::Following(reader) => {
                if let Some(list) = sets.following.map.get_mut(&reader) {
                    set_member(list, member, present);
                }
            }
            Collection::Celebrities => {
                if let Some(list) = sets.celebrities.as_mut() {
                    set_member(list, member, present);
                }
                self.bump();
            }
            Collection::Recent(_) => {}
        }
        Ok(())
    }

    async fn add_recent(&self, author: UserId, posts: &[PostId]) -> CacheResult<()> {
        let _fills = self.cancel_fill(Collection::Recent(author));
        if let Some(list) = self.sets.write().recent.get_mut(&author) {
            merge_recent(list, posts);
        }
        self.bump();
        Ok(())
    }

    async fn forget(&self, collection: Collection) -> CacheResult<()> {
        let _fills = self.cancel_fill(collection);
        let mut sets = self.sets.write();
        match collection {
            Collection::Following(reader) => {
                sets.following.map.remove(&reader);
            }
            Collection::Recent(author) => {
                sets.recent.remove(&author);
            }
            Collection::Celebrities => sets.celebrities = None,
        }
        if !matches!(collection, Collection::Following(_)) {
            self.bump();
        }
        Ok(())
    }

    async fn counts(&self, users: &[UserId]) -> CacheResult<Vec<Option<Counts>>> {
        let counts = self.counts.read();
        // One clock read per call, not one per entry.
        let now = std::time::Instant::now();
        let fresh = |(c, at): &(Counts, std::time::Instant)| (now.duration_since(*at) < self.counts_for).then_some(*c);
        Ok(users.iter().map(|u| counts.map.get(u).and_then(fresh)).collect())
    }

    async fn fill_counts(&self, entries: &[(UserId, Counts)]) -> CacheResult<()> {
        let mut counts = self.counts.write();
        let now = std::time::Instant::now();
        for &(user, c) in entries {
            counts.insert(user, (c, now));
        }
        Ok(())
    }

    async fn interactions(&self, viewer: UserId, ids: &[PostId]) -> CacheResult<Vec<Option<Interactions>>> {
        let (counts, flags) = (self.status_counts.read(), self.flags.read());
        let now = std::time::Instant::now();
        let fresh = |at: &std::time::Instant| now.duration_since(*at) < self.counts_for;
        let mine = flags.viewers.get(&viewer);
        Ok(ids
            .iter()
            .map(|id| {
                let [reblogs, favourites, replies] = counts.map.get(id).filter(|(_, at)| fresh(at))?.0;
                let (reblogged, favourited) = mine?.get(id).filter(|(_, at)| fresh(at))?.0;
                Some(Interactions { reblogs, favourites, replies, reblogged, favourited })
            })
            .collect())
    }

    async fn fill_interactions(&self, viewer: UserId, found: &[(PostId, Interactions)]) -> CacheResult<()> {
        self.store_interactions(viewer, found, false);
        Ok(())
    }

    async fn set_interactions(&self, viewer: UserId, changed: &[(PostId, Interactions)]) -> CacheResult<()> {
        self.store_interactions(viewer, changed, true);
        self.log(changed.iter().map(|&(post, _)| Change::Interacted { post, viewer }));
        Ok(())
    }

    async fn grant(&self, hash: &[u8; 32]) -> CacheResult<Option<Option<Vec<u8>>>> {
        Ok(self.grants.read().map.get(hash).cloned())
    }

    async fn fill_grant(&self, hash: &[u8; 32], grant: Option<&[u8]>) -> CacheResult<()> {
        let mut grants = self.grants.write();
        if !grants.map.contains_key(hash) {
            grants.insert(*hash, grant.map(<[u8]>::to_vec));
        }
        Ok(())
    }

    async fn set_grant(&self, hash: &[u8; 32], grant: Option<&[u8]>) -> CacheResult<()> {
        self.grants.write().insert(*hash, grant.map(<[u8]>::to_vec));
        if grant.is_none() {
            self.log([Change::Revoked(*hash)]);
        }
        Ok(())
    }

    async fn clear(&self) -> CacheResult<()> {
        let mut fills = self.fills.lock();
        fills.pending.clear();
        let cap = self.posts.read().cap;
        *self.posts.write() = Bounded::new(cap);
        let cap = self.grants.read().cap;
        *self.grants.write() = Bounded::new(cap);
        let cap = self.counts.read().cap;
        *self.counts.write() = Bounded::new(cap);
        let cap = self.status_counts.read().cap;
        *self.status_counts.write() = Bounded::new(cap);
        let cap = self.flags.read().cap;
        *self.flags.write() = ByViewer::new(cap);
        let mut sets = self.sets.write();
        sets.following = Bounded::new(sets.following.cap);
        sets.recent.clear();
        sets.celebrities = None;
        self.bump();
        let mut d = self.changes.lock();
        d.log.clear();
        d.floor = d.seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        crate::read_model::conformance::run(&MemoryReadModel::new(MemoryReadModelOptions::default())).await;
    }

    #[tokio::test]
    async fn bounded_by_count() {
        let m = MemoryReadModel::new(MemoryReadModelOptions {
            max_posts: 2,
            max_readers: 1,
            ..MemoryReadModelOptions::default()
        });
        let post = |id| PostRecord {
            id: PostId(id),
            author: UserId(1),
            author_handle: "a".into(),
            text: "t".into(),
            reply_to: None,
            reblog_of: None,
        };
        m.add_posts(&[post(1), post(2), post(3)]).await.unwrap();
        let got = m.posts(&[PostId(1), PostId(2), PostId(3)]).await.unwrap();
        assert_eq!(got.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true, true]);
        for reader in [UserId(1), UserId(2)] {
            let token = m.begin_fill(Collection::Following(reader)).await.unwrap();
            assert!(m.finish_fill(Collection::Following(reader), token, Fill::Users(vec![])).await.unwrap());
        }
        assert_eq!(m.reader_view(UserId(1)).await.unwrap().following, None);
        assert_eq!(m.reader_view(UserId(2)).await.unwrap().following, Some(vec![]));
    }

    #[tokio::test]
    async fn flags_are_forgotten_a_viewer_at_a_time() {
        let m = MemoryReadModel::new(MemoryReadModelOptions { max_posts: 3, ..MemoryReadModelOptions::default() });
        let flags = Interactions { favourited: true, ..Interactions::default() };
        let (posts, ids) = ([(PostId(1), flags), (PostId(2), flags)], [PostId(1), PostId(2)]);
        m.fill_interactions(UserId(1), &posts).await.unwrap();
        m.fill_interactions(UserId(2), &posts).await.unwrap();
        // Four flags are over three: the viewer cached first goes, both its flags.
        assert_eq!(m.interactions(UserId(1), &ids).await.unwrap(), [None, None]);
        assert_eq!(m.interactions(UserId(2), &ids).await.unwrap(), [Some(flags), Some(flags)]);
        assert_eq!(m.flags.read().len, 2);
    }
}
