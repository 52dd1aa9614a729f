//! [`Bus`] over Redis pub/sub: one channel, `{prefix}bus`, each message one encoded
//! [`Announcement`].
//!
//! Publishing is a pipeline of `PUBLISH` on a multiplexed connection (reopened after an
//! error). Each process keeps one subscriber connection, read by a background task that
//! hands every message to this process's subscribers and reconnects after an error (what
//! was published meanwhile is lost: see the bus docs). A process that only announces (a
//! post-service, a graph-service, a fan-out worker) opens its bus with
//! [`RedisBus::publisher`] and keeps no subscriber connection: Redis would otherwise send
//! it every announcement for nothing. On a Redis Cluster a `PUBLISH` to
//! any node reaches the subscribers of every node, so both sides use the first node.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, aio::MultiplexedConnection};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::{Mutex, broadcast};

use super::backend;
use crate::bus::{Announcement, Bus};
use crate::{CacheError, CacheResult};

pub struct RedisBus {
    client: redis::Client,
    channel: String,
    publisher: Mutex<Option<MultiplexedConnection>>,
    local: broadcast::Sender<Announcement>,
    /// Set once the subscriber task runs; ends it when the bus is dropped.
    listening: OnceLock<tokio_util::sync::DropGuard>,
}

impl RedisBus {
    /// A bus on the Redis at `url` (a cluster's first node), channel `{prefix}bus`,
    /// listening from now on, so a stream opened later misses nothing announced after it.
    pub fn new(url: &str, prefix: &str) -> CacheResult<Arc<RedisBus>> {
        let bus = RedisBus::publisher(url, prefix)?;
        bus.listen();
        Ok(bus)
    }

    /// A bus for announcing: it listens only from its first [`Bus::subscribe`] (and what is
    /// announced while that subscription is being made is missed).
    pub fn publisher(url: &str, prefix: &str) -> CacheResult<Arc<RedisBus>> {
        let client = redis::Client::open(url).map_err(|e| backend("redis bus url", &e))?;
        let channel = format!("{prefix}bus");
        let (local, _) = broadcast::channel(4_096);
        Ok(Arc::new(RedisBus { client, channel, publisher: Mutex::new(None), local, listening: OnceLock::new() }))
    }

    fn listen(&self) {
        self.listening.get_or_init(|| {
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(listen(self.client.clone(), self.channel.clone(), self.local.clone(), stop.clone()));
            stop.drop_guard()
        });
    }

    async fn send(&self, conn: &mut MultiplexedConnection, changes: &[Announcement]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for c in changes {
            pipe.cmd("PUBLISH").arg(&self.channel).arg(c.encode()).ignore();
        }
        pipe.query_async::<()>(conn).await
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, changes: &[Announcement]) -> CacheResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut guard = self.publisher.lock().await;
        if guard.is_none() {
            let conn = self.client.get_multiplexed_async_connection().await.map_err(|e| backend("bus connect", &e))?;
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("connected above");
        if let Err(e) = self.send(conn, changes).await {
            // Reconnect on the next publish.
            *guard = None;
            return Err(CacheError::Backend(format!("bus publish: {e}")));
        }
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, Announcement> {
        self.listen();
        let rx = self.local.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => return Some((c, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

/// Reads the channel until `stop`, reconnecting after errors, and hands each change on.
async fn listen(
    client: redis::Client,
    channel: String,
    local: broadcast::Sender<Announcement>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut pause = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let started = std::time::Instant::now();
        let result = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            tracing::debug!(%channel, "bus subscribed");
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok::<(), redis::RedisError>(()),
                    msg = messages.next() => match msg {
                        Some(msg) => {
                            if let Some(c) = Announcement::decode(msg.get_payload_bytes()) {
                                let _ = local.send(c);
                            }
                        }
                        None => return Ok(()),
                    },
                }
            }
        }
        .await;
        if stop.is_cancelled() {
            return;
        }
        match result {
            Ok(()) => tracing::warn!(%channel, "bus subscription ended; resubscribing"),
            Err(e) => tracing::warn!(%channel, error = %e, "bus subscription failed; retrying"),
        }
        // Back off while connecting keeps failing; start again after a long-lived subscription.
        if started.elapsed() > Duration::from_secs(10) {
            pause = Duration::from_millis(100);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
