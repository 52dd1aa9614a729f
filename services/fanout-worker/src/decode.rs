//! What a delivery asks the worker to do, decoded from its payload, and the span it is
//! applied in.

use prost::Message;
use starling_events::{Delivery, Topic, pb};
use starling_ids::{PostId, UserId};

/// What a delivery asks for, once decoded.
pub(crate) enum Decoded {
    /// A post to push, applied with the pushes around it as a run (see the crate docs).
    Push(PostPush),
    /// `(reader, author)` edges to reconcile (a block has two; a mute is one), applied with the edges
    /// around them as a run.
    Edges(Vec<(UserId, UserId)>),
    /// Anything else, applied on its own.
    Single(Event),
}

/// A post created, or a slice of one's followers.
pub(crate) struct PostPush {
    pub(crate) post: PostId,
    pub(crate) author: UserId,
    /// `Some` for a slice: push to exactly these followers (and not the author's timeline,
    /// which the worker that split the post pushed). `None`: look the audience up.
    pub(crate) slice: Option<Vec<UserId>>,
}

pub(crate) enum Event {
    Deleted {
        post: PostId,
        author: UserId,
    },
    ClassChanged(UserId),
    /// A kind this version does not know: newer producers may add some. Nothing to do.
    Unknown,
    /// Not decodable: it can never succeed, so it is dead-lettered.
    Poison(String),
}

pub(crate) fn decode(d: &Delivery) -> Decoded {
    let push = |post, author, slice| Decoded::Push(PostPush { post: PostId(post), author: UserId(author), slice });
    let single = Decoded::Single;
    let edge = |reader, author| Decoded::Edges(vec![(UserId(reader), UserId(author))]);
    match d.topic {
        Topic::Posts => match pb::PostEvent::decode(d.payload.as_ref()) {
            Err(e) => single(Event::Poison(e.to_string())),
            Ok(e) => match e.kind {
                Some(pb::post_event::Kind::Created(c)) => push(c.post_id, c.author_id, None),
                Some(pb::post_event::Kind::Deleted(c)) => {
                    single(Event::Deleted { post: PostId(c.post_id), author: UserId(c.author_id) })
                }
                None => single(Event::Unknown),
            },
        },
        Topic::Graph => match pb::GraphEvent::decode(d.payload.as_ref()) {
            Err(e) => single(Event::Poison(e.to_string())),
            Ok(e) => match e.kind {
                Some(pb::graph_event::Kind::Followed(e)) => edge(e.follower_id, e.followee_id),
                Some(pb::graph_event::Kind::Unfollowed(e)) => edge(e.follower_id, e.followee_id),
                Some(pb::graph_event::Kind::Blocked(e)) => Decoded::Edges(vec![
                    (UserId(e.blocker_id), UserId(e.blocked_id)),
                    (UserId(e.blocked_id), UserId(e.blocker_id)),
                ]),
                Some(pb::graph_event::Kind::Muted(e)) => edge(e.muter_id, e.muted_id),
                Some(pb::graph_event::Kind::Unmuted(e)) => edge(e.muter_id, e.muted_id),
                Some(pb::graph_event::Kind::AuthorClassChanged(e)) => single(Event::ClassChanged(UserId(e.author_id))),
                None => single(Event::Unknown),
            },
        },
        Topic::Fanout => match pb::FanoutSlice::decode(d.payload.as_ref()) {
            Err(e) => single(Event::Poison(e.to_string())),
            Ok(e) => push(e.post_id, e.author_id, Some(e.follower_ids.into_iter().map(UserId).collect())),
        },
    }
}

/// The span that applies `d`: when traces are exported, a child of the span that produced
/// it (the request's, or the worker's that split a post into slices), from the trace
/// context in its headers. A missing or malformed context starts a trace of its own and
/// never fails the event.
pub(crate) fn event_span(d: &Delivery) -> tracing::Span {
    let span = tracing::info_span!(
        "fanout.event",
        otel.kind = "consumer",
        messaging.destination.name = d.topic.name(),
        messaging.destination.partition.id = d.partition,
        messaging.kafka.offset = d.offset,
    );
    starling_telemetry::propagation::continue_from(&span, &d.headers);
    span
}
