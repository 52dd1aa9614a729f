//! Pure pieces of the Scylla store: id and bucket arithmetic, window bounds, row ↔ model
//! conversions and connection-string parsing. Nothing here talks to a node, so all of it
//! is unit-tested without one.

use bytes::Bytes;
use starling_events::{Record, Topic};
use starling_ids::{PostId, UserId};
use starling_storage::{NotificationKind, NotificationRecord, Order, PostRecord, StoreError, StoreResult, Window};

use crate::ScyllaError;

/// Bits of a Snowflake id below the millisecond clock (10 worker + 12 sequence bits).
const CLOCK_SHIFT: u32 = 22;

/// `posts_by_author` bucket width: 2^29 ms ≈ 6.2 days of the id clock. Narrow enough that
/// an author writing at the default rate limit for a whole bucket (10/s) stays near 5M
/// small rows; wide enough that a page of a typical author's posts is one or two partition
/// reads. Part of the schema: changing it means rewriting `posts_by_author`.
pub const POST_BUCKET_SHIFT: u32 = CLOCK_SHIFT + 29;

/// Follow-list bucket width over the *other* user's id: 2^31 ms ≈ 25 days of sign-ups.
/// Followers of one user are spread by when the followers signed up, so a celebrity's
/// tens of millions of followers land in many partitions of bounded size, and listing them
/// in id order walks the buckets in order.
pub const EDGE_BUCKET_SHIFT: u32 = CLOCK_SHIFT + 31;

/// Outbox bucket width: 2^12 ms ≈ 4.1 s of commits. Short, because a scan for pending
/// entries reads every tombstone left by acknowledged entries in the buckets it visits.
pub const OUTBOX_BUCKET_SHIFT: u32 = CLOCK_SHIFT + 12;

/// `notifications` bucket width: 2^26 ms ≈ 18.6 hours of the id clock. Narrower than an
/// author's posts, because what fills it is not one user's own rate but everyone else's:
/// a recipient notified 100 times a second for a whole bucket (a celebrity's post going
/// viral) stays near 6.7M small rows, as bounded as `posts_by_author`; a typical user's
/// page is still one or a few partition reads. Part of the schema: changing it means
/// rewriting `notifications`.
pub const NOTIFICATION_BUCKET_SHIFT: u32 = CLOCK_SHIFT + 26;

/// An id as a CQL bigint. Starling ids are below 2^63; anything larger cannot be stored.
pub fn to_cql(id: u64) -> StoreResult<i64> {
    i64::try_from(id).map_err(|_| StoreError::Backend(format!("id {id} does not fit a CQL bigint")))
}

/// A stored bigint back to an id; a negative one can only come from corruption.
pub fn from_cql(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: negative id {v}")))
}

pub fn post_bucket(id: i64) -> i32 {
    // 63 - 51 = 12 bits: always fits.
    (id >> POST_BUCKET_SHIFT) as i32
}

pub fn edge_bucket(id: i64) -> i32 {
    (id >> EDGE_BUCKET_SHIFT) as i32
}

pub fn notification_bucket(id: i64) -> i32 {
    // 63 - 48 = 15 bits: always fits.
    (id >> NOTIFICATION_BUCKET_SHIFT) as i32
}

pub fn outbox_bucket(seq: i64) -> i64 {
    seq >> OUTBOX_BUCKET_SHIFT
}

/// The outbox bucket that seqs generated at `unix_ms` fall in.
pub fn outbox_bucket_at(unix_ms: u64) -> i64 {
    let since_epoch = unix_ms.saturating_sub(starling_ids::EPOCH_MS);
    outbox_bucket((since_epoch << CLOCK_SHIFT).min(i64::MAX as u64) as i64)
}

/// A [`Window`] as an inclusive range of stored ids `[lo, hi]`, or `None` if it is empty.
/// The trait's bounds are exclusive and may be any u64; stored ids are 0..=i64::MAX.
pub fn window_range(window: &Window<PostId>) -> Option<(i64, i64)> {
    id_range(window.before.map(PostId::get), window.after.map(PostId::get), window.limit)
}

/// [`window_range`] for windows over plain ids (notifications).
pub fn id_range(before: Option<u64>, after: Option<u64>, limit: usize) -> Option<(i64, i64)> {
    if limit == 0 {
        return None;
    }
    let hi = match before {
        Some(before) => before.checked_sub(1)?.min(i64::MAX as u64) as i64,
        None => i64::MAX,
    };
    let lo = match after {
        Some(after) => {
            let lo = after.checked_add(1)?;
            if lo > i64::MAX as u64 {
                return None;
            }
            lo as i64
        }
        None => 0,
    };
    (lo <= hi).then_some((lo, hi))
}

/// The `posts_by_author` buckets a window spans, in the order the window reads them.
pub fn window_buckets(range: (i64, i64), order: Order) -> (i32, i32) {
    bucket_span(range, order, post_bucket)
}

/// The buckets (by `bucket`) that the ids `range` span, first the one `order` reads first.
pub fn bucket_span(range: (i64, i64), order: Order, bucket: fn(i64) -> i32) -> (i32, i32) {
    let (lo, hi) = (bucket(range.0), bucket(range.1));
    match order {
        Order::NewestFirst => (hi, lo),
        Order::OldestFirst => (lo, hi),
    }
}

/// The columns of a post row after the id: author, handle, body, reply_to, reblog_of.
pub type PostColumns = (i64, String, String, Option<i64>, Option<i64>);

/// A post row as read: the id, then [`PostColumns`].
pub type PostRow = (i64, i64, String, String, Option<i64>, Option<i64>);

pub fn post_from_row(
    id: i64,
    (author, author_handle, text, reply_to, reblog_of): PostColumns,
) -> StoreResult<PostRecord> {
    Ok(PostRecord {
        id: PostId(from_cql(id, "post id")?),
        author: UserId(from_cql(author, "post author")?),
        author_handle,
        text,
        reply_to: reply_to.map(|r| from_cql(r, "post reply_to")).transpose()?.map(PostId),
        reblog_of: reblog_of.map(|r| from_cql(r, "post reblog_of")).transpose()?.map(PostId),
    })
}

/// [`post_from_row`] for a whole [`PostRow`].
pub fn post_from_full_row((id, author, handle, text, reply_to, reblog_of): PostRow) -> StoreResult<PostRecord> {
    post_from_row(id, (author, handle, text, reply_to, reblog_of))
}

pub fn post_to_row(post: &PostRecord) -> StoreResult<(i64, PostColumns)> {
    Ok((
        to_cql(post.id.get())?,
        (
            to_cql(post.author.get())?,
            post.author_handle.clone(),
            post.text.clone(),
            post.reply_to.map(|r| to_cql(r.get())).transpose()?,
            post.reblog_of.map(|r| to_cql(r.get())).transpose()?,
        ),
    ))
}

/// A notification's key as the primary key of `notification_keys`: recipient, kind tag,
/// account, status (0 for none, as in the embedded store: a key column cannot be null).
pub type NotificationKey = (i64, i8, i64, i64);

pub fn notification_key(
    recipient: UserId,
    kind: NotificationKind,
    account: UserId,
    status: Option<PostId>,
) -> StoreResult<NotificationKey> {
    Ok((
        to_cql(recipient.get())?,
        notification_kind_to_cql(kind),
        to_cql(account.get())?,
        status.map_or(Ok(0), |s| to_cql(s.get()))?,
    ))
}

/// The tag as a CQL tinyint (tags are small, so the cast is exact both ways).
pub fn notification_kind_to_cql(kind: NotificationKind) -> i8 {
    kind.tag() as i8
}

/// A `notifications` row as read: id, kind tag, account, status.
pub type NotificationRow = (i64, i8, i64, Option<i64>);

pub fn notification_from_row(
    recipient: UserId,
    (id, kind, account, status): NotificationRow,
) -> StoreResult<NotificationRecord> {
    let id = from_cql(id, "notification id")?;
    let kind = NotificationKind::from_tag(kind as u8)
        .ok_or_else(|| StoreError::Corrupt(format!("notification {id}: unknown kind {kind}")))?;
    Ok(NotificationRecord {
        id,
        recipient,
        kind,
        account: UserId(from_cql(account, "notification account")?),
        status: status.map(|s| from_cql(s, "notification status")).transpose()?.map(PostId),
    })
}

/// The write timestamp (µs) of a delete of rows last written at `written` (µs, as stored
/// or as planned): above it, so the delete shadows the write even if the write lands later
/// or was stamped by a clock running ahead; and no older than `now_us`, like any write.
pub fn delete_timestamp(written: Option<i64>, now_us: i64) -> i64 {
    written.map_or(now_us, |w| now_us.max(w.saturating_add(1)))
}

/// A counter as a count. A counter below zero means an update was lost or doubled
/// (a crash between a change and its counter update): show 0.
pub fn count(counter: Option<i64>) -> u64 {
    counter.map_or(0, |c| u64::try_from(c).unwrap_or(0))
}

/// A [`Record`] as CQL values: topic tag, key, payload, headers. The key is any u64 and is
/// stored bit for bit (`as` casts both ways), unlike ids, which must be below 2^63.
pub type RecordTuple = (i8, i64, Bytes, Vec<(String, Bytes)>);

pub fn record_to_tuple(record: &Record) -> RecordTuple {
    (record.topic.tag() as i8, record.key as i64, record.payload.clone(), record.headers.clone())
}

pub fn record_from_tuple((tag, key, payload, headers): RecordTuple) -> StoreResult<Record> {
    let topic = Topic::from_tag(tag as u8)
        .ok_or_else(|| StoreError::Corrupt(format!("outbox record: unknown topic tag {tag}")))?;
    Ok(Record { topic, key: key as u64, payload, headers })
}

/// Contact points from `backends.scylla_uri`: `host[:port][,host[:port]...]`, optionally
/// prefixed with `scylla://` or `cql://`. The port defaults to 9042.
pub fn parse_uri(uri: &str) -> Result<Vec<String>, ScyllaError> {
    let rest = uri.trim();
    let rest = rest.strip_prefix("scylla://").or_else(|| rest.strip_prefix("cql://")).unwrap_or(rest);
    let rest = rest.trim_end_matches('/');
    let nodes: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            if n.starts_with('[') {
                if n.contains("]:") { n.to_owned() } else { format!("{n}:9042") }
            } else {
                match n.matches(':').count() {
                    0 => format!("{n}:9042"),
                    1 => n.to_owned(),
                    // A bare IPv6 address: it cannot carry a port without brackets.
                    _ => format!("[{n}]:9042"),
                }
            }
        })
        .collect();
    if nodes.is_empty() || nodes.iter().any(|n| n.contains('/') || n.contains('@')) {
        return Err(ScyllaError::Config(format!("invalid ScyllaDB address list {uri:?}")));
    }
    Ok(nodes)
}

/// Keyspace names are spliced into CQL text (a keyspace cannot be a bind marker), so only
/// the unquoted-identifier alphabet is allowed: a letter, then letters, digits and `_`,
/// at most 48 characters. Lower case only, because unquoted names are folded to it.
pub fn validate_keyspace(name: &str) -> Result<(), ScyllaError> {
    let mut chars = name.chars();
    let ok = name.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ScyllaError::Config(format!(
            "invalid keyspace name {name:?}: use a lower-case letter, then lower-case letters, digits or _ (max 48)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(before: Option<u64>, after: Option<u64>, limit: usize) -> Window<PostId> {
        Window { before: before.map(PostId), after: after.map(PostId), limit, order: Order::NewestFirst }
    }

    #[test]
    fn window_bounds_become_inclusive_ranges() {
        assert_eq!(window_range(&w(None, None, 10)), Some((0, i64::MAX)));
        assert_eq!(window_range(&w(Some(10), Some(5), 10)), Some((6, 9)));
        assert_eq!(window_range(&w(Some(6), Some(5), 10)), None, "adjacent bounds hold nothing");
        assert_eq!(window_range(&w(Some(3), Some(8), 10)), None, "inverted bounds");
        assert_eq!(window_range(&w(Some(0), None, 10)), None, "nothing below id 0");
        assert_eq!(window_range(&w(None, Some(u64::MAX), 10)), None);
        assert_eq!(window_range(&w(None, Some(i64::MAX as u64), 10)), None, "nothing storable above");
        assert_eq!(window_range(&w(Some(u64::MAX), None, 10)), Some((0, i64::MAX)), "huge before is clamped");
        assert_eq!(window_range(&w(None, None, 0)), None, "limit 0");
    }

    #[test]
    fn plain_id_windows_match_post_windows() {
        for (before, after, limit) in
            [(None, None, 10), (Some(10), Some(5), 3), (Some(6), Some(5), 1), (Some(0), None, 1), (None, None, 0)]
        {
            assert_eq!(id_range(before, after, limit), window_range(&w(before, after, limit)));
        }
        assert_eq!(id_range(None, Some(u64::MAX), 1), None);
    }

    #[test]
    fn notifications_round_trip_through_keys_and_rows() {
        let (me, fan) = (UserId(7), UserId(8));
        assert_eq!(
            notification_key(me, NotificationKind::Follow, fan, None).unwrap(),
            (7, NotificationKind::Follow.tag() as i8, 8, 0)
        );
        assert_eq!(notification_key(me, NotificationKind::Reblog, fan, Some(PostId(9))).unwrap().3, 9);
        assert!(notification_key(UserId(1 << 63), NotificationKind::Follow, fan, None).is_err());
        for kind in NotificationKind::ALL {
            for status in [None, Some(PostId(42))] {
                let n = NotificationRecord { id: 99, recipient: me, kind, account: fan, status };
                let row = (99, notification_kind_to_cql(kind), 8, status.map(|s| s.get() as i64));
                assert_eq!(notification_from_row(me, row).unwrap(), n);
            }
        }
        assert!(matches!(notification_from_row(me, (1, 0, 8, None)), Err(StoreError::Corrupt(_))), "unknown kind");
        assert!(matches!(notification_from_row(me, (-1, 1, 8, None)), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn buckets_follow_the_id_clock() {
        let day_ms: i64 = 24 * 3600 * 1000;
        let id_at = |ms: i64| ms << CLOCK_SHIFT;
        assert_eq!(post_bucket(id_at(0)), 0);
        assert_eq!(post_bucket(id_at((1 << 29) - 1) | 0x3f_ffff), 0, "worker and sequence bits do not matter");
        assert_eq!(post_bucket(id_at(1 << 29)), 1);
        assert!((6..7).contains(&((1i64 << 29) / day_ms)), "a post bucket is about six days");
        assert_eq!(edge_bucket(id_at(1 << 31)), 1);
        assert_eq!(edge_bucket(i64::MAX), (1 << 10) - 1, "bucket numbers fit easily in an int");
        assert_eq!(post_bucket(i64::MAX), (1 << 12) - 1);
        assert_eq!(notification_bucket(id_at((1 << 26) - 1)), 0);
        assert_eq!(notification_bucket(id_at(1 << 26)), 1);
        assert!((18..19).contains(&((1i64 << 26) / 3_600_000)), "a notification bucket is about 18 hours");
        assert_eq!(notification_bucket(i64::MAX), (1 << 15) - 1);
        assert_eq!(outbox_bucket(id_at(4096)), 1);
        assert_eq!(outbox_bucket_at(starling_ids::EPOCH_MS + 4096), 1);
        assert_eq!(outbox_bucket_at(0), 0, "before the epoch clamps to 0");
    }

    #[test]
    fn window_buckets_run_in_read_order() {
        let range = (1i64 << POST_BUCKET_SHIFT, (3i64 << POST_BUCKET_SHIFT) + 5);
        assert_eq!(window_buckets(range, Order::NewestFirst), (3, 1));
        assert_eq!(window_buckets(range, Order::OldestFirst), (1, 3));
        let range = (1i64 << NOTIFICATION_BUCKET_SHIFT, (2i64 << NOTIFICATION_BUCKET_SHIFT) + 5);
        assert_eq!(bucket_span(range, Order::NewestFirst, notification_bucket), (2, 1));
    }

    #[test]
    fn ids_must_fit_a_bigint() {
        assert_eq!(to_cql(i64::MAX as u64).unwrap(), i64::MAX);
        assert!(matches!(to_cql(1 << 63), Err(StoreError::Backend(_))));
        assert_eq!(from_cql(42, "x").unwrap(), 42);
        assert!(matches!(from_cql(-1, "x"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn posts_round_trip_through_rows() {
        let post = PostRecord {
            id: PostId(99),
            author: UserId(7),
            author_handle: "Ada".into(),
            text: String::new(),
            reply_to: Some(PostId(98)),
            reblog_of: None,
        };
        let (id, cols) = post_to_row(&post).unwrap();
        assert_eq!(post_from_row(id, cols).unwrap(), post);
        let plain = PostRecord { reply_to: None, ..post.clone() };
        let (id, cols) = post_to_row(&plain).unwrap();
        assert_eq!(post_from_row(id, cols).unwrap(), plain);
        let reblog = PostRecord { reply_to: None, reblog_of: Some(PostId(5)), ..post };
        let (id, (a, h, t, r, b)) = post_to_row(&reblog).unwrap();
        assert_eq!(post_from_full_row((id, a, h, t, r, b)).unwrap(), reblog);
        assert!(post_from_row(-5, (1, String::new(), String::new(), None, None)).is_err());
        assert!(post_from_row(5, (1, String::new(), String::new(), None, Some(-1))).is_err(), "corrupt reblog_of");
    }

    #[test]
    fn deletes_are_stamped_above_the_write_they_remove() {
        assert_eq!(delete_timestamp(None, 1_000), 1_000, "nothing known: now");
        assert_eq!(delete_timestamp(Some(10), 1_000), 1_000, "an old write: now");
        assert_eq!(delete_timestamp(Some(5_000), 1_000), 5_001, "a write from a clock ahead, or still in flight");
        assert_eq!(delete_timestamp(Some(i64::MAX), 0), i64::MAX);
    }

    #[test]
    fn counters_below_zero_count_as_zero() {
        assert_eq!(count(None), 0);
        assert_eq!(count(Some(3)), 3);
        assert_eq!(count(Some(-1)), 0);
    }

    #[test]
    fn records_round_trip_through_tuples() {
        let record = Record {
            topic: Topic::Graph,
            key: u64::MAX,
            payload: Bytes::from_static(&[0, 1, 255]),
            headers: vec![("traceparent".into(), Bytes::from_static(b"00-ab-cd-01")), ("empty".into(), Bytes::new())],
        };
        assert_eq!(record_from_tuple(record_to_tuple(&record)).unwrap(), record, "u64 keys survive the i64 column");
        assert!(matches!(record_from_tuple((99, 0, Bytes::new(), Vec::new())), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn addresses_are_parsed_with_default_ports() {
        assert_eq!(parse_uri("127.0.0.1").unwrap(), vec!["127.0.0.1:9042"]);
        assert_eq!(parse_uri("scylla://a:19042, b ,c:1/").unwrap(), vec!["a:19042", "b:9042", "c:1"]);
        assert_eq!(parse_uri("cql://[::1]:9042").unwrap(), vec!["[::1]:9042"]);
        assert_eq!(parse_uri("::1").unwrap(), vec!["[::1]:9042"]);
        assert_eq!(parse_uri("[::1]").unwrap(), vec!["[::1]:9042"]);
        assert!(parse_uri("").is_err());
        assert!(parse_uri("scylla://").is_err());
        assert!(parse_uri("user@host:9042").is_err());
    }

    #[test]
    fn keyspace_names_are_checked() {
        validate_keyspace("starling").unwrap();
        validate_keyspace("starling_test_01").unwrap();
        for bad in ["", "1abc", "Starling", "a-b", "a;DROP", &"a".repeat(49)] {
            assert!(validate_keyspace(bad).is_err(), "{bad:?}");
        }
    }
}
