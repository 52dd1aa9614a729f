//! The Redis timeline cache used in distributed mode.
//!
//! # Layout
//!
//! One Redis **list** per timeline, at `{prefix}{<owner id>}`. The braces are a Cluster
//! hash tag: every key of one timeline (today there is one; `{prefix}{<owner id>}:…` for
//! any future companion) lands in one slot, so the per-timeline scripts work on a cluster.
//!
//! ```text
//! index 0      header: state 'R' (ready) | 'B' (rebuilding), u32 `sorted`, [8-byte floor]
//! index 1..    entries, 16 bytes each: post id ‖ author id, both big-endian
//! ```
//!
//! Entries `1..=sorted` are *normalised*: strictly ascending by post, none below the floor,
//! at most `max_entries` of them. Entries after them are raw pushes in arrival order,
//! possibly out of order, repeated or below the floor.
//!
//! # Why a list
//!
//! - **Memory.** A list of 16-byte strings is a quicklist of listpacks with the default
//!   server settings: 18 bytes an entry plus allocator slack, 19.5 bytes per entry by
//!   `MEMORY USAGE` of a full 800-entry timeline (key and header included; see
//!   `bytes_per_entry_is_compact`), ≤ 22.7 per visible entry with `slack` pushes pending.
//!   A sorted set is that compact only as a listpack, which needs
//!   `zset-max-listpack-entries` ≥ 800, and then every `ZADD` scans the whole listpack
//!   twice: ~40 µs at 800 entries, ~25k inserts/s for the whole server.
//! - **Fan-out without Lua.** [`TimelineCache::insert`] is one pipeline of `RPUSHX`, which
//!   appends only to lists that exist: inactive readers (no key) are skipped inside the
//!   same round trip, and the replies (list lengths, 0 = absent) give the delivered count.
//! - **Exact order without f64 scores.** Nothing is ordered by a score: the scripts compare
//!   post ids as two 32-bit halves (`struct.unpack`), so ids above 2^53 stay exact. (Not
//!   with Lua's `<` on strings: that is `strcoll`, and Redis takes `LC_COLLATE` from its
//!   environment.)
//!
//! Pushes are normalised lazily by the `normalize` Lua function (sort, dedupe, apply the
//! floor, trim and raise the floor: the same result as applying each push on its own,
//! which `behaves_like_the_memory_cache` checks against [`crate::memory::MemoryCache`]).
//! Every script that reads or edits a timeline normalises it first, and `insert` sends a
//! second pipeline normalising the timelines whose `RPUSHX` reply shows more than `slack`
//! pushes pending, so a timeline holds at most `max_entries + slack` entries. When the
//! pushes arrived in order (the usual case) that is one `LRANGE` of them, a check, and a
//! trim: ~25 µs plus ~0.3 µs per push of Redis time, amortised over `slack` pushes.
//!
//! # Lifetimes
//!
//! A ready timeline's key has a TTL of `active_for`, refreshed by every read: an idle
//! reader's timeline expires by itself. A rebuilding one has a TTL of `rebuild_timeout`,
//! so a rebuilder that died between `begin_rebuild` and `finish_rebuild` leaves nothing
//! that blocks the next one (entries pushed meanwhile expire with it; the next rebuild
//! pulls them from storage).
//!
//! # Redis Cluster
//!
//! [`RedisCache::connect_cluster`] talks to a Redis Cluster through `redis`'s cluster
//! client (via `deadpool-redis`'s `cluster` feature), which routes each command to the
//! primary of its key's slot and follows `MOVED`/`ASK` during resharding. The layout needs
//! nothing more: every script takes exactly one key, and every pipeline sent as one unit
//! (`insert_many`, a single-owner call) holds commands on that one key. What differs:
//!
//! - **Work across many timelines** (`insert`, `insert_all`, `remove_post`, the
//!   normalisations after a push) is sent as independent commands, up to `pipeline_max` in
//!   flight, instead of one pipeline: owners hash to slots all over the cluster, so a
//!   pipeline would be refused as cross-slot. The client keeps one multiplexed connection
//!   per node, so the commands in flight to one node still share its socket writes.
//! - **Scripts** are loaded on every node (`SCRIPT LOAD` goes to all of them); a
//!   `NOSCRIPT` from any node (a restarted node, a new one after resharding) loads them
//!   again and resends only the commands that failed.
//! - **`clear` and `len`** `SCAN` every primary listed by `CLUSTER NODES`.
//!
//! The single-node path keeps its pipelines; nothing on it changed for the cluster.
//!
//! Requires Redis ≥ 4 (variadic `RPUSHX`, `UNLINK`); tested on 7.0. Needs no server
//! configuration: lists are compact with the defaults.

#![cfg(feature = "redis")]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::cluster::{ClusterClientBuilder, ClusterConnection};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Cmd, ErrorKind, RedisError, RedisFuture, Script, ServerErrorKind, Value,
};
use deadpool_redis::{Manager, Pool, Runtime};
use futures::{StreamExt as _, TryStreamExt as _};
use parking_lot::Mutex;
use starling_ids::{PostId, UserId};

use crate::{CacheError, CacheResult, Entry, Push, Range, Slice, TimelineCache};

/// The client this cache is built on, for callers (benchmarks, tools) that need a raw
/// connection with the same versions.
pub use deadpool_redis;

#[derive(Clone, Debug)]
pub struct RedisCacheOptions {
    /// Entries kept per timeline; older ones are dropped and the floor raised.
    pub max_entries: usize,
    /// A timeline not read for this long expires (a key TTL, refreshed on read).
    pub active_for: Duration,
    /// A rebuild not finished after this long is abandoned: the rebuilding timeline
    /// expires and the next reader may start a new one.
    pub rebuild_timeout: Duration,
    /// Prepended to every key, so caches (and parallel tests) sharing a server never see
    /// each other's timelines. Must not contain `{` or `}`.
    pub key_prefix: String,
    /// Entries a timeline may hold beyond `max_entries` (pushes not yet normalised) before
    /// `insert` normalises it. Larger: fewer normalisations (each costs ~25 µs of Redis
    /// time plus ~0.3 µs per push), more memory, and slower reads of a timeline with many
    /// pushes pending (a read normalises first).
    pub slack: usize,
    /// Multiplexed connections used round-robin (single node). A cluster connection keeps
    /// one multiplexed connection per node instead.
    pub connections: usize,
    /// Commands per pipeline; a larger fan-out is sent in several pipelines. On a cluster:
    /// independent commands in flight at once.
    pub pipeline_max: usize,
    /// Time allowed for one reply before the connection is considered broken.
    pub response_timeout: Duration,
    /// Pipelines [`TimelineCache::insert_all`] keeps in flight at once, so the time a
    /// reply spends on the wire overlaps with Redis working on the next pipeline.
    pub pipelines_in_flight: usize,
}

impl Default for RedisCacheOptions {
    fn default() -> Self {
        Self {
            max_entries: 800,
            active_for: Duration::from_secs(7 * 24 * 3600),
            rebuild_timeout: Duration::from_secs(60),
            key_prefix: "tl:".to_owned(),
            slack: 192,
            connections: 4,
            pipeline_max: 2048,
            response_timeout: Duration::from_secs(5),
            pipelines_in_flight: 4,
        }
    }
}

/// See the module docs.
pub struct RedisCache {
    conns: Connections,
    scripts: Scripts,
    prefix: String,
    max_entries: usize,
    /// `RPUSHX` replies above this (header included) mean "normalise now".
    compact_above: u64,
    active_ms: u64,
    rebuild_ms: u64,
    pipeline_max: usize,
    in_flight: usize,
}

/// Entries per `RPUSHX` at most (a timeline receiving more in one `insert_all` gets
/// several commands): keeps each command, and the list it grows, small.
const MAX_VALUES_PER_PUSH: usize = 1024;

impl RedisCache {
    /// Connects to one Redis server, checks it answers, and loads the scripts.
    pub async fn connect(url: &str, options: RedisCacheOptions) -> Result<RedisCache, CacheError> {
        check_prefix(&options)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(options.response_timeout));
        let manager = Manager::new_with_config(url, config).map_err(|e| backend("redis url", &e))?;
        let connections = options.connections.max(1);
        let pool = Pool::builder(manager)
            .max_size(connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| CacheError::Backend(format!("redis pool: {e}")))?;
        Self::start(Connections::Node(NodeConnections::new(pool, connections)), options).await
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; the
    /// rest are discovered), and loads the scripts on every node. See the module docs.
    pub async fn connect_cluster(urls: &[String], options: RedisCacheOptions) -> Result<RedisCache, CacheError> {
        check_prefix(&options)?;
        if urls.is_empty() {
            return Err(CacheError::Backend("redis cluster: no node urls".into()));
        }
        let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(options.response_timeout)
            .build()
            .map_err(|e| backend("cluster urls", &e))?;
        // No pool: the cluster connection is multiplexed, cheap to clone, and reconnects to
        // each node by itself; a pool would only add a `PING` per checkout.
        let conn = client.get_async_connection().await.map_err(|e| backend("cluster connect", &e))?;
        Self::start(Connections::Cluster(conn), options).await
    }

    async fn start(conns: Connections, options: RedisCacheOptions) -> Result<RedisCache, CacheError> {
        let max_entries = options.max_entries.max(1);
        let cache = RedisCache {
            conns,
            scripts: Scripts::new(),
            prefix: options.key_prefix,
            max_entries,
            compact_above: (max_entries + options.slack) as u64 + 1,
            active_ms: millis(options.active_for),
            rebuild_ms: millis(options.rebuild_timeout),
            pipeline_max: options.pipeline_max.max(1),
            in_flight: options.pipelines_in_flight.max(1),
        };
        let mut lease = cache.conns.get().await?;
        let loaded = cache.scripts.load_all(&mut lease.conn).await;
        cache.conns.check("load scripts", &lease, loaded)?;
        Ok(cache)
    }

    /// The key of `owner`'s timeline.
    pub fn key(&self, owner: UserId) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 22);
        self.write_key(&mut k, owner);
        k
    }

    fn write_key(&self, out: &mut String, owner: UserId) {
        out.clear();
        let _ = write!(out, "{}{{{}}}", self.prefix, owner.0);
    }

    /// `SCAN` pattern matching exactly this cache's timeline keys.
    fn pattern(&self) -> String {
        let mut p = String::with_capacity(self.prefix.len() + 4);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push_str("{*}");
        p
    }

    /// Runs `pipe`; on `NOSCRIPT` (server restarted, failed over, or `SCRIPT FLUSH`)
    /// loads the scripts and runs it again. Only for pipelines that may safely run twice:
    /// every script here is idempotent, and so are pushes followed by a normalisation.
    async fn query_scripts<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        lease: &mut Lease,
        pipe: &redis::Pipeline,
    ) -> CacheResult<T> {
        let mut attempts = 0;
        loop {
            let result = pipe.query_async(&mut lease.conn).await;
            match result {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) && attempts < 3 => {
                    attempts += 1;
                    let loaded = self.scripts.load_all(&mut lease.conn).await;
                    self.conns.check(what, lease, loaded)?;
                }
                other => return self.conns.check(what, lease, other),
            }
        }
    }

    /// Sends one pipeline of `insert_all`'s `RPUSHX`es. Returns the entries delivered and
    /// the timelines due for normalisation.
    async fn send_pushes(
        &self,
        pipe: redis::Pipeline,
        cmds: Vec<(UserId, usize)>,
    ) -> CacheResult<(usize, Vec<UserId>)> {
        let mut lease = self.conns.get().await?;
        let result = pipe.query_async::<Vec<u64>>(&mut lease.conn).await;
        let lens = self.conns.check("insert", &lease, result)?;
        let (mut delivered, mut full) = (0, Vec::new());
        for ((owner, n), len) in cmds.into_iter().zip(lens) {
            if len > 0 {
                delivered += n;
            }
            if len > self.compact_above {
                full.push(owner);
            }
        }
        Ok((delivered, full))
    }

    async fn normalize_chunk(&self, owners: &[UserId]) -> CacheResult<()> {
        let mut lease = self.conns.get().await?;
        self.normalize_many(&mut lease, owners).await
    }

    /// Normalises the given timelines (those holding more than `max_entries + slack`).
    async fn normalize_many(&self, lease: &mut Lease, owners: &[UserId]) -> CacheResult<()> {
        let max = self.max_entries.to_string();
        for chunk in owners.chunks(self.pipeline_max) {
            let mut pipe = redis::pipe();
            for &o in chunk {
                self.scripts.normalize.call(&mut pipe, &self.key(o), &[max.as_bytes()]);
            }
            self.query_scripts::<redis::Value>("normalize", lease, &pipe).await?;
        }
        Ok(())
    }

    /// Cluster: sends each command on its own (see the module docs), up to `pipeline_max`
    /// in flight, and returns the replies in order. Commands refused with `NOSCRIPT` are
    /// resent once the scripts are loaded on every node; every command sent here is
    /// idempotent, so resending is safe.
    async fn cluster_each<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        conn: &ClusterConnection,
        cmds: &[Cmd],
    ) -> CacheResult<Vec<T>> {
        let mut replies: Vec<Option<T>> = std::iter::repeat_with(|| None).take(cmds.len()).collect();
        let mut todo: Vec<usize> = (0..cmds.len()).collect();
        let mut attempts = 0;
        while !todo.is_empty() {
            let sends: Vec<_> = todo
                .iter()
                .map(|&i| {
                    let mut conn = conn.clone();
                    async move { (i, cmds[i].query_async::<T>(&mut conn).await) }
                })
                .collect();
            let done: Vec<(usize, Result<T, RedisError>)> =
                futures::stream::iter(sends).buffer_unordered(self.pipeline_max).collect().await;
            let mut again = Vec::new();
            for (i, reply) in done {
                match reply {
                    Ok(v) => replies[i] = Some(v),
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) && attempts < 3 => again.push(i),
                    Err(e) => return Err(backend(what, &e)),
                }
            }
            if !again.is_empty() {
                attempts += 1;
                self.scripts.load_all(&mut Conn::Cluster(conn.clone())).await.map_err(|e| backend(what, &e))?;
            }
            todo = again;
        }
        Ok(replies.into_iter().flatten().collect())
    }

    /// Cluster: normalises the given timelines, one script call each.
    async fn cluster_normalize(&self, conn: &ClusterConnection, owners: &[UserId]) -> CacheResult<()> {
        let max = self.max_entries.to_string();
        let cmds: Vec<Cmd> =
            owners.iter().map(|&o| self.scripts.normalize.cmd(&self.key(o), &[max.as_bytes()])).collect();
        self.cluster_each::<Value>("normalize", conn, &cmds).await?;
        Ok(())
    }

    /// Cluster: `RPUSHX`es `cmds` (one per owner and part, as listed in `parts`), then
    /// normalises the timelines past `max_entries + slack`. Returns the entries delivered.
    async fn cluster_pushes(
        &self,
        conn: &ClusterConnection,
        cmds: &[Cmd],
        parts: &[(UserId, usize)],
    ) -> CacheResult<usize> {
        let lens: Vec<u64> = self.cluster_each("insert", conn, cmds).await?;
        let (mut delivered, mut full) = (0, Vec::new());
        for (&(owner, n), len) in parts.iter().zip(lens) {
            if len > 0 {
                delivered += n;
            }
            if len > self.compact_above {
                full.push(owner);
            }
        }
        full.sort_unstable();
        full.dedup();
        self.cluster_normalize(conn, &full).await?;
        Ok(delivered)
    }

    /// Cluster: the primaries to `SCAN`, from `CLUSTER NODES` (failed nodes left out).
    async fn cluster_primaries(&self, what: &'static str, conn: &ClusterConnection) -> CacheResult<Vec<(String, u16)>> {
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

    /// Cluster: one `SCAN` page of this cache's keys on one node.
    async fn cluster_scan(
        &self,
        what: &'static str,
        conn: &ClusterConnection,
        (host, port): &(String, u16),
        cursor: u64,
    ) -> CacheResult<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(self.pattern()).arg("COUNT").arg(1000);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
        let reply = conn.clone().route_command(cmd, route).await.map_err(|e| backend(what, &e))?;
        redis::from_redis_value(reply).map_err(|e| CacheError::Backend(format!("redis {what}: {e}")))
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &LuaScript,
        owner: UserId,
        args: &[&[u8]],
    ) -> CacheResult<T> {
        let mut pipe = redis::pipe();
        script.call(&mut pipe, &self.key(owner), args);
        let mut lease = self.conns.get().await?;
        let (reply,) = self.query_scripts::<(T,)>(what, &mut lease, &pipe).await?;
        Ok(reply)
    }
}

#[async_trait]
impl TimelineCache for RedisCache {
    #[tracing::instrument(level = "debug", skip_all, fields(owners = owners.len()))]
    async fn insert(&self, owners: &[UserId], entry: Entry) -> CacheResult<usize> {
        if owners.is_empty() {
            return Ok(0);
        }
        let member = encode(entry);
        if let Some(conn) = self.conns.cluster() {
            let cmds: Vec<Cmd> = owners.iter().map(|&o| rpushx(&self.key(o), [&member])).collect();
            let parts: Vec<(UserId, usize)> = owners.iter().map(|&o| (o, 1)).collect();
            return self.cluster_pushes(conn, &cmds, &parts).await;
        }
        let mut lease = self.conns.get().await?;
        let mut delivered = 0;
        let mut full = Vec::new();
        let mut key = String::new();
        for chunk in owners.chunks(self.pipeline_max) {
            let mut pipe = redis::pipe();
            for &o in chunk {
                self.write_key(&mut key, o);
                pipe.cmd("RPUSHX").arg(&key).arg(&member[..]);
            }
            let result = pipe.query_async::<Vec<u64>>(&mut lease.conn).await;
            let lens = self.conns.check("insert", &lease, result)?;
            for (&o, len) in chunk.iter().zip(lens) {
                delivered += usize::from(len > 0);
                if len > self.compact_above {
                    full.push(o);
                }
            }
        }
        if !full.is_empty() {
            self.normalize_many(&mut lease, &full).await?;
        }
        Ok(delivered)
    }

    /// One pipeline round trip per `pipeline_max` timelines, several in flight: every
    /// timeline gets one `RPUSHX` carrying all its entries (owners sorted, so the pushes
    /// to one timeline are adjacent), then the timelines past `max_entries + slack` are
    /// normalised as in [`RedisCache::insert`].
    #[tracing::instrument(level = "debug", skip_all, fields(pushes = pushes.len()))]
    async fn insert_all(&self, pushes: &[Push<'_>]) -> CacheResult<usize> {
        let total: usize = pushes.iter().map(|p| p.owners.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let members: Vec<[u8; 16]> = pushes.iter().map(|p| encode(p.entry)).collect();
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total);
        for (i, p) in pushes.iter().enumerate() {
            pairs.extend(p.owners.iter().map(|o| (o.0, i as u32)));
        }
        pairs.sort_unstable();

        if let Some(conn) = self.conns.cluster() {
            let (mut cmds, mut parts) = (Vec::new(), Vec::new());
            for group in pairs.chunk_by(|a, b| a.0 == b.0) {
                let owner = UserId(group[0].0);
                let key = self.key(owner);
                for part in group.chunks(MAX_VALUES_PER_PUSH) {
                    cmds.push(rpushx(&key, part.iter().map(|&(_, i)| &members[i as usize])));
                    parts.push((owner, part.len()));
                }
            }
            return self.cluster_pushes(conn, &cmds, &parts).await;
        }

        // (pipeline, per command: owner and how many entries it carries)
        let mut batches: Vec<(redis::Pipeline, Vec<(UserId, usize)>)> = Vec::new();
        let (mut pipe, mut cmds, mut values) = (redis::pipe(), Vec::new(), 0usize);
        let mut key = String::new();
        for group in pairs.chunk_by(|a, b| a.0 == b.0) {
            let owner = UserId(group[0].0);
            self.write_key(&mut key, owner);
            for part in group.chunks(MAX_VALUES_PER_PUSH) {
                let cmd = pipe.cmd("RPUSHX").arg(&key);
                for &(_, i) in part {
                    cmd.arg(&members[i as usize][..]);
                }
                cmds.push((owner, part.len()));
                values += part.len();
            }
            if cmds.len() >= self.pipeline_max || values >= self.pipeline_max * 4 {
                batches.push((std::mem::replace(&mut pipe, redis::pipe()), std::mem::take(&mut cmds)));
                values = 0;
            }
        }
        if !cmds.is_empty() {
            batches.push((pipe, cmds));
        }

        let sends: Vec<_> = batches.into_iter().map(|(pipe, cmds)| self.send_pushes(pipe, cmds)).collect();
        let results: Vec<(usize, Vec<UserId>)> =
            futures::stream::iter(sends).buffer_unordered(self.in_flight).try_collect().await?;
        let delivered = results.iter().map(|(d, _)| d).sum();
        let mut full: Vec<UserId> = results.into_iter().flat_map(|(_, f)| f).collect();
        if !full.is_empty() {
            // One owner split over several commands may be listed more than once.
            full.sort_unstable();
            full.dedup();
            let normalizations: Vec<_> = full.chunks(self.pipeline_max).map(|c| self.normalize_chunk(c)).collect();
            futures::stream::iter(normalizations).buffer_unordered(self.in_flight).try_collect::<Vec<()>>().await?;
        }
        Ok(delivered)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owner = owner.0, entries = entries.len()))]
    async fn insert_many(&self, owner: UserId, entries: &[Entry]) -> CacheResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.key(owner);
        let mut pipe = redis::pipe();
        for chunk in entries.chunks(1024) {
            let cmd = pipe.cmd("RPUSHX").arg(&key);
            for &e in chunk {
                cmd.arg(&encode(e)[..]);
            }
            cmd.ignore();
        }
        let max = self.max_entries.to_string();
        self.scripts.normalize.call(&mut pipe, &key, &[max.as_bytes()]);
        let mut lease = self.conns.get().await?;
        self.query_scripts::<redis::Value>("insert_many", &mut lease, &pipe).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owners = owners.len(), post = post.0))]
    async fn remove_post(&self, owners: &[UserId], post: PostId) -> CacheResult<()> {
        if owners.is_empty() {
            return Ok(());
        }
        let max = self.max_entries.to_string();
        let post = post.to_be_bytes();
        if let Some(conn) = self.conns.cluster() {
            let cmds: Vec<Cmd> =
                owners.iter().map(|&o| self.scripts.remove_post.cmd(&self.key(o), &[max.as_bytes(), &post])).collect();
            self.cluster_each::<Value>("remove_post", conn, &cmds).await?;
            return Ok(());
        }
        let mut lease = self.conns.get().await?;
        for chunk in owners.chunks(self.pipeline_max) {
            let mut pipe = redis::pipe();
            for &o in chunk {
                self.scripts.remove_post.call(&mut pipe, &self.key(o), &[max.as_bytes(), &post]);
            }
            self.query_scripts::<redis::Value>("remove_post", &mut lease, &pipe).await?;
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owner = owner.0, author = author.0))]
    async fn remove_author(&self, owner: UserId, author: UserId) -> CacheResult<()> {
        let max = self.max_entries.to_string();
        self.eval::<i64>("remove_author", &self.scripts.remove_author, owner, &[max.as_bytes(), &author.to_be_bytes()])
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owner = owner.0))]
    async fn read(&self, owner: UserId, range: Range) -> CacheResult<Option<Slice>> {
        let max = self.max_entries.to_string();
        let active = self.active_ms.to_string();
        let limit = range.limit.to_string();
        let after = range.after.map(|p| p.to_be_bytes());
        let before = range.before.map(|p| p.to_be_bytes());
        let args: [&[u8]; 6] = [
            max.as_bytes(),
            active.as_bytes(),
            limit.as_bytes(),
            if range.oldest_first { b"1" } else { b"0" },
            after.as_ref().map_or(&[], |a| &a[..]),
            before.as_ref().map_or(&[], |b| &b[..]),
        ];
        let reply: Option<Vec<Vec<u8>>> = self.eval("read", &self.scripts.read, owner, &args).await?;
        let Some(reply) = reply else { return Ok(None) };
        let mut items = reply.into_iter();
        let floor = match items.next() {
            Some(f) if f.is_empty() => None,
            Some(f) => Some(PostId::from_be_slice(&f).ok_or_else(|| corrupt("floor"))?),
            None => return Err(corrupt("empty read reply")),
        };
        let mut entries = items.map(|e| decode(&e)).collect::<CacheResult<Vec<Entry>>>()?;
        if !range.oldest_first {
            entries.reverse();
        }
        Ok(Some(Slice { entries, floor }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owner = owner.0))]
    async fn begin_rebuild(&self, owner: UserId) -> CacheResult<bool> {
        let max = self.max_entries.to_string();
        let ttl = self.rebuild_ms.to_string();
        let began: i64 =
            self.eval("begin_rebuild", &self.scripts.begin_rebuild, owner, &[max.as_bytes(), ttl.as_bytes()]).await?;
        Ok(began == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owner = owner.0, entries = entries.len(), complete))]
    async fn finish_rebuild(&self, owner: UserId, entries: &[Entry], complete: bool) -> CacheResult<()> {
        let mut pulled: Vec<Entry> = entries.to_vec();
        pulled.sort_unstable_by_key(|e| e.post);
        pulled.dedup_by_key(|e| e.post);
        let pulled_from = pulled.first().map(|e| e.post.to_be_bytes());
        let encoded: Vec<[u8; 16]> = pulled.iter().map(|&e| encode(e)).collect();
        let max = self.max_entries.to_string();
        let active = self.active_ms.to_string();
        let mut args: Vec<&[u8]> = Vec::with_capacity(4 + encoded.len());
        args.extend([
            max.as_bytes(),
            active.as_bytes(),
            if complete { b"1" } else { b"0" },
            pulled_from.as_ref().map_or(&[], |p| &p[..]),
        ]);
        args.extend(encoded.iter().map(|e| &e[..]));
        self.eval::<i64>("finish_rebuild", &self.scripts.finish_rebuild, owner, &args).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(owner = owner.0))]
    async fn evict(&self, owner: UserId) -> CacheResult<()> {
        let mut lease = self.conns.get().await?;
        let result = redis::cmd("UNLINK").arg(self.key(owner)).query_async::<i64>(&mut lease.conn).await;
        self.conns.check("evict", &lease, result)?;
        Ok(())
    }

    /// `SCAN`s this cache's keys and `UNLINK`s them; other keys on the server are untouched.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn clear(&self) -> CacheResult<()> {
        if let Some(conn) = self.conns.cluster() {
            for node in self.cluster_primaries("clear", conn).await? {
                let mut cursor = 0;
                loop {
                    let (next, keys) = self.cluster_scan("clear", conn, &node, cursor).await?;
                    if !keys.is_empty() {
                        // The client splits a many-key UNLINK by slot.
                        let result = redis::cmd("UNLINK").arg(&keys).query_async::<i64>(&mut conn.clone()).await;
                        result.map_err(|e| backend("clear", &e))?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            return Ok(());
        }
        let mut lease = self.conns.get().await?;
        let pattern = self.pattern();
        let mut cursor = 0u64;
        loop {
            let result = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async::<(u64, Vec<Vec<u8>>)>(&mut lease.conn)
                .await;
            let (next, keys) = self.conns.check("clear", &lease, result)?;
            if !keys.is_empty() {
                let result = redis::cmd("UNLINK").arg(&keys).query_async::<i64>(&mut lease.conn).await;
                self.conns.check("clear", &lease, result)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Counts this cache's keys with `SCAN` (expired ones excluded): O(keys on the server).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn len(&self) -> CacheResult<usize> {
        if let Some(conn) = self.conns.cluster() {
            let mut n = 0;
            for node in self.cluster_primaries("len", conn).await? {
                let mut cursor = 0;
                loop {
                    let (next, keys) = self.cluster_scan("len", conn, &node, cursor).await?;
                    n += keys.len();
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            return Ok(n);
        }
        let mut lease = self.conns.get().await?;
        let pattern = self.pattern();
        let (mut cursor, mut n) = (0u64, 0usize);
        loop {
            let result = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async::<(u64, Vec<redis::Value>)>(&mut lease.conn)
                .await;
            let (next, keys) = self.conns.check("len", &lease, result)?;
            n += keys.len();
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }
}

/// How the cache reaches Redis.
enum Connections {
    Node(NodeConnections),
    /// Routes every command by its key's slot; reconnects to each node by itself.
    Cluster(ClusterConnection),
}

/// A connection handed out for one call.
struct Lease {
    conn: Conn,
    /// The [`NodeConnections`] slot it came from (unused on a cluster).
    slot: usize,
}

/// Either kind of connection, so single-key calls (scripts, one-owner pipelines) run
/// unchanged on both.
enum Conn {
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
    async fn get(&self) -> CacheResult<Lease> {
        match self {
            Connections::Node(n) => n.get().await,
            Connections::Cluster(c) => Ok(Lease { conn: Conn::Cluster(c.clone()), slot: 0 }),
        }
    }

    fn cluster(&self) -> Option<&ClusterConnection> {
        match self {
            Connections::Node(_) => None,
            Connections::Cluster(c) => Some(c),
        }
    }

    /// Maps the error; on a single node also retires a broken connection.
    fn check<T>(&self, what: &'static str, lease: &Lease, result: Result<T, RedisError>) -> CacheResult<T> {
        match self {
            Connections::Node(n) => n.check(what, lease, result),
            Connections::Cluster(_) => result.map_err(|e| backend(what, &e)),
        }
    }
}

/// Pooled connections to one server, kept checked out.
///
/// A `deadpool-redis` pool `PING`s a connection every time it hands it out, which would
/// add a round trip to every call. A multiplexed connection serves many callers at once,
/// so each slot keeps one checked out and hands out clones; a slot goes back to the pool
/// (whose `PING` then weeds out the dead connection) only after a connection error.
struct NodeConnections {
    pool: Pool,
    slots: Box<[Slot]>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Slot {
    conn: Mutex<Option<deadpool_redis::Connection>>,
    /// Held while filling an empty slot, so callers meeting it empty wait for one
    /// connection instead of each taking one (they would exhaust the pool).
    filling: tokio::sync::Mutex<()>,
}

impl NodeConnections {
    fn new(pool: Pool, slots: usize) -> Self {
        Self { pool, slots: (0..slots).map(|_| Slot::default()).collect(), next: AtomicUsize::new(0) }
    }

    async fn get(&self) -> CacheResult<Lease> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if let Some(c) = slot.conn.lock().as_ref() {
            return Ok(Lease { conn: Conn::Node(MultiplexedConnection::clone(c)), slot: i });
        }
        let _filling = slot.filling.lock().await;
        if let Some(c) = slot.conn.lock().as_ref() {
            return Ok(Lease { conn: Conn::Node(MultiplexedConnection::clone(c)), slot: i });
        }
        let fresh = self.pool.get().await.map_err(|e| CacheError::Backend(format!("redis connect: {e}")))?;
        let conn = MultiplexedConnection::clone(&fresh);
        *slot.conn.lock() = Some(fresh);
        Ok(Lease { conn: Conn::Node(conn), slot: i })
    }

    /// Maps the error, and retires the lease's connection if the error says it is broken.
    fn check<T>(&self, what: &'static str, lease: &Lease, result: Result<T, RedisError>) -> CacheResult<T> {
        result.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
                tracing::warn!(slot = lease.slot, error = %e, "dropping a broken redis connection");
                drop(self.slots[lease.slot].conn.lock().take());
            }
            backend(what, &e)
        })
    }
}

/// One Lua script: the shared prelude plus a body, called by `EVALSHA`.
struct LuaScript {
    code: String,
    sha: String,
}

impl LuaScript {
    fn new(body: &str) -> Self {
        let code = format!("{PRELUDE}\n{body}");
        Self { sha: Script::new(&code).get_hash().to_owned(), code }
    }

    /// An `EVALSHA` of this script, to send on its own.
    fn cmd(&self, key: &str, args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(1).arg(key);
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// Adds an `EVALSHA` of this script to `pipe`.
    fn call(&self, pipe: &mut redis::Pipeline, key: &str, args: &[&[u8]]) {
        let cmd = pipe.cmd("EVALSHA").arg(&self.sha).arg(1).arg(key);
        for a in args {
            cmd.arg(*a);
        }
    }
}

struct Scripts {
    normalize: LuaScript,
    read: LuaScript,
    begin_rebuild: LuaScript,
    finish_rebuild: LuaScript,
    remove_post: LuaScript,
    remove_author: LuaScript,
}

impl Scripts {
    fn new() -> Self {
        Self {
            normalize: LuaScript::new(NORMALIZE),
            read: LuaScript::new(READ),
            begin_rebuild: LuaScript::new(BEGIN_REBUILD),
            finish_rebuild: LuaScript::new(FINISH_REBUILD),
            remove_post: LuaScript::new(REMOVE_POST),
            remove_author: LuaScript::new(REMOVE_AUTHOR),
        }
    }

    /// Loads every script. One command each rather than a pipeline: a cluster client sends
    /// a lone `SCRIPT LOAD` to every node, a pipeline to one node only.
    async fn load_all(&self, conn: &mut Conn) -> Result<(), RedisError> {
        for s in [
            &self.normalize,
            &self.read,
            &self.begin_rebuild,
            &self.finish_rebuild,
            &self.remove_post,
            &self.remove_author,
        ] {
            redis::cmd("SCRIPT").arg("LOAD").arg(&s.code).query_async::<Value>(conn).await?;
        }
        Ok(())
    }
}

/// Helpers shared by every script. `KEYS[1]` is the timeline, `ARGV[1]` is `max_entries`.
///
/// Post ids are compared as two 32-bit halves (`struct.unpack`): Lua's `<` on strings is
/// `strcoll`, and Redis sets `LC_COLLATE` from its environment.
const PRELUDE: &str = r#"
local tl = KEYS[1]
local max = tonumber(ARGV[1])

-- post(a) < post(b): the first 8 bytes of each, big-endian.
local function less(a, b)
  local a1, a2 = struct.unpack('>I4I4', a)
  local b1, b2 = struct.unpack('>I4I4', b)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end

local function header(state, sorted, floor)
  return struct.pack('>c1I4', state, sorted) .. (floor or '')
end

-- state, sorted, floor; nil if there is no timeline.
local function load()
  local h = redis.call('LINDEX', tl, 0)
  if not h then return nil end
  local state, sorted = struct.unpack('>c1I4', h)
  local floor = nil
  if #h >= 13 then floor = string.sub(h, 6, 13) end
  return state, sorted, floor
end

local function push(key, items, from, to)
  for i = from, to, 1000 do
    redis.call('RPUSH', key, unpack(items, i, math.min(i + 999, to)))
  end
end

-- First index in [lo, hi] whose element is not `before(element)`, hi + 1 if none.
local function search(lo, hi, before)
  hi = hi + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if before(redis.call('LINDEX', tl, mid)) then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- Sorts parallel arrays (post high half, low half, entry) by post. Insertion sort:
-- pushes arrive nearly in order, so that is about one comparison each; a shuffled batch
-- (a backfill) falls back to quicksort.
local function sort(H, L, E)
  local n, shifts = #H, 0
  for i = 2, n do
    local h, l, e = H[i], L[i], E[i]
    local j = i - 1
    while j >= 1 and (h < H[j] or (h == H[j] and l < L[j])) do
      H[j + 1], L[j + 1], E[j + 1] = H[j], L[j], E[j]
      j = j - 1
    end
    H[j + 1], L[j + 1], E[j + 1] = h, l, e
    shifts = shifts + (i - 1 - j)
    if shifts > 8 * n then
      local recs = {}
      for k = 1, n do recs[k] = {H[k], L[k], E[k]} end
      table.sort(recs, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
      for k = 1, n do H[k], L[k], E[k] = recs[k][1], recs[k][2], recs[k][3] end
      return
    end
  end
end

-- Folds the raw pushes into the sorted run, drops what is below the floor, trims to
-- `max` (raising the floor) and writes the header. Returns sorted, floor.
local function normalize(state, sorted, floor)
  -- The last sorted entry (if any) and the raw pushes after it, in one call.
  local raw = redis.call('LRANGE', tl, math.max(sorted, 1), -1)
  local ph, pl
  if sorted > 0 then
    ph, pl = struct.unpack('>I4I4', table.remove(raw, 1))
  elseif floor then
    ph, pl = struct.unpack('>I4I4', floor)
    pl = pl - 1
  end
  local len = sorted + #raw
  if sorted == len and sorted <= max then return sorted, floor end
  if sorted < len then
    -- Find the first push that does not continue the ascending run (with no run, the
    -- first one below the floor). Usually there is none: then the pushes are counted in.
    local bad = nil
    for i = 1, #raw do
      local h, l = struct.unpack('>I4I4', raw[i])
      if ph and (h < ph or (h == ph and l <= pl)) then
        bad = i
        break
      end
      ph, pl = h, l
    end
    if bad then
      -- Positions 1 .. top ascend (the run, then the pushes before `bad`). Everything
      -- from the first of them not older than the oldest later push is re-sorted.
      local top = sorted + bad - 1
      local H, L, E = {}, {}, {}
      local mh, ml
      for i = bad, #raw do
        local h, l = struct.unpack('>I4I4', raw[i])
        H[#H + 1], L[#L + 1], E[#E + 1] = h, l, raw[i]
        if not mh or h < mh or (h == mh and l < ml) then mh, ml = h, l end
      end
      local function older(p)
        local e
        if p > sorted then e = raw[p - sorted] else e = redis.call('LINDEX', tl, p) end
        local h, l = struct.unpack('>I4I4', e)
        return h < mh or (h == mh and l < ml)
      end
      -- Gallop back from `top` (not older: the push at `bad` is at most its entry), then
      -- bisect; the answer is usually a few pushes back.
      local from = 1
      if top > 0 then
        local lo, hi, step = 0, top, 1
        while hi - step >= 1 do
          if older(hi - step) then
            lo = hi - step
            break
          end
          hi = hi - step
          step = step * 2
        end
        while hi - lo > 1 do
          local mid = math.floor((lo + hi) / 2)
          if older(mid) then lo = mid else hi = mid end
        end
        from = hi
      end
      local RH, RL, RE = {}, {}, {}
      local function take(e)
        local h, l = struct.unpack('>I4I4', e)
        RH[#RH + 1], RL[#RL + 1], RE[#RE + 1] = h, l, e
      end
      if from <= sorted then
        local run = redis.call('LRANGE', tl, from, sorted)
        for i = 1, #run do take(run[i]) end
      end
      for i = math.max(1, from - sorted), bad - 1 do take(raw[i]) end
      for i = 1, #H do
        RH[#RH + 1], RL[#RL + 1], RE[#RE + 1] = H[i], L[i], E[i]
      end
      sort(RH, RL, RE)
      -- Drop repeats and anything below the floor.
      local fh, fl
      if floor then fh, fl = struct.unpack('>I4I4', floor) end
      local out, qh, ql = {}, nil, nil
      for i = 1, #RH do
        local h, l = RH[i], RL[i]
        if not (qh == h and ql == l) and not (fh and (h < fh or (h == fh and l < fl))) then
          out[#out + 1] = RE[i]
          qh, ql = h, l
        end
      end
      redis.call('LTRIM', tl, 0, from - 1)
      push(tl, out, 1, #out)
      len = from - 1 + #out
    end
    sorted = len
  end
  if sorted > max then
    local drop = sorted - max
    floor = string.sub(redis.call('LINDEX', tl, drop + 1), 1, 8)
    -- Keeps the last dropped entry at index 0, where the header goes next.
    redis.call('LTRIM', tl, drop, -1)
    sorted = max
  end
  redis.call('LSET', tl, 0, header(state, sorted, floor))
  return sorted, floor
end
"#;

/// Normalises a timeline if it exists.
const NORMALIZE: &str = r#"
local state, sorted, floor = load()
if not state then return 0 end
normalize(state, sorted, floor)
return 1
"#;

/// ARGV: max, active_ms, limit, oldest_first ('1'/'0'), after (8 bytes or ''),
/// before (8 bytes or ''). Returns nil (absent or rebuilding) or {floor or '', entries
/// ascending...}. Refreshes the TTL.
const READ: &str = r#"
local state, sorted, floor = load()
if state ~= 'R' then return false end
sorted, floor = normalize(state, sorted, floor)
redis.call('PEXPIRE', tl, ARGV[2])
local limit, oldest_first, after, before = tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5], ARGV[6]
local lo, hi = 1, sorted
if after ~= '' then lo = search(1, sorted, function(e) return not less(after, e) end) end
if before ~= '' then hi = search(lo, sorted, function(e) return less(e, before) end) - 1 end
local out = {floor or ''}
if limit > 0 and lo <= hi then
  local from, to
  if oldest_first then
    from, to = lo, math.min(hi, lo + limit - 1)
  else
    from, to = math.max(lo, hi - limit + 1), hi
  end
  local got = redis.call('LRANGE', tl, from, to)
  for i = 1, #got do out[i + 1] = got[i] end
end
return out
"#;

/// ARGV: max, rebuild_ms. 1 if a rebuilding timeline was created, 0 if one exists.
const BEGIN_REBUILD: &str = r#"
if redis.call('EXISTS', tl) == 1 then return 0 end
redis.call('RPUSH', tl, header('B', 0, nil))
redis.call('PEXPIRE', tl, ARGV[2])
return 1
"#;

/// ARGV: max, active_ms, complete ('1'/'0'), oldest pulled post (8 bytes or ''), pulled
/// entries (ascending, unique). The floor rules are those of `MemoryCache::finish_rebuild_now`.
const FINISH_REBUILD: &str = r#"
local state, sorted, floor = load()
if not state then return 0 end
sorted, floor = normalize(state, sorted, floor)
local complete, pulled_from = ARGV[3] == '1', ARGV[4]
if pulled_from == '' then pulled_from = nil end
local old = floor
local function highest(a, b)
  if not a then return b end
  if not b or less(b, a) then return a end
  return b
end
if state ~= 'R' then
  if complete then
    -- Pushes landed since the rebuild began, so the union covers what the pull covers.
  elseif pulled_from then
    floor = highest(floor, pulled_from)
  else
    -- An incomplete pull that found nothing proves nothing: trust only the pushes.
    local front = nil
    if sorted > 0 then front = string.sub(redis.call('LINDEX', tl, 1), 1, 8) end
    floor = highest(floor, front)
  end
elseif complete then
  floor = nil
elseif pulled_from and floor and less(pulled_from, floor) then
  floor = pulled_from
end
-- A changed floor may leave sorted entries below it: have them all checked again.
if floor ~= old then sorted = 0 end
push(tl, ARGV, 5, #ARGV)
redis.call('LSET', tl, 0, header('R', sorted, floor))
normalize('R', sorted, floor)
redis.call('PEXPIRE', tl, ARGV[2])
return 1
"#;

/// ARGV: max, post (8 bytes). Returns 1 if removed.
const REMOVE_POST: &str = r#"
local state, sorted, floor = load()
if not state then return 0 end
sorted, floor = normalize(state, sorted, floor)
local post = ARGV[2]
local at = search(1, sorted, function(e) return less(e, post) end)
if at > sorted then return 0 end
local e = redis.call('LINDEX', tl, at)
if string.sub(e, 1, 8) ~= post then return 0 end
redis.call('LREM', tl, 1, e)
redis.call('LSET', tl, 0, header(state, sorted - 1, floor))
return 1
"#;

/// ARGV: max, author (8 bytes). Returns how many entries were removed.
const REMOVE_AUTHOR: &str = r#"
local state, sorted, floor = load()
if not state then return 0 end
sorted, floor = normalize(state, sorted, floor)
local author = ARGV[2]
local all = redis.call('LRANGE', tl, 1, -1)
local keep = {}
for i = 1, #all do
  if string.sub(all[i], 9, 16) ~= author then keep[#keep + 1] = all[i] end
end
if #keep == #all then return 0 end
redis.call('LTRIM', tl, 0, 0)
push(tl, keep, 1, #keep)
redis.call('LSET', tl, 0, header(state, #keep, floor))
return #all - #keep
"#;

fn encode(e: Entry) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&e.post.to_be_bytes());
    b[8..].copy_from_slice(&e.author.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> CacheResult<Entry> {
    match (b.len(), PostId::from_be_slice(b), b.get(8..).and_then(UserId::from_be_slice)) {
        (16, Some(post), Some(author)) => Ok(Entry { post, author }),
        _ => Err(corrupt("entry")),
    }
}

fn rpushx<'a>(key: &str, members: impl IntoIterator<Item = &'a [u8; 16]>) -> Cmd {
    let mut cmd = redis::cmd("RPUSHX");
    cmd.arg(key);
    for m in members {
        cmd.arg(&m[..]);
    }
    cmd
}

fn check_prefix(options: &RedisCacheOptions) -> CacheResult<()> {
    if options.key_prefix.contains(['{', '}']) {
        return Err(CacheError::Backend(format!("key prefix {:?} must not contain braces", options.key_prefix)));
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn backend(what: &str, e: &RedisError) -> CacheError {
    CacheError::Backend(format!("redis {what}: {e}"))
}

fn corrupt(what: &str) -> CacheError {
    CacheError::Backend(format!("redis: malformed {what} in a timeline"))
}

#[cfg(test)]
mod tests {
    //! These need a server: `REDIS_URL=redis://127.0.0.1:6390 cargo test -p starling-timeline-cache`.
    //! Without `REDIS_URL` each test says so and passes. Every test uses its own key prefix.

    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::conformance;
    use crate::memory::{MemoryCache, MemoryCacheOptions};

    /// Where a test runs: one server, or a cluster through its node urls.
    #[derive(Clone, Debug)]
    enum Target {
        Node(String),
        Cluster(Vec<String>),
    }

    fn redis_url() -> Option<Target> {
        let url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            println!("skipped: REDIS_URL not set");
        }
        url.map(Target::Node)
    }

    fn cluster_urls() -> Option<Target> {
        let urls = std::env::var("REDIS_CLUSTER_URLS").ok().filter(|u| !u.is_empty());
        if urls.is_none() {
            println!("skipped: REDIS_CLUSTER_URLS not set (comma-separated node urls of a Redis Cluster)");
        }
        urls.map(|u| Target::Cluster(u.split(',').map(|n| n.trim().to_owned()).collect()))
    }

    async fn connect(target: &Target, options: RedisCacheOptions) -> CacheResult<RedisCache> {
        match target {
            Target::Node(url) => RedisCache::connect(url, options).await,
            Target::Cluster(urls) => RedisCache::connect_cluster(urls, options).await,
        }
    }

    /// A fresh random number per call, different across processes and runs.
    fn random() -> u64 {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u64);
        for _ in 0..3 {
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        }
        x
    }

    async fn cache(target: &Target, test: &str, options: RedisCacheOptions) -> RedisCache {
        let key_prefix = format!("test:{test}:{:x}:", random());
        connect(target, RedisCacheOptions { key_prefix, ..options }).await.expect("connect")
    }

    fn opts(max_entries: usize, slack: usize) -> RedisCacheOptions {
        RedisCacheOptions { max_entries, slack, ..Default::default() }
    }

    fn e(post: u64, author: u64) -> Entry {
        Entry { post: PostId(post), author: UserId(author) }
    }

    fn newest(limit: usize) -> Range {
        Range { before: None, after: None, limit, oldest_first: false }
    }

    async fn raw(c: &RedisCache, args: &[&str]) -> redis::Value {
        let mut lease = c.conns.get().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut lease.conn).await.unwrap()
    }

    async fn int(c: &RedisCache, args: &[&str]) -> i64 {
        match raw(c, args).await {
            redis::Value::Int(n) => n,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    async fn conformance_suite(url: Target) {
        // A small slack, so the suite also runs through insert-time normalisation.
        let c = cache(&url, "conformance", opts(40, 3)).await;
        conformance::all(&c, 1_000, 40).await;
        c.clear().await.unwrap();
    }

    async fn conformance_suite_default_cap(url: Target) {
        let c = cache(&url, "conformance800", RedisCacheOptions::default()).await;
        conformance::all(&c, 5_000_000, 800).await;
        c.clear().await.unwrap();
    }

    async fn conformance_clear_and_len(url: Target) {
        let c = cache(&url, "clear", opts(10, 2)).await;
        let neighbour = cache(&url, "clear-neighbour", opts(10, 2)).await;
        assert!(neighbour.begin_rebuild(UserId(7)).await.unwrap());
        conformance::clear_and_len(&c, 7).await;
        assert_eq!(neighbour.len().await.unwrap(), 1, "another prefix's timelines survive clear");
        neighbour.clear().await.unwrap();
    }

    async fn idle_timelines_expire(url: Target) {
        let c = cache(&url, "idle", RedisCacheOptions { active_for: Duration::from_secs(1), ..opts(10, 2) }).await;
        let (a, b) = (UserId(1), UserId(2));
        for o in [a, b] {
            assert!(c.begin_rebuild(o).await.unwrap());
            c.finish_rebuild(o, &[e(10, 9)], true).await.unwrap();
        }
        let ttl = |o: UserId| {
            let key = c.key(o);
            let c = &c;
            async move { int(c, &["PTTL", &key]).await }
        };
        assert!((1..=1_000).contains(&ttl(a).await));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(c.read(a, newest(10)).await.unwrap().is_some());
        assert_eq!(c.insert(&[b], e(11, 9)).await.unwrap(), 1);
        assert!(ttl(a).await > ttl(b).await + 200, "the read refreshed a's TTL; the insert left b's alone");
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(c.len().await.unwrap(), 0, "both idle for longer than active_for");
        assert_eq!(c.insert(&[a, b], e(12, 9)).await.unwrap(), 0, "inserts skip expired timelines");
        assert!(c.read(a, newest(10)).await.unwrap().is_none());
        assert!(c.begin_rebuild(a).await.unwrap(), "a rebuild starts afresh");
        c.finish_rebuild(a, &[], true).await.unwrap();
        assert_eq!(c.read(a, newest(10)).await.unwrap().unwrap().entries, Vec::new());
        c.clear().await.unwrap();
    }

    async fn rebuild_marker_expires(url: Target) {
        let c =
            cache(&url, "rebuild", RedisCacheOptions { rebuild_timeout: Duration::from_secs(1), ..opts(10, 2) }).await;
        let o = UserId(3);
        assert!(c.begin_rebuild(o).await.unwrap());
        assert_eq!(c.insert(&[o], e(50, 1)).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!c.begin_rebuild(o).await.unwrap(), "still within the rebuild timeout");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(c.begin_rebuild(o).await.unwrap(), "the stalled rebuild expired");
        // The first rebuilder wakes up late: its timeline is gone, so it changes nothing.
        c.finish_rebuild(o, &[e(40, 1)], false).await.unwrap();
        let s = c.read(o, newest(10)).await.unwrap().unwrap();
        assert_eq!((s.entries, s.floor), (vec![e(40, 1)], Some(PostId(40))));
        // A finished timeline lives by `active_for`, not by the rebuild timeout.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert!(c.read(o, newest(10)).await.unwrap().is_some());
        c.clear().await.unwrap();
    }

    /// The memory target: ≤ 24 bytes per cached entry, by `MEMORY USAGE` of a full
    /// 800-entry timeline (key, header and allocator overhead included).
    async fn bytes_per_entry_is_compact(url: Target) {
        let options = RedisCacheOptions::default();
        let (max, slack) = (options.max_entries, options.slack);
        let c = cache(&url, "memory", options).await;
        let o = UserId(1_234_567_890_123);
        assert!(c.begin_rebuild(o).await.unwrap());
        let base = 0x0123_4567_89AB_C000u64;
        let pulled: Vec<Entry> = (0..max as u64).map(|i| e(base + 7 * i, 0x0100_0000_0000_0000 + i % 50)).collect();
        c.finish_rebuild(o, &pulled, true).await.unwrap();
        let key = c.key(o);
        let full = int(&c, &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await as f64 / max as f64;
        // Just below the normalisation threshold: `slack` raw pushes on top of a full timeline.
        let extra: Vec<UserId> = vec![o];
        for i in 0..slack as u64 {
            c.insert(&extra, e(base + 7 * max as u64 + i, 1)).await.unwrap();
        }
        assert_eq!(int(&c, &["LLEN", &key]).await as usize, 1 + max + slack);
        let worst = int(&c, &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await as f64 / max as f64;
        println!(
            "bytes per entry: {full:.2} for a full {max}-entry timeline; \
             {worst:.2} per visible entry with {slack} raw pushes pending"
        );
        assert!(full <= 24.0, "{full} bytes per entry");
        assert!(worst <= 24.0, "{worst} bytes per visible entry");
        c.clear().await.unwrap();
    }

    /// Random operations on a Redis and a memory cache must give identical results: the
    /// lazy normalisation must be indistinguishable from applying each push at once.
    async fn behaves_like_the_memory_cache(url: Target) {
        // More with e.g. `MODEL_SEEDS=200`.
        let seeds: u64 = std::env::var("MODEL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
        for seed in 1..=seeds {
            let (max, slack) = (6 + seed as usize % 3, seed as usize % 4);
            let r = cache(&url, "model", opts(max, slack)).await;
            let m = MemoryCache::new(MemoryCacheOptions { max_entries: max, ..Default::default() });
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            const BASE: u64 = 0x0123_4567_89AB_C000;
            for step in 0..1_500 {
                let owner = UserId(1 + next(4));
                let post = |n: u64| e(BASE + n, 100 + n % 3);
                let ctx = format!("seed {seed} step {step}");
                match next(100) {
                    0..=34 => {
                        let owners: Vec<UserId> = (0..next(4)).map(|_| UserId(1 + next(4))).collect();
                        // Mostly newer posts, sometimes an old one or a redelivery.
                        let p = post(if next(4) == 0 { next(40) } else { 20 + step / 4 + next(6) });
                        assert_eq!(r.insert(&owners, p).await.unwrap(), m.insert_now(&owners, p), "{ctx}");
                    }
                    35..=44 => {
                        let entries: Vec<Entry> = (0..next(5)).map(|_| post(next(40 + step / 4))).collect();
                        r.insert_many(owner, &entries).await.unwrap();
                        m.insert_many_now(owner, &entries);
                    }
                    45..=49 => {
                        let owners: Vec<UserId> = (0..next(3)).map(|_| UserId(1 + next(4))).collect();
                        let p = PostId(BASE + next(40 + step / 4));
                        r.remove_post(&owners, p).await.unwrap();
                        m.remove_post_now(&owners, p);
                    }
                    50..=51 => {
                        let a = UserId(100 + next(3));
                        r.remove_author(owner, a).await.unwrap();
                        m.remove_author_now(owner, a);
                    }
                    52..=79 => {
                        let bound = |v: u64| (v < 60).then(|| PostId(BASE + v));
                        let range = Range {
                            before: bound(next(120)),
                            after: bound(next(120)),
                            limit: next(12) as usize,
                            oldest_first: next(2) == 0,
                        };
                        assert_eq!(r.read(owner, range).await.unwrap(), m.read_now(owner, range), "{ctx} {range:?}");
                    }
                    80..=89 => {
                        assert_eq!(r.begin_rebuild(owner).await.unwrap(), m.begin_rebuild_now(owner), "{ctx}");
                    }
                    90..=97 => {
                        let pulled: Vec<Entry> = (0..next(8)).map(|_| post(next(30 + step / 4))).collect();
                        let complete = next(2) == 0;
                        r.finish_rebuild(owner, &pulled, complete).await.unwrap();
                        m.finish_rebuild_now(owner, &pulled, complete);
                    }
                    _ => {
                        r.evict(owner).await.unwrap();
                        m.evict_now(owner);
                    }
                }
            }
            for o in 1..=4 {
                let o = UserId(o);
                assert_eq!(r.read(o, newest(100)).await.unwrap(), m.read_now(o, newest(100)), "seed {seed}");
            }
            assert_eq!(r.len().await.unwrap(), m.len_now());
            r.clear().await.unwrap();
        }
    }

    async fn concurrent_inserts_stay_sorted_and_unique(url: Target) {
        let c = Arc::new(cache(&url, "concurrent", opts(10_000, 16)).await);
        let owners: Vec<UserId> = (1..=50).map(UserId).collect();
        for &o in &owners {
            assert!(c.begin_rebuild(o).await.unwrap());
            c.finish_rebuild(o, &[], true).await.unwrap();
        }
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let (c, owners) = (c.clone(), owners.clone());
            tasks.push(tokio::spawn(async move {
                let mut x = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for i in 0..300u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let post = (i * 7919 + task * 13) % 300 + 1;
                    let who = &owners[(x % 40) as usize..][..10];
                    c.insert(who, e(post, post % 17)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for &o in &owners {
            let s = c.read(o, newest(100_000)).await.unwrap().unwrap();
            assert!(s.entries.windows(2).all(|w| w[0].post > w[1].post), "newest first, no duplicates");
            assert!(s.entries.iter().all(|x| x.author.0 == x.post.0 % 17));
        }
        c.clear().await.unwrap();
    }

    /// Raw pushes are bounded by `slack`: `insert` normalises a timeline that collected more.
    async fn insert_bounds_pending_pushes(url: Target) {
        let c = cache(&url, "slack", opts(5, 3)).await;
        let o = UserId(9);
        assert!(c.begin_rebuild(o).await.unwrap());
        c.finish_rebuild(o, &[], true).await.unwrap();
        let key = c.key(o);
        for p in (1..=40u64).rev() {
            c.insert(&[o], e(p, 1)).await.unwrap();
            assert!(int(&c, &["LLEN", &key]).await <= 1 + 5 + 3, "post {p}");
        }
        let s = c.read(o, newest(10)).await.unwrap().unwrap();
        assert_eq!(s.entries.iter().map(|x| x.post.0).collect::<Vec<_>>(), vec![40, 39, 38, 37, 36]);
        assert_eq!(s.floor, Some(PostId(36)));
        c.clear().await.unwrap();
    }

    /// A killed connection fails the calls in flight on it; the slot then takes a new one.
    #[tokio::test]
    async fn recovers_from_dropped_connections() {
        let Some(url) = redis_url() else { return };
        let c = cache(&url, "reconnect", RedisCacheOptions { connections: 2, ..opts(10, 2) }).await;
        let o = UserId(1);
        assert!(c.begin_rebuild(o).await.unwrap());
        c.finish_rebuild(o, &[e(1, 1)], true).await.unwrap();
        let killer = cache(&url, "killer", opts(10, 2)).await;
        let Connections::Node(nodes) = &c.conns else { unreachable!("a single-node cache") };
        for slot in nodes.slots.iter() {
            let Some(mut conn) = slot.conn.lock().as_ref().map(|c| MultiplexedConnection::clone(c)) else { continue };
            let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await.unwrap();
            let _ = raw(&killer, &["CLIENT", "KILL", "ID", &id.to_string()]).await;
        }
        let mut failures = 0;
        for _ in 0..10 {
            match c.read(o, newest(10)).await {
                Ok(s) => assert_eq!(s.unwrap().entries, vec![e(1, 1)]),
                Err(_) => failures += 1,
            }
        }
        assert!((1..=2).contains(&failures), "{failures} failed reads: at most one per killed connection");
        c.clear().await.unwrap();
    }

    /// After `SCRIPT FLUSH` (or a restart), scripts are loaded again, in pipelines too.
    async fn survives_script_flush(url: Target) {
        let c = cache(&url, "noscript", opts(10, 0)).await;
        let (a, b) = (UserId(1), UserId(2));
        let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
        assert!(c.begin_rebuild(a).await.unwrap());
        c.finish_rebuild(a, &[e(1, 1)], true).await.unwrap();
        assert!(c.begin_rebuild(b).await.unwrap());
        let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
        c.remove_post(&[a, b], PostId(1)).await.unwrap();
        let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
        assert_eq!(c.insert(&[a, b], e(2, 1)).await.unwrap(), 2, "slack 0: normalises after every push");
        assert_eq!(c.read(a, newest(10)).await.unwrap().unwrap().entries, vec![e(2, 1)]);
        c.clear().await.unwrap();
    }

    /// Caches with different prefixes on one server do not see each other, even when a
    /// prefix holds `SCAN` pattern characters.
    async fn prefixes_isolate(url: Target) {
        let r = random();
        let with_prefix = |p: String| connect(&url, RedisCacheOptions { key_prefix: p, ..opts(10, 2) });
        let c1 = with_prefix(format!("test:iso:{r:x}:g*[?]:")).await.unwrap();
        let c2 = with_prefix(format!("test:iso:{r:x}:gX[?]:")).await.unwrap();
        let c3 = with_prefix(format!("test:iso:{r:x}:gX?:")).await.unwrap();
        let o = UserId(5);
        for c in [&c1, &c2, &c3] {
            assert!(c.begin_rebuild(o).await.unwrap());
        }
        assert_eq!(c1.insert(&[o, UserId(6)], e(1, 1)).await.unwrap(), 1);
        for c in [&c1, &c2, &c3] {
            c.finish_rebuild(o, &[], true).await.unwrap();
        }
        assert!(c2.read(o, newest(10)).await.unwrap().unwrap().entries.is_empty());
        assert_eq!(c1.len().await.unwrap(), 1);
        c1.clear().await.unwrap();
        assert_eq!((c1.len().await.unwrap(), c2.len().await.unwrap(), c3.len().await.unwrap()), (0, 1, 1));
        c2.clear().await.unwrap();
        c3.clear().await.unwrap();
        let braces = RedisCacheOptions { key_prefix: "a{b".into(), ..Default::default() };
        assert!(connect(&url, braces).await.is_err(), "a brace would break the hash tag");
    }

    /// Each test above runs twice: against `REDIS_URL` (one server) and against
    /// `REDIS_CLUSTER_URLS` (a cluster); each says so and passes where its variable is unset.
    macro_rules! on_node_and_cluster {
        ($(#[$attr:meta] $name:ident,)*) => {
            mod node {
                $(#[$attr] async fn $name() {
                    if let Some(t) = super::redis_url() {
                        super::$name(t).await
                    }
                })*
            }
            mod cluster {
                $(#[$attr] async fn $name() {
                    if let Some(t) = super::cluster_urls() {
                        super::$name(t).await
                    }
                })*
            }
        };
    }

    on_node_and_cluster!(
        #[tokio::test]
        conformance_suite,
        #[tokio::test]
        conformance_suite_default_cap,
        #[tokio::test]
        conformance_clear_and_len,
        #[tokio::test]
        idle_timelines_expire,
        #[tokio::test]
        rebuild_marker_expires,
        #[tokio::test]
        bytes_per_entry_is_compact,
        #[tokio::test]
        behaves_like_the_memory_cache,
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        concurrent_inserts_stay_sorted_and_unique,
        #[tokio::test]
        insert_bounds_pending_pushes,
        #[tokio::test]
        survives_script_flush,
        #[tokio::test]
        prefixes_isolate,
    );
}
