//! Mastodon's streaming API for the home timeline, fed by the timeline bus
//! ([`starling_timeline_cache::bus`]):
//!
//! - `GET /api/v1/streaming/user` (or `/api/v1/streaming?stream=user`): server-sent
//!   events, `event: update` with a Status, `event: delete` with a status id,
//!   `event: notification` with a Notification, and a `:thump` comment as heartbeat;
//! - `GET /api/v1/streaming/user/notification` (or `?stream=user:notification`): the
//!   notifications only;
//! - `GET /api/v1/streaming` upgraded to a WebSocket: the client sends
//!   `{"type":"subscribe","stream":"user"}` (or `user:notification`, or `unsubscribe`),
//!   or names the stream in the query; events come as
//!   `{"stream":["user"],"event":"update","payload":"<Status JSON>"}`, a notification once
//!   for each of the two streams subscribed to;
//! - `GET /api/v1/streaming/health`: `OK`.
//!
//! The token comes in the `Authorization` header, the `access_token` query parameter, or
//! (WebSocket, as browsers and masto.js send it) as the `Sec-WebSocket-Protocol`, which the
//! handshake then echoes. Each stream needs Mastodon's scope for it (`user`:
//! `read:statuses`, `user:notification`: `read:notifications`), and the `user` stream
//! carries notifications only for a token that may read them.
//!
//! A stream shows what the home timeline would: a post or reblog by one of the reader's
//! home authors (or the reader), a reblog only where the timeline would show it (see the
//! crate docs on reblogs). Whom the reader follows is read when the stream opens and again
//! whenever the bus says it changed. A notification is announced by the service that
//! stored it (see `NotificationStore`) and shown as `GET /api/v1/notifications/{id}`
//! would, unless its status is gone. Any other stream is refused (an `error` message, or
//! 404).

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use starling_api::auth::{AuthUser, bearer, user_of};
use starling_api::mastodon::{Account, Notification, PublicBase};
use starling_api::pagination::query_pairs;
use starling_api::{ApiError, ErrorCode};
use starling_ids::{PostId, UserId};
use starling_storage::NotificationRecord;
use starling_timeline_cache::bus::{Announcement, Change};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::{HomePage, ReadError, TimelineService};

/// How often an idle stream says it is alive (Mastodon's streaming server: 15 s).
const HEARTBEAT: Duration = Duration::from_secs(15);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/streaming/health", web::get().to(health))
        .route("/api/v1/streaming/user", web::get().to(user_events))
        .route("/api/v1/streaming/user/notification", web::get().to(notification_events))
        .route("/api/v1/streaming", web::get().to(streaming));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("OK")
}

/// What a stream sends.
enum Event {
    Update(String),
    Delete(PostId),
    Notification(String),
}

/// The streams a connection can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// The home timeline and the notifications.
    User,
    /// The notifications only.
    Notifications,
}

impl Stream {
    fn named(name: &str) -> Option<Stream> {
        match name {
            "user" => Some(Stream::User),
            "user:notification" => Some(Stream::Notifications),
            _ => None,
        }
    }

    /// The scope a token needs for this stream (Mastodon's).
    fn scope(self) -> &'static str {
        match self {
            Stream::User => "read:statuses",
            Stream::Notifications => "read:notifications",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stream::User => "user",
            Stream::Notifications => "user:notification",
        }
    }

    /// Whether this stream shows `event`.
    fn shows(self, event: &Event) -> bool {
        self == Stream::User || matches!(event, Event::Notification(_))
    }
}

/// What a connection's streams may show: its reader's home, its notifications (each as
/// its token's scopes allow).
#[derive(Clone, Copy)]
struct Shows {
    home: bool,
    notifications: bool,
}

impl Shows {
    /// What `stream` shows for `me`: the `user` stream carries notifications only for a
    /// token that may read them, as Mastodon's does.
    fn on(stream: Stream, me: &AuthUser) -> Shows {
        let notifications = me.require(Stream::Notifications.scope()).is_ok();
        match stream {
            Stream::User => Shows { home: true, notifications },
            Stream::Notifications => Shows { home: false, notifications },
        }
    }
}

/// One open stream's view of its reader's home.
struct Watch {
    reader: UserId,
    /// Whose posts reach the reader's home, the reader included.
    authors: HashSet<UserId>,
}

impl Watch {
    /// Whether `change` may show this reader anything it `shows` (what
    /// [`TimelineService::event_for`] acts on), decided without a call.
    fn concerns(&self, change: &Change, shows: Shows) -> bool {
        match *change {
            Change::Notified(n) => shows.notifications && n.recipient == self.reader,
            _ if !shows.home => false,
            Change::Follows { reader } => reader == self.reader,
            Change::Deleted { author, .. } | Change::Posted { author, .. } => self.authors.contains(&author),
        }
    }
}

impl TimelineService {
    async fn watch(&self, reader: UserId) -> Result<Watch, ReadError> {
        let (following, ..) = self.reader_view(reader).await?;
        let mut authors: HashSet<UserId> = following.into_iter().collect();
        authors.insert(reader);
        Ok(Watch { reader, authors })
    }

    /// What `change` shows the watch's reader, if anything.
    async fn event_for(
        &self,
        base: &PublicBase,
        watch: &mut Watch,
        change: Change,
    ) -> Result<Option<Event>, ReadError> {
        match change {
            Change::Follows { reader } if reader == watch.reader => {
                *watch = self.watch(reader).await?;
                Ok(None)
            }
            Change::Deleted { post, author } if watch.authors.contains(&author) => Ok(Some(Event::Delete(post))),
            Change::Posted { post, author } if watch.authors.contains(&author) => {
                let posts = self.hydrate(&[post], None).await?;
                let mut originals = HashMap::new();
                let posts = self.without_repeats(&watch.authors, posts, &mut originals, None).await?;
                let statuses =
                    self.statuses(base, HomePage { posts, originals, ..HomePage::default() }, watch.reader).await?;
                Ok(statuses.get(0).map(|s| Event::Update(s.to_owned())))
            }
            Change::Notified(n) if n.recipient == watch.reader => {
                Ok(self.notification(base, n).await?.map(Event::Notification))
            }
            _ => Ok(None),
        }
    }

    /// `n` as JSON, as its recipient sees it; `None` if its status or its actor is gone.
    async fn notification(&self, base: &PublicBase, n: NotificationRecord) -> Result<Option<String>, ReadError> {
        let status = match n.status {
            None => None,
            Some(id) => {
                let posts = self.hydrate(&[id], None).await?;
                let statuses = self.statuses(base, HomePage { posts, ..HomePage::default() }, n.recipient).await?;
                // Written by `json`, which writes valid JSON.
                match statuses.get(0).and_then(|s| serde_json::value::RawValue::from_string(s.to_owned()).ok()) {
                    Some(status) => Some(status),
                    None => return Ok(None),
                }
            }
        };
        let (user, counts) = futures::try_join!(self.graph.user(n.account), self.graph.counts(n.account))?;
        let Some(user) = user else { return Ok(None) };
        // The post count is not indexed yet (as on every Account).
        let account = Account::new(base, &user, counts, 0);
        Ok(serde_json::to_string(&Notification::new(&n, account, status)).ok())
    }

    /// Runs a stream for `reader` until `tx` closes: each bus change it concerns among
    /// what it `shows`, and a heartbeat when idle. Subscribes before returning, so nothing
    /// announced after the stream opened is missed.
    fn run_stream(self: &Arc<Self>, base: PublicBase, mut watch: Watch, shows: Shows, tx: mpsc::Sender<Frame>) {
        let mut changes = self.bus.subscribe();
        let svc = self.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
            loop {
                let frame = tokio::select! {
                    () = tx.closed() => return,
                    _ = beat.tick() => Frame::Heartbeat,
                    heard = changes.next() => match heard {
                        None => return,
                        Some(heard) if !watch.concerns(&heard.change, shows) => continue,
                        Some(heard) => match svc.event_for(&base, &mut watch, heard.change).instrument(stream_span(&heard)).await {
                            Ok(Some(event)) => Frame::Event(event),
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(reader = watch.reader.0, error = %e, "a stream event failed");
                                continue;
                            }
                        },
                    },
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The span of a stream's work on an announcement, in the trace of the span that made it
/// (the fan-out's, or a notification's request), named by what the stream may send for it
/// (none unless traces are exported).
fn stream_span(heard: &Announcement) -> tracing::Span {
    let name = match heard.change {
        Change::Notified(_) => "stream.notification",
        Change::Deleted { .. } => "stream.delete",
        Change::Posted { .. } | Change::Follows { .. } => "stream.update",
    };
    let span = starling_telemetry::span!("stream.event", otel.name = name, otel.kind = "consumer", stream = "user");
    starling_telemetry::propagation::continue_from(&span, &heard.trace);
    span
}

enum Frame {
    Event(Event),
    Heartbeat,
}

impl Event {
    /// Mastodon's name of the event, and its payload.
    fn parts(&self) -> (&'static str, String) {
        match self {
            Event::Update(json) => ("update", json.clone()),
            Event::Delete(id) => ("delete", id.to_string()),
            Event::Notification(json) => ("notification", json.clone()),
        }
    }
}

impl Frame {
    /// The frame as server-sent events (what the stream shows was chosen by its [`Shows`]).
    fn sse(&self) -> Bytes {
        match self {
            Frame::Event(event) => {
                let (name, payload) = event.parts();
                Bytes::from(format!("event: {name}\ndata: {payload}\n\n"))
            }
            Frame::Heartbeat => Bytes::from_static(b":thump\n\n"),
        }
    }
}

/// The caller of a streaming request, by the token of its `Authorization` header, its
/// `access_token` parameter or its WebSocket `protocol`, in that order. Its token must
/// allow `stream`, or (a WebSocket naming none) either stream.
async fn caller(req: &HttpRequest, protocol: Option<&str>, stream: Option<Stream>) -> Result<AuthUser, ApiError> {
    let from_query = query_pairs(req.query_string())?.into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v);
    let token = bearer(req)?
        .map(str::to_owned)
        .or(from_query)
        .or(protocol.map(str::to_owned))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing access token"))?;
    let user = user_of(req, &token).await?;
    match stream {
        Some(stream) => user.require(stream.scope())?,
        None => user.require(Stream::User.scope()).or_else(|_| user.require(Stream::Notifications.scope()))?,
    }
    Ok(user)
}

/// The stream the request's query names (`None` if it names none); any other stream is 404.
fn named_stream(req: &HttpRequest) -> Result<Option<Stream>, ApiError> {
    let stream = query_pairs(req.query_string())?.into_iter().find(|(k, _)| k == "stream").map(|(_, v)| v);
    match stream.as_deref() {
        None => Ok(None),
        Some(name) => Stream::named(name).map(Some).ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, format!("no stream {name:?} here (user and user:notification only)"))
        }),
    }
}

async fn user_events(svc: web::Data<TimelineService>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let me = caller(&req, None, Some(Stream::User)).await?;
    sse(svc.into_inner(), &req, &me, Stream::User).await
}

async fn notification_events(svc: web::Data<TimelineService>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let me = caller(&req, None, Some(Stream::Notifications)).await?;
    sse(svc.into_inner(), &req, &me, Stream::Notifications).await
}

async fn sse(
    svc: Arc<TimelineService>,
    req: &HttpRequest,
    me: &AuthUser,
    stream: Stream,
) -> Result<HttpResponse, ApiError> {
    let watch = svc.watch(me.id).await.map_err(ApiError::unavailable)?;
    let (tx, rx) = mpsc::channel(64);
    svc.run_stream(PublicBase::of(req), watch, Shows::on(stream, me), tx);
    // A first comment so the client sees the stream open at once (and proxies flush).
    let opened = futures::stream::once(async { Ok::<_, std::convert::Infallible>(Bytes::from_static(b":)\n\n")) });
    let frames = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (Ok(f.sse()), rx)) });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(opened.chain(frames)))
}

#[derive(Deserialize)]
struct Subscription {
    #[serde(rename = "type")]
    kind: String,
    stream: String,
}

/// `/api/v1/streaming`: a WebSocket when the request asks to upgrade, else server-sent
/// events of the stream its query names.
async fn streaming(
    svc: web::Data<TimelineService>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let named = named_stream(&req)?;
    let upgrade =
        req.headers().get("upgrade").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        let Some(stream) = named else {
            return Err(ApiError::parameter("name a stream (stream=user) or open a WebSocket").into());
        };
        let me = caller(&req, None, Some(stream)).await?;
        return Ok(sse(svc.into_inner(), &req, &me, stream).await?);
    }
    // The token as the protocol, as browsers (which cannot set headers here) send it.
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_owned);
    let me = caller(&req, protocol.as_deref(), named).await?;
    // A client that offered a protocol needs one selected, or it drops the connection.
    let protocols: Vec<&str> = protocol.as_deref().into_iter().collect();
    let (res, session, messages) = actix_ws::handle_with_protocols(&req, body, &protocols)?;
    let svc = svc.into_inner();
    let watch = svc.watch(me.id).await.map_err(ApiError::unavailable)?;
    let (tx, rx) = mpsc::channel(64);
    let allowed: Vec<Stream> =
        [Stream::User, Stream::Notifications].into_iter().filter(|s| me.require(s.scope()).is_ok()).collect();
    let shows =
        Shows { home: allowed.contains(&Stream::User), notifications: allowed.contains(&Stream::Notifications) };
    svc.run_stream(PublicBase::of(&req), watch, shows, tx);
    actix_web::rt::spawn(websocket(session, messages, rx, named, allowed));
    Ok(res)
}

/// Forwards frames to the socket for each stream the client is subscribed to, and follows
/// its subscribe and unsubscribe messages, among the streams its token `allowed`.
async fn websocket(
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    mut frames: mpsc::Receiver<Frame>,
    named: Option<Stream>,
    allowed: Vec<Stream>,
) {
    let mut subscribed: Vec<Stream> = named.into_iter().collect();
    loop {
        tokio::select! {
            msg = messages.next() => match msg {
                Some(Ok(actix_ws::Message::Text(text))) => {
                    let refused = match serde_json::from_str::<Subscription>(&text) {
                        Ok(s) => match Stream::named(&s.stream) {
                            Some(stream) if !allowed.contains(&stream) => {
                                Some(format!("this stream needs the {} scope", stream.scope()))
                            }
                            Some(stream) => {
                                subscribed.retain(|&had| had != stream);
                                if s.kind == "subscribe" {
                                    subscribed.push(stream);
                                }
                                None
                            }
                            None => Some(format!("no stream {:?} here (user and user:notification only)", s.stream)),
                        },
                        Err(_) => Some("expected {\"type\":\"subscribe\",\"stream\":\"user\"}".to_owned()),
                    };
                    if let Some(error) = refused
                        && session.text(serde_json::json!({ "error": error }).to_string()).await.is_err()
                    {
                        return;
                    }
                }
                Some(Ok(actix_ws::Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                let event = match frame {
                    Frame::Heartbeat => {
                        if session.ping(b"").await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Frame::Event(event) => event,
                };
                let (name, payload) = event.parts();
                for stream in subscribed.iter().filter(|s| s.shows(&event)) {
                    let message = serde_json::json!({ "stream": [stream.name()], "event": name, "payload": payload });
                    if session.text(message.to_string()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let _ = session.close(None).await;
}
