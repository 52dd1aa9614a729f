//! How the Redis caches reach Redis: pooled multiplexed connections to one server, or a
//! cluster connection, behind one `Conn` that single-key calls (scripts, one-key
//! pipelines) use unchanged on both; and the Lua scripts they call by `EVALSHA`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_redis::Pool;
use deadpool_redis::cluster::ClusterConnection;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use deadpool_redis::redis::{self, Cmd, ErrorKind, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use parking_lot::Mutex;
use thread_local::ThreadLocal;
use tracing::Instrument as _;

use super::backend;
use crate::{CacheError, CacheResult};

/// How the cache reaches Redis.
pub(super) enum Connections {
    Node(NodeConnections),
    /// Routes every command by its key's slot; reconnects to each node by itself.
    Cluster(ClusterConnection),
}

/// A connection handed out for one call.
pub(super) struct Lease {
    pub(super) conn: Conn,
}

/// Either kind of connection, so single-key calls (scripts, one-owner pipelines) run
/// unchanged on both.
pub(super) enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Connections {
    pub(super) async fn get(&self) -> CacheResult<Lease> {
        match self {
            Connections::Node(n) => n.get().await,
            Connections::Cluster(c) => Ok(Lease { conn: Conn::Cluster(c.clone()) }),
        }
    }

    pub(super) fn cluster(&self) -> Option<&ClusterConnection> {
        match self {
            Connections::Node(_) => None,
            Connections::Cluster(c) => Some(c),
        }
    }

    /// `SCAN`s every key matching `pattern` (on a cluster, on every primary), `UNLINK`ing
    /// them if `unlink`. Returns how many were found.
    pub(super) async fn scan_keys(&self, what: &'static str, pattern: &str, unlink: bool) -> CacheResult<usize> {
        let nodes = match self {
            Connections::Node(_) => vec![None],
            Connections::Cluster(conn) => cluster_primaries(what, conn).await?.into_iter().map(Some).collect(),
        };
        let mut found = 0;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<Vec<u8>>) = match (self, &node) {
                    (Connections::Cluster(conn), Some((host, port))) => {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        let reply = conn.clone().route_command(cmd, route).await.map_err(|e| backend(what, &e))?;
                        redis::from_redis_value(reply).map_err(|e| CacheError::Backend(format!("redis {what}: {e}")))?
                    }
                    _ => {
                        let mut lease = self.get().await?;
                        let result = cmd.query_async(&mut lease.conn).await;
                        self.check(what, result)?
                    }
                };
                found += keys.len();
                if unlink && !keys.is_empty() {
                    // A cluster client splits a many-key UNLINK by slot.
                    let mut lease = self.get().await?;
                    let result = redis::cmd("UNLINK").arg(&keys).query_async::<i64>(&mut lease.conn).await;
                    self.check(what, result)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// Maps the error; on a single node also retires a broken connection. For commands
    /// that must not run twice; the rest go through [`Connections::run`].
    pub(super) fn check<T>(&self, what: &'static str, result: Result<T, RedisError>) -> CacheResult<T> {
        if let (Connections::Node(n), Err(e)) = (self, &result) {
            n.retire_if_broken(e);
        }
        result.map_err(|e| backend(what, &e))
    }

    /// Sends `request`, which must be safe to run twice. On `NOSCRIPT` (a restarted or
    /// failed-over server, `SCRIPT FLUSH`) it loads `scripts` and sends again; on a broken
    /// connection (a restarted server, an idle connection cut) it retires every
    /// connection and sends once more on a fresh one, so a restart costs callers no error
    /// per pooled connection. The one retrying call every cache command goes through.
    /// In a client span (`redis <what>`) when traces are exported.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        request: Request<'_>,
        scripts: &[&LuaScript],
    ) -> CacheResult<T> {
        self.run_untraced(what, request, scripts).instrument(redis_span(what)).await
    }

    async fn run_untraced<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        request: Request<'_>,
        scripts: &[&LuaScript],
    ) -> CacheResult<T> {
        let (mut loads, mut reconnected) = (0, false);
        let mut lease = self.get().await?;
        loop {
            let result = match request {
                Request::Cmd(cmd) => cmd.query_async(&mut lease.conn).await,
                Request::Pipe(pipe) => pipe.query_async(&mut lease.conn).await,
            };
            match result {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) && loads < 3 => {
                    loads += 1;
                    for script in scripts {
                        let loaded = script.load(&mut lease.conn).await;
                        self.check(what, loaded)?;
                    }
                }
                Err(e) if is_broken(&e) && !reconnected => {
                    reconnected = true;
                    let _ = self.check::<()>(what, Err(e));
                    lease = self.get().await?;
                }
                other => return self.check(what, other),
            }
        }
    }
}

/// The client span of a Redis call (none unless traces are exported).
pub(super) fn redis_span(what: &'static str) -> tracing::Span {
    starling_telemetry::span!(
        "redis",
        otel.name = format!("redis {what}"),
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = what,
    )
}

/// What [`Connections::run`] sends.
#[derive(Clone, Copy)]
pub(super) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a redis::Pipeline),
}

/// `prefix` for a `SCAN MATCH` pattern: its glob characters escaped.
pub(super) fn glob_escape(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// Pooled connections to one server, kept checked out, `per_thread` of them for each
/// thread that uses them.
///
/// A `deadpool-redis` pool `PING`s a connection every time it hands it out, which would
/// add a round trip to every call. A multiplexed connection serves many callers at once,
/// so each slot keeps one checked out and hands out clones; a slot goes back to the pool
/// (whose `PING` then weeds out the dead connection) only after a connection error.
///
/// Why per thread: a multiplexed connection's reader and writer run as a task on the
/// runtime that opened it. The HTTP server runs one single-threaded runtime per worker
/// thread, so a connection shared between workers sends every command and every reply
/// across threads: two wake-ups per command, a large share of a page's CPU when a page is
/// a few commands (the distributed read bench went from 3.1k–4.2k to 4.4k–5.1k reads/s
/// with this change, BENCHMARKS.md). A thread opens its own connections, whose tasks then
/// run beside its callers.
pub(super) struct NodeConnections {
    pool: Pool,
    per_thread: usize,
    pub(super) threads: ThreadLocal<ThreadSlots>,
}

pub(super) struct ThreadSlots {
    pub(super) slots: Box<[Arc<Slot>]>,
    next: AtomicUsize,
}

#[derive(Default)]
pub(super) struct Slot {
    pub(super) conn: Mutex<Option<deadpool_redis::Connection>>,
    /// Held while filling an empty slot, so callers meeting it empty wait for one
    /// connection instead of each taking one (they would exhaust the pool).
    filling: tokio::sync::Mutex<()>,
}

impl NodeConnections {
    pub(super) fn new(pool: Pool, per_thread: usize) -> Self {
        Self { pool, per_thread: per_thread.max(1), threads: ThreadLocal::new() }
    }

    pub(super) async fn get(&self) -> CacheResult<Lease> {
        let slot = {
            let mine = self.threads.get_or(|| ThreadSlots {
                slots: (0..self.per_thread).map(|_| Arc::new(Slot::default())).collect(),
                next: AtomicUsize::new(0),
            });
            let i = mine.next.fetch_add(1, Ordering::Relaxed) % mine.slots.len();
            mine.slots[i].clone()
        };
        if let Some(c) = slot.conn.lock().as_ref() {
            return Ok(Lease { conn: Conn::Node(MultiplexedConnection::clone(c)) });
        }
        let _filling = slot.filling.lock().await;
        if let Some(c) = slot.conn.lock().as_ref() {
            return Ok(Lease { conn: Conn::Node(MultiplexedConnection::clone(c)) });
        }
        let fresh = self.pool.get().await.map_err(|e| CacheError::Backend(format!("redis connect: {e}")))?;
        let conn = MultiplexedConnection::clone(&fresh);
        *slot.conn.lock() = Some(fresh);
        drop(_filling);
        Ok(Lease { conn: Conn::Node(conn) })
    }

    /// If `e` says the connection is broken, retires every connection: one broken
    /// connection usually means a restarted server, whose other connections are broken
    /// too but would each fail a caller before being found out.
    fn retire_if_broken(&self, e: &RedisError) {
        if is_broken(e) {
            tracing::warn!(error = %e, "redis connection broken; reconnecting");
            for slot in self.threads.iter().flat_map(|t| t.slots.iter()) {
                drop(slot.conn.lock().take());
            }
        }
    }
}

/// Whether `e` says the connection is unusable (rather than the command refused).
pub(super) fn is_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// One Lua script, called by `EVALSHA`.
pub(super) struct LuaScript {
    pub(super) code: String,
    sha: String,
}

impl LuaScript {
    pub(super) fn new(code: String) -> Self {
        Self { sha: Script::new(&code).get_hash().to_owned(), code }
    }

    /// An `EVALSHA` of this script on `keys`.
    pub(super) fn cmd_keys(&self, keys: &[&str], args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys);
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// An `EVALSHA` of this script, to send on its own.
    pub(super) fn cmd(&self, key: &str, args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(1).arg(key);
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// Loads this script. One command, not part of a pipeline: a cluster client sends a
    /// lone `SCRIPT LOAD` to every node, a pipeline to one node only.
    pub(super) async fn load(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("SCRIPT").arg("LOAD").arg(&self.code).query_async::<Value>(conn).await.map(drop)
    }

    /// Adds an `EVALSHA` of this script to `pipe`.
    pub(super) fn call(&self, pipe: &mut redis::Pipeline, key: &str, args: &[&[u8]]) {
        let cmd = pipe.cmd("EVALSHA").arg(&self.sha).arg(1).arg(key);
        for a in args {
            cmd.arg(*a);
        }
    }
}

/// Cluster: the primaries to `SCAN`, from `CLUSTER NODES` (failed nodes left out).
async fn cluster_primaries(what: &'static str, conn: &ClusterConnection) -> CacheResult<Vec<(String, u16)>> {
    let nodes: String =
        redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn.clone()).await.map_err(|e| backend(what, &e))?;
    let mut primaries = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "noaddr" | "handshake")) {
            continue;
        }
        // ip:port@cport[,hostname]
        let addr = addr.split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else { continue };
        let Ok(port) = port.parse() else { continue };
        primaries.push((host.to_owned(), port));
    }
    if primaries.is_empty() {
        return Err(CacheError::Backend(format!("redis {what}: CLUSTER NODES lists no primary")));
    }
    Ok(primaries)
}
