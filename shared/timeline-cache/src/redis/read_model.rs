//! The Redis read model (see [`crate::read_model`]), on the timeline cache's connections.
//!
//! # Keys and sizes
//!
//! With the cache's prefix `P` (default `tl:`):
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `Pp:<post id>` | a post: `kind ‖ id ‖ author ‖ reply_to or reblog_of ‖ handle length ‖ handle ‖ text` (26 bytes + handle + text), or the tombstone `0` | `post_ttl` |
//! | `Ps:<post id>` | a status's reblog, favourite and reply counts, 8 bytes each | `counts_ttl` |
//! | `Pv:<viewer>` | a hash: status id → the viewer's flags on it (1 byte: bit 0 reblogged, bit 1 favourited) | `counts_ttl` from its creation |
//! | `P{<reader>}:f` | followees, 8 bytes each, unordered | `following_ttl` |
//! | `P{<author>}:r` | `C`/`T` (complete / cut) ‖ newest post ids, 8 bytes each, at most 128 | `recent_ttl` |
//! | `P{celebrities}:c` | celebrities, 8 bytes each | `recent_ttl` |
//! | `P{<user>}:n` | follower and following counts, 8 bytes each | `counts_ttl` |
//! | `Pg:<token hash, hex>` | an OAuth grant: `1` ‖ its bytes, or the tombstone `0` | `grant_ttl` |
//! | `P{celebrities}:v` | the celebrity version (an integer, `INCR`ed; starts from the clock in µs, see `lua/bump.lua`) | none |
//! | `P{changes}:s`, `:l`, `:f` | the change log: its number (like the version), the newest changes scored by number (a sorted set of at most `CHANGE_LOG`: a deleted post's id, 8 bytes; an interaction's post id ‖ viewer, 16; a revoked token's hash, 32), and the number below which it is incomplete (`lua/log_changes.lua`) | none |
//! | `…:fill` beside each of the last three | a fill's token | 60 s |
//!
//! A follow costs 8 bytes in its follower's list (plus ~60 bytes per list for the key), a
//! cached post ~75 bytes of Redis overhead plus its encoding (measured in
//! `read_model_bytes_are_compact`). The braces are Cluster hash tags: a follow list and its
//! token share their owner's slot (and the owner's timeline's), so every script takes keys
//! of one slot. Post keys spread over the cluster; multi-key reads are one `MGET` on a
//! single node and independent `GET`s in flight on a cluster.
//!
//! Eviction: every key has a TTL. Under `maxmemory`, run Redis with `volatile-lru` or
//! `allkeys-lru`: any key may go (a miss fills it again), with one caveat — an evicted
//! tombstone lets a fill that was already in flight when the post was deleted cache it
//! again, until `post_ttl`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Cmd, Value};
use futures::StreamExt as _;
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, PostRecord};

use super::conn::{Connections, LuaScript, Request, glob_escape};
use super::millis;
use crate::read_model::{
    CHANGE_LOG, CachedPost, Change, Changes, Collection, Fill, FillToken, PageLookup, RECENT_DEPTH, ReadModel,
    ReaderView, Recent, check_fill, codec, merge_recent,
};
use crate::{CacheError, CacheResult};

#[derive(Clone, Debug)]
pub struct RedisReadModelOptions {
    pub post_ttl: Duration,
    /// Follow lists: an idle reader's goes like its timeline.
    pub following_ttl: Duration,
    /// Recent lists and the celebrity list.
    pub recent_ttl: Duration,
    /// Grants and their tombstones: how long a tombstone must outlive a fill that read
    /// storage before the revocation (seconds) and then some; a miss refills.
    pub grant_ttl: Duration,
    /// Authors' counts: nothing keeps them current, so this is how old a status's counts
    /// may be.
    pub counts_ttl: Duration,
    /// A fill not finished after this long is abandoned.
    pub fill_timeout: Duration,
    /// Commands in flight at once on a cluster (posts of one page).
    pub in_flight: usize,
}

impl Default for RedisReadModelOptions {
    fn default() -> Self {
        Self {
            post_ttl: Duration::from_secs(3 * 24 * 3600),
            following_ttl: Duration::from_secs(7 * 24 * 3600),
            recent_ttl: Duration::from_secs(24 * 3600),
            grant_ttl: Duration::from_secs(24 * 3600),
            counts_ttl: Duration::from_secs(60),
            fill_timeout: Duration::from_secs(60),
            in_flight: 64,
        }
    }
}

struct Scripts {
    set_member: LuaScript,
    add_recent: LuaScript,
    finish_fill: LuaScript,
    bump: LuaScript,
    log_changes: LuaScript,
    changes_since: LuaScript,
}

/// See the module docs.
pub struct RedisReadModel {
    conns: Arc<Connections>,
    prefix: String,
    scripts: Scripts,
    post_ms: u64,
    following_ms: u64,
    recent_ms: u64,
    grant_ms: u64,
    counts_ms: u64,
    fill_ms: u64,
    in_flight: usize,
}

impl RedisReadModel {
    pub(super) fn new(conns: Arc<Connections>, prefix: String, options: RedisReadModelOptions) -> Self {
        Self {
            conns,
            prefix,
            scripts: Scripts {
                set_member: LuaScript::new(include_str!("lua/set_member.lua").to_owned()),
                add_recent: LuaScript::new(include_str!("lua/add_recent.lua").to_owned()),
                finish_fill: LuaScript::new(include_str!("lua/finish_fill.lua").to_owned()),
                bump: LuaScript::new(include_str!("lua/bump.lua").to_owned()),
                log_changes: change_script(include_str!("lua/log_changes.lua")),
                changes_since: change_script(include_str!("lua/changes_since.lua")),
            },
            post_ms: millis(options.post_ttl),
            following_ms: millis(options.following_ttl),
            recent_ms: millis(options.recent_ttl),
            grant_ms: millis(options.grant_ttl),
            counts_ms: millis(options.counts_ttl),
            fill_ms: millis(options.fill_timeout),
            in_flight: options.in_flight.max(1),
        }
    }

    fn post_key(&self, id: PostId) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 22);
        let _ = write!(k, "{}p:{}", self.prefix, id.0);
        k
    }

    fn counts_key(&self, user: UserId) -> String {
        format!("{}{{{}}}:n", self.prefix, user.0)
    }

    /// A status's counts: reblogs ‖ favourites ‖ replies, big-endian.
    fn status_counts_key(&self, id: PostId) -> String {
        format!("{}s:{}", self.prefix, id.0)
    }

    /// A viewer's flags: a hash of status id → one byte (bit 0 reblogged, bit 1
    /// favourited), so a page's flags are one `HMGET` of one key. It expires as a whole a
    /// TTL after it was created (`PEXPIRE … NX`), which bounds how much it gathers.
    fn flags_key(&self, viewer: UserId) -> String {
        format!("{}v:{}", self.prefix, viewer.0)
    }

    /// The commands caching each entry's counts and `viewer`'s flags; `nx`: only where
    /// nothing is cached.
    fn interaction_sets(&self, viewer: UserId, entries: &[(PostId, Interactions)], nx: bool) -> Vec<Cmd> {
        let flags_key = self.flags_key(viewer);
        let mut cmds = Vec::with_capacity(entries.len() * 2 + 1);
        for &(id, i) in entries {
            let mut set = redis::cmd("SET");
            set.arg(self.status_counts_key(id)).arg(ids_to_bytes([i.reblogs, i.favourites, i.replies]));
            set.arg("PX").arg(self.counts_ms);
            if nx {
                set.arg("NX");
            }
            cmds.push(set);
            let flags = u8::from(i.reblogged) | (u8::from(i.favourited) << 1);
            let mut hset = redis::cmd(if nx { "HSETNX" } else { "HSET" });
            hset.arg(&flags_key).arg(id.0).arg(&[flags][..]);
            cmds.push(hset);
        }
        if !entries.is_empty() {
            cmds.push(redis::cmd("PEXPIRE").arg(&flags_key).arg(self.counts_ms).arg("NX").clone());
        }
        cmds
    }

    fn grant_key(&self, hash: &[u8; 32]) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 66);
        k.push_str(&self.prefix);
        k.push_str("g:");
        for b in hash {
            let _ = write!(k, "{b:02x}");
        }
        k
    }

    fn key(&self, c: Collection) -> String {
        match c {
            Collection::Following(reader) => format!("{}{{{}}}:f", self.prefix, reader.0),
            Collection::Recent(author) => format!("{}{{{}}}:r", self.prefix, author.0),
            Collection::Celebrities => format!("{}{{celebrities}}:c", self.prefix),
        }
    }

    fn ttl_ms(&self, c: Collection) -> u64 {
        match c {
            Collection::Following(_) => self.following_ms,
            Collection::Recent(_) | Collection::Celebrities => self.recent_ms,
        }
    }

    /// One idempotent command ([`Connections::run`]: resent once on a fresh connection).
    async fn query<T: redis::FromRedisValue>(&self, what: &'static str, cmd: &Cmd) -> CacheResult<T> {
        self.conns.run(what, Request::Cmd(cmd), &[]).await
    }

    /// A script call (loaded and called again on `NOSCRIPT`).
    async fn script<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &LuaScript,
        keys: &[&str],
        args: &[&[u8]],
    ) -> CacheResult<T> {
        self.conns.run(what, Request::Cmd(&script.cmd_keys(keys, args)), &[script]).await
    }

    /// Many single-key idempotent reads (or writes), in order: one pipeline on a single
    /// node, independent commands in flight on a cluster (the keys lie in many slots).
    async fn each<T: redis::FromRedisValue>(&self, what: &'static str, cmds: Vec<Cmd>) -> CacheResult<Vec<T>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if self.conns.cluster().is_some() {
            let sends = cmds.into_iter().map(|cmd| async move { self.query::<T>(what, &cmd).await });
            let replies: Vec<CacheResult<T>> = futures::stream::iter(sends).buffered(self.in_flight).collect().await;
            return replies.into_iter().collect();
        }
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        self.conns.run(what, Request::Pipe(&pipe), &[]).await
    }

    fn version_key(&self) -> String {
        format!("{}{{celebrities}}:v", self.prefix)
    }

    /// The change log's keys: its number, the log, its floor (one slot).
    fn change_keys(&self) -> [String; 3] {
        ["s", "l", "f"].map(|k| format!("{}{{changes}}:{k}", self.prefix))
    }

    /// A call of one of the change log's scripts, on its keys.
    async fn change_log<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &LuaScript,
        args: &[&[u8]],
    ) -> CacheResult<T> {
        let keys = self.change_keys();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.script(what, script, &keys, args).await
    }

    /// Appends `changes` to the change log (`lua/log_changes.lua`), after what they announce
    /// was written.
    async fn log(&self, changes: impl Iterator<Item = Change>) -> CacheResult<()> {
        let (now, cap) = (now_micros(), CHANGE_LOG.to_string());
        let entries: Vec<Vec<u8>> = changes.map(encode_change).collect();
        if entries.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![now.as_bytes(), cap.as_bytes()];
        args.extend(entries.iter().map(Vec::as_slice));
        self.change_log::<i64>("log changes", &self.scripts.log_changes, &args).await?;
        Ok(())
    }

    /// Moves the celebrity version, after the change it announces (`lua/bump.lua`).
    async fn bump(&self) -> CacheResult<()> {
        let micros = now_micros();
        self.script::<i64>("celebrity version", &self.scripts.bump, &[&self.version_key()], &[micros.as_bytes()])
            .await?;
        Ok(())
    }

    /// The values of `keys`: one `MGET` on a single node (native, so about a tenth of a
    /// script's cost in Redis: BENCHMARKS.md), `GET`s in flight on a cluster.
    async fn get_many(&self, what: &'static str, keys: Vec<String>) -> CacheResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.conns.cluster().is_some() {
            return self.each(what, keys.iter().map(|k| redis::cmd("GET").arg(k).clone()).collect()).await;
        }
        self.query(what, redis::cmd("MGET").arg(&keys)).await
    }

    /// `HMGET` of `viewer`'s flags on `ids` (see [`Self::flags_key`]).
    fn flags_cmd(&self, viewer: UserId, ids: &[PostId]) -> Cmd {
        let mut cmd = Cmd::with_capacity(2 + ids.len(), 8 + self.prefix.len() + 22 + ids.len() * 20);
        cmd.arg("HMGET").arg(self.flags_key(viewer));
        let mut digits = itoa::Buffer::new();
        for id in ids {
            cmd.arg(digits.format(id.0).as_bytes());
        }
        cmd
    }

    fn patterns(&self) -> [String; 5] {
        let escaped = glob_escape(&self.prefix);
        ["p:*", "{*}:*", "g:*", "s:*", "v:*"].map(|p| format!("{escaped}{p}"))
    }
}

/// `name` (`MGET`) of the keys `prefix ‖ head ‖ id ‖ tail`, one per id, built in place: a
/// page's pipeline names ~60 keys, and formatting each into a `String` and growing the
/// command argument by argument was a few percent of the timeline-service's CPU per read
/// (BENCHMARKS.md).
fn id_keys_cmd(prefix: &str, name: &str, head: &str, ids: impl ExactSizeIterator<Item = u64>, tail: &str) -> Cmd {
    let mut key = Vec::with_capacity(prefix.len() + head.len() + 20 + tail.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(head.as_bytes());
    let fixed = key.len();
    let mut cmd = Cmd::with_capacity(1 + ids.len(), name.len() + ids.len() * key.capacity());
    cmd.arg(name);
    let mut digits = itoa::Buffer::new();
    for id in ids {
        key.truncate(fixed);
        key.extend_from_slice(digits.format(id).as_bytes());
        key.extend_from_slice(tail.as_bytes());
        cmd.arg(&key[..]);
    }
    cmd
}

/// A change-log script: the shared part (`lua/change_log.lua`) plus its body.
fn change_script(body: &str) -> LuaScript {
    LuaScript::new(format!("{}\n{body}", include_str!("lua/change_log.lua")))
}

/// A change as the log holds it: a deleted post's id (8 bytes), an interaction's post id
/// then viewer (16), or a revoked token's hash (32). A change logged twice keeps only its newer number.
fn encode_change(change: Change) -> Vec<u8> {
    match change {
        Change::Deleted(post) => post.0.to_be_bytes().to_vec(),
        Change::Interacted { post, viewer } => [post.0.to_be_bytes(), viewer.0.to_be_bytes()].concat(),
        Change::Revoked(hash) => hash.to_vec(),
    }
}

fn decode_change(b: &[u8]) -> CacheResult<Change> {
    let id = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
    match b.len() {
        8 => Ok(Change::Deleted(PostId(id(b)))),
        16 => Ok(Change::Interacted { post: PostId(id(&b[..8])), viewer: UserId(id(&b[8..])) }),
        32 => Ok(Change::Revoked(b.try_into().unwrap_or_default())),
        _ => Err(CacheError::Backend("corrupt change log".into())),
    }
}

/// The time in microseconds, where a missing counter starts (`lua/bump.lua`).
fn now_micros() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_micros().to_string()
}

/// A counter's value, as Redis keeps it (decimal).
fn parse_number(v: &[u8], what: &str) -> CacheResult<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CacheError::Backend(format!("corrupt {what}")))
}

/// A cached grant: `1` ‖ its bytes, or the tombstone `0`.
fn grant_value(grant: Option<&[u8]>) -> Vec<u8> {
    match grant {
        Some(g) => [b"1", g].concat(),
        None => b"0".to_vec(),
    }
}

fn ids_to_bytes(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    ids.into_iter().flat_map(u64::to_be_bytes).collect()
}

fn bytes_to_ids(b: &[u8]) -> CacheResult<Vec<u64>> {
    if !b.len().is_multiple_of(8) {
        return Err(CacheError::Backend("corrupt id list".into()));
    }
    Ok(b.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect())
}

fn decode_users(value: Option<Vec<u8>>) -> CacheResult<Option<Vec<UserId>>> {
    value.map(|b| Ok(bytes_to_ids(&b)?.into_iter().map(UserId).collect())).transpose()
}

fn decode_recent(b: &[u8]) -> CacheResult<Recent> {
    let (complete, ids) = match b.split_first() {
        Some((b'C', ids)) => (true, ids),
        Some((b'T', ids)) => (false, ids),
        _ => return Err(CacheError::Backend("corrupt recent list".into())),
    };
    Ok(Recent { posts: bytes_to_ids(ids)?.into_iter().map(PostId).collect(), complete })
}

fn encode_recent(r: &Recent) -> Vec<u8> {
    let mut out = vec![if r.complete { b'C' } else { b'T' }];
    out.extend(ids_to_bytes(r.posts.iter().map(|p| p.0)));
    out
}

#[async_trait]
impl ReadModel for RedisReadModel {
    #[tracing::instrument(level = "debug", skip_all, fields(posts = ids.len()))]
    async fn posts(&self, ids: &[PostId]) -> CacheResult<Vec<Option<CachedPost>>> {
        let values = self.get_many("posts", ids.iter().map(|&id| self.post_key(id)).collect()).await?;
        values.into_iter().map(|v| v.map(|b| codec::decode(&b)).transpose()).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(posts = posts.len()))]
    async fn add_posts(&self, posts: &[PostRecord]) -> CacheResult<()> {
        let cmds = posts
            .iter()
            .map(|p| {
                redis::cmd("SET")
                    .arg(self.post_key(p.id))
                    .arg(codec::encode(p))
                    .arg("NX")
                    .arg("PX")
                    .arg(self.post_ms)
                    .clone()
            })
            .collect();
        self.each::<Value>("add posts", cmds).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(posts = ids.len()))]
    async fn posts_deleted(&self, ids: &[PostId]) -> CacheResult<()> {
        let cmds: Vec<Cmd> = ids
            .iter()
            .map(|&id| {
                redis::cmd("SET").arg(self.post_key(id)).arg(codec::TOMBSTONE).arg("PX").arg(self.post_ms).clone()
            })
            .collect();
        if cmds.is_empty() {
            return Ok(());
        }
        self.each::<Value>("delete posts", cmds).await?;
        // Logged after the tombstones: a holder that sees the new number finds them.
        self.log(ids.iter().map(|&id| Change::Deleted(id))).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(reader = reader.0))]
    async fn reader_view(&self, reader: UserId) -> CacheResult<ReaderView> {
        let [changes, ..] = self.change_keys();
        let keys = vec![self.key(Collection::Following(reader)), self.version_key(), changes];
        let mut values = self.get_many("reader view", keys).await?.into_iter();
        let following = decode_users(values.next().flatten())?;
        let version = values.next().flatten().map(|v| parse_number(&v, "celebrity version")).transpose()?;
        let changes = values.next().flatten().map(|v| parse_number(&v, "change number")).transpose()?;
        Ok(ReaderView { following, version: version.unwrap_or(0), changes })
    }

    async fn changes_since(&self, after: u64) -> CacheResult<Changes> {
        let (now, after) = (now_micros(), after.to_string());
        let (seq, complete, changes): (Vec<u8>, i64, Vec<Vec<u8>>) =
            self.change_log("changes since", &self.scripts.changes_since, &[now.as_bytes(), after.as_bytes()]).await?;
        let changes = changes.iter().map(|c| decode_change(c)).collect::<CacheResult<_>>()?;
        Ok(Changes { seq: parse_number(&seq, "change number")?, changes, complete: complete == 1 })
    }

    async fn celebrities(&self) -> CacheResult<Option<Vec<UserId>>> {
        let v: Option<Vec<u8>> =
            self.query("celebrities", redis::cmd("GET").arg(self.key(Collection::Celebrities))).await?;
        v.map(|b| Ok(bytes_to_ids(&b)?.into_iter().map(UserId).collect())).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(authors = authors.len()))]
    async fn recent(&self, authors: &[UserId]) -> CacheResult<Vec<Option<Recent>>> {
        let keys = authors.iter().map(|&a| self.key(Collection::Recent(a))).collect();
        let values = self.get_many("recent", keys).await?;
        values.into_iter().map(|v| v.map(|b| decode_recent(&b)).transpose()).collect()
    }

    async fn begin_fill(&self, collection: Collection) -> CacheResult<FillToken> {
        let token = FillToken(rand_token());
        let key = format!("{}:fill", self.key(collection));
        self.query::<Value>("begin fill", redis::cmd("SET").arg(key).arg(token.0).arg("PX").arg(self.fill_ms)).await?;
        Ok(token)
    }

    async fn finish_fill(&self, collection: Collection, token: FillToken, value: Fill) -> CacheResult<bool> {
        check_fill(collection, &value)?;
        let bytes = match value {
            Fill::Users(users) => ids_to_bytes(users.iter().map(|u| u.0)),
            Fill::Recent(mut recent) => {
                merge_recent(&mut recent, &[]);
                encode_recent(&recent)
            }
        };
        let key = self.key(collection);
        let fill = format!("{key}:fill");
        let (token, ttl) = (token.0.to_string(), self.ttl_ms(collection).to_string());
        let args: [&[u8]; 3] = [token.as_bytes(), &bytes, ttl.as_bytes()];
        let done: i64 = self.script("finish fill", &self.scripts.finish_fill, &[&key, &fill], &args).await?;
        Ok(done == 1)
    }

    async fn set_member(&self, collection: Collection, member: UserId, present: bool) -> CacheResult<()> {
        let key = self.key(collection);
        let fill = format!("{key}:fill");
        let id = member.0.to_be_bytes();
        let args: [&[u8]; 2] = [&id, if present { b"1" } else { b"0" }];
        self.script::<i64>("set member", &self.scripts.set_member, &[&key, &fill], &args).await?;
        if collection == Collection::Celebrities {
            self.bump().await?;
        }
        Ok(())
    }

    async fn add_recent(&self, author: UserId, posts: &[PostId]) -> CacheResult<()> {
        let key = self.key(Collection::Recent(author));
        let fill = format!("{key}:fill");
        let depth = RECENT_DEPTH.to_string();
        let ids: Vec<[u8; 8]> = posts.iter().map(|p| p.0.to_be_bytes()).collect();
        let mut args: Vec<&[u8]> = vec![depth.as_bytes()];
        args.extend(ids.iter().map(|i| &i[..]));
        self.script::<i64>("add recent", &self.scripts.add_recent, &[&key, &fill], &args).await?;
        self.bump().await
    }

    async fn forget(&self, collection: Collection) -> CacheResult<()> {
        let key = self.key(collection);
        self.query::<i64>("forget", redis::cmd("DEL").arg(&key).arg(format!("{key}:fill"))).await?;
        if !matches!(collection, Collection::Following(_)) {
            self.bump().await?;
        }
        Ok(())
    }

    async fn counts(&self, users: &[UserId]) -> CacheResult<Vec<Option<Counts>>> {
        let values = self.get_many("counts", users.iter().map(|&u| self.counts_key(u)).collect()).await?;
        values.into_iter().map(decode_counts).collect()
    }

    async fn fill_counts(&self, counts: &[(UserId, Counts)]) -> CacheResult<()> {
        let cmds = counts
            .iter()
            .map(|&(user, c)| {
                let value = ids_to_bytes([c.followers, c.following]);
                redis::cmd("SET").arg(self.counts_key(user)).arg(value).arg("PX").arg(self.counts_ms).clone()
            })
            .collect();
        self.each::<Value>("fill counts", cmds).await?;
        Ok(())
    }

    async fn interactions(&self, viewer: UserId, ids: &[PostId]) -> CacheResult<Vec<Option<Interactions>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Every status's counts, and the viewer's flags on each from its one hash, together.
        let keys = ids.iter().map(|&id| self.status_counts_key(id)).collect();
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(self.flags_key(viewer));
        for id in ids {
            hmget.arg(id.0);
        }
        let (counts, flags): (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>) =
            futures::try_join!(self.get_many("interactions", keys), self.query("interaction flags", &hmget))?;
        decode_interactions(&counts, &flags)
    }

    async fn page_counts(
        &self,
        authors: &[UserId],
        statuses: &[PostId],
        viewer: UserId,
    ) -> CacheResult<(Vec<Option<Counts>>, Vec<Option<Interactions>>)> {
        if self.conns.cluster().is_some() || authors.is_empty() || statuses.is_empty() {
            return crate::read_model::page_counts_apart(self, authors, statuses, viewer).await;
        }
        // One pipeline on one node: the authors' counts, the statuses' counts, the flags.
        let mut pipe = redis::pipe();
        pipe.add_command(id_keys_cmd(&self.prefix, "MGET", "{", authors.iter().map(|u| u.0), "}:n"));
        pipe.add_command(id_keys_cmd(&self.prefix, "MGET", "s:", statuses.iter().map(|id| id.0), ""));
        pipe.add_command(self.flags_cmd(viewer, statuses));
        let (author_counts, status_counts, flags): (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>) =
            self.conns.run("page counts", Request::Pipe(&pipe), &[]).await?;
        let counts = author_counts.into_iter().map(decode_counts).collect::<CacheResult<Vec<_>>>()?;
        Ok((counts, decode_interactions(&status_counts, &flags)?))
    }

    async fn page(
        &self,
        posts: &[PostId],
        statuses: &[PostId],
        authors: &[UserId],
        viewer: UserId,
    ) -> CacheResult<PageLookup> {
        if self.conns.cluster().is_some() || statuses.is_empty() || authors.is_empty() {
            return crate::read_model::page_apart(self, posts, statuses, authors, viewer).await;
        }
        // One pipeline on one node: the posts, their authors' counts, their counts, the flags.
        let mut pipe = redis::pipe();
        pipe.add_command(id_keys_cmd(&self.prefix, "MGET", "{", authors.iter().map(|u| u.0), "}:n"));
        pipe.add_command(id_keys_cmd(&self.prefix, "MGET", "s:", statuses.iter().map(|id| id.0), ""));
        pipe.add_command(self.flags_cmd(viewer, statuses));
        if !posts.is_empty() {
            pipe.add_command(id_keys_cmd(&self.prefix, "MGET", "p:", posts.iter().map(|id| id.0), ""));
        }
        type Values = Vec<Option<Vec<u8>>>;
        let mut replies: Vec<Values> = self.conns.run("page", Request::Pipe(&pipe), &[]).await?;
        let found = if posts.is_empty() { Vec::new() } else { replies.pop().unwrap_or_default() };
        let [author_counts, status_counts, flags]: [Values; 3] =
            replies.try_into().map_err(|_| CacheError::Backend("a page pipeline answered short".into()))?;
        Ok(PageLookup {
            posts: found.into_iter().map(|v| v.map(|b| codec::decode(&b)).transpose()).collect::<CacheResult<_>>()?,
            counts: author_counts.into_iter().map(decode_counts).collect::<CacheResult<_>>()?,
            interactions: decode_interactions(&status_counts, &flags)?,
        })
    }

    async fn fill_interactions(&self, viewer: UserId, found: &[(PostId, Interactions)]) -> CacheResult<()> {
        self.each::<Value>("fill interactions", self.interaction_sets(viewer, found, true)).await?;
        Ok(())
    }

    async fn set_interactions(&self, viewer: UserId, changed: &[(PostId, Interactions)]) -> CacheResult<()> {
        self.each::<Value>("set interactions", self.interaction_sets(viewer, changed, false)).await?;
        // Logged after what it announces, as a delete is.
        self.log(changed.iter().map(|&(post, _)| Change::Interacted { post, viewer })).await
    }

    async fn grant(&self, hash: &[u8; 32]) -> CacheResult<Option<Option<Vec<u8>>>> {
        let v: Option<Vec<u8>> = self.query("grant", redis::cmd("GET").arg(self.grant_key(hash))).await?;
        match v.as_deref().map(|b| b.split_first()) {
            None => Ok(None),
            Some(Some((b'1', grant))) => Ok(Some(Some(grant.to_vec()))),
            Some(Some((b'0', []))) => Ok(Some(None)),
            Some(_) => Err(CacheError::Backend("corrupt cached grant".into())),
        }
    }

    async fn fill_grant(&self, hash: &[u8; 32], grant: Option<&[u8]>) -> CacheResult<()> {
        let cmd = redis::cmd("SET")
            .arg(self.grant_key(hash))
            .arg(grant_value(grant))
            .arg("NX")
            .arg("PX")
            .arg(self.grant_ms)
            .clone();
        self.query::<Value>("fill grant", &cmd).await?;
        Ok(())
    }

    async fn set_grant(&self, hash: &[u8; 32], grant: Option<&[u8]>) -> CacheResult<()> {
        let cmd =
            redis::cmd("SET").arg(self.grant_key(hash)).arg(grant_value(grant)).arg("PX").arg(self.grant_ms).clone();
        self.query::<Value>("set grant", &cmd).await?;
        if grant.is_none() {
            // Logged after its tombstone, as a delete is.
            self.log(std::iter::once(Change::Revoked(*hash))).await?;
        }
        Ok(())
    }

    async fn clear(&self) -> CacheResult<()> {
        for pattern in self.patterns() {
            self.conns.scan_keys("clear", &pattern, true).await?;
        }
        self.bump().await
    }
}

fn decode_counts(value: Option<Vec<u8>>) -> CacheResult<Option<Counts>> {
    match value.as_deref().map(bytes_to_ids).transpose()? {
        None => Ok(None),
        Some(ids) if ids.len() == 2 => Ok(Some(Counts { followers: ids[0], following: ids[1] })),
        Some(_) => Err(CacheError::Backend("corrupt cached counts".into())),
    }
}

/// Statuses' counts and a viewer's flags on them, as cached, into interactions.
fn decode_interactions(
    counts: &[Option<Vec<u8>>],
    flags: &[Option<Vec<u8>>],
) -> CacheResult<Vec<Option<Interactions>>> {
    counts
        .iter()
        .zip(flags)
        .map(|(c, f)| match (c.as_deref().map(bytes_to_ids).transpose()?, f.as_deref()) {
            (Some(c), Some(&[f])) if c.len() == 3 => Ok(Some(Interactions {
                reblogs: c[0],
                favourites: c[1],
                replies: c[2],
                reblogged: f & 1 != 0,
                favourited: f & 2 != 0,
            })),
            (Some(_), Some(_)) => Err(CacheError::Backend("corrupt cached interactions".into())),
            _ => Ok(None),
        })
        .collect()
}

/// A fill token: unique enough that two fills of one key never share one.
fn rand_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_built_in_place_are_the_formatted_keys() {
        let ids = [0u64, 7, u64::MAX];
        let built = id_keys_cmd("tl:", "MGET", "{", ids.iter().copied(), "}:n");
        let formatted = redis::cmd("MGET").arg(ids.map(|id| format!("tl:{{{id}}}:n")).to_vec()).clone();
        assert_eq!(built.get_packed_command(), formatted.get_packed_command());
        let built = id_keys_cmd("x", "MGET", "p:", ids.iter().copied(), "");
        let formatted = redis::cmd("MGET").arg(ids.map(|id| format!("xp:{id}")).to_vec()).clone();
        assert_eq!(built.get_packed_command(), formatted.get_packed_command());
    }
}
