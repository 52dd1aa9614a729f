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

mod bus;
mod conn;
mod read_model;

pub use bus::RedisBus;
pub use read_model::{RedisReadModel, RedisReadModelOptions};

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::cluster::{ClusterClientBuilder, ClusterConnection};
use deadpool_redis::redis::{self, AsyncConnectionConfig, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};
use deadpool_redis::{Manager, Pool, Runtime};
use futures::{StreamExt as _, TryStreamExt as _};
use starling_ids::{PostId, UserId};
use tracing::Instrument as _;

use crate::{CacheError, CacheResult, Entry, Push, Range, Slice, TimelineCache};
use conn::{Conn, Connections, LuaScript, NodeConnections, Request};

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
    /// Multiplexed connections each thread uses round-robin (single node). One is best
    /// (the default): Redis serves a connection's commands in order on its one thread
    /// either way, and the commands of concurrent callers on one connection go out, and
    /// their replies come back, many per system call. Four per thread cost a distributed
    /// read 37 µs in the timeline-service and 25 in Redis, one 31 and 19 (BENCHMARKS.md).
    /// A cluster connection keeps one multiplexed connection per node instead.
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
            connections: 1,
            pipeline_max: 2048,
            response_timeout: Duration::from_secs(5),
            pipelines_in_flight: 4,
        }
    }
}

/// See the module docs.
pub struct RedisCache {
    conns: Arc<Connections>,
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
        // Each thread keeps `connections` of its own (see `NodeConnections`).
        let pool = Pool::builder(manager)
            .max_size(connections * 64)
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
            conns: Arc::new(conns),
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
        for script in cache.scripts.all() {
            cache.conns.check("load scripts", script.load(&mut lease.conn).await)?;
        }
        Ok(cache)
    }

    /// The read model on this cache's connections and key prefix.
    pub fn read_model(&self, options: RedisReadModelOptions) -> RedisReadModel {
        RedisReadModel::new(self.conns.clone(), self.prefix.clone(), options)
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
        format!("{}{{*}}", conn::glob_escape(&self.prefix))
    }

    /// Runs `pipe` through [`Connections::run`] (reloading the scripts on `NOSCRIPT`,
    /// resending once on a fresh connection). Only for pipelines that may safely run
    /// twice: every script here is idempotent, and so are pushes followed by a
    /// normalisation.
    async fn query_scripts<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> CacheResult<T> {
        self.conns.run(what, Request::Pipe(pipe), &self.scripts.all()).await
    }

    /// Sends one pipeline of `insert_all`'s `RPUSHX`es. Returns the entries delivered and
    /// the timelines due for normalisation.
    async fn send_pushes(
        &self,
        pipe: redis::Pipeline,
        cmds: Vec<(UserId, usize)>,
    ) -> CacheResult<(usize, Vec<UserId>)> {
        let send = async {
            let mut lease = self.conns.get().await?;
            let result = pipe.query_async::<Vec<u64>>(&mut lease.conn).await;
            self.conns.check("insert", result)
        };
        let lens = send.instrument(conn::redis_span("insert")).await?;
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

    /// Normalises the given timelines (those holding more than `max_entries + slack`).
    async fn normalize_many(&self, owners: &[UserId]) -> CacheResult<()> {
        let max = self.max_entries.to_string();
        for chunk in owners.chunks(self.pipeline_max) {
            let mut pipe = redis::pipe();
            for &o in chunk {
                self.scripts.normalize.call(&mut pipe, &self.key(o), &[max.as_bytes()]);
            }
            self.query_scripts::<redis::Value>("normalize", &pipe).await?;
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
                for script in self.scripts.all() {
                    script.load(&mut Conn::Cluster(conn.clone())).await.map_err(|e| backend(what, &e))?;
                }
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

    /// The most common read, a timeline's newest page, without the read script when the
    /// timeline has no pushes left to fold in: its header, length, newest `limit` entries
    /// and TTL in one transaction. Running the script (a Lua call, four commands inside)
    /// is most of what a page costs Redis; this is plain commands. `None`: the script
    /// must answer (pushes to fold in, a TTL to refresh, or a cluster, whose pipelines are
    /// not transactions).
    async fn read_newest(&self, owner: UserId, limit: usize) -> CacheResult<Option<Option<Slice>>> {
        if self.conns.cluster().is_some() {
            return Ok(None);
        }
        let key = self.key(owner);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LINDEX")
            .arg(&key)
            .arg(0)
            .cmd("LLEN")
            .arg(&key)
            .cmd("LRANGE")
            .arg(&key)
            .arg(-(limit as i64))
            .arg(-1)
            .cmd("PTTL")
            .arg(&key);
        let (header, len, tail, ttl): (Option<Vec<u8>>, usize, Vec<Vec<u8>>, i64) =
            self.conns.run("read", Request::Pipe(&pipe), &[]).await?;
        // No timeline, or one being rebuilt: the script answers nothing for either.
        let Some(header) = header else { return Ok(Some(None)) };
        let (state, sorted) = match header.get(..5) {
            Some(h) => (h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize),
            None => return Err(corrupt("header")),
        };
        if state != b'R' {
            return Ok(Some(None));
        }
        // The script refreshes the TTL on every read, and only a ready timeline's. Here a
        // read leaves that to the script once the TTL has run down by a tenth, which keeps
        // an active reader's timeline as long, within that tenth.
        let refresh_below = self.active_ms.saturating_sub(self.active_ms / 10);
        let refresh = ttl < 0 || (ttl as u64) < refresh_below;
        if len != sorted + 1 || sorted > self.max_entries || refresh {
            return Ok(None);
        }
        let floor = match header.get(5..13) {
            Some(f) => Some(PostId::from_be_slice(f).ok_or_else(|| corrupt("floor"))?),
            None => None,
        };
        // A tail as long as the list took the header along.
        let skip = usize::from(len <= limit);
        let mut entries = tail.iter().skip(skip).map(|e| decode(e)).collect::<CacheResult<Vec<Entry>>>()?;
        entries.reverse();
        Ok(Some(Some(Slice { entries, floor })))
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &LuaScript,
        owner: UserId,
        args: &[&[u8]],
    ) -> CacheResult<T> {
        self.conns.run(what, Request::Cmd(&script.cmd(&self.key(owner), args)), &self.scripts.all()).await
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
            let lens = self.conns.check("insert", result)?;
            for (&o, len) in chunk.iter().zip(lens) {
                delivered += usize::from(len > 0);
                if len > self.compact_above {
                    full.push(o);
                }
            }
        }
        if !full.is_empty() {
            self.normalize_many(&full).await?;
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
            let normalizations: Vec<_> = full.chunks(self.pipeline_max).map(|c| self.normalize_many(c)).collect();
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
        self.query_scripts::<redis::Value>("insert_many", &pipe).await?;
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
        for chunk in owners.chunks(self.pipeline_max) {
            let mut pipe = redis::pipe();
            for &o in chunk {
                self.scripts.remove_post.call(&mut pipe, &self.key(o), &[max.as_bytes(), &post]);
            }
            self.query_scripts::<redis::Value>("remove_post", &pipe).await?;
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
        if range.after.is_none() && range.before.is_none() && !range.oldest_first && range.limit > 0 {
            if let Some(answer) = self.read_newest(owner, range.limit).await? {
                return Ok(answer);
            }
        }
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
        let reply: Option<(Vec<u8>, Vec<u8>)> = self.eval("read", &self.scripts.read, owner, &args).await?;
        let Some((floor, entries)) = reply else { return Ok(None) };
        let floor = match floor {
            f if f.is_empty() => None,
            f => Some(PostId::from_be_slice(&f).ok_or_else(|| corrupt("floor"))?),
        };
        if !entries.len().is_multiple_of(16) {
            return Err(corrupt("read reply"));
        }
        let mut entries = entries.chunks_exact(16).map(decode).collect::<CacheResult<Vec<Entry>>>()?;
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
        self.conns.run::<i64>("evict", Request::Cmd(redis::cmd("UNLINK").arg(self.key(owner))), &[]).await?;
        Ok(())
    }

    /// `SCAN`s this cache's keys and `UNLINK`s them; other keys on the server are untouched.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn clear(&self) -> CacheResult<()> {
        self.conns.scan_keys("clear", &self.pattern(), true).await?;
        Ok(())
    }

    /// Counts this cache's keys with `SCAN` (expired ones excluded): O(keys on the server).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn len(&self) -> CacheResult<usize> {
        self.conns.scan_keys("len", &self.pattern(), false).await
    }
}

/// A timeline script: the shared prelude (`lua/prelude.lua`) plus its body.
fn timeline_script(body: &str) -> LuaScript {
    LuaScript::new(format!("{}\n{body}", include_str!("lua/prelude.lua")))
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
            normalize: timeline_script(include_str!("lua/normalize.lua")),
            read: timeline_script(include_str!("lua/read.lua")),
            begin_rebuild: timeline_script(include_str!("lua/begin_rebuild.lua")),
            finish_rebuild: timeline_script(include_str!("lua/finish_rebuild.lua")),
            remove_post: timeline_script(include_str!("lua/remove_post.lua")),
            remove_author: timeline_script(include_str!("lua/remove_author.lua")),
        }
    }

    /// Every script, for loading them all after `NOSCRIPT`.
    fn all(&self) -> [&LuaScript; 6] {
        [&self.normalize, &self.read, &self.begin_rebuild, &self.finish_rebuild, &self.remove_post, &self.remove_author]
    }
}

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
mod tests;
