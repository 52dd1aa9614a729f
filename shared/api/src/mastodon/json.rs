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

/// What a page writes once for each of its authors: the Account, and the beginnings of
/// its statuses' `uri` and `url` (their opening quote and escaped text up to the post id),
/// so that each status copies them instead of escaping them again.
pub struct Author {
    account: Vec<u8>,
    uri: Vec<u8>,
    url: Vec<u8>,
}

/// User `id`'s [`Author`] parts of a page (see [`account`]).
pub fn author(base: &PublicBase, id: UserId, handle: &str, counts: Counts, statuses: u64) -> Author {
    let b = base.0.as_str();
    // A JSON string without its closing quote: each status writes the rest.
    let opened = |parts: &[&str]| {
        let mut out = Vec::new();
        string(&mut out, parts);
        out.pop();
        out
    };
    Author {
        account: account(base, id, handle, counts, statuses),
        uri: opened(&[b, "/users/", handle, "/statuses/"]),
        url: opened(&[b, "/@", handle, "/"]),
    }
}

/// The Account of user `id` as JSON (what `Account::new` serialises to).
fn account(base: &PublicBase, id: UserId, handle: &str, counts: Counts, statuses: u64) -> Vec<u8> {
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
    /// Its author's parts, written for the page ([`author`]).
    pub author: &'a Author,
    /// The author of the post it replies to.
    pub parent_author: Option<UserId>,
    pub interactions: Interactions,
}

/// Appends `shown` as a Status: what `Status::new(..).counted(..)` serialises to.
pub fn status(out: &mut Vec<u8>, shown: &Shown<'_>) {
    let p = shown.post;
    head(out, p, "", shown.author);
    content(out, &p.text);
    let i = shown.interactions;
    middle(out, i.reblogs, i.favourites, i.replies, p.reply_to, shown.parent_author);
    out.extend_from_slice(b"null");
    tail(out, i.favourited, i.reblogged);
}

/// Appends the reblog `reblog` (its post and its reblogger's account) of `original`: what
/// `Status::reblog(..)` serialises to. Its flags are the original's; its own counts are
/// zero and it replies to nothing, whatever `reblog` carries.
pub fn reblog(out: &mut Vec<u8>, reblog: &Shown<'_>, original: &Shown<'_>) {
    let p = reblog.post;
    head(out, p, "/activity", reblog.author);
    out.extend_from_slice(b"\"\"");
    middle(out, 0, 0, 0, p.reply_to, None);
    status(out, original);
    let i = original.interactions;
    tail(out, i.favourited, i.reblogged);
}

/// From the opening brace to `"content":`.
fn head(out: &mut Vec<u8>, p: &PostRecord, uri_suffix: &str, author: &Author) {
    let mut id = itoa::Buffer::new();
    let id = id.format(p.id.0).as_bytes();
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\",\"uri\":");
    // The id and the suffix are ASCII with nothing to escape.
    for part in [&author.uri, id, uri_suffix.as_bytes(), b"\",\"url\":", &author.url, id, b"\""] {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b",\"created_at\":");
    date(out, p.id.unix_millis());
    out.extend_from_slice(b",\"account\":");
    out.extend_from_slice(&author.account);
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
    // `bytes[start..i]` is plain and not yet copied.
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        // Most text has nothing to escape: skip it eight bytes at a time.
        if let Some(word) = bytes.get(i..i + 8)
            && !needs_escape(u64::from_le_bytes(word.try_into().unwrap_or_default()))
        {
            i += 8;
            continue;
        }
        let c = bytes[i];
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
        } else {
            out.extend_from_slice(short);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any of the eight bytes of `w` is one JSON escapes: below 0x20, `"` or `\`
/// (UTF-8's bytes, 0x80 and up, pass as they are). The classic bit tricks for "some byte
/// is below n" and "some byte is zero", exact as a yes or no.
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (below_space | zero_in(w ^ (ONES * u64::from(b'"'))) | zero_in(w ^ (ONES * u64::from(b'\\')))) & HIGHS != 0
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
            // A handle with something to escape stands in for an unusual host (the base).
            for (text, handle) in texts.iter().flat_map(|t| [(*t, "alice"), (*t, "q\"uote\\")]) {
                for i in interactions {
                    let mut p = post(id, 42, handle, text);
                    let parent = (n % 2 == 1).then_some(UserId(77));
                    p.reply_to = (n % 2 == 1).then_some(PostId(id / 2));
                    let counts = Counts { followers: 5, following: 6 };
                    let raw = serde_account(42, handle, counts, 0);
                    let by_alice = author(&base(), UserId(42), handle, counts, 0);
                    let shown = Shown { post: &p, author: &by_alice, parent_author: parent, interactions: i };
                    let expected = Status::new(&base(), &p, &raw, parent).counted(&i);
                    let mut out = Vec::new();
                    status(&mut out, &shown);
                    assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(&expected).unwrap());

                    let r = PostRecord { reblog_of: Some(p.id), text: String::new(), ..post(id + 1, 9, "bob", "") };
                    let (rraw, by_bob) =
                        (serde_account(9, "bob", counts, 0), author(&base(), UserId(9), "bob", counts, 0));
                    let by =
                        Shown { post: &r, author: &by_bob, parent_author: None, interactions: Interactions::default() };
                    let expected = Status::reblog(&base(), &r, &rraw, expected);
                    let mut out = Vec::new();
                    reblog(&mut out, &by, &shown);
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
    fn every_escape_is_found_wherever_it_falls_in_a_word() {
        let specials = ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "\u{7f}", " ", "€"];
        for special in specials {
            for at in 0..20 {
                let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(19 - at));
                let mut out = Vec::new();
                string(&mut out, &[&text]);
                assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(&text).unwrap(), "{text:?}");
            }
        }
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
