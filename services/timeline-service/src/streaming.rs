//! Mastodon's streaming API for the home timeline, fed by the timeline bus
//! ([`starling_timeline_cache::bus`]):
//!
//! - `GET /api/v1/streaming/user` (or `/api/v1/streaming?stream=user`): server-sent
//!   events, `event: update` with a Status, `event: delete` with a status id, and a
//!   `:thump` comment as heartbeat;
//! - `GET /api/v1/streaming` upgraded to a WebSocket: the client sends
//!   `{"type":"subscribe","stream":"user"}` (or `unsubscribe`), or names the stream in the
//!   query; events come as `{"stream":["user"],"event":"update","payload":"<Status JSON>"}`;
//! - `GET /api/v1/streaming/health`: `OK`.
//!
//! The token comes in the `Authorization` header, the `access_token` query parameter, or
//! (WebSocket, as browsers and masto.js send it) as the `Sec-WebSocket-Protocol`, which the
//! handshake then echoes.
//!
//! A stream shows what the home timeline would: a post or reblog by one of the reader's
//! home authors (or the reader), a reblog only where the timeline would show it (see the
//! crate docs on reblogs). Whom the reader follows is read when the stream opens and again
//! whenever the bus says it changed. Notifications are not streamed yet: a WebSocket
//! `user:notification` subscription is accepted and stays silent; any other stream is
//! refused (an `error` message, or 404).

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use starling_api::auth::{AuthUser, bearer, user_of};
use starling_api::mastodon::PublicBase;
use starling_api::pagination::query_pairs;
use starling_api::{ApiError, ErrorCode};
use starling_ids::{PostId, UserId};
use starling_timeline_cache::bus::{Announcement, Change};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::{HomePage, ReadError, TimelineService};

/// How often an idle stream says it is alive (Mastodon's streaming server: 15 s).
const HEARTBEAT: Duration = Duration::from_secs(15);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/streaming/health", web::get().to(health))
        .route("/api/v1/streaming/user", web::get().to(user_events))
        .route("/api/v1/streaming", web::get().to(streaming));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("OK")
}

/// What a stream sends.
enum Event {
    Update(String),
    Delete(PostId),
}

/// One open stream's view of its reader's home.
struct Watch {
    reader: UserId,
    /// Whose posts reach the reader's home, the reader included.
    authors: HashSet<UserId>,
}

impl Watch {
    /// Whether `change` may show this reader anything (what [`TimelineService::event_for`]
    /// acts on), decided without a call.
    fn concerns(&self, change: &Change) -> bool {
        match *change {
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
            _ => Ok(None),
        }
    }

    /// Runs a stream for `reader` until `tx` closes: each bus change it concerns, and a
    /// heartbeat when idle. Subscribes before returning, so nothing announced after the
    /// stream opened is missed.
    fn run_stream(self: &Arc<Self>, base: PublicBase, mut watch: Watch, tx: mpsc::Sender<Frame>) {
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
                        Some(heard) if !watch.concerns(&heard.change) => continue,
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

/// The span of a stream's work on an announcement, in the trace of the fan-out span that
/// made it (none unless traces are exported).
fn stream_span(heard: &Announcement) -> tracing::Span {
    let span = starling_telemetry::span!("stream.update", otel.kind = "consumer", stream = "user");
    starling_telemetry::propagation::continue_from(&span, &heard.trace);
    span
}

enum Frame {
    Event(Event),
    Heartbeat,
}

impl Frame {
    /// The frame as server-sent events.
    fn sse(&self) -> Bytes {
        match self {
            Frame::Event(Event::Update(json)) => Bytes::from(format!("event: update\ndata: {json}\n\n")),
            Frame::Event(Event::Delete(id)) => Bytes::from(format!("event: delete\ndata: {id}\n\n")),
            Frame::Heartbeat => Bytes::from_static(b":thump\n\n"),
        }
    }
}

/// The caller of a streaming request, by the token of its `Authorization` header, its
/// `access_token` parameter or its WebSocket `protocol`, in that order.
async fn caller(req: &HttpRequest, protocol: Option<&str>) -> Result<AuthUser, ApiError> {
    let from_query = query_pairs(req.query_string())?.into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v);
    let token = bearer(req)?
        .map(str::to_owned)
        .or(from_query)
        .or(protocol.map(str::to_owned))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing access token"))?;
    let user = user_of(req, &token).await?;
    user.require("read:statuses")?;
    Ok(user)
}

/// Whether the request's query names the `user` stream (`false` if it names none); any
/// other stream is 404.
fn names_user_stream(req: &HttpRequest) -> Result<bool, ApiError> {
    let stream = query_pairs(req.query_string())?.into_iter().find(|(k, _)| k == "stream").map(|(_, v)| v);
    match stream.as_deref() {
        None => Ok(false),
        Some("user") => Ok(true),
        Some(other) => Err(ApiError::new(ErrorCode::NotFound, format!("no stream {other:?} here (user only)"))),
    }
}

async fn user_events(svc: web::Data<TimelineService>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let me = caller(&req, None).await?;
    sse(svc.into_inner(), &req, me.id).await
}

async fn sse(svc: Arc<TimelineService>, req: &HttpRequest, reader: UserId) -> Result<HttpResponse, ApiError> {
    let watch = svc.watch(reader).await.map_err(ApiError::unavailable)?;
    let (tx, rx) = mpsc::channel(64);
    svc.run_stream(PublicBase::of(req), watch, tx);
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
    let named = names_user_stream(&req)?;
    let upgrade =
        req.headers().get("upgrade").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        if !named {
            return Err(ApiError::parameter("name a stream (stream=user) or open a WebSocket").into());
        }
        let me = caller(&req, None).await?;
        return Ok(sse(svc.into_inner(), &req, me.id).await?);
    }
    // The token as the protocol, as browsers (which cannot set headers here) send it.
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_owned);
    let me = caller(&req, protocol.as_deref()).await?;
    // A client that offered a protocol needs one selected, or it drops the connection.
    let protocols: Vec<&str> = protocol.as_deref().into_iter().collect();
    let (res, session, messages) = actix_ws::handle_with_protocols(&req, body, &protocols)?;
    let svc = svc.into_inner();
    let watch = svc.watch(me.id).await.map_err(ApiError::unavailable)?;
    let (tx, rx) = mpsc::channel(64);
    svc.run_stream(PublicBase::of(&req), watch, tx);
    actix_web::rt::spawn(websocket(session, messages, rx, named));
    Ok(res)
}

/// Forwards frames to the socket while the client is subscribed to the user stream, and
/// follows its subscribe and unsubscribe messages.
async fn websocket(
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    mut frames: mpsc::Receiver<Frame>,
    mut subscribed: bool,
) {
    loop {
        tokio::select! {
            msg = messages.next() => match msg {
                Some(Ok(actix_ws::Message::Text(text))) => match serde_json::from_str::<Subscription>(&text) {
                    Ok(s) if s.stream == "user" => subscribed = s.kind == "subscribe",
                    // Not streamed yet: accepted, and silent.
                    Ok(s) if s.stream == "user:notification" => {}
                    Ok(s) => {
                        let error = serde_json::json!({ "error": format!("no stream {:?} here (user only)", s.stream) });
                        if session.text(error.to_string()).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let error = serde_json::json!({ "error": "expected {\"type\":\"subscribe\",\"stream\":\"user\"}" });
                        if session.text(error.to_string()).await.is_err() {
                            return;
                        }
                    }
                },
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
                let sent = match frame {
                    Frame::Heartbeat => session.ping(b"").await,
                    Frame::Event(_) if !subscribed => continue,
                    Frame::Event(Event::Update(json)) => {
                        session.text(serde_json::json!({ "stream": ["user"], "event": "update", "payload": json }).to_string()).await
                    }
                    Frame::Event(Event::Delete(id)) => {
                        session.text(serde_json::json!({ "stream": ["user"], "event": "delete", "payload": id.to_string() }).to_string()).await
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    }
    let _ = session.close(None).await;
}
