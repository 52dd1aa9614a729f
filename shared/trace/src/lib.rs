//! Replayable traces for Starling: the text format, a streaming reader and writer, a synthetic
//! generator and importers for real traces.
//!
//! A trace is what the replay tool drives a deployment with: an initial follower graph followed by a
//! time-ordered list of user actions. Researchers either import a real trace ([`higgs`],
//! [`edgelist`]) or generate one with realistic skew ([`synth`]); [`stats`] summarises any trace and
//! [`cli`] exposes all of it as `starling trace ...` subcommands.
//!
//! # Format, version 1
//!
//! A UTF-8 text file, one record per line. Fields are separated by any run of ASCII whitespace
//! (spaces or tabs); the writer uses single spaces. The format is line-oriented so that reading and
//! writing stream: neither side ever holds the whole trace in memory.
//!
//! ```text
//! #starling-trace v1
//! #meta source=higgs
//! #meta fill=interactions
//! edge 1 2
//! 0 post 1 17
//! 15 follow 3 1
//! 20 read 3
//! 25 delete 1 17
//! ```
//!
//! * Line 1 is exactly `#starling-trace v1` (trailing whitespace and a UTF-8 byte-order mark are
//!   tolerated). Anything else is rejected; `#starling-trace <other>` is rejected as an unsupported
//!   version rather than a missing header, so a newer file gives a clear error.
//! * `#meta key=value` lines follow the first line, before the first record. The key runs up to the
//!   first `=` and contains no whitespace; the value is the rest of the line with surrounding
//!   whitespace trimmed (it may contain spaces). Meta records how the trace was made (source,
//!   seed, options) so that a result can be traced back to the choices behind it. A `#meta` line
//!   after the first record is rejected: silently ignoring it would lose provenance.
//! * Any other line starting with `#` is a comment; blank lines are ignored.
//! * `edge <follower> <followee>`: in the initial graph, `follower` follows `followee`. Every edge
//!   comes before every event, so a replayer can load the graph and then start the clock.
//! * `<at_ms> <op> <user> [<arg>]`: an event. `at_ms` is milliseconds since the trace start and
//!   never decreases from one event to the next. The ops are
//!   * `post <user> <key>`: `key` is a trace-local post key, unique in the trace;
//!   * `delete <user> <key>`: deletes the post with that key, an earlier post by the same user;
//!   * `follow`, `unfollow`, `block`, `unblock`, `mute`, `unmute <user> <target>`: `target` is
//!     a user;
//!   * `reblog`, `unreblog`, `favourite`, `unfavourite <user> <key>`: acts on the post with
//!     that key (an earlier post by anyone). A user reblogs a post at most once: a second
//!     reblog changes nothing, and an unreblog of what the user did not reblog is fine;
//!   * `read <user>`: a read of the user's home timeline (no argument).
//!
//! Users, post keys and times are unsigned 64-bit decimal integers (digits only, no sign).
//!
//! The reader rejects, with the 1-based line number: a missing or unknown version header, an
//! unknown op, missing or extra fields, a non-numeric id or time, a decreasing `at_ms`, an edge
//! after an event, and a misplaced or malformed `#meta` line. It does not check the uniqueness of
//! post keys or that deletes name an earlier post by the same user: that needs memory proportional
//! to the trace, so it is the producer's obligation (the generator's tests check it). The
//! [`TraceWriter`] enforces the same ordering rules as the reader, so a trace it wrote always reads
//! back.
//!
//! After the first error a [`TraceReader`] yields nothing more: a consumer cannot mistake the rest
//! of a broken file for a complete trace.

mod error;
mod input;
mod reader;
mod writer;

pub mod cli;
pub mod edgelist;
pub mod higgs;
pub mod progress;
pub mod stats;
pub mod synth;

pub use error::TraceError;
pub use reader::TraceReader;
pub use writer::TraceWriter;

/// The first line of every version-1 trace.
pub const VERSION_LINE: &str = "#starling-trace v1";

/// A user as the trace names it. Trace users are local to the trace; the replayer maps them to
/// accounts in the deployment.
pub type TraceUser = u64;
/// A post as the trace names it: unique within one trace, chosen by the producer.
pub type PostKey = u64;

/// What a user does at one instant of the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Publishes a post; `key` is unique in the trace.
    Post {
        key: PostKey,
    },
    /// Deletes an earlier post of the same user.
    Delete {
        key: PostKey,
    },
    Follow {
        target: TraceUser,
    },
    Unfollow {
        target: TraceUser,
    },
    Block {
        target: TraceUser,
    },
    Unblock {
        target: TraceUser,
    },
    /// Reblogs (shares) an earlier post by anyone.
    Reblog {
        key: PostKey,
    },
    Unreblog {
        key: PostKey,
    },
    Favourite {
        key: PostKey,
    },
    Unfavourite {
        key: PostKey,
    },
    /// Hides the target's posts and reblogs from the user's home timeline, keeping the follow.
    Mute {
        target: TraceUser,
    },
    Unmute {
        target: TraceUser,
    },
    /// Reads the user's home timeline.
    Read,
}

impl Op {
    /// How many ops there are.
    pub const COUNT: usize = 13;

    /// Every op name, in the order of [`Op::index`]; the names are the ones used in the file.
    pub const NAMES: [&'static str; Op::COUNT] = [
        "post",
        "delete",
        "follow",
        "unfollow",
        "block",
        "unblock",
        "read",
        "reblog",
        "unreblog",
        "favourite",
        "unfavourite",
        "mute",
        "unmute",
    ];

    /// The op's name as written in a trace file.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// A dense index (0..[`Op::COUNT`]) in the order of [`Op::NAMES`], for per-op counters.
    pub fn index(&self) -> usize {
        match self {
            Op::Post { .. } => 0,
            Op::Delete { .. } => 1,
            Op::Follow { .. } => 2,
            Op::Unfollow { .. } => 3,
            Op::Block { .. } => 4,
            Op::Unblock { .. } => 5,
            Op::Read => 6,
            Op::Reblog { .. } => 7,
            Op::Unreblog { .. } => 8,
            Op::Favourite { .. } => 9,
            Op::Unfavourite { .. } => 10,
            Op::Mute { .. } => 11,
            Op::Unmute { .. } => 12,
        }
    }

    /// The op's argument (post key or target user), `None` for `read`.
    pub fn arg(&self) -> Option<u64> {
        match *self {
            Op::Post { key }
            | Op::Delete { key }
            | Op::Reblog { key }
            | Op::Unreblog { key }
            | Op::Favourite { key }
            | Op::Unfavourite { key } => Some(key),
            Op::Follow { target }
            | Op::Unfollow { target }
            | Op::Block { target }
            | Op::Unblock { target }
            | Op::Mute { target }
            | Op::Unmute { target } => Some(target),
            Op::Read => None,
        }
    }

    /// Builds an op from its file name and argument; `None` for an unknown name or a wrong arity.
    pub fn from_parts(name: &str, arg: Option<u64>) -> Option<Op> {
        Some(match (name, arg) {
            ("post", Some(key)) => Op::Post { key },
            ("delete", Some(key)) => Op::Delete { key },
            ("follow", Some(target)) => Op::Follow { target },
            ("unfollow", Some(target)) => Op::Unfollow { target },
            ("block", Some(target)) => Op::Block { target },
            ("unblock", Some(target)) => Op::Unblock { target },
            ("reblog", Some(key)) => Op::Reblog { key },
            ("unreblog", Some(key)) => Op::Unreblog { key },
            ("favourite", Some(key)) => Op::Favourite { key },
            ("unfavourite", Some(key)) => Op::Unfavourite { key },
            ("mute", Some(target)) => Op::Mute { target },
            ("unmute", Some(target)) => Op::Unmute { target },
            ("read", None) => Op::Read,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One timed action of one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the trace start.
    pub at_ms: u64,
    pub user: TraceUser,
    pub op: Op,
}

/// One line of a trace body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Initial graph: `follower` follows `followee`.
    Edge {
        follower: TraceUser,
        followee: TraceUser,
    },
    Event(Event),
}

impl std::fmt::Display for Record {
    /// The record as one trace line (without the newline).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::Edge { follower, followee } => write!(f, "edge {follower} {followee}"),
            Record::Event(e) => match e.op.arg() {
                Some(arg) => write!(f, "{} {} {} {}", e.at_ms, e.op.name(), e.user, arg),
                None => write!(f, "{} {} {}", e.at_ms, e.op.name(), e.user),
            },
        }
    }
}

/// The trace's header: its `#meta` lines, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub meta: Vec<(String, String)>,
}

impl Header {
    /// Appends a `key=value` pair (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.meta.push((key.into(), value.to_string()));
        self
    }

    /// The value of the last `key` entry: a later line overrides an earlier one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.meta.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}
