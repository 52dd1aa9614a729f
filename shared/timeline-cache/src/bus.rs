//! The timeline bus: what the fan-out tells the processes holding open streams.
//!
//! A client's stream (`/api/v1/streaming`) lives in whichever timeline-service process it
//! connected to, while the events that change its timeline are applied by whichever
//! fan-out worker owns their partition. After applying them, the worker announces each
//! change once on the bus ([`Bus::publish`]): a post or reblog made, a post deleted, a
//! reader's follows changed. The post- and graph-services announce each notification they
//! store the same way, so it reaches its recipient's streams. Every subscribed process
//! hears every announcement and decides locally which of its streams it concerns, so an
//! announcement costs the same whatever the author's follower count, and a celebrity's
//! post (merged at read, never pushed) reaches its followers' streams like any other.
//!
//! An announcement carries the W3C `traceparent` of the fan-out span that applied its
//! event, when traces are exported ([`Announcement::traced`]), so the stream that shows a
//! post is in the post's trace.
//!
//! The bus is best effort, as Mastodon's streaming is: an announcement made while a
//! process was not subscribed (reconnecting) is not replayed, and a client catches up by
//! reading its timeline, which is exact. In one process the bus is a
//! [`tokio::sync::broadcast`] channel ([`LocalBus`]); across processes it is a Redis
//! pub/sub channel.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use starling_ids::{PostId, UserId};
use starling_storage::{NotificationKind, NotificationRecord};

use crate::CacheResult;

/// One announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `author` made `post` (a reblog is a post of the reblogger's), and it is in the
    /// timelines it was pushed to.
    Posted { post: PostId, author: UserId },
    /// `author`'s `post` was deleted.
    Deleted { post: PostId, author: UserId },
    /// Whose posts reach `reader`'s home changed (a follow, unfollow, block or mute).
    Follows { reader: UserId },
    /// A notification was stored for its recipient.
    Notified(NotificationRecord),
}

impl Change {
    /// A tag, then the change's fields: two big-endian ids (the second 0 for `Follows`),
    /// 17 bytes; for `Notified` its id, recipient, account and status (0 for none) and
    /// its kind's tag, 34 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, ids) = match *self {
            Change::Posted { post, author } => (1, [post.0, author.0]),
            Change::Deleted { post, author } => (2, [post.0, author.0]),
            Change::Follows { reader } => (3, [reader.0, 0]),
            Change::Notified(n) => {
                let mut out = Vec::with_capacity(34);
                out.push(4);
                for id in [n.id, n.recipient.0, n.account.0, n.status.map_or(0, |s| s.0)] {
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.push(n.kind.tag());
                return out;
            }
        };
        let mut out = Vec::with_capacity(17);
        out.push(tag);
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }

    /// The change [`Change::encode`] wrote at the start of `bytes`, and what follows it;
    /// `None` for anything it did not write (a newer producer's kind, or too few bytes).
    pub fn decode(bytes: &[u8]) -> Option<(Change, &[u8])> {
        let len = match *bytes.first()? {
            1..=3 => 17,
            4 => 34,
            _ => return None,
        };
        let (head, rest) = (bytes.get(..len)?, &bytes[len..]);
        let id = |i: usize| u64::from_be_bytes(head[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
        let change = match head[0] {
            1 => Change::Posted { post: PostId(id(0)), author: UserId(id(1)) },
            2 => Change::Deleted { post: PostId(id(0)), author: UserId(id(1)) },
            3 => Change::Follows { reader: UserId(id(0)) },
            _ => Change::Notified(NotificationRecord {
                id: id(0),
                recipient: UserId(id(1)),
                account: UserId(id(2)),
                status: Some(PostId(id(3))).filter(|s| s.0 != 0),
                kind: NotificationKind::from_tag(head[33])?,
            }),
        };
        Some((change, rest))
    }
}

/// A [`Change`] as the bus carries it, with the trace context of the work that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub change: Change,
    /// `traceparent` (empty without a trace), as [`starling_telemetry::propagation`]
    /// writes and reads headers.
    pub trace: Vec<(String, Bytes)>,
}

/// The one header the bus carries: `tracestate` is left behind, to keep a message small.
const TRACEPARENT: &str = "traceparent";

impl Announcement {
    pub fn new(change: Change) -> Announcement {
        Announcement { change, trace: Vec::new() }
    }

    /// `change`, in the trace of `span`.
    pub fn traced(change: Change, span: &tracing::Span) -> Announcement {
        let mut trace = Vec::new();
        starling_telemetry::propagation::inject(span, &mut trace);
        trace.retain(|(name, _)| name == TRACEPARENT);
        Announcement { change, trace }
    }

    /// The change's bytes, then the `traceparent` value if there is one.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.change.encode();
        if let Some((_, value)) = self.trace.iter().find(|(name, _)| name == TRACEPARENT) {
            out.extend_from_slice(value);
        }
        out
    }

    /// `None` for a change [`Change::decode`] does not know.
    pub fn decode(bytes: &[u8]) -> Option<Announcement> {
        let (change, rest) = Change::decode(bytes)?;
        let trace =
            if rest.is_empty() { Vec::new() } else { vec![(TRACEPARENT.to_owned(), Bytes::copy_from_slice(rest))] };
        Some(Announcement { change, trace })
    }
}

/// Announces `change` on `bus`, in the current span's trace. A failure is logged, not
/// returned: announcements are best effort (see the module docs).
pub async fn announce(bus: &dyn Bus, change: Change) {
    let announcement = Announcement::traced(change, &tracing::Span::current());
    if let Err(e) = bus.publish(std::slice::from_ref(&announcement)).await {
        tracing::warn!(error = %e, "could not announce a change");
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Announces `changes` to every subscriber (best effort; see the module docs).
    async fn publish(&self, changes: &[Announcement]) -> CacheResult<()>;

    /// Every announcement from now on. The stream ends only if the bus is dropped; across
    /// processes it reconnects by itself (announcements in between are lost).
    fn subscribe(&self) -> BoxStream<'static, Announcement>;
}

/// The bus within one process.
pub struct LocalBus(tokio::sync::broadcast::Sender<Announcement>);

impl LocalBus {
    /// A subscriber that falls this far behind loses the oldest announcements.
    const BACKLOG: usize = 4_096;

    pub fn new() -> LocalBus {
        LocalBus(tokio::sync::broadcast::channel(Self::BACKLOG).0)
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new()
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, changes: &[Announcement]) -> CacheResult<()> {
        for c in changes {
            // No subscriber is not an error: nobody is streaming.
            let _ = self.0.send(c.clone());
        }
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, Announcement> {
        use futures::StreamExt as _;
        let rx = self.0.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => return Some((c, rx)),
                    // Lagged: the oldest were dropped; go on with what is left.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[test]
    fn announcements_round_trip_and_unknown_kinds_are_none() {
        let traceparent = Bytes::from_static(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        for c in [
            Change::Posted { post: PostId(u64::MAX), author: UserId(1) },
            Change::Deleted { post: PostId(7), author: UserId(1 << 60) },
            Change::Follows { reader: UserId(42) },
            Change::Notified(NotificationRecord {
                id: 9,
                recipient: UserId(1),
                kind: NotificationKind::Follow,
                account: UserId(u64::MAX),
                status: None,
            }),
            Change::Notified(NotificationRecord {
                id: u64::MAX,
                recipient: UserId(3),
                kind: NotificationKind::Favourite,
                account: UserId(4),
                status: Some(PostId(5)),
            }),
        ] {
            let bytes = c.encode();
            assert_eq!(Change::decode(&bytes), Some((c, &[][..])));
            assert_eq!(Change::decode(&bytes[..bytes.len() - 1]), None, "one byte short");
            let bare = Announcement::new(c);
            assert_eq!(Announcement::decode(&bare.encode()), Some(bare.clone()));
            assert_eq!(bare.encode().len(), bytes.len(), "no trace, no bytes for it");
            let traced = Announcement { change: c, trace: vec![("traceparent".to_owned(), traceparent.clone())] };
            assert_eq!(Announcement::decode(&traced.encode()), Some(traced));
        }
        assert_eq!(Change::decode(&[9; 17]), None);
        assert_eq!(Change::decode(&[1; 3]), None);
        let mut unknown_kind = Change::Notified(NotificationRecord {
            id: 1,
            recipient: UserId(1),
            kind: NotificationKind::Mention,
            account: UserId(2),
            status: Some(PostId(3)),
        })
        .encode();
        unknown_kind[33] = 200;
        assert_eq!(Change::decode(&unknown_kind), None, "a kind this build does not know");
        assert_eq!(Announcement::decode(&[9; 30]), None);
        assert_eq!(Announcement::decode(&[1; 3]), None);
    }

    #[tokio::test]
    async fn every_subscriber_hears_every_change_after_it_subscribed() {
        let bus = LocalBus::new();
        bus.publish(&[Announcement::new(Change::Follows { reader: UserId(1) })]).await.unwrap();
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        let c = Announcement::new(Change::Posted { post: PostId(5), author: UserId(2) });
        bus.publish(std::slice::from_ref(&c)).await.unwrap();
        assert_eq!(a.next().await, Some(c.clone()));
        assert_eq!(b.next().await, Some(c));
    }
}
