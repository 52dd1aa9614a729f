//! OAuth 2 scopes, as Mastodon defines them: the top-level `read`, `write`, `follow`,
//! `push` and `profile`, and granular ones such as `read:statuses` or `write:follows`.
//!
//! A top-level scope grants every granular scope under it; the legacy `follow` grants
//! reading and writing follows, blocks and mutes. `push` is granted although Starling has
//! no Web Push API: apps commonly ask for it, and a refused scope fails their login.

use std::borrow::Cow;
use std::fmt;

use crate::{ApiError, ErrorCode};

/// Every scope Starling knows, top-level first. A request for anything else is refused.
const KNOWN: &[&str] = &[
    "read",
    "write",
    "follow",
    "push",
    "profile",
    "read:accounts",
    "read:blocks",
    "read:bookmarks",
    "read:favourites",
    "read:filters",
    "read:follows",
    "read:lists",
    "read:mutes",
    "read:notifications",
    "read:search",
    "read:statuses",
    "write:accounts",
    "write:blocks",
    "write:bookmarks",
    "write:conversations",
    "write:favourites",
    "write:filters",
    "write:follows",
    "write:lists",
    "write:media",
    "write:mutes",
    "write:notifications",
    "write:reports",
    "write:statuses",
];

/// What `follow` stands for.
const FOLLOW: &[&str] = &["read:follows", "write:follows", "read:blocks", "write:blocks", "read:mutes", "write:mutes"];

/// A set of granted scopes, kept as registered (space-separated, canonical order). The
/// fixed sets borrow a static list: every service token's check builds [`Scopes::all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes(Cow<'static, [&'static str]>);

impl Scopes {
    /// Parses a space-separated scope list (`+` also separates, as in some clients' query
    /// strings). Empty means Mastodon's default, `read`.
    pub fn parse(raw: &str) -> Result<Scopes, ApiError> {
        let mut scopes = Vec::new();
        for s in raw.split([' ', '+']).filter(|s| !s.is_empty()) {
            let known = KNOWN
                .iter()
                .find(|k| **k == s)
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidParameter, format!("unknown scope {s:?}")))?;
            if !scopes.contains(known) {
                scopes.push(*known);
            }
        }
        if scopes.is_empty() {
            return Ok(Scopes::read());
        }
        scopes.sort_by_key(|s| KNOWN.iter().position(|k| k == s));
        Ok(Scopes(Cow::Owned(scopes)))
    }

    /// Mastodon's default: `read`.
    pub fn read() -> Scopes {
        Scopes(Cow::Borrowed(&["read"]))
    }

    /// Every scope: what a token minted by the service itself (not through OAuth) holds.
    pub fn all() -> Scopes {
        Scopes(Cow::Borrowed(&["read", "write", "follow", "push", "profile"]))
    }

    /// Whether `required` (one granular or top-level scope) is granted.
    pub fn allows(&self, required: &str) -> bool {
        let top = required.split(':').next().unwrap_or(required);
        self.0.iter().any(|s| *s == required || *s == top || (*s == "follow" && FOLLOW.contains(&required)))
            // `profile` is the narrow form of reading one's own account.
            || (required == "profile" && self.allows("read:accounts"))
    }

    /// Whether every scope in `other` is granted by `self` (a token may ask for less than
    /// its app registered, never more).
    pub fn covers(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.allows(s))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_scopes_grant_their_granular_ones() {
        let s = Scopes::parse("read write:statuses").unwrap();
        assert!(s.allows("read:statuses") && s.allows("read:accounts") && s.allows("read"));
        assert!(s.allows("write:statuses"));
        assert!(!s.allows("write:follows") && !s.allows("write"));
        assert!(s.allows("profile"), "read:accounts covers profile");
    }

    #[test]
    fn follow_grants_follows_blocks_and_mutes() {
        let s = Scopes::parse("follow").unwrap();
        for granted in FOLLOW {
            assert!(s.allows(granted), "{granted}");
        }
        assert!(!s.allows("write:statuses") && !s.allows("read:statuses"));
    }

    #[test]
    fn parsing_is_canonical_and_strict() {
        assert_eq!(Scopes::parse("").unwrap().to_string(), "read");
        assert_eq!(Scopes::parse("push write read read").unwrap().to_string(), "read write push");
        assert_eq!(Scopes::parse("read+write:statuses").unwrap().to_string(), "read write:statuses");
        let err = Scopes::parse("read admin:read").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameter);
        assert!(err.message.contains("admin:read"));
    }

    #[test]
    fn a_token_may_ask_for_less_than_its_app_never_more() {
        let app = Scopes::parse("read write follow").unwrap();
        assert!(app.covers(&Scopes::parse("read write:statuses").unwrap()));
        assert!(!app.covers(&Scopes::parse("read push").unwrap()));
    }
}

#[cfg(test)]
mod document {
    use super::KNOWN;

    /// The OpenAPI document spells the scopes out in a pattern (so that fuzzers send only
    /// known ones): it must name exactly these.
    #[test]
    fn the_openapi_scope_pattern_names_every_known_scope() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let pattern = doc["components"]["schemas"]["ScopeList"]["pattern"].as_str().unwrap();
        let alternatives = KNOWN.join("|");
        assert_eq!(pattern, format!("^(({alternatives})( ({alternatives}))*)?$"));
    }
}
