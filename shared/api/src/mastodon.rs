//! Mastodon API entities (Account, Application, Token) as Starling fills them.
//!
//! Starling has no profiles yet: `display_name` is the handle, `note` is empty, and the
//! avatar and header are the server's placeholder images, as Mastodon sends for an
//! account without them. Every id is a string; `created_at` is rounded to midnight UTC,
//! as Mastodon has done since 3.4.

pub mod json;

use serde::Serialize;
use starling_ids::UserId;
use starling_storage::{AppRecord, Counts, UserRecord};

/// Where the service is reachable from outside, for the URLs entities carry
/// (`https://host`), taken from the request unless configured.
#[derive(Clone, Debug)]
pub struct PublicBase(pub String);

impl PublicBase {
    /// The base the request came in on (honouring `Forwarded`/`X-Forwarded-*` from a proxy).
    pub fn of(req: &actix_web::HttpRequest) -> PublicBase {
        let info = req.connection_info();
        PublicBase(format!("{}://{}", info.scheme(), info.host()))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub acct: String,
    pub url: String,
    pub uri: String,
    pub display_name: String,
    pub note: String,
    pub avatar: String,
    pub avatar_static: String,
    pub header: String,
    pub header_static: String,
    pub locked: bool,
    pub fields: Vec<serde_json::Value>,
    pub emojis: Vec<serde_json::Value>,
    pub bot: bool,
    pub group: bool,
    pub discoverable: Option<bool>,
    pub created_at: String,
    pub last_status_at: Option<String>,
    pub statuses_count: u64,
    pub followers_count: u64,
    pub following_count: u64,
    pub roles: Vec<serde_json::Value>,
}

impl Account {
    /// `statuses` is the author's post count where the caller knows it.
    pub fn new(base: &PublicBase, user: &UserRecord, counts: Counts, statuses: u64) -> Account {
        let b = &base.0;
        let url = format!("{b}/@{}", user.handle);
        Account {
            id: user.id.to_string(),
            username: user.handle.clone(),
            acct: user.handle.clone(),
            uri: format!("{b}/users/{}", user.handle),
            url,
            display_name: user.handle.clone(),
            note: String::new(),
            avatar: format!("{b}/avatars/original/missing.png"),
            avatar_static: format!("{b}/avatars/original/missing.png"),
            header: format!("{b}/headers/original/missing.png"),
            header_static: format!("{b}/headers/original/missing.png"),
            locked: false,
            fields: Vec::new(),
            emojis: Vec::new(),
            bot: false,
            group: false,
            discoverable: Some(true),
            created_at: midnight(user.id),
            last_status_at: None,
            statuses_count: statuses,
            followers_count: counts.followers,
            following_count: counts.following,
            roles: Vec::new(),
        }
    }
}

/// The account as its owner sees it (`verify_credentials`): plus its plain-text sources.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialAccount {
    #[serde(flatten)]
    pub account: Account,
    pub source: serde_json::Value,
}

impl From<Account> for CredentialAccount {
    fn from(account: Account) -> Self {
        let source = serde_json::json!({
            "privacy": "public",
            "sensitive": false,
            "language": "",
            "note": "",
            "fields": [],
            "follow_requests_count": 0,
        });
        CredentialAccount { account, source }
    }
}

/// The day `id` was created, as a Mastodon Datetime at midnight UTC.
fn midnight(id: UserId) -> String {
    const DAY_MS: u64 = 86_400_000;
    datetime(id.unix_millis() / DAY_MS * DAY_MS)
}

/// An OAuth client, as `POST /api/v1/apps` and `GET /api/v1/apps/verify_credentials` show it.
#[derive(Clone, Debug, Serialize)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub website: Option<String>,
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// Deprecated in Mastodon 4.3 but still read by clients: the URIs joined by newlines.
    pub redirect_uri: String,
}

impl From<&AppRecord> for Application {
    fn from(app: &AppRecord) -> Self {
        Application {
            id: app.id.to_string(),
            name: app.name.clone(),
            website: app.website.clone(),
            scopes: app.scopes.split(' ').map(str::to_owned).collect(),
            redirect_uris: app.redirect_uris.clone(),
            redirect_uri: app.redirect_uris.join("\n"),
        }
    }
}

/// A new app with its credentials: shown once.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialApplication {
    #[serde(flatten)]
    pub app: Application,
    pub client_id: String,
    pub client_secret: String,
    /// Always 0: secrets do not expire.
    pub client_secret_expires_at: u64,
}

/// `POST /oauth/token`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct Token {
    pub access_token: String,
    pub token_type: &'static str,
    pub scope: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A post as Mastodon's Status. Starling has no media or polls, so those are empty; a
/// reblog is a Status of the reblogger's with empty content whose `reblog` is the original.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub id: String,
    pub uri: String,
    pub url: String,
    pub created_at: String,
    /// The author's Account, serialised once per page ([`RawAccount`]).
    pub account: Box<serde_json::value::RawValue>,
    /// The text as HTML: escaped, paragraphs and line breaks kept.
    pub content: String,
    pub visibility: &'static str,
    pub sensitive: bool,
    pub spoiler_text: String,
    pub media_attachments: Vec<serde_json::Value>,
    pub mentions: Vec<serde_json::Value>,
    pub tags: Vec<serde_json::Value>,
    pub emojis: Vec<serde_json::Value>,
    pub reblogs_count: u64,
    pub favourites_count: u64,
    pub replies_count: u64,
    pub in_reply_to_id: Option<String>,
    pub in_reply_to_account_id: Option<String>,
    pub reblog: Option<Box<Status>>,
    pub poll: Option<serde_json::Value>,
    pub card: Option<serde_json::Value>,
    pub language: Option<String>,
    pub edited_at: Option<String>,
    pub favourited: bool,
    pub reblogged: bool,
    pub muted: bool,
    pub bookmarked: bool,
    pub pinned: bool,
    /// The plain text: only in the answer to a delete (for "delete and redraft").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An Account already serialised: a page's statuses mostly share a few authors, and
/// serialising each author once instead of once per status halves a page's JSON work.
#[derive(Clone, Debug)]
pub struct RawAccount(Box<serde_json::value::RawValue>);

impl RawAccount {
    pub fn new(account: &Account) -> RawAccount {
        use serde_json::value::{RawValue, to_raw_value};
        // An Account is plain strings, numbers and arrays: it always serialises.
        RawAccount(to_raw_value(account).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }
}

impl Status {
    /// `post` by `account`; `parent_author` is the author of the post it replies to.
    pub fn new(
        base: &PublicBase,
        post: &starling_storage::PostRecord,
        account: &RawAccount,
        parent_author: Option<UserId>,
    ) -> Status {
        let url = format!("{}/@{}/{}", base.0, post.author_handle, post.id);
        Status {
            id: post.id.to_string(),
            uri: format!("{}/users/{}/statuses/{}", base.0, post.author_handle, post.id),
            url,
            created_at: datetime(post.id.unix_millis()),
            account: account.0.clone(),
            content: html(&post.text),
            visibility: "public",
            sensitive: false,
            spoiler_text: String::new(),
            media_attachments: Vec::new(),
            mentions: Vec::new(),
            tags: Vec::new(),
            emojis: Vec::new(),
            reblogs_count: 0,
            favourites_count: 0,
            replies_count: 0,
            in_reply_to_id: post.reply_to.map(|p| p.to_string()),
            in_reply_to_account_id: parent_author.map(|a| a.to_string()),
            reblog: None,
            poll: None,
            card: None,
            language: None,
            edited_at: None,
            favourited: false,
            reblogged: false,
            muted: false,
            bookmarked: false,
            pinned: false,
            text: None,
        }
    }
}

impl Status {
    /// With `i`'s counts and the viewer's flags.
    pub fn counted(mut self, i: &starling_storage::Interactions) -> Status {
        self.reblogs_count = i.reblogs;
        self.favourites_count = i.favourites;
        self.replies_count = i.replies;
        self.reblogged = i.reblogged;
        self.favourited = i.favourited;
        self
    }

    /// The reblog `post` by `account` of `original` (already a Status). Its flags are the
    /// original's, as Mastodon sends them, so a client shows one state for both.
    pub fn reblog(
        base: &PublicBase,
        post: &starling_storage::PostRecord,
        account: &RawAccount,
        original: Status,
    ) -> Status {
        let mut s = Status::new(base, post, account, None);
        s.uri = format!("{}/users/{}/statuses/{}/activity", base.0, post.author_handle, post.id);
        s.content = String::new();
        s.favourited = original.favourited;
        s.reblogged = original.reblogged;
        s.reblog = Some(Box::new(original));
        s
    }
}

/// A Notification. `S` is its status: the entity, or a Status already written as JSON (a
/// stream's, [`json`]).
#[derive(Clone, Debug, Serialize)]
pub struct Notification<S = Status> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub created_at: String,
    pub account: Account,
    /// `None` (null) for a follow.
    pub status: Option<S>,
}

impl<S> Notification<S> {
    /// `n`, by `account`, about `status`.
    pub fn new(n: &starling_storage::NotificationRecord, account: Account, status: Option<S>) -> Notification<S> {
        Notification {
            id: n.id.to_string(),
            kind: n.kind.name(),
            // A notification's id is a Snowflake id, like a post's.
            created_at: datetime(starling_ids::PostId(n.id).unix_millis()),
            account,
            status,
        }
    }
}

/// Plain text as Mastodon's status HTML: escaped; blank lines separate paragraphs, single
/// newlines become `<br>`.
pub fn html(text: &str) -> String {
    let escaped = escape_html(&text.replace("\r\n", "\n"));
    escaped
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", p.trim_matches('\n').replace('\n', "<br>")))
        .collect()
}

/// `s` with the five characters HTML gives meaning to escaped (text or attribute values).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A Mastodon Datetime (RFC 3339, milliseconds, `Z`).
pub fn datetime(unix_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_escaped_paragraphs() {
        assert_eq!(html("hi <b>&</b>"), "<p>hi &lt;b&gt;&amp;&lt;/b&gt;</p>");
        assert_eq!(html("one\ntwo\n\nthree"), "<p>one<br>two</p><p>three</p>");
        assert_eq!(html("\"q\" 'a'"), "<p>&quot;q&quot; &#39;a&#39;</p>");
    }

    #[test]
    fn datetimes_are_mastodons() {
        assert_eq!(datetime(1_573_979_017_123), "2019-11-17T08:23:37.123Z");
        assert_eq!(midnight(UserId(0)).len(), "2016-03-16T00:00:00.000Z".len());
    }
}
