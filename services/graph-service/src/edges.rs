//! Changes to the edges between two accounts (follow, block, mute and their undoing),
//! validated, committed with their events and published: the one path the account
//! endpoints take.

use starling_api::auth::AuthUser;
use starling_api::{ApiError, ErrorCode};
use starling_events::{Record, pb};
use starling_ids::UserId;
use starling_storage::{EdgeChange, UserRecord};

use crate::{GraphService, graph_event};

/// A username (handle): 1 to 30 ASCII letters, digits or underscores, as Twitter allows.
pub struct Handle(String);

impl Handle {
    pub fn parse(s: &str) -> Result<Handle, ApiError> {
        if s.is_empty() || s.len() > 30 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ApiError::validation("username must be 1 to 30 letters, digits or underscores"));
        }
        Ok(Handle(s.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Parses a path id; anything that is not an id cannot name a user, so it is a 404.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("user"))
}

pub(crate) async fn existing(svc: &GraphService, raw: &str) -> Result<UserRecord, ApiError> {
    let id = user_id(raw)?;
    svc.store.user(id).await.map_err(ApiError::unavailable)?.ok_or_else(|| ApiError::not_found("user"))
}

/// Validates the target of an edge change and returns it.
async fn target(svc: &GraphService, me: &AuthUser, raw: &str, op: EdgeOp) -> Result<UserId, ApiError> {
    me.require(op.scope())?;
    let target = existing(svc, raw).await?.id;
    if target == me.id {
        return Err(ApiError::new(ErrorCode::Forbidden, format!("you cannot {} yourself", op.verb())));
    }
    svc.limiter.check(me.id)?;
    Ok(target)
}

fn edge(follower: UserId, followee: UserId) -> (u64, u64) {
    (follower.get(), followee.get())
}

/// A change to the edge from the caller to another user.
#[derive(Clone, Copy)]
pub(crate) enum EdgeOp {
    Follow,
    Unfollow,
    Block,
    Unblock,
    Mute,
    Unmute,
}

impl EdgeOp {
    fn verb(self) -> &'static str {
        match self {
            EdgeOp::Follow => "follow",
            EdgeOp::Unfollow => "unfollow",
            EdgeOp::Block => "block",
            EdgeOp::Unblock => "unblock",
            EdgeOp::Mute => "mute",
            EdgeOp::Unmute => "unmute",
        }
    }

    /// The OAuth scope it needs.
    fn scope(self) -> &'static str {
        match self {
            EdgeOp::Follow | EdgeOp::Unfollow => "write:follows",
            EdgeOp::Block | EdgeOp::Unblock => "write:blocks",
            EdgeOp::Mute | EdgeOp::Unmute => "write:mutes",
        }
    }
}

/// Validates the target (`raw`, a path id), then commits `op` with its event and
/// publishes it: the one path both APIs' follow and block endpoints take.
pub(crate) async fn change_edge(
    svc: &GraphService,
    me: &AuthUser,
    raw: &str,
    op: EdgeOp,
) -> Result<(UserId, EdgeChange), ApiError> {
    // Its events, a reclassification's included, carry the request span's trace context.
    let them = target(svc, me, raw, op).await?;
    let (follower_id, followee_id) = edge(me.id, them);
    let (blocker_id, blocked_id) = (me.id.get(), them.get());
    let store = &svc.store;
    let change = match op {
        EdgeOp::Follow => {
            let event = graph_event(pb::graph_event::Kind::Followed(pb::Followed { follower_id, followee_id }));
            let events = vec![Record::graph(follower_id, &event)];
            let change = store.follow(me.id, them, events.clone()).await.map_err(ApiError::unavailable)?;
            let change = svc.finish(change, events, &[them]).await?;
            if matches!(change, EdgeChange::Changed { .. }) {
                svc.notify_follow(me.id, them).await;
            }
            change
        }
        EdgeOp::Unfollow => {
            let event = graph_event(pb::graph_event::Kind::Unfollowed(pb::Unfollowed { follower_id, followee_id }));
            let events = vec![Record::graph(follower_id, &event)];
            let change = store.unfollow(me.id, them, events.clone()).await.map_err(ApiError::unavailable)?;
            svc.finish(change, events, &[them]).await?
        }
        EdgeOp::Block => {
            let event = graph_event(pb::graph_event::Kind::Blocked(pb::Blocked { blocker_id, blocked_id }));
            let events = vec![Record::graph(blocker_id, &event)];
            let change = store.block(me.id, them, events.clone()).await.map_err(ApiError::unavailable)?;
            // Both lost a follower, possibly.
            svc.finish(change, events, &[them, me.id]).await?
        }
        // Unblocking restores no follows, so no timeline changes: there is no event.
        EdgeOp::Unblock => store.unblock(me.id, them, Vec::new()).await.map_err(ApiError::unavailable)?,
        EdgeOp::Mute | EdgeOp::Unmute => {
            let (muter_id, muted_id) = (me.id.get(), them.get());
            let kind = match op {
                EdgeOp::Mute => pb::graph_event::Kind::Muted(pb::Muted { muter_id, muted_id }),
                _ => pb::graph_event::Kind::Unmuted(pb::Unmuted { muter_id, muted_id }),
            };
            let events = vec![Record::graph(muter_id, &graph_event(kind))];
            let change = match op {
                EdgeOp::Mute => store.mute(me.id, them, events.clone()).await,
                _ => store.unmute(me.id, them, events.clone()).await,
            }
            .map_err(ApiError::unavailable)?;
            // A mute changes no follower count: no author to reclassify.
            svc.finish(change, events, &[]).await?
        }
    };
    Ok((them, change))
}
