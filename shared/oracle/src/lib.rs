//! The timeline contract as a plain in-memory model.
//!
//! Once the system is quiet, the home timeline of user U is exactly the posts P with
//! author(P) ∈ home(U) = (following(U) − muted(U)) ∪ {U}, P not deleted, newest first,
//! where a reblog R of status O counts only if O is shown nowhere else: O's author is not
//! in home(U), and no reblog of O older than R is by someone in home(U) (one entry per
//! original, the oldest). Deleting O deletes its reblogs; unreblogging deletes the reblog.
//! [`Oracle`] applies the same operations a client made and computes that list, so a
//! test or a replay can compare it with what the service serves. It also predicts which
//! operations the service must refuse, so the driver can check status codes too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use starling_ids::{PostId, UserId};

/// Why the service must refuse an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Following, blocking or muting oneself.
    SelfTarget,
    /// A follow between two accounts one of which blocks the other.
    Blocked,
    UnknownPost,
    NotAuthor,
}

impl Refusal {
    /// The HTTP status the API contract answers this refusal with.
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::SelfTarget | Refusal::Blocked | Refusal::NotAuthor => 403,
            Refusal::UnknownPost => 404,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Oracle {
    following: HashMap<UserId, BTreeSet<UserId>>,
    followers: HashMap<UserId, BTreeSet<UserId>>,
    /// (blocker, blocked).
    blocks: HashSet<(UserId, UserId)>,
    /// (muter, muted).
    mutes: HashSet<(UserId, UserId)>,
    /// Live posts by author, ordered by id (reblogs included: they are their rebloggers').
    posts_by_author: HashMap<UserId, BTreeSet<PostId>>,
    authors: BTreeMap<PostId, UserId>,
    /// Each live reblog's original.
    reblog_of: HashMap<PostId, PostId>,
    /// Each original's live reblogs, by reblog id, with their rebloggers.
    reblogs: HashMap<PostId, BTreeMap<PostId, UserId>>,
    /// (status, user) favourites of live statuses.
    favourites: HashSet<(PostId, UserId)>,
}

impl Oracle {
    pub fn new() -> Self {
        Self::default()
    }

    fn blocked_either_way(&self, a: UserId, b: UserId) -> bool {
        self.blocks.contains(&(a, b)) || self.blocks.contains(&(b, a))
    }

    pub fn follows(&self, follower: UserId, followee: UserId) -> bool {
        self.following.get(&follower).is_some_and(|s| s.contains(&followee))
    }

    pub fn follower_count(&self, user: UserId) -> usize {
        self.followers.get(&user).map_or(0, BTreeSet::len)
    }

    pub fn following_of(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.following.get(&user).into_iter().flatten().copied()
    }

    pub fn followers_of(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.followers.get(&user).into_iter().flatten().copied()
    }

    /// What a follow would do, without doing it. Following, unfollowing, blocking and
    /// unblocking are idempotent, as Mastodon's are: doing what is done already is fine.
    pub fn check_follow(&self, follower: UserId, followee: UserId) -> Result<(), Refusal> {
        if follower == followee {
            Err(Refusal::SelfTarget)
        } else if self.blocked_either_way(follower, followee) {
            Err(Refusal::Blocked)
        } else {
            Ok(())
        }
    }

    pub fn follow(&mut self, follower: UserId, followee: UserId) -> Result<(), Refusal> {
        self.check_follow(follower, followee)?;
        self.following.entry(follower).or_default().insert(followee);
        self.followers.entry(followee).or_default().insert(follower);
        Ok(())
    }

    pub fn check_unfollow(&self, follower: UserId, followee: UserId) -> Result<(), Refusal> {
        if follower == followee { Err(Refusal::SelfTarget) } else { Ok(()) }
    }

    pub fn unfollow(&mut self, follower: UserId, followee: UserId) -> Result<(), Refusal> {
        self.check_unfollow(follower, followee)?;
        self.remove_edge(follower, followee);
        Ok(())
    }

    fn remove_edge(&mut self, follower: UserId, followee: UserId) {
        if let Some(s) = self.following.get_mut(&follower) {
            s.remove(&followee);
        }
        if let Some(s) = self.followers.get_mut(&followee) {
            s.remove(&follower);
        }
    }

    pub fn check_block(&self, blocker: UserId, blocked: UserId) -> Result<(), Refusal> {
        if blocker == blocked { Err(Refusal::SelfTarget) } else { Ok(()) }
    }

    /// A block removes the follows in both directions.
    pub fn block(&mut self, blocker: UserId, blocked: UserId) -> Result<(), Refusal> {
        self.check_block(blocker, blocked)?;
        self.blocks.insert((blocker, blocked));
        self.remove_edge(blocker, blocked);
        self.remove_edge(blocked, blocker);
        Ok(())
    }

    pub fn check_unblock(&self, blocker: UserId, blocked: UserId) -> Result<(), Refusal> {
        if blocker == blocked { Err(Refusal::SelfTarget) } else { Ok(()) }
    }

    pub fn unblock(&mut self, blocker: UserId, blocked: UserId) -> Result<(), Refusal> {
        self.check_unblock(blocker, blocked)?;
        self.blocks.remove(&(blocker, blocked));
        Ok(())
    }

    pub fn post(&mut self, id: PostId, author: UserId) {
        self.posts_by_author.entry(author).or_default().insert(id);
        self.authors.insert(id, author);
    }

    /// The status an action on `id` acts on: its original if it is a reblog.
    pub fn original_of(&self, id: PostId) -> Option<PostId> {
        self.authors.contains_key(&id).then(|| self.reblog_of.get(&id).copied().unwrap_or(id))
    }

    /// `user`'s live reblog of status `id` (or of its original).
    pub fn reblog_by(&self, id: PostId, user: UserId) -> Option<PostId> {
        let original = self.original_of(id)?;
        self.reblogs.get(&original)?.iter().find(|(_, u)| **u == user).map(|(r, _)| *r)
    }

    /// What a reblog of `id` by `user` would do: refused if the status does not exist.
    pub fn check_reblog(&self, id: PostId) -> Result<(), Refusal> {
        self.original_of(id).map(|_| ()).ok_or(Refusal::UnknownPost)
    }

    /// `user` reblogged `id` (or its original), the service answering reblog `reblog`:
    /// a new one, or the one `user` already had (then nothing changes).
    pub fn reblog(&mut self, id: PostId, user: UserId, reblog: PostId) -> Result<(), Refusal> {
        let original = self.original_of(id).ok_or(Refusal::UnknownPost)?;
        if self.reblog_by(original, user).is_some() {
            return Ok(());
        }
        self.post(reblog, user);
        self.reblog_of.insert(reblog, original);
        self.reblogs.entry(original).or_default().insert(reblog, user);
        Ok(())
    }

    /// `user` takes back its reblog of `id` (or its original), if any.
    pub fn unreblog(&mut self, id: PostId, user: UserId) -> Result<(), Refusal> {
        self.check_reblog(id)?;
        if let Some(r) = self.reblog_by(id, user) {
            self.remove(r, user);
        }
        Ok(())
    }

    /// `user` favourites (`on`) or unfavourites `id`'s original.
    pub fn favourite(&mut self, id: PostId, user: UserId, on: bool) -> Result<(), Refusal> {
        let original = self.original_of(id).ok_or(Refusal::UnknownPost)?;
        if on {
            self.favourites.insert((original, user));
        } else {
            self.favourites.remove(&(original, user));
        }
        Ok(())
    }

    /// How many reblogs and favourites status `id` has.
    pub fn counts(&self, id: PostId) -> (usize, usize) {
        let reblogs = self.reblogs.get(&id).map_or(0, BTreeMap::len);
        (reblogs, self.favourites.iter().filter(|(s, _)| *s == id).count())
    }

    pub fn mutes(&self, muter: UserId, muted: UserId) -> bool {
        self.mutes.contains(&(muter, muted))
    }

    /// Mutes and unmutes are idempotent; only oneself cannot be muted.
    pub fn check_mute(&self, muter: UserId, muted: UserId) -> Result<(), Refusal> {
        if muter == muted { Err(Refusal::SelfTarget) } else { Ok(()) }
    }

    pub fn mute(&mut self, muter: UserId, muted: UserId, on: bool) -> Result<(), Refusal> {
        self.check_mute(muter, muted)?;
        if on {
            self.mutes.insert((muter, muted));
        } else {
            self.mutes.remove(&(muter, muted));
        }
        Ok(())
    }

    /// Removes post `id` by `author`, with its reblogs and favourites.
    fn remove(&mut self, id: PostId, author: UserId) {
        self.authors.remove(&id);
        if let Some(s) = self.posts_by_author.get_mut(&author) {
            s.remove(&id);
        }
        if let Some(original) = self.reblog_of.remove(&id)
            && let Some(r) = self.reblogs.get_mut(&original)
        {
            r.remove(&id);
        }
        for (reblog, reblogger) in self.reblogs.remove(&id).unwrap_or_default() {
            self.remove(reblog, reblogger);
        }
        self.favourites.retain(|(s, _)| *s != id);
    }

    pub fn check_delete(&self, id: PostId, by: UserId) -> Result<(), Refusal> {
        match self.authors.get(&id) {
            None => Err(Refusal::UnknownPost),
            Some(a) if *a != by => Err(Refusal::NotAuthor),
            Some(_) => Ok(()),
        }
    }

    /// Deletes a post (with its reblogs; a reblog's delete is an unreblog).
    pub fn delete(&mut self, id: PostId, by: UserId) -> Result<(), Refusal> {
        self.check_delete(id, by)?;
        self.remove(id, by);
        Ok(())
    }

    pub fn author_of(&self, id: PostId) -> Option<UserId> {
        self.authors.get(&id).copied()
    }

    /// Whether `id` is a live reblog.
    pub fn is_reblog(&self, id: PostId) -> bool {
        self.reblog_of.contains_key(&id)
    }

    /// Live posts of one author, newest first (its reblogs included).
    pub fn posts_of(&self, author: UserId) -> Vec<PostId> {
        self.posts_by_author.get(&author).map(|s| s.iter().rev().copied().collect()).unwrap_or_default()
    }

    /// Whose posts reach `user`'s home: itself and whom it follows without muting.
    pub fn home_authors(&self, user: UserId) -> BTreeSet<UserId> {
        std::iter::once(user)
            .chain(self.following_of(user).filter(|a| !self.mutes(user, *a) && !self.blocks.contains(&(user, *a))))
            .collect()
    }

    /// The home timeline the contract requires, newest first, all of it.
    pub fn home(&self, user: UserId) -> Vec<PostId> {
        let authors = self.home_authors(user);
        let mut ids: Vec<PostId> = authors
            .iter()
            .flat_map(|a| self.posts_by_author.get(a).into_iter().flatten().copied())
            .filter(|p| self.shown_once(*p, &authors))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// A plain post, or a reblog that is its original's one entry in a timeline whose
    /// authors are `authors`.
    fn shown_once(&self, post: PostId, authors: &BTreeSet<UserId>) -> bool {
        let Some(&original) = self.reblog_of.get(&post) else { return true };
        let Some(author) = self.author_of(original) else { return false };
        if authors.contains(&author) {
            return false;
        }
        let first = self.reblogs.get(&original).into_iter().flatten().find(|(_, u)| authors.contains(u));
        first.is_some_and(|(r, _)| *r == post)
    }
}

/// How a served timeline differs from the oracle's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Divergence {
    /// Expected but not served.
    pub missing: Vec<PostId>,
    /// Served but not expected (deleted, unfollowed, blocked, or never existed).
    pub unexpected: Vec<PostId>,
    pub duplicates: Vec<PostId>,
    /// Served out of newest-first order.
    pub misordered: bool,
}

impl Divergence {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.duplicates.is_empty() && !self.misordered
    }
}

/// Compares a served timeline with the expected one.
pub fn compare(expected: &[PostId], served: &[PostId]) -> Divergence {
    let want: HashSet<PostId> = expected.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut d = Divergence::default();
    for id in served {
        if !seen.insert(*id) {
            d.duplicates.push(*id);
        } else if !want.contains(id) {
            d.unexpected.push(*id);
        }
    }
    d.missing = expected.iter().filter(|id| !seen.contains(id)).copied().collect();
    d.misordered = served.windows(2).any(|w| w[0] <= w[1]);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: UserId = UserId(1);
    const B: UserId = UserId(2);
    const C: UserId = UserId(3);

    #[test]
    fn home_is_own_and_followed_posts_newest_first() {
        let mut o = Oracle::new();
        o.post(PostId(10), A);
        o.post(PostId(11), B);
        o.post(PostId(12), C);
        o.follow(A, B).unwrap();
        assert_eq!(o.home(A), vec![PostId(11), PostId(10)]);
        o.delete(PostId(11), B).unwrap();
        assert_eq!(o.home(A), vec![PostId(10)]);
    }

    #[test]
    fn block_removes_both_follows_and_refuses_new_ones() {
        let mut o = Oracle::new();
        o.follow(A, B).unwrap();
        o.follow(B, A).unwrap();
        o.block(A, B).unwrap();
        assert!(!o.follows(A, B) && !o.follows(B, A));
        assert_eq!(o.follow(B, A), Err(Refusal::Blocked));
        assert_eq!(o.follow(A, B), Err(Refusal::Blocked));
        o.unblock(A, B).unwrap();
        o.follow(A, B).unwrap();
    }

    #[test]
    fn a_reblog_is_shown_once_per_original_and_goes_with_it() {
        let mut o = Oracle::new();
        const D: UserId = UserId(4);
        o.post(PostId(10), C);
        o.follow(A, B).unwrap();
        o.follow(A, D).unwrap();
        o.reblog(PostId(10), B, PostId(20)).unwrap();
        o.reblog(PostId(20), D, PostId(21)).unwrap();
        // B's reblog is the older one: D's is not shown; reblogging again changes nothing.
        o.reblog(PostId(10), B, PostId(22)).unwrap();
        assert_eq!(o.home(A), vec![PostId(20)]);
        assert_eq!(o.home(D), vec![PostId(21)], "D's own reblog is its timeline's entry");
        assert_eq!(o.counts(PostId(10)), (2, 0));
        // Unreblog: the next oldest shows.
        o.unreblog(PostId(10), B).unwrap();
        assert_eq!(o.home(A), vec![PostId(21)]);
        // Following the author shows the original instead.
        o.follow(A, C).unwrap();
        assert_eq!(o.home(A), vec![PostId(10)]);
        // Muting hides the author's posts and reblogs, and keeps the follow.
        o.mute(A, C, true).unwrap();
        assert_eq!(o.home(A), vec![PostId(21)]);
        o.mute(A, D, true).unwrap();
        assert_eq!(o.home(A), Vec::<PostId>::new());
        assert!(o.follows(A, D));
        o.mute(A, D, false).unwrap();
        // Deleting the original deletes its reblogs.
        o.favourite(PostId(21), A, true).unwrap();
        assert_eq!(o.counts(PostId(10)), (1, 1), "a favourite of a reblog is its original's");
        o.delete(PostId(10), C).unwrap();
        assert_eq!(o.home(A), Vec::<PostId>::new());
        assert_eq!(o.posts_of(D), Vec::<PostId>::new());
        assert_eq!(o.reblog(PostId(10), B, PostId(30)), Err(Refusal::UnknownPost));
    }

    #[test]
    fn refusals() {
        let mut o = Oracle::new();
        assert_eq!(o.follow(A, A), Err(Refusal::SelfTarget));
        o.follow(A, B).unwrap();
        assert_eq!(o.follow(A, B), Ok(()), "a second follow is fine");
        assert_eq!(o.unfollow(A, C), Ok(()), "so is unfollowing someone not followed");
        assert!(o.follows(A, B) && !o.follows(A, C));
        o.post(PostId(5), A);
        assert_eq!(o.delete(PostId(5), B), Err(Refusal::NotAuthor));
        assert_eq!(o.delete(PostId(6), A), Err(Refusal::UnknownPost));
    }

    #[test]
    fn compare_reports_each_kind_of_divergence() {
        let d = compare(&[PostId(3), PostId(2), PostId(1)], &[PostId(3), PostId(3), PostId(9), PostId(1)]);
        assert_eq!(d.missing, vec![PostId(2)]);
        assert_eq!(d.unexpected, vec![PostId(9)]);
        assert_eq!(d.duplicates, vec![PostId(3)]);
        assert!(d.misordered);
        assert!(compare(&[PostId(2), PostId(1)], &[PostId(2), PostId(1)]).is_empty());
    }
}
