//! The timeline contract as a plain in-memory model.
//!
//! Once the system is quiet, the home timeline of user U is exactly the posts P with
//! author(P) ∈ following(U) ∪ {U}, P not deleted, author not blocked by U, newest first.
//! [`Oracle`] applies the same operations a client made and computes that list, so a
//! test or a replay can compare it with what the service serves. It also predicts which
//! operations the service must refuse, so the driver can check status codes too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use starling_ids::{PostId, UserId};

/// Why the service must refuse an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    SelfTarget,
    AlreadyFollowing,
    NotFollowing,
    Blocked,
    AlreadyBlocked,
    NotBlocked,
    UnknownPost,
    NotAuthor,
}

impl Refusal {
    /// The HTTP status the API contract answers this refusal with.
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::SelfTarget => 422,
            Refusal::Blocked | Refusal::NotAuthor => 403,
            Refusal::UnknownPost => 404,
            Refusal::AlreadyFollowing | Refusal::NotFollowing | Refusal::AlreadyBlocked | Refusal::NotBlocked => 409,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Oracle {
    following: HashMap<UserId, BTreeSet<UserId>>,
    followers: HashMap<UserId, BTreeSet<UserId>>,
    /// (blocker, blocked).
    blocks: HashSet<(UserId, UserId)>,
    /// Live posts by author, ordered by id.
    posts_by_author: HashMap<UserId, BTreeSet<PostId>>,
    authors: BTreeMap<PostId, UserId>,
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

    /// What a follow would do, without doing it.
    pub fn check_follow(&self, follower: UserId, followee: UserId) -> Result<(), Refusal> {
        if follower == followee {
            Err(Refusal::SelfTarget)
        } else if self.blocked_either_way(follower, followee) {
            Err(Refusal::Blocked)
        } else if self.follows(follower, followee) {
            Err(Refusal::AlreadyFollowing)
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
        if follower == followee {
            Err(Refusal::SelfTarget)
        } else if !self.follows(follower, followee) {
            Err(Refusal::NotFollowing)
        } else {
            Ok(())
        }
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
        if blocker == blocked {
            Err(Refusal::SelfTarget)
        } else if self.blocks.contains(&(blocker, blocked)) {
            Err(Refusal::AlreadyBlocked)
        } else {
            Ok(())
        }
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
        if blocker == blocked {
            Err(Refusal::SelfTarget)
        } else if !self.blocks.contains(&(blocker, blocked)) {
            Err(Refusal::NotBlocked)
        } else {
            Ok(())
        }
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

    pub fn check_delete(&self, id: PostId, by: UserId) -> Result<(), Refusal> {
        match self.authors.get(&id) {
            None => Err(Refusal::UnknownPost),
            Some(a) if *a != by => Err(Refusal::NotAuthor),
            Some(_) => Ok(()),
        }
    }

    pub fn delete(&mut self, id: PostId, by: UserId) -> Result<(), Refusal> {
        self.check_delete(id, by)?;
        self.authors.remove(&id);
        if let Some(s) = self.posts_by_author.get_mut(&by) {
            s.remove(&id);
        }
        Ok(())
    }

    pub fn author_of(&self, id: PostId) -> Option<UserId> {
        self.authors.get(&id).copied()
    }

    /// Live posts of one author, newest first.
    pub fn posts_of(&self, author: UserId) -> Vec<PostId> {
        self.posts_by_author.get(&author).map(|s| s.iter().rev().copied().collect()).unwrap_or_default()
    }

    /// The home timeline the contract requires, newest first, all of it.
    pub fn home(&self, user: UserId) -> Vec<PostId> {
        let mut ids: Vec<PostId> = std::iter::once(user)
            .chain(self.following_of(user))
            .filter(|a| *a == user || !self.blocks.contains(&(user, *a)))
            .flat_map(|a| self.posts_by_author.get(&a).into_iter().flatten().copied())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
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
    fn refusals() {
        let mut o = Oracle::new();
        assert_eq!(o.follow(A, A), Err(Refusal::SelfTarget));
        o.follow(A, B).unwrap();
        assert_eq!(o.follow(A, B), Err(Refusal::AlreadyFollowing));
        assert_eq!(o.unfollow(A, C), Err(Refusal::NotFollowing));
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
