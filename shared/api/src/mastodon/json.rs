//! Accounts and Statuses written straight into a JSON buffer, for the pages that answer
//! many of them (the home timeline).
//!
//! Building a [`Status`](super::Status) and serialising it allocated a dozen strings per
//! status (URLs, ids, the date, the HTML) and copied its author's serialised Account into
//! each one; under `perf` that was a fifth to a quarter of the timeline-service's time
//! per read (BENCHMARKS.md). Writing
//! the same bytes straight into the page's buffer skips the entities. The output is byte
//! for byte what `serde_json` writes for `Account` and `Status` (the tests below
//! compare them), so the two stay interchangeable: the entities remain the definition of
//! the shape, and a field added there fails those tests until it is added here.

use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, PostRecord};

use super::{PublicBase, datetime, html};

const DAY_MS: u64 = 86_400_000;

#[cfg(test)]
use super::{Account, RawAccount, Status};

/// The Account of user `id` as JSON (what `Account::new` serialises to).
pub fn account(base: &PublicBase, id: UserId, handle: &str, counts: Counts, statuses: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(640 + 8 * handle.len() + 8 * base.0.len());
    let b = &base.0;
    out.extend_from_slice(b"{\"id\":\"");
    int(&mut out, id.0);
    out.extend_from_slice(b"\",\"username\":");
    string(&mut out, &[handle]);
    out.extend_from_slice(b",\"acct\":");
    string(&mut out, &[handle]);
    out.extend_from_slice(b",\"url\":");
    string(&mut out, &[b, "/@", handle]);
    out.extend_from_slice(b",\"uri\":");
    string(&mut out, &[b, "/users/", handle]);
    out.extend_from_slice(b",\"display_name\":");
    string(&mut out, &[handle]);
    out.extend_from_slice(b",\"note\":\"\",\"avatar\":");
    string(&mut out, &[b, "/avatars/original/missing.png"]);
    out.extend_from_slice(b",\"avatar_static\":");
    string(&mut out, &[b, "/avatars/original/missing.png"]);
    out.extend_from_slice(b",\"header\":");
    string(&mut out, &[b, "/headers/original/missing.png"]);
    out.extend_from_slice(b",\"header_static\":");
    string(&mut out, &[b, "/headers/original/missing.png"]);
    out.extend_from_slice(
        b",\"locked\":false,\"fields\":[],\"emojis\":[],\"bot\":false,\"group\":false,\"discoverable\":true,\"created_at\":",
    );
    // The day the account was created, at midnight UTC (as `Account::new`).
    date(&mut out, id.unix_millis() / DAY_MS * DAY_MS);
    out.extend_from_slice(b",\"last_status_at\":null,\"statuses_count\":");
    int(&mut out, statuses);
    out.extend_from_slice(b",\"followers_count\":");
    int(&mut out, counts.followers);
    out.extend_from_slice(b",\"following_count\":");
    int(&mut out, counts.following);
    out.extend_from_slice(b",\"roles\":[]}");
    out
}

/// One status of a page: what `Status::new` and `Status::counted` take.
#[derive(Clone, Copy)]
pub struct Shown<'a> {
    pub post: &'a PostRecord,
    /// The author's Account as JSON ([`account`]).
    pub account: &'a [u8],
    /// The author of the post it replies to.
    pub parent_author: Option<UserId>,
    pub interactions: Interactions,
}

/// Appends `shown` as a Status: what `Status::new(..).counted(..)` serialises to.
pub fn status(out: &mut Vec<u8>, base: &PublicBase, shown: &Shown<'_>) {
    let p = shown.post;
    head(out, base, p, "", shown.account);
    content(out, &p.text);
    let i = shown.interactions;
    middle(out, i.reblogs, i.favourites, i.replies, p.reply_to, shown.parent_author);
    out.extend_from_slice(b"null");
    tail(out, i.favourited, i.reblogged);
}

/// Appends the reblog `reblog` (its post and its reblogger's account) of `original`: what
/// `Status::reblog(..)` serialises to. Its flags are the original's; its own counts are
/// zero and it replies to nothing, whatever `reblog` carries.
pub fn reblog(out: &mut Vec<u8>, base: &PublicBase, reblog: &Shown<'_>, original: &Shown<'_>) {
    let p = reblog.post;
    head(out, base, p, "/activity", reblog.account);
    out.extend_from_slice(b"\"\"");
    middle(out, 0, 0, 0, p.reply_to, None);
    status(out, base, original);
    let i = original.interactions;
    tail(out, i.favourited, i.reblogged);
}

/// From the opening brace to `"content":`.
fn head(out: &mut Vec<u8>, base: &PublicBase, p: &PostRecord, uri_suffix: &str, account: &[u8]) {
    let (b, handle) = (base.0.as_str(), p.author_handle.as_str());
    let mut id = itoa::Buffer::new();
    let id = id.format(p.id.0);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"uri\":");
    string(out, &[b, "/users/", handle, "/statuses/", id, uri_suffix]);
    out.extend_from_slice(b",\"url\":");
    string(out, &[b, "/@", handle, "/", id]);
    out.extend_from_slice(b",\"created_at\":");
    date(out, p.id.unix_millis());
    out.extend_from_slice(b",\"account\":");
    out.extend_from_slice(account);
    out.extend_from_slice(b",\"content\":");
}

/// From after the content to `"reblog":`.
fn middle(
    out: &mut Vec<u8>,
    reblogs: u64,
    favourites: u64,
    replies: u64,
    reply_to: Option<PostId>,
    parent_author: Option<UserId>,
) {
    out.extend_from_slice(
        b",\"visibility\":\"public\",\"sensitive\":false,\"spoiler_text\":\"\",\"media_attachments\":[],\
          \"mentions\":[],\"tags\":[],\"emojis\":[],\"reblogs_count\":",
    );
    int(out, reblogs);
    out.extend_from_slice(b",\"favourites_count\":");
    int(out, favourites);
    out.extend_from_slice(b",\"replies_count\":");
    int(out, replies);
    out.extend_from_slice(b",\"in_reply_to_id\":");
    quoted_id(out, reply_to.map(|p| p.0));
    out.extend_from_slice(b",\"in_reply_to_account_id\":");
    quoted_id(out, parent_author.map(|a| a.0));
    out.extend_from_slice(b",\"reblog\":");
}

/// From after the reblog to the closing brace.
fn tail(out: &mut Vec<u8>, favourited: bool, reblogged: bool) {
    out.extend_from_slice(b",\"poll\":null,\"card\":null,\"language\":null,\"edited_at\":null,\"favourited\":");
    out.extend_from_slice(if favourited { b"true" } else { b"false" });
    out.extend_from_slice(b",\"reblogged\":");
    out.extend_from_slice(if reblogged { b"true" } else { b"false" });
    out.extend_from_slice(b",\"muted\":false,\"bookmarked\":false,\"pinned\":false}");
}

/// `text` as the status's HTML ([`html`]), as a JSON string. Most posts are one line with
/// nothing to escape: that is one paragraph, written without building it first.
fn content(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|c| matches!(c, b'\r' | b'\n' | b'&' | b'<' | b'>' | b'"' | b'\'')) {
        return string(out, &[&html(text)]);
    }
    if text.trim().is_empty() {
        return out.extend_from_slice(b"\"\"");
    }
    string(out, &["<p>", text, "</p>"]);
}

fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An id as Mastodon sends it (a string), or `null`.
fn quoted_id(out: &mut Vec<u8>, id: Option<u64>) {
    match id {
        Some(id) => {
            out.push(b'"');
            int(out, id);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A Mastodon Datetime as a JSON string (what [`datetime`] formats), without going
/// through `time`'s general formatter.
fn date(out: &mut Vec<u8>, unix_ms: u64) {
    let (year, month, day) = civil_from_days(unix_ms / DAY_MS);
    if year > 9999 {
        return string(out, &[&datetime(unix_ms)]);
    }
    let ms = unix_ms % DAY_MS;
    out.push(b'"');
    digits(out, year, 4);
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
    out.push(b'T');
    digits(out, ms / 3_600_000, 2);
    out.push(b':');
    digits(out, ms / 60_000 % 60, 2);
    out.push(b':');
    digits(out, ms / 1000 % 60, 2);
    out.push(b'.');
    digits(out, ms % 1000, 3);
    out.extend_from_slice(b"Z\"");
}

/// `n` in exactly `width` decimal digits (zero-padded; `n` must fit).
fn digits(out: &mut Vec<u8>, n: u64, width: u32) {
    for k in (0..width).rev() {
        out.push(b'0' + (n / 10u64.pow(k) % 10) as u8);
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `parts` concatenated, as one JSON string, escaped as `serde_json` escapes.
fn string(out: &mut Vec<u8>, parts: &[&str]) {
    out.push(b'"');
    for part in parts {
        escape(out, part);
    }
    out.push(b'"');
}

fn escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A JSON array of Statuses, written one by one, each element's place kept (a stream
/// sends one status on its own).
pub struct StatusArray {
    json: Vec<u8>,
    items: Vec<std::ops::Range<usize>>,
}

impl StatusArray {
    /// Room for `n` statuses of a usual size.
    pub fn with_capacity(n: usize) -> StatusArray {
        let mut json = Vec::with_capacity(2 + n * 1600);
        json.push(b'[');
        StatusArray { json, items: Vec::with_capacity(n) }
    }

    /// Appends one element, which `write` writes.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.items.is_empty() {
            self.json.push(b',');
        }
        let start = self.json.len();
        write(&mut self.json);
        self.items.push(start..self.json.len());
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `i`th status's JSON.
    pub fn get(&self, i: usize) -> Option<&str> {
        // Only ever whole JSON values of UTF-8 strings and ASCII.
        self.items.get(i).and_then(|r| std::str::from_utf8(&self.json[r.clone()]).ok())
    }

    /// The array's JSON.
    pub fn into_json(mut self) -> Vec<u8> {
        self.json.push(b']');
        self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_storage::UserRecord;

    fn base() -> PublicBase {
        PublicBase("https://example.test:8080".to_owned())
    }

    fn post(id: u64, author: u64, handle: &str, text: &str) -> PostRecord {
        PostRecord {
            id: PostId(id),
            author: UserId(author),
            author_handle: handle.to_owned(),
            text: text.to_owned(),
            reply_to: None,
            reblog_of: None,
        }
    }

    fn serde_account(id: u64, handle: &str, counts: Counts, statuses: u64) -> RawAccount {
        let user = UserRecord { id: UserId(id), handle: handle.to_owned() };
        RawAccount::new(&Account::new(&base(), &user, counts, statuses))
    }

    const IDS: [u64; 4] = [0, 1, 117_093_589_471_428_608, (1 << 63) + 12_345];

    #[test]
    fn accounts_are_what_serde_writes() {
        for id in IDS {
            for handle in ["alice", "bob_2", "q\"uote\\back", "ünï"] {
                let counts = Counts { followers: id % 1000, following: 7 };
                let written = account(&base(), UserId(id), handle, counts, 3);
                let expected = serde_account(id, handle, counts, 3);
                assert_eq!(std::str::from_utf8(&written).unwrap(), expected.0.get());
            }
        }
    }

    #[test]
    fn statuses_and_reblogs_are_what_serde_writes() {
        let texts = [
            "post 3 from author 7",
            "",
            "   ",
            "  spaced  ",
            "hi <b>&</b> \"q\" 'a'",
            "one\ntwo\n\nthree\r\nfour",
            "tab\there \\ back\u{1}\u{1f}\u{7f} ünïcødé 🐦",
            "\n\n",
        ];
        let interactions = [
            Interactions::default(),
            Interactions { reblogs: 3, favourites: 40, replies: 1, reblogged: true, favourited: false },
            Interactions { reblogs: u64::MAX, favourites: 0, replies: 9, reblogged: false, favourited: true },
        ];
        for (n, &id) in IDS.iter().enumerate() {
            for text in texts {
                for i in interactions {
                    let mut p = post(id, 42, "alice", text);
                    let parent = (n % 2 == 1).then_some(UserId(77));
                    p.reply_to = (n % 2 == 1).then_some(PostId(id / 2));
                    let counts = Counts { followers: 5, following: 6 };
                    let raw = serde_account(42, "alice", counts, 0);
                    let acct = account(&base(), UserId(42), "alice", counts, 0);
                    let shown = Shown { post: &p, account: &acct, parent_author: parent, interactions: i };
                    let expected = Status::new(&base(), &p, &raw, parent).counted(&i);
                    let mut out = Vec::new();
                    status(&mut out, &base(), &shown);
                    assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(&expected).unwrap());

                    let r = PostRecord { reblog_of: Some(p.id), text: String::new(), ..post(id + 1, 9, "bob", "") };
                    let (rraw, racct) =
                        (serde_account(9, "bob", counts, 0), account(&base(), UserId(9), "bob", counts, 0));
                    let by =
                        Shown { post: &r, account: &racct, parent_author: None, interactions: Interactions::default() };
                    let expected = Status::reblog(&base(), &r, &rraw, expected);
                    let mut out = Vec::new();
                    reblog(&mut out, &base(), &by, &shown);
                    assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(&expected).unwrap());
                }
            }
        }
    }

    #[test]
    fn dates_are_datetimes() {
        let mut ms = 0u64;
        while ms < 400 * 366 * DAY_MS {
            let mut out = Vec::new();
            date(&mut out, ms);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("\"{}\"", datetime(ms)));
            ms += 86_399_999 + 7 * 3_600_000 + 13;
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_escapes() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        let mut out = Vec::new();
        string(&mut out, &[&all, "x", &all]);
        assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(&format!("{all}x{all}")).unwrap());
    }

    #[test]
    fn an_array_keeps_its_elements() {
        let mut a = StatusArray::with_capacity(2);
        assert_eq!(a.into_json(), b"[]");
        a = StatusArray::with_capacity(2);
        a.push(|o| o.extend_from_slice(b"{\"a\":1}"));
        a.push(|o| o.extend_from_slice(b"{}"));
        assert_eq!((a.len(), a.get(1)), (2, Some("{}")));
        assert_eq!(a.into_json(), b"[{\"a\":1},{}]");
    }
}
