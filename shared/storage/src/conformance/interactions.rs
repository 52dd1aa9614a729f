//! Checks of reblogs, favourites, replies and their counts ([`PostStore`]) and of mutes
//! ([`GraphStore`]).

use starling_events::Topic;
use starling_ids::PostId;

use super::{Ids, assert_not_committed, assert_pending, changed, create, deleted, events_of, marker, no_events, post};
use crate::{EdgeChange, GraphStore, Interactions, Order, PostRecord, PostStore, Reblogged, Window};

/// Runs every interaction check on `store`.
pub async fn run_interactions<S: PostStore>(store: &S) {
    reblog_and_unreblog(store).await;
    deleting_a_status_takes_its_reblogs(store).await;
    favourite_and_unfavourite(store).await;
    replies_are_counted_and_listed(store).await;
    notifications_add_remove_and_list(store).await;
}

fn reblog_of(ids: &mut Ids, reblogger: starling_ids::UserId, original: PostId) -> PostRecord {
    PostRecord { reblog_of: Some(original), ..post(ids, reblogger, "") }
}

fn all(limit: usize) -> Window<PostId> {
    Window { before: None, after: None, limit, order: Order::OldestFirst }
}

/// A reblog is a post of the reblogger's; one per user and status; it commits its events,
/// counts, and is found by user and listed by id. Deleting it is an unreblog.
pub async fn reblog_and_unreblog<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let (author, ann, bob) = (ids.user(), ids.user(), ids.user());
    let original = post(&mut ids, author, "original");
    let mut acks = create(store, &original, None, Vec::new()).await;

    let first = reblog_of(&mut ids, ann, original.id);
    let events = vec![marker(Topic::Posts, &mut ids, "reblog")];
    let Reblogged::Created { outbox } = store.reblog(&first, events.clone()).await.expect("reblog") else {
        panic!("a first reblog is created");
    };
    assert_pending(store, &outbox, &events, "reblog events").await;
    acks.extend(outbox);
    assert_eq!(store.get_posts(&[first.id]).await.expect("get"), vec![Some(first.clone())], "a reblog is a post");
    assert_eq!(store.post_ids_by_author(ann, Window::newest(5)).await.expect("by author"), vec![first.id]);

    let again = reblog_of(&mut ids, ann, original.id);
    let again_events = vec![marker(Topic::Posts, &mut ids, "reblog again")];
    assert_eq!(
        store.reblog(&again, again_events.clone()).await.expect("reblog again"),
        Reblogged::Existing(first.clone()),
        "one reblog per user and status"
    );
    assert_not_committed(store, &again_events, "second reblog").await;
    assert_eq!(store.get_posts(&[again.id]).await.expect("get"), vec![None]);

    let second = reblog_of(&mut ids, bob, original.id);
    let Reblogged::Created { outbox } = store.reblog(&second, Vec::new()).await.expect("bob reblogs") else {
        panic!("another user's reblog is created");
    };
    acks.extend(outbox);
    let of_reblog = reblog_of(&mut ids, bob, first.id);
    assert_eq!(store.reblog(&of_reblog, Vec::new()).await.expect("reblog a reblog"), Reblogged::NoOriginal);
    let nothing = ids_post(&mut ids);
    let of_nothing = reblog_of(&mut ids, bob, nothing);
    assert_eq!(store.reblog(&of_nothing, Vec::new()).await.expect("reblog nothing"), Reblogged::NoOriginal);

    assert_eq!(store.reblog_by(original.id, ann).await.expect("reblog_by"), Some(first.id));
    assert_eq!(store.reblog_by(original.id, author).await.expect("reblog_by"), None);
    let listed = store.reblogs(original.id, all(10)).await.expect("reblogs");
    assert_eq!(listed, vec![(first.id, ann), (second.id, bob)], "reblogs by id, with rebloggers");
    let before_second = Window { before: Some(second.id), ..all(10) };
    assert_eq!(store.reblogs(original.id, before_second).await.expect("reblogs"), vec![(first.id, ann)]);
    let counts = store.interactions(&[original.id], Some(ann)).await.expect("interactions");
    assert_eq!(counts, vec![Interactions { reblogs: 2, reblogged: true, ..Interactions::default() }]);

    // Unreblog: the reblog goes, the original and the other reblog stay.
    let removed = store.delete_post(first.id, &no_events).await.expect("unreblog").expect("reblog exists");
    assert_eq!(removed.posts, vec![first.clone()]);
    acks.extend(removed.outbox);
    assert_eq!(store.reblog_by(original.id, ann).await.expect("reblog_by"), None);
    assert_eq!(store.reblogs(original.id, all(10)).await.expect("reblogs"), vec![(second.id, bob)]);
    let counts = store.interactions(&[original.id], Some(ann)).await.expect("interactions");
    assert_eq!(counts, vec![Interactions { reblogs: 1, ..Interactions::default() }]);
    assert_eq!(store.get_posts(&[original.id]).await.expect("get"), vec![Some(original.clone())]);

    // Reblogging again after an unreblog makes a new reblog.
    let later = reblog_of(&mut ids, ann, original.id);
    let Reblogged::Created { outbox } = store.reblog(&later, Vec::new()).await.expect("reblog later") else {
        panic!("a reblog after an unreblog is created");
    };
    acks.extend(outbox);
    assert_eq!(store.reblog_by(original.id, ann).await.expect("reblog_by"), Some(later.id));
    store.ack(&acks).await.expect("ack");
}

fn ids_post(ids: &mut Ids) -> PostId {
    PostId(ids.next())
}

/// Deleting a status deletes its reblogs with it, committing each one's events; its
/// favourites and counts go; its replies stay.
pub async fn deleting_a_status_takes_its_reblogs<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let (author, ann, bob) = (ids.user(), ids.user(), ids.user());
    let original = post(&mut ids, author, "doomed");
    let mut acks = create(store, &original, None, Vec::new()).await;
    let reply = PostRecord { reply_to: Some(original.id), ..post(&mut ids, bob, "a reply") };
    acks.extend(create(store, &reply, None, Vec::new()).await);
    let mut reblogs = Vec::new();
    for user in [ann, bob] {
        let r = reblog_of(&mut ids, user, original.id);
        let Reblogged::Created { outbox } = store.reblog(&r, Vec::new()).await.expect("reblog") else {
            panic!("reblog created");
        };
        acks.extend(outbox);
        reblogs.push(r);
    }
    assert_eq!(store.set_favourite(original.id, ann, true).await.expect("favourite"), Some(true));

    let mark = marker(Topic::Posts, &mut ids, "cascade");
    let events = move |p: &PostRecord| vec![starling_events::Record { key: p.id.get(), ..mark.clone() }];
    let removed = store.delete_post(original.id, &events).await.expect("delete").expect("exists");
    let mut gone: Vec<PostRecord> = removed.posts.clone();
    assert_eq!(gone.remove(0), original, "the status first");
    gone.sort_by_key(|p| p.id);
    assert_eq!(gone, reblogs, "then its reblogs");
    assert_eq!(removed.outbox.len(), 3, "one event per post removed");
    acks.extend(removed.outbox);
    let all_ids: Vec<PostId> = reblogs.iter().map(|r| r.id).chain([original.id]).collect();
    assert_eq!(store.get_posts(&all_ids).await.expect("get"), vec![None, None, None]);
    assert!(store.post_ids_by_author(ann, Window::newest(5)).await.expect("by author").is_empty());
    assert!(store.reblogs(original.id, all(10)).await.expect("reblogs").is_empty());
    assert_eq!(store.reblog_by(original.id, ann).await.expect("reblog_by"), None);
    assert!(store.favourited_by(original.id, None, 10).await.expect("favourited_by").is_empty());
    assert_eq!(store.interactions(&[original.id], Some(ann)).await.expect("counts"), vec![Interactions::default()]);
    assert_eq!(store.get_posts(&[reply.id]).await.expect("get"), vec![Some(reply)], "replies stay");
    assert_eq!(store.reblog(&reblog_of(&mut ids, ann, original.id), Vec::new()).await.unwrap(), Reblogged::NoOriginal);
    store.ack(&acks).await.expect("ack");
}

/// Favourites are per user and status, idempotent, counted and listed by user id; reblogs
/// and unknown statuses cannot be favourited.
pub async fn favourite_and_unfavourite<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let (author, ann, bob) = (ids.user(), ids.user(), ids.user());
    let status = post(&mut ids, author, "likeable");
    let mut acks = create(store, &status, None, Vec::new()).await;
    assert_eq!(store.set_favourite(status.id, bob, true).await.expect("fav"), Some(true));
    assert_eq!(store.set_favourite(status.id, ann, true).await.expect("fav"), Some(true));
    assert_eq!(store.set_favourite(status.id, ann, true).await.expect("fav again"), Some(false), "idempotent");
    assert_eq!(store.favourited_by(status.id, None, 10).await.expect("list"), vec![ann, bob], "by user id");
    assert_eq!(store.favourited_by(status.id, Some(ann), 10).await.expect("list"), vec![bob], "after");
    assert_eq!(store.favourited_by(status.id, None, 1).await.expect("list"), vec![ann], "limit");
    let seen = store.interactions(&[status.id, status.id], Some(ann)).await.expect("interactions");
    let favourited = Interactions { favourites: 2, favourited: true, ..Interactions::default() };
    assert_eq!(seen, vec![favourited, favourited]);
    let anonymous = store.interactions(&[status.id], None).await.expect("interactions");
    assert_eq!(anonymous, vec![Interactions { favourites: 2, ..Interactions::default() }]);

    assert_eq!(store.set_favourite(status.id, ann, false).await.expect("unfav"), Some(true));
    assert_eq!(store.set_favourite(status.id, ann, false).await.expect("unfav again"), Some(false));
    assert_eq!(store.favourited_by(status.id, None, 10).await.expect("list"), vec![bob]);
    let seen = store.interactions(&[status.id], Some(ann)).await.expect("interactions");
    assert_eq!(seen, vec![Interactions { favourites: 1, ..Interactions::default() }]);

    assert_eq!(store.set_favourite(ids_post(&mut ids), ann, true).await.expect("unknown"), None);
    let r = reblog_of(&mut ids, bob, status.id);
    let Reblogged::Created { outbox } = store.reblog(&r, Vec::new()).await.expect("reblog") else {
        panic!("reblog created");
    };
    acks.extend(outbox);
    assert_eq!(store.set_favourite(r.id, ann, true).await.expect("fav a reblog"), None);
    store.ack(&acks).await.expect("ack");
}

/// Replies are counted on their parent and listed oldest first; deleting one uncounts it.
pub async fn replies_are_counted_and_listed<S: PostStore>(store: &S) {
    let mut ids = Ids::new();
    let (author, ann) = (ids.user(), ids.user());
    let parent = post(&mut ids, author, "parent");
    let mut acks = create(store, &parent, None, Vec::new()).await;
    let first = PostRecord { reply_to: Some(parent.id), ..post(&mut ids, ann, "one") };
    let second = PostRecord { reply_to: Some(parent.id), ..post(&mut ids, author, "two") };
    acks.extend(create(store, &first, Some("reply key"), Vec::new()).await);
    acks.extend(create(store, &second, None, Vec::new()).await);
    // A replayed create is not a second reply.
    let replay = PostRecord { reply_to: Some(parent.id), ..post(&mut ids, ann, "one") };
    store.create_post(&replay, Some("reply key"), Vec::new()).await.expect("replay");
    assert_eq!(store.replies(parent.id, 10).await.expect("replies"), vec![first.id, second.id]);
    assert_eq!(store.replies(parent.id, 1).await.expect("replies"), vec![first.id]);
    assert_eq!(store.interactions(&[parent.id], None).await.expect("counts")[0].replies, 2);
    acks.extend(deleted(store.delete_post(first.id, &events_of(&[])).await));
    assert_eq!(store.replies(parent.id, 10).await.expect("replies"), vec![second.id]);
    assert_eq!(store.interactions(&[parent.id], None).await.expect("counts")[0].replies, 1);
    store.ack(&acks).await.expect("ack");
}

/// Mutes are per pair, idempotent, commit their events, and are listed both ways; they
/// leave follows alone.
pub async fn mute_and_unmute<S: GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (ann, bob, cat) = (ids.user(), ids.user(), ids.user());
    let mut acks = changed(store.follow(ann, bob, Vec::new()).await.expect("follow"), 0, "follow");
    let events = vec![marker(Topic::Graph, &mut ids, "mute")];
    acks.extend(changed(store.mute(ann, bob, events.clone()).await.expect("mute"), 1, "mute"));
    let again = vec![marker(Topic::Graph, &mut ids, "mute again")];
    assert_eq!(store.mute(ann, bob, again.clone()).await.expect("mute again"), EdgeChange::Unchanged);
    assert_not_committed(store, &again, "second mute").await;
    acks.extend(changed(store.mute(cat, bob, Vec::new()).await.expect("mute"), 0, "cat mutes"));
    acks.extend(changed(store.mute(ann, cat, Vec::new()).await.expect("mute"), 0, "ann mutes cat"));

    assert!(store.mutes(ann, bob).await.expect("mutes"));
    assert!(!store.mutes(bob, ann).await.expect("mutes"), "one direction");
    assert!(store.follows(ann, bob).await.expect("follows"), "a mute keeps the follow");
    assert_eq!(store.muted(ann, None, 10).await.expect("muted"), vec![bob, cat]);
    assert_eq!(store.muted(ann, Some(bob), 10).await.expect("muted"), vec![cat]);
    assert_eq!(store.muters(bob, None, 10).await.expect("muters"), vec![ann, cat]);

    let unmute = vec![marker(Topic::Graph, &mut ids, "unmute")];
    acks.extend(changed(store.unmute(ann, bob, unmute.clone()).await.expect("unmute"), 1, "unmute"));
    assert_eq!(store.unmute(ann, bob, Vec::new()).await.expect("unmute again"), EdgeChange::Unchanged);
    assert!(!store.mutes(ann, bob).await.expect("mutes"));
    assert_eq!(store.muters(bob, None, 10).await.expect("muters"), vec![cat]);
    store.ack(&acks).await.expect("ack");
}

/// Notifications: one per key, listed by id in windows, removed by key, apart per recipient.
pub async fn notifications_add_remove_and_list<S: crate::NotificationStore + ?Sized>(store: &S) {
    use crate::{NotificationKind, NotificationRecord};
    let mut ids = Ids::new();
    let (me, other, fan) = (ids.user(), ids.user(), ids.user());
    let status = ids_post(&mut ids);
    let mut made = Vec::new();
    for (kind, status) in [
        (NotificationKind::Follow, None),
        (NotificationKind::Favourite, Some(status)),
        (NotificationKind::Reblog, Some(status)),
        (NotificationKind::Mention, Some(ids_post(&mut ids))),
    ] {
        let n = NotificationRecord { id: ids.next(), recipient: me, kind, account: fan, status };
        assert!(store.add_notification(&n).await.expect("add"), "{kind:?} is new");
        made.push(n);
    }
    // The same key again stores nothing, whatever its id.
    let again = NotificationRecord { id: ids.next(), ..made[1] };
    assert!(!store.add_notification(&again).await.expect("add again"), "one per key");
    let theirs = NotificationRecord { id: ids.next(), recipient: other, ..made[0] };
    assert!(store.add_notification(&theirs).await.expect("add"));

    let newest: Vec<NotificationRecord> = made.iter().rev().copied().collect();
    let all = Window { before: None, after: None, limit: 10, order: Order::NewestFirst };
    assert_eq!(store.notifications(me, all).await.expect("list"), newest, "newest first, only mine");
    let page = Window { before: Some(made[3].id), after: Some(made[0].id), limit: 10, order: Order::NewestFirst };
    assert_eq!(store.notifications(me, page).await.expect("list"), vec![made[2], made[1]], "exclusive bounds");
    let oldest = Window { limit: 2, order: Order::OldestFirst, ..all };
    assert_eq!(store.notifications(me, oldest).await.expect("list"), vec![made[0], made[1]]);
    assert_eq!(store.notifications(me, Window { limit: 0, ..all }).await.expect("list"), vec![]);

    assert!(store.remove_notification(me, NotificationKind::Favourite, fan, Some(status)).await.expect("remove"));
    assert!(!store.remove_notification(me, NotificationKind::Favourite, fan, Some(status)).await.expect("again"));
    assert!(!store.remove_notification(me, NotificationKind::Favourite, other, Some(status)).await.expect("other key"));
    let left: Vec<NotificationRecord> = vec![made[3], made[2], made[0]];
    assert_eq!(store.notifications(me, all).await.expect("list"), left);
    // Removed, the key is free again.
    let back = NotificationRecord { id: ids.next(), ..made[1] };
    assert!(store.add_notification(&back).await.expect("add back"));
    assert_eq!(store.notifications(other, all).await.expect("list"), vec![theirs]);
}
