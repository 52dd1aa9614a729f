//! Cursor pagination as Mastodon and Twitter do it: ids are cursors.
//!
//! - `max_id`: only items older than this id (the next page down);
//! - `since_id`: only items newer than this id, newest first (may leave a gap);
//! - `min_id`: the items immediately newer than this id (the page just above), still
//!   returned newest first;
//! - `limit`: page size, default 20; a larger one than 100 is served as 100, as Mastodon
//!   clamps its own (clients follow the `Link` header for the rest).
//!
//! Given both `min_id` and `since_id`, `min_id` wins, as in Mastodon. Parsing is strict
//! otherwise: a malformed value is a 400, never silently ignored, so a client bug cannot
//! turn into a wrong page.

use actix_web::HttpRequest;
use starling_ids::PostId;

use crate::ApiError;

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub max_id: Option<PostId>,
    pub since_id: Option<PostId>,
    pub min_id: Option<PostId>,
    pub limit: usize,
}

impl Page {
    pub fn from_request(req: &HttpRequest) -> Result<Page, ApiError> {
        let mut page = Page { limit: DEFAULT_LIMIT, ..Page::default() };
        for (name, value) in query_pairs(req.query_string())? {
            match name.as_str() {
                "max_id" => page.max_id = Some(parse_id(&name, &value)?),
                "since_id" => page.since_id = Some(parse_id(&name, &value)?),
                "min_id" => page.min_id = Some(parse_id(&name, &value)?),
                "limit" => page.limit = parse_limit(&value)?,
                _ => {}
            }
        }
        if page.min_id.is_some() {
            page.since_id = None;
        }
        Ok(page)
    }

    /// The cursors of the page served for this request, `posts` newest first:
    /// `(prev_min_id, next_max_id)`. There is an older page after a full one, and always
    /// after one read upwards from `min_id` (`min_id`'s own post lies below it).
    pub fn cursors(&self, posts: &[PostId]) -> (Option<PostId>, Option<PostId>) {
        let more_below = posts.len() == self.limit || self.min_id.is_some();
        (posts.first().copied(), posts.last().copied().filter(|_| more_below))
    }

    /// The `Link` header for the page just served: `next` (older) when there is an older
    /// page, `prev` (newer) when the page has posts to anchor it.
    pub fn link_header(&self, path: &str, newest: Option<PostId>, next_max_id: Option<PostId>) -> Option<String> {
        let l = self.limit;
        let links: Vec<String> = [
            next_max_id.map(|id| format!("<{path}?max_id={id}&limit={l}>; rel=\"next\"")),
            newest.map(|id| format!("<{path}?min_id={id}&limit={l}>; rel=\"prev\"")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!links.is_empty()).then(|| links.join(", "))
    }
}

/// An opaque-looking but simple cursor for id-ordered lists (followers, following).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub after: Option<starling_ids::UserId>,
    pub limit: usize,
}

impl ListPage {
    pub fn from_request(req: &HttpRequest) -> Result<ListPage, ApiError> {
        let mut page = ListPage { after: None, limit: DEFAULT_LIMIT };
        for (name, value) in query_pairs(req.query_string())? {
            match name.as_str() {
                "cursor" => {
                    page.after = Some(value.parse().map_err(|_| ApiError::parameter("cursor is not a valid cursor"))?)
                }
                "limit" => page.limit = parse_limit(&value)?,
                _ => {}
            }
        }
        Ok(page)
    }
}

/// The decoded `name=value` pairs of a query string, repeated names kept (`id[]=1&id[]=2`).
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded_pairs(query).ok_or_else(|| ApiError::parameter("query string is malformed"))
}

/// Strict `application/x-www-form-urlencoded` decoding: a malformed `%` escape is an error
/// (400), where `serde_urlencoded` would pass it through as text.
fn serde_urlencoded_pairs(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_id(name: &str, value: &str) -> Result<PostId, ApiError> {
    value.parse().map_err(|_| ApiError::parameter(format!("{name} must be a post id (a decimal string)")))
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    clamped_limit(value, MAX_LIMIT).ok_or_else(|| ApiError::parameter("limit must be a positive integer"))
}

/// A positive decimal integer, served as at most `max` (however many digits it has).
pub fn clamped_limit(value: &str, max: usize) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match value.parse::<u64>() {
        Ok(0) => None,
        Ok(n) => Some(n.min(max as u64) as usize),
        // More digits than a u64 holds, not all zeros: a very large number.
        Err(_) => value.bytes().any(|b| b != b'0').then_some(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn page(q: &str) -> Result<Page, ApiError> {
        Page::from_request(&TestRequest::with_uri(&format!("/x?{q}")).to_http_request())
    }

    #[test]
    fn parses_cursors_and_limits() {
        let p = page("max_id=10&limit=5").unwrap();
        assert_eq!((p.max_id, p.limit), (Some(PostId(10)), 5));
        assert_eq!(page("").unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(page("min_id=3").unwrap().min_id, Some(PostId(3)));
    }

    #[test]
    fn link_header_has_the_links_that_exist() {
        let p = page("limit=5").unwrap();
        let both = p.link_header("/t", Some(PostId(9)), Some(PostId(3))).unwrap();
        assert_eq!(both, "</t?max_id=3&limit=5>; rel=\"next\", </t?min_id=9&limit=5>; rel=\"prev\"");
        assert_eq!(p.link_header("/t", Some(PostId(9)), None).unwrap(), "</t?min_id=9&limit=5>; rel=\"prev\"");
        assert_eq!(p.link_header("/t", None, None), None);
    }

    #[test]
    fn rejects_bogus_values() {
        assert_eq!(page("limit=1000").unwrap().limit, MAX_LIMIT, "clamped, as Mastodon does");
        assert_eq!(page("limit=123456789012345678901234567890").unwrap().limit, MAX_LIMIT);
        let both = page("since_id=1&min_id=2").unwrap();
        assert_eq!((both.since_id, both.min_id), (None, Some(PostId(2))), "min_id wins");
        for q in ["max_id=abc", "max_id=-1", "limit=0", "limit=000", "limit=-3", "limit=x", "limit=", "max_id=%zz"] {
            assert!(page(q).is_err(), "{q} must be rejected");
        }
    }
}
