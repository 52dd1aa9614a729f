//! The conformance suite every [`ReadModel`] implementation runs (memory and Redis).
//!
//! [`run`] needs a model no one else uses (for Redis, its own key prefix): it checks
//! `celebrities` and `clear`, which are global. Ids are above 2^53, so an implementation
//! that passes ids through an `f64` fails here. Checks panic on failure.

use starling_ids::{PostId, UserId};
use starling_storage::PostRecord;

use super::{CHANGE_LOG, CachedPost, Change, Collection, Fill, RECENT_DEPTH, ReadModel, Recent};

const BASE: u64 = 0x0123_4567_89AB_C000;

fn post(n: u64) -> PostId {
    PostId(BASE + n)
}

fn user(n: u64) -> UserId {
    UserId(BASE + n)
}

fn record(n: u64) -> PostRecord {
    PostRecord {
        id: post(n),
        author: user(n % 5),
        author_handle: format!("author{}", n % 5),
        text: format!("post {n} — ünïcode"),
        reply_to: n.is_multiple_of(2).then(|| post(n / 2)),
        reblog_of: (n % 6 == 3).then(|| post(n / 3)),
    }
}

pub async fn run(m: &dyn ReadModel) {
    posts_are_added_once_and_tombstones_stay(m).await;
    follow_lists_fill_and_follow_events(m).await;
    an_event_during_a_fill_wins(m).await;
    recent_lists_stay_sorted_and_bounded(m).await;
    celebrities_fill_and_change(m).await;
    fills_of_the_wrong_kind_are_refused(m).await;
    the_celebrity_version_moves_on_celebrity_changes(m).await;
    grants_fill_once_and_revocations_win(m).await;
    counts_fill_and_replace(m).await;
    interactions_fill_once_and_changes_win(m).await;
    a_page_lookup_answers_as_its_parts(m).await;
    changes_are_logged_in_order(m).await;
    clear_forgets_everything(m).await;
    a_wipe_leaves_no_copy_holder_current(m).await;
}

/// `page` answers what `posts`, `counts` and `interactions` answer, each in its order.
async fn a_page_lookup_answers_as_its_parts(m: &dyn ReadModel) {
    use starling_storage::{Counts, Interactions};
    let (viewer, author, other) = (user(600), user(601), user(602));
    let (cached, gone, unknown) = (post(600), post(601), post(602));
    m.add_posts(&[record(600)]).await.unwrap();
    m.posts_deleted(&[gone]).await.unwrap();
    let counts = Counts { followers: 7, following: 8 };
    m.fill_counts(&[(author, counts)]).await.unwrap();
    let i = Interactions { reblogs: 1, favourites: 2, replies: 3, reblogged: false, favourited: true };
    m.fill_interactions(viewer, &[(cached, i)]).await.unwrap();
    let ids = [unknown, cached, gone];
    let got = m.page(&ids, &ids, &[other, author], viewer).await.unwrap();
    assert_eq!(got.posts, vec![None, Some(CachedPost::Live(record(600))), Some(CachedPost::Deleted)]);
    assert_eq!(got.counts, vec![None, Some(counts)]);
    assert_eq!(got.interactions, vec![None, Some(i), None]);
    assert_eq!(got.posts, m.posts(&ids).await.unwrap());
    assert_eq!(got.interactions, m.interactions(viewer, &ids).await.unwrap());
    // The posts and the statuses are asked for apart (a caller may hold the posts).
    let got = m.page(&[gone], &ids, &[author], viewer).await.unwrap();
    assert_eq!(got.posts, vec![Some(CachedPost::Deleted)]);
    assert_eq!(got.interactions, vec![None, Some(i), None]);
    let got = m.page(&[], &[cached], &[author], viewer).await.unwrap();
    assert!(got.posts.is_empty());
    assert_eq!((got.counts, got.interactions), (vec![Some(counts)], vec![Some(i)]));
    let empty = m.page(&[], &[], &[], viewer).await.unwrap();
    assert!(empty.posts.is_empty() && empty.counts.is_empty() && empty.interactions.is_empty());
}

/// Every delete and interaction is logged after what it announces, in order, and the
/// reader view carries the log's number; the log keeps its newest [`CHANGE_LOG`] entries
/// and says when it no longer reaches back.
async fn changes_are_logged_in_order(m: &dyn ReadModel) {
    use starling_storage::Interactions;
    let number = || async { m.reader_view(user(700)).await.unwrap().changes };
    let start = m.changes_since(0).await.unwrap().seq;
    assert_eq!(number().await, Some(start), "asking starts the log");
    let since = m.changes_since(start).await.unwrap();
    assert_eq!((since.seq, since.changes.len(), since.complete), (start, 0, true));
    m.posts_deleted(&[post(700), post(701)]).await.unwrap();
    m.posts_deleted(&[]).await.unwrap();
    let liked = Interactions { favourites: 1, favourited: true, ..Default::default() };
    m.set_interactions(user(701), &[(post(703), liked)]).await.unwrap();
    m.set_interactions(user(701), &[]).await.unwrap();
    m.set_grant(&[7; 32], Some(b"issued")).await.unwrap();
    m.set_grant(&[7; 32], None).await.unwrap();
    m.posts_deleted(&[post(702)]).await.unwrap();
    let now = number().await.expect("a number after changes");
    assert_eq!(now, start + 5, "one step per change, none for an empty one or an issue");
    let since = m.changes_since(start).await.unwrap();
    let expected = vec![
        Change::Deleted(post(700)),
        Change::Deleted(post(701)),
        Change::Interacted { post: post(703), viewer: user(701) },
        Change::Revoked([7; 32]),
        Change::Deleted(post(702)),
    ];
    assert_eq!((since.seq, since.changes.clone(), since.complete), (now, expected, true));
    let since = m.changes_since(start + 4).await.unwrap();
    assert_eq!((since.changes, since.complete), (vec![Change::Deleted(post(702))], true));
    assert_eq!(m.posts(&[post(701)]).await.unwrap(), vec![Some(CachedPost::Deleted)], "tombstones are written too");
    assert_eq!(m.interactions(user(701), &[post(703)]).await.unwrap(), vec![Some(liked)], "and interactions");
    assert!(!m.changes_since(now + 1).await.unwrap().complete, "a number the log never had");
    // Past its length, the log forgets its oldest entries and says so to those behind.
    let many: Vec<PostId> = (0..CHANGE_LOG as u64 + 2).map(|n| post(10_000 + n)).collect();
    m.posts_deleted(&many).await.unwrap();
    let behind = m.changes_since(now).await.unwrap();
    assert!(!behind.complete && behind.changes.is_empty(), "entries after {now} were trimmed");
    assert_eq!(behind.seq, now + many.len() as u64);
    let near = m.changes_since(behind.seq - 2).await.unwrap();
    let last: Vec<Change> = many[many.len() - 2..].iter().map(|&p| Change::Deleted(p)).collect();
    assert_eq!((near.changes, near.complete), (last, true));
}

/// After a wipe no holder of copies may count itself current: whatever number it holds,
/// the log says it no longer reaches back to it.
async fn a_wipe_leaves_no_copy_holder_current(m: &dyn ReadModel) {
    m.posts_deleted(&[post(800)]).await.unwrap();
    let held = m.changes_since(0).await.unwrap().seq;
    // Deleted after the holder caught up, then wiped along with the log.
    m.posts_deleted(&[post(799)]).await.unwrap();
    m.clear().await.unwrap();
    m.posts_deleted(&[post(801)]).await.unwrap();
    let after = m.changes_since(held).await.unwrap();
    assert!(!after.complete || after.changes.contains(&Change::Deleted(post(799))), "a wipe hid a delete: {after:?}");
    assert_ne!(m.reader_view(user(800)).await.unwrap().changes, Some(held), "the number moved");
}

async fn interactions_fill_once_and_changes_win(m: &dyn ReadModel) {
    use starling_storage::Interactions;
    let (ann, bob) = (user(500), user(501));
    let (s1, s2) = (post(500), post(501));
    let counted = |reblogs, favourites, favourited| Interactions {
        reblogs,
        favourites,
        replies: u64::MAX,
        reblogged: reblogs > 0,
        favourited,
    };
    assert_eq!(m.interactions(ann, &[s1, s2]).await.unwrap(), vec![None, None]);
    m.fill_interactions(ann, &[(s1, counted(0, 1, false))]).await.unwrap();
    assert_eq!(m.interactions(ann, &[s2, s1]).await.unwrap(), vec![None, Some(counted(0, 1, false))]);
    // Another viewer shares the counts, not the flags.
    assert_eq!(m.interactions(bob, &[s1]).await.unwrap(), vec![None], "bob's flags are not cached");
    // A fill never replaces what is cached; a change does.
    m.fill_interactions(ann, &[(s1, counted(5, 5, true))]).await.unwrap();
    assert_eq!(m.interactions(ann, &[s1]).await.unwrap(), vec![Some(counted(0, 1, false))]);
    m.set_interactions(ann, &[(s1, counted(1, 2, true))]).await.unwrap();
    assert_eq!(m.interactions(ann, &[s1]).await.unwrap(), vec![Some(counted(1, 2, true))]);
    m.fill_interactions(bob, &[(s1, counted(0, 0, false))]).await.unwrap();
    let bobs = Interactions { reblogged: false, favourited: false, ..counted(1, 2, true) };
    assert_eq!(m.interactions(bob, &[s1]).await.unwrap(), vec![Some(bobs)], "counts stay, bob's flags are his");
    assert_eq!(m.interactions(ann, &[]).await.unwrap(), vec![]);
}

async fn counts_fill_and_replace(m: &dyn ReadModel) {
    use starling_storage::Counts;
    let (a, b) = (user(400), user(401));
    assert_eq!(m.counts(&[a, b]).await.unwrap(), vec![None, None]);
    m.fill_counts(&[(a, Counts { followers: 3, following: u64::MAX })]).await.unwrap();
    m.fill_counts(&[(a, Counts { followers: 4, following: 1 })]).await.unwrap();
    assert_eq!(m.counts(&[b, a]).await.unwrap(), vec![None, Some(Counts { followers: 4, following: 1 })]);
    assert_eq!(m.counts(&[]).await.unwrap(), vec![]);
}

async fn grants_fill_once_and_revocations_win(m: &dyn ReadModel) {
    let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    assert_eq!(m.grant(&a).await.unwrap(), None);
    m.fill_grant(&a, Some(b"alice read")).await.unwrap();
    assert_eq!(m.grant(&a).await.unwrap(), Some(Some(b"alice read".to_vec())));
    // A revocation replaces; a fill that read storage before it does not bring it back.
    m.set_grant(&a, None).await.unwrap();
    m.fill_grant(&a, Some(b"alice read")).await.unwrap();
    assert_eq!(m.grant(&a).await.unwrap(), Some(None));
    // Unknown tokens are cached as such, and an issue replaces that.
    m.fill_grant(&b, None).await.unwrap();
    assert_eq!(m.grant(&b).await.unwrap(), Some(None));
    m.set_grant(&c, Some(&[0, 255, b'1'])).await.unwrap();
    assert_eq!(m.grant(&c).await.unwrap(), Some(Some(vec![0, 255, b'1'])), "any bytes round-trip");
}

async fn posts_are_added_once_and_tombstones_stay(m: &dyn ReadModel) {
    assert_eq!(m.posts(&[post(1)]).await.unwrap(), vec![None]);
    m.add_posts(&[record(1), record(2)]).await.unwrap();
    let got = m.posts(&[post(2), post(3), post(1)]).await.unwrap();
    assert_eq!(got, vec![Some(CachedPost::Live(record(2))), None, Some(CachedPost::Live(record(1)))]);
    // An add never replaces: posts do not change, and a tombstone must stay.
    let mut other = record(1);
    other.text = "changed".into();
    m.add_posts(&[other]).await.unwrap();
    assert_eq!(m.posts(&[post(1)]).await.unwrap(), vec![Some(CachedPost::Live(record(1)))]);
    m.posts_deleted(&[post(1), post(4)]).await.unwrap();
    m.add_posts(&[record(1), record(4)]).await.unwrap();
    let got = m.posts(&[post(1), post(4), post(2)]).await.unwrap();
    assert_eq!(got, vec![Some(CachedPost::Deleted), Some(CachedPost::Deleted), Some(CachedPost::Live(record(2)))]);
    assert_eq!(m.posts(&[]).await.unwrap(), vec![]);
}

async fn following(m: &dyn ReadModel, reader: UserId) -> Option<Vec<UserId>> {
    m.reader_view(reader).await.unwrap().following
}

async fn sorted(m: &dyn ReadModel, reader: UserId) -> Option<Vec<UserId>> {
    following(m, reader).await.map(|mut l| {
        l.sort();
        l
    })
}

async fn follow_lists_fill_and_follow_events(m: &dyn ReadModel) {
    let reader = user(100);
    let c = Collection::Following(reader);
    assert_eq!(following(m, reader).await, None);
    // Events on an uncached list change nothing: a partial list must not appear.
    m.set_member(c, user(1), true).await.unwrap();
    assert_eq!(following(m, reader).await, None);

    let token = m.begin_fill(c).await.unwrap();
    assert!(m.finish_fill(c, token, Fill::Users(vec![user(2), user(1)])).await.unwrap());
    assert_eq!(sorted(m, reader).await, Some(vec![user(1), user(2)]));
    m.set_member(c, user(3), true).await.unwrap();
    m.set_member(c, user(3), true).await.unwrap();
    m.set_member(c, user(1), false).await.unwrap();
    m.set_member(c, user(9), false).await.unwrap();
    assert_eq!(sorted(m, reader).await, Some(vec![user(2), user(3)]));
    // A reader who follows no one has an empty list, which is cached too.
    let lonely = user(101);
    let token = m.begin_fill(Collection::Following(lonely)).await.unwrap();
    assert!(m.finish_fill(Collection::Following(lonely), token, Fill::Users(vec![])).await.unwrap());
    assert_eq!(following(m, lonely).await, Some(vec![]));
    m.set_member(Collection::Following(lonely), user(4), true).await.unwrap();
    assert_eq!(following(m, lonely).await, Some(vec![user(4)]));
    m.forget(Collection::Following(lonely)).await.unwrap();
    assert_eq!(following(m, lonely).await, None);
}

async fn an_event_during_a_fill_wins(m: &dyn ReadModel) {
    let reader = user(200);
    let c = Collection::Following(reader);
    // The list was read (with user 1) before an unfollow of user 1 was applied.
    let token = m.begin_fill(c).await.unwrap();
    m.set_member(c, user(1), false).await.unwrap();
    assert!(!m.finish_fill(c, token, Fill::Users(vec![user(1)])).await.unwrap());
    assert_eq!(following(m, reader).await, None, "a fill that lost to an event writes nothing");
    // A newer fill replaces an older one in progress.
    let old = m.begin_fill(c).await.unwrap();
    let new = m.begin_fill(c).await.unwrap();
    assert!(!m.finish_fill(c, old, Fill::Users(vec![user(5)])).await.unwrap());
    assert!(m.finish_fill(c, new, Fill::Users(vec![user(6)])).await.unwrap());
    assert_eq!(following(m, reader).await, Some(vec![user(6)]));
    // A token is used once.
    assert!(!m.finish_fill(c, new, Fill::Users(vec![user(7)])).await.unwrap());
    // Fills of other collections are not disturbed.
    let other = Collection::Following(user(201));
    let token = m.begin_fill(other).await.unwrap();
    m.set_member(c, user(8), true).await.unwrap();
    assert!(m.finish_fill(other, token, Fill::Users(vec![])).await.unwrap());
    // A post of the author cancels a recent-list fill; forgetting does too.
    let r = Collection::Recent(user(202));
    let token = m.begin_fill(r).await.unwrap();
    m.add_recent(user(202), &[post(9)]).await.unwrap();
    assert!(!m.finish_fill(r, token, Fill::Recent(Recent::default())).await.unwrap());
    let token = m.begin_fill(r).await.unwrap();
    m.forget(r).await.unwrap();
    assert!(!m.finish_fill(r, token, Fill::Recent(Recent::default())).await.unwrap());
    assert_eq!(m.recent(&[user(202)]).await.unwrap(), vec![None]);
}

async fn recent_lists_stay_sorted_and_bounded(m: &dyn ReadModel) {
    let (a, b) = (user(300), user(301));
    assert_eq!(m.recent(&[a, b]).await.unwrap(), vec![None, None]);
    m.add_recent(a, &[post(1)]).await.unwrap();
    assert_eq!(m.recent(&[a]).await.unwrap(), vec![None], "events do not create a list");
    let token = m.begin_fill(Collection::Recent(a)).await.unwrap();
    let filled = Recent { posts: vec![post(5), post(3)], complete: true };
    assert!(m.finish_fill(Collection::Recent(a), token, Fill::Recent(filled)).await.unwrap());
    // Redelivered and out-of-order posts: kept unique, newest first.
    m.add_recent(a, &[post(4), post(5), post(7)]).await.unwrap();
    m.add_recent(a, &[post(6)]).await.unwrap();
    let want = Recent { posts: vec![post(7), post(6), post(5), post(4), post(3)], complete: true };
    assert_eq!(m.recent(&[b, a]).await.unwrap(), vec![None, Some(want)]);
    // Past the depth the oldest go, and the list says it is cut.
    let many: Vec<PostId> = (1_000..1_000 + RECENT_DEPTH as u64).map(post).collect();
    m.add_recent(a, &many).await.unwrap();
    let got = m.recent(&[a]).await.unwrap().pop().flatten().expect("cached");
    assert_eq!(got.posts.len(), RECENT_DEPTH);
    assert_eq!(got.posts[0], post(999 + RECENT_DEPTH as u64));
    assert_eq!(got.posts[RECENT_DEPTH - 1], post(1_000));
    assert!(!got.complete);
    m.forget(Collection::Recent(a)).await.unwrap();
    assert_eq!(m.recent(&[a]).await.unwrap(), vec![None]);
}

async fn celebrities_fill_and_change(m: &dyn ReadModel) {
    assert_eq!(m.celebrities().await.unwrap(), None);
    let token = m.begin_fill(Collection::Celebrities).await.unwrap();
    assert!(m.finish_fill(Collection::Celebrities, token, Fill::Users(vec![user(1)])).await.unwrap());
    m.set_member(Collection::Celebrities, user(2), true).await.unwrap();
    m.set_member(Collection::Celebrities, user(1), false).await.unwrap();
    assert_eq!(m.celebrities().await.unwrap(), Some(vec![user(2)]));
}

async fn fills_of_the_wrong_kind_are_refused(m: &dyn ReadModel) {
    let c = Collection::Following(user(400));
    let token = m.begin_fill(c).await.unwrap();
    assert!(m.finish_fill(c, token, Fill::Recent(Recent::default())).await.is_err());
    assert_eq!(following(m, user(400)).await, None);
}

async fn the_celebrity_version_moves_on_celebrity_changes(m: &dyn ReadModel) {
    let reader = user(500);
    let version = || async { m.reader_view(reader).await.unwrap().version };
    let v0 = version().await;
    // Follow lists are not part of it.
    let token = m.begin_fill(Collection::Following(reader)).await.unwrap();
    m.finish_fill(Collection::Following(reader), token, Fill::Users(vec![user(1)])).await.unwrap();
    m.set_member(Collection::Following(reader), user(2), true).await.unwrap();
    m.forget(Collection::Following(user(501))).await.unwrap();
    assert_eq!(version().await, v0, "follow-list changes leave the celebrity version alone");
    let following = m.reader_view(reader).await.unwrap().following;
    assert_eq!(following.map(|l| l.len()), Some(2));
    let mut last = v0;
    for change in 0..3 {
        match change {
            0 => m.add_recent(user(502), &[post(1)]).await.unwrap(),
            1 => m.set_member(Collection::Celebrities, user(502), true).await.unwrap(),
            _ => m.forget(Collection::Recent(user(502))).await.unwrap(),
        }
        let now = version().await;
        assert_ne!(now, last, "change {change} must move the celebrity version");
        last = now;
    }
    // A wipe moves it too, and never back to a value it had.
    m.clear().await.unwrap();
    let wiped = version().await;
    m.add_recent(user(502), &[post(2)]).await.unwrap();
    let after = version().await;
    for v in [wiped, after] {
        assert!(v != v0 && v != last, "version {v} after a wipe repeats one from before it");
    }
    assert_ne!(wiped, after);
}

async fn clear_forgets_everything(m: &dyn ReadModel) {
    m.add_posts(&[record(50)]).await.unwrap();
    m.clear().await.unwrap();
    assert_eq!(m.posts(&[post(50), post(1)]).await.unwrap(), vec![None, None]);
    assert_eq!(following(m, user(100)).await, None);
    assert_eq!(m.celebrities().await.unwrap(), None);
    assert_eq!(m.recent(&[user(300)]).await.unwrap(), vec![None]);
    assert_eq!(m.grant(&[1u8; 32]).await.unwrap(), None, "grants are wiped too");
    assert_eq!(m.interactions(user(500), &[post(500)]).await.unwrap(), vec![None], "and interactions");
}
