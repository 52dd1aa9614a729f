//! Bad input, end to end, against the real standalone binary.
//!
//! Every endpoint is fed malformed, mistyped, oversized, unauthenticated, unknown or
//! rule-breaking requests. Each must get its documented 4xx status with exactly
//! `{"error":{"code":"<snake_case>","message":"<non-empty>"}}`, never a 500, and a refused
//! write must change nothing: profiles and counts, follower lists, posts (listed and by
//! id), home timelines and the fan-out's event counter are compared before and after
//! every refused write. Each (method, path, status) a test sees is then looked up in the
//! server's own `/openapi.json`, so the document cannot drift from what the server does.

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ADMIN_TOKEN, Api, Reply, Server};
use futures::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_metrics::names;

/// The servers sign tokens with this, so the tests can mint expired and odd ones.
const SECRET: &str = "bad-input-test-secret";
const ENV: &[(&str, &str)] = &[("STARLING__AUTH__JWT_SECRET", SECRET)];
const JSON: &str = "application/json";
const I64_MAX: &str = "9223372036854775807";
/// `MAX_BODY_BYTES` of starling-api.
const MAX_BODY: usize = 16 * 1024;

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
const CONFLICT: StatusCode = StatusCode::CONFLICT;
const TOO_LARGE: StatusCode = StatusCode::PAYLOAD_TOO_LARGE;
const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

/// Ids that name nothing: malformed, out of range, or well-formed but unused.
const BAD_IDS: &[&str] = &[
    "abc",
    "-1",
    "0",
    "1.5",
    "1e3",
    "0x10",
    "+1",
    "%20",
    "%2B1",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1",
    I64_MAX,
];

#[derive(Clone, Debug)]
struct User {
    id: u64,
    username: String,
    token: String,
}

/// One running server and a client that can send anything.
struct Rig {
    // Declared before the directory so the server is stopped before its data is removed.
    server: Server,
    _dir: tempfile::TempDir,
    api: Api,
    http: reqwest::Client,
    /// (method, path without query, status) of every refusal checked with [`Sent::error`].
    seen: Mutex<Vec<(Method, String, u16)>>,
}

impl Rig {
    fn start(env: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path(), env);
        let api = Api::new(&server.base);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Rig { server, _dir: dir, api, http, seen: Mutex::default() }
    }

    fn req(&self, method: Method, path: impl Into<String>) -> Req<'_> {
        let path = path.into();
        Req { rig: self, what: format!("{method} {path}"), method, path, headers: HeaderMap::new(), body: None }
    }

    /// A new account, made by the operator's bulk sign-up.
    async fn user(&self, username: &str) -> User {
        let (id, token) = self.api.register(username).await;
        User { id, username: username.to_owned(), token }
    }

    /// `POST /api/v1/statuses` as `user`, the body still to be given.
    fn compose(&self, user: &User) -> Req<'_> {
        self.req(Method::POST, "/api/v1/statuses").token(&user.token)
    }

    /// `who` does `action` (follow, unfollow, block, unblock, mute, unmute) to `whom`.
    fn edge(&self, who: &User, action: &str, whom: &User) -> Req<'_> {
        self.req(Method::POST, format!("/api/v1/accounts/{}/{action}", whom.id)).token(&who.token)
    }

    /// A new status of `user`'s; its id.
    async fn post(&self, user: &User, text: &str) -> String {
        let sent = self.compose(user).json(&json!({ "status": text })).what(format!("post {text:?}")).send().await;
        sent.ok(StatusCode::OK)["id"].as_str().expect("status id").to_owned()
    }

    async fn follow(&self, who: &User, whom: &User) {
        self.edge(who, "follow", whom).send().await.ok(StatusCode::OK);
    }

    async fn block(&self, who: &User, whom: &User) {
        self.edge(who, "block", whom).send().await.ok(StatusCode::OK);
    }

    /// Deletes `who`'s status `post`; the deleted Status.
    async fn delete(&self, who: &User, post: &str) -> Value {
        let sent = self.req(Method::DELETE, format!("/api/v1/statuses/{post}")).token(&who.token).send().await;
        sent.ok(StatusCode::OK).clone()
    }

    async fn profile(&self, id: u64) -> Value {
        let r = self.api.call(Method::GET, &format!("/api/v1/accounts/{id}"), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "account {id}: {}", r.body);
        r.body
    }

    async fn assert_no_user(&self, username: &str) {
        let r = self.api.call(Method::GET, &format!("/api/v1/accounts/lookup?acct={username}"), None, None).await;
        assert_eq!(r.status, NOT_FOUND, "a refused sign-up created {username}: {}", r.body);
    }

    /// Everything a client can observe about `users`, to compare before and after.
    async fn snapshot(&self, users: &[User]) -> Vec<(String, StatusCode, Value)> {
        let mut gets: Vec<(String, String, Option<&str>)> = Vec::new();
        for u in users {
            for tail in ["", "/statuses?limit=100", "/followers?limit=80", "/following?limit=80"] {
                let path = format!("/api/v1/accounts/{}{tail}", u.id);
                gets.push((path.clone(), path, None));
            }
            let home = "/api/v1/timelines/home?limit=100".to_owned();
            gets.push((format!("home timeline of {}", u.username), home, Some(&u.token)));
            gets.push((format!("mutes of {}", u.username), "/api/v1/mutes?limit=80".to_owned(), Some(&u.token)));
        }
        let replies =
            join_all(gets.iter().map(|(_, path, token)| self.api.call(Method::GET, path, *token, None))).await;
        // Each status an account lists, by id too: its reblog, favourite and reply counts.
        let mut post_ids: Vec<String> = gets
            .iter()
            .zip(&replies)
            .filter(|((_, path, _), _)| path.contains("/statuses?"))
            .filter_map(|(_, r)| r.body.as_array())
            .flatten()
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        post_ids.sort();
        post_ids.dedup();
        let post_paths: Vec<String> = post_ids.iter().map(|id| format!("/api/v1/statuses/{id}")).collect();
        let by_id = join_all(post_paths.iter().map(|path| self.api.call(Method::GET, path, None, None))).await;
        let mut state: Vec<(String, StatusCode, Value)> = gets
            .into_iter()
            .map(|(label, _, _)| label)
            .chain(post_paths)
            .zip(replies.into_iter().chain(by_id))
            .map(|(label, r)| (label, r.status, r.body))
            .collect();
        let events = self.api.metric(names::FANOUT_EVENTS).await;
        state.push((names::FANOUT_EVENTS.into(), StatusCode::OK, json!(events)));
        state
    }

    /// Starts watching `users`: every refused write must leave their snapshot as it is.
    async fn watch(&self, users: &[&User]) -> Watch<'_> {
        // Writes made while setting up must be fully applied before the baseline is taken.
        self.api.wait_quiet().await;
        let users: Vec<User> = users.iter().map(|u| (*u).clone()).collect();
        let before = self.snapshot(&users).await;
        Watch { rig: self, users, before }
    }

    async fn openapi(&self) -> Value {
        let r = self.api.call(Method::GET, "/openapi.json", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let ct = r.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(ct.starts_with(JSON), "/openapi.json content type {ct:?}");
        assert!(r.body.is_object(), "/openapi.json is not a JSON object: {}", r.body);
        r.body
    }

    /// Every refusal seen must be documented: its path and method in `/openapi.json`,
    /// with its status among the operation's responses.
    async fn check_documented(&self) {
        let doc = self.openapi().await;
        let paths = doc["paths"].as_object().expect("paths");
        let seen = self.seen.lock().expect("lock").clone();
        assert!(!seen.is_empty(), "no refusal was recorded");
        for (method, path, status) in seen {
            let template = template_of(paths.keys(), &path)
                .unwrap_or_else(|| panic!("{method} {path}: no path of /openapi.json matches"));
            let op = &paths[template][method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {template} is not in /openapi.json");
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {template} answers {status}, which /openapi.json does not document"
            );
        }
    }
}

/// The OpenAPI path template that `path` matches, preferring the most literal one
/// (`/api/v1/accounts/lookup` over `/api/v1/accounts/{id}`).
fn template_of<'a>(templates: impl Iterator<Item = &'a String>, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('/').collect();
    templates
        .filter_map(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, seg) in parts.iter().zip(&segments) {
                if part.starts_with('{') {
                    if seg.is_empty() {
                        return None;
                    }
                } else if part == seg {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, t.as_str()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, t)| t)
}

struct Watch<'a> {
    rig: &'a Rig,
    users: Vec<User>,
    before: Vec<(String, StatusCode, Value)>,
}

impl Watch<'_> {
    async fn unchanged(&self, what: &str) {
        let now = self.rig.snapshot(&self.users).await;
        assert_eq!(now.len(), self.before.len(), "{what}: the set of observed posts changed");
        for (after, before) in now.iter().zip(&self.before) {
            assert_eq!(after, before, "{what} changed what {} shows", before.0);
        }
    }

    /// Sends a write that must be refused with `status`/`code`, then checks nothing changed.
    async fn refused<'r>(&self, req: Req<'r>, status: StatusCode, code: &str) -> Sent<'r> {
        let sent = req.send().await;
        sent.error(status, code);
        self.unchanged(&sent.what).await;
        sent
    }

    /// Sends a write of what is already so (Mastodon's are idempotent): 200, and nothing
    /// changes. The answer's body.
    async fn idempotent(&self, req: Req<'_>) -> Value {
        let sent = req.send().await;
        let body = sent.ok(StatusCode::OK).clone();
        self.unchanged(&sent.what).await;
        body
    }
}

/// A request under construction; anything goes, including bytes that are not JSON.
struct Req<'a> {
    rig: &'a Rig,
    what: String,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

impl<'a> Req<'a> {
    /// Adds a description for failure messages.
    fn what(mut self, what: impl std::fmt::Display) -> Self {
        self.what = format!("{} [{what}]", self.what);
        self
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers.append(name, HeaderValue::from_bytes(value.as_ref()).expect("header value"));
        self
    }

    fn token(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    fn json(self, body: &Value) -> Self {
        self.raw(Some(JSON), body.to_string())
    }

    fn raw(mut self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        if let Some(ct) = content_type {
            self = self.header("Content-Type", ct);
        }
        self.body = Some(body.into());
        self
    }

    async fn send(self) -> Sent<'a> {
        let mut req = self
            .rig
            .http
            .request(self.method.clone(), format!("{}{}", self.rig.api.base, self.path))
            .headers(self.headers);
        if let Some(body) = self.body {
            req = req.body(body);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{}: {e}", self.what));
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap_or_else(|e| panic!("{}: {e}", self.what));
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let path = self.path.split('?').next().unwrap_or_default().to_owned();
        Sent { rig: self.rig, what: self.what, method: self.method, path, reply: Reply { status, body, headers } }
    }
}

struct Sent<'a> {
    rig: &'a Rig,
    what: String,
    method: Method,
    path: String,
    reply: Reply,
}

impl Sent<'_> {
    /// A documented refusal: checks it and records it for [`Rig::check_documented`].
    #[track_caller]
    fn error(&self, status: StatusCode, code: &str) -> &Self {
        assert_error(&self.what, &self.reply, status, code);
        self.rig.seen.lock().expect("lock").push((self.method.clone(), self.path.clone(), status.as_u16()));
        self
    }

    #[track_caller]
    fn ok(&self, status: StatusCode) -> &Value {
        assert_eq!(self.reply.status, status, "{}: {}", self.what, self.reply.body);
        &self.reply.body
    }
}

/// `reply` is exactly `{"error":{"code":code,"message":"..."}}` with `status`.
#[track_caller]
fn assert_error(what: &str, reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{what}: wrong status; body {}", reply.body);
    let ct = reply.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(ct.starts_with(JSON), "{what}: error content type is {ct:?}");
    let top =
        reply.body.as_object().unwrap_or_else(|| panic!("{what}: error body is not a JSON object: {}", reply.body));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{what}: top-level keys of {}", reply.body);
    let error = top["error"].as_object().unwrap_or_else(|| panic!("{what}: \"error\" is not an object"));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "{what}: keys of {}", reply.body);
    let got = error["code"].as_str().unwrap_or_else(|| panic!("{what}: code is not a string"));
    let snake = !got.is_empty()
        && got.split('_').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    assert!(snake, "{what}: code {got:?} is not snake_case");
    assert_eq!(got, code, "{what}: wrong code; body {}", reply.body);
    let message = error["message"].as_str().unwrap_or_else(|| panic!("{what}: message is not a string"));
    assert!(!message.trim().is_empty(), "{what}: empty message");
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn jwt(secret: &str, alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).expect("signing")
}

/// Unpadded base64url, for hand-made JWTs the library refuses to produce.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `POST path` with a `Transfer-Encoding: chunked` body, over a raw connection: with no
/// Content-Length the server only learns the size while reading.
async fn post_chunked(base: &str, path: &str, token: &str, body: &[u8]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.strip_prefix("http://").expect("http base");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: {JSON}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1024) {
        request.extend(format!("{:x}\r\n", chunk.len()).bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    // The server may answer (and close) before it has read everything: not an error here.
    let _ = stream.write_all(&request).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;

    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .append(HeaderName::from_bytes(k.trim().as_bytes()).expect("name"), v.trim().parse().expect("value"));
        }
    }
    let mut rest = &raw[split + 4..];
    let mut payload = Vec::new();
    if headers.get("transfer-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked")) {
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).expect("size").trim(), 16).expect("hex");
            if size == 0 {
                break;
            }
            payload.extend(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
    } else {
        payload.extend(rest);
    }
    let body = serde_json::from_slice(&payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
    Reply { status: StatusCode::from_u16(status).expect("status"), body, headers }
}

/// A gzip member holding `head`, then `run` copies of the last byte of `head`, then `tail`.
/// Hand-made (fixed-Huffman deflate, the run as 258-byte back-references) so a 1 MB body
/// fits well under the size limit, as a decompression bomb would, without a compression dependency.
fn gzip(head: &[u8], run: usize, tail: &[u8]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        len: u32,
    }
    impl Bits {
        /// Deflate packs values least significant bit first...
        fn put(&mut self, value: u32, len: u32) {
            for i in 0..len {
                self.acc |= ((value >> i) & 1) << self.len;
                self.len += 1;
                if self.len == 8 {
                    self.out.push(self.acc as u8);
                    (self.acc, self.len) = (0, 0);
                }
            }
        }
        /// ...but Huffman codes most significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            let reversed = (0..len).fold(0, |r, i| r | (((code >> i) & 1) << (len - 1 - i)));
            self.put(reversed, len);
        }
        fn literal(&mut self, byte: u8) {
            let b = u32::from(byte);
            if b < 144 { self.code(0x30 + b, 8) } else { self.code(0x190 + b - 144, 9) }
        }
    }
    assert!(!head.is_empty() && run % 258 == 0);
    let mut bits = Bits { out: Vec::new(), acc: 0, len: 0 };
    bits.put(1, 1); // the final block
    bits.put(1, 2); // fixed Huffman codes
    head.iter().for_each(|b| bits.literal(*b));
    for _ in 0..run / 258 {
        bits.code(0b1100_0101, 8); // length code 285: 258 bytes
        bits.code(0, 5); // distance code 0: 1 byte back
    }
    tail.iter().for_each(|b| bits.literal(*b));
    bits.code(0, 7); // end of block
    if bits.len > 0 {
        let pad = 8 - bits.len;
        bits.put(0, pad);
    }
    let mut plain = head.to_vec();
    plain.extend(std::iter::repeat_n(head[head.len() - 1], run));
    plain.extend(tail);
    let crc = !plain.iter().fold(!0u32, |c, b| {
        (0..8).fold(c ^ u32::from(*b), |c, _| if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 })
    });
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(bits.out);
    out.extend(crc.to_le_bytes());
    out.extend((plain.len() as u32).to_le_bytes());
    out
}

/// A `{"status": ...}` body of exactly `len` bytes.
fn status_body_of_len(len: usize) -> String {
    let frame = r#"{"status":""}"#.len();
    format!(r#"{{"status":"{}"}}"#, "a".repeat(len - frame))
}

/// The operator's sign-up body for one account per name.
fn accounts(usernames: &[&str]) -> Value {
    json!({ "accounts": usernames.iter().map(|u| json!({ "username": u })).collect::<Vec<_>>() })
}

/// A `multipart/form-data` body of one part with `disposition`, broken as `end` says.
fn multipart(disposition: &str, end: &str) -> String {
    format!("--b\r\nContent-Disposition: form-data; {disposition}\r\n\r\nhi\r\n{end}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_post_and_register_bodies_change_nothing() {
    let rig = Rig::start(ENV);
    let author = rig.user("author").await;
    let reader = rig.user("reader").await;
    rig.follow(&reader, &author).await;
    let first = rig.post(&author, "first post").await;
    let w = rig.watch(&[&author, &reader]).await;
    let create = || rig.compose(&author);
    let fine = json!({ "status": "hi" }).to_string();

    // Not JSON, or not JSON of the expected shape and types: 400 invalid_json.
    let deep = format!(r#"{{"status":{}{}}}"#, "[".repeat(4000), "]".repeat(4000));
    let not_json: Vec<(&str, Vec<u8>)> = vec![
        ("unclosed object", b"{".to_vec()),
        ("unclosed string", br#"{"status": "hi"#.to_vec()),
        ("plain words", b"not json".to_vec()),
        ("trailing garbage", br#"{"status":"hi"} trailing"#.to_vec()),
        ("two documents", br#"{"status":"hi"}{"status":"hi"}"#.to_vec()),
        ("trailing comma", br#"{"status":"hi",}"#.to_vec()),
        ("single quotes", b"{'status':'hi'}".to_vec()),
        ("empty body", Vec::new()),
        ("whitespace body", b"  \n ".to_vec()),
        ("duplicate field", br#"{"status":"a","status":"b"}"#.to_vec()),
        ("lone surrogate", br#"{"status":"\ud800"}"#.to_vec()),
        ("invalid UTF-8", b"{\"status\":\"\xff\xfe\"}".to_vec()),
        ("deeply nested", deep.into_bytes()),
    ];
    for (what, body) in not_json {
        w.refused(create().raw(Some(JSON), body).what(what), BAD_REQUEST, "invalid_json").await;
    }
    let wrong_shape = [
        json!(null),
        json!([]),
        json!(["hi"]),
        json!(["hi", null]),
        json!("hi"),
        json!(42),
        json!({ "status": 42 }),
        json!({ "status": 1.5 }),
        json!({ "status": true }),
        json!({ "status": ["hi"] }),
        json!({ "status": { "hi": 1 } }),
        json!({ "status": "hi", "in_reply_to_id": 123 }),
        json!({ "status": "hi", "in_reply_to_id": first.parse::<u64>().expect("numeric id") }),
        json!({ "status": "hi", "in_reply_to_id": [first] }),
        json!({ "status": "hi", "visibility": 1 }),
        json!({ "status": "hi", "spoiler_text": false }),
    ];
    for body in &wrong_shape {
        w.refused(create().json(body).what(body), BAD_REQUEST, "invalid_json").await;
    }
    // Broken multipart forms, and files (nothing takes uploads): 400 invalid_parameter.
    let name = r#"name="status""#;
    let broken_forms = [
        ("multipart/form-data", multipart(name, "--b--\r\n")),
        ("multipart/form-data; boundary=b", multipart(name, "")),
        ("multipart/form-data; boundary=b", multipart(r#"name="status"; filename="a.png""#, "--b--\r\n")),
    ];
    for (ct, body) in broken_forms {
        w.refused(create().raw(Some(ct), body).what("broken multipart"), BAD_REQUEST, "invalid_parameter").await;
    }

    // Well-formed but against the rules: 422 validation_failed.
    let refused_bodies = [
        json!({}),
        json!({ "status": null }),
        json!({ "in_reply_to_id": first }),
        // The legacy field is not read (unknown fields are ignored): no status at all.
        json!({ "text": "hi" }),
        json!({ "status": "hi", "in_reply_to_id": "abc" }),
        json!({ "status": "hi", "in_reply_to_id": "0" }),
        json!({ "status": "hi", "in_reply_to_id": "-1" }),
        json!({ "status": "hi", "in_reply_to_id": " 1" }),
        json!({ "status": "hi", "visibility": "private" }),
        json!({ "status": "hi", "visibility": "direct" }),
        json!({ "status": "hi", "spoiler_text": "cw" }),
        json!({ "status": "hi", "media_ids": ["1"] }),
    ];
    for body in &refused_bodies {
        w.refused(create().json(body).what(body), UNPROCESSABLE, "validation_failed").await;
    }
    // A reply to a status that does not exist: 404, as for any id of none.
    for parent in ["1", I64_MAX, "9223372036854775808", "99999999999999999999"] {
        let body = json!({ "status": "hi", "in_reply_to_id": parent });
        w.refused(create().json(&body).what(&body), NOT_FOUND, "not_found").await;
    }
    let refused_texts = [
        String::new(),
        " ".into(),
        " \n\t\r ".into(),
        "\u{3000}\u{a0}".into(),
        "a".repeat(501),
        "é".repeat(501),
        "😀".repeat(501),
        format!("{}\u{0}", "a".repeat(10)),
        "bell \u{7}".into(),
        "\u{1b}[31mred".into(),
        "del \u{7f}".into(),
        "next line \u{85}".into(),
    ];
    for text in &refused_texts {
        let what = format!("status of {} chars {:?}", text.chars().count(), text.get(..12).unwrap_or(text));
        w.refused(create().json(&json!({ "status": text })).what(what), UNPROCESSABLE, "validation_failed").await;
    }
    // A form says the same (Mastodon takes both); a JSON body not declared as JSON is read
    // as a form, which has no `status` field.
    let form = "application/x-www-form-urlencoded";
    let forms = [
        (Some(form), "status="),
        (Some(form), "status=%00"),
        (Some(form), "status=hi&in_reply_to_id=abc"),
        (Some(form), "status=hi&visibility=direct"),
        (Some(form), "status=hi&media_ids%5B%5D=1"),
        (None, fine.as_str()),
        (Some("text/plain"), fine.as_str()),
        (Some(form), fine.as_str()),
        (Some("nonsense"), fine.as_str()),
    ];
    for (ct, body) in forms {
        let req = create().raw(ct, body).what(format!("Content-Type {ct:?}"));
        w.refused(req, UNPROCESSABLE, "validation_failed").await;
    }
    // Exactly the size limit is read (and refused for its text, not its size).
    let at_limit = status_body_of_len(MAX_BODY);
    w.refused(create().raw(Some(JSON), at_limit).what("body of exactly 16 KiB"), UNPROCESSABLE, "validation_failed")
        .await;

    // Too big: 413 payload_too_large, whether the size is announced or discovered.
    for len in [MAX_BODY + 1, 64 * 1024, 1024 * 1024] {
        let what = format!("body of {len} bytes");
        w.refused(create().raw(Some(JSON), status_body_of_len(len)).what(what), TOO_LARGE, "payload_too_large").await;
    }
    let body = status_body_of_len(17 * 1024);
    let chunked = post_chunked(&rig.server.base, "/api/v1/statuses", &author.token, body.as_bytes()).await;
    assert_error("chunked body of 17 KiB", &chunked, TOO_LARGE, "payload_too_large");
    w.unchanged("chunked body of 17 KiB").await;
    // Compressed bodies count at their inflated size: 7 KB that inflate to 1 MB are too large.
    let bomb = gzip(br#"{"status":"hi" "#, 258 * 4000, b"}");
    assert!(bomb.len() < MAX_BODY / 2, "the bomb itself is small");
    let req = create().header("Content-Encoding", "gzip").raw(Some(JSON), bomb).what("gzip bomb");
    w.refused(req, TOO_LARGE, "payload_too_large").await;
    let req = create().header("Content-Encoding", "gzip").raw(Some(JSON), fine.clone()).what("not gzip at all");
    w.refused(req, BAD_REQUEST, "invalid_json").await;

    // Idempotency-Key must be 1 to 128 printable ASCII characters: 400 invalid_parameter.
    let long_key = "k".repeat(129);
    let bad_keys: [&[u8]; 5] = [long_key.as_bytes(), b"", b"has space", b"tab\tkey", "café".as_bytes()];
    for key in bad_keys {
        let what = format!("Idempotency-Key {:?}", String::from_utf8_lossy(key));
        let req = create().header("Idempotency-Key", key).json(&json!({ "status": "keyed" })).what(what);
        w.refused(req, BAD_REQUEST, "invalid_parameter").await;
    }

    // The operator's bulk sign-up checks the whole batch before it creates anything.
    let sign_up = || rig.req(Method::POST, "/admin/v1/accounts");
    let register = || sign_up().token(ADMIN_TOKEN);
    let not_json = [
        ("unclosed", r#"{"#),
        ("empty", ""),
        ("trailing", r#"{"accounts":[{"username":"newbie"}]} x"#),
        ("duplicate field", r#"{"accounts":[{"username":"newbie","username":"other"}]}"#),
    ];
    for (what, body) in not_json {
        w.refused(register().raw(Some(JSON), body).what(what), BAD_REQUEST, "invalid_json").await;
    }
    let wrong_shape = [
        json!({}),
        json!([]),
        json!([{ "username": "newbie" }]),
        json!({ "handle": "newbie" }),
        json!({ "accounts": null }),
        json!({ "accounts": "newbie" }),
        json!({ "accounts": ["newbie"] }),
        json!({ "accounts": { "username": "newbie" } }),
        json!({ "accounts": [{}] }),
        json!({ "accounts": [{ "username": null }] }),
        json!({ "accounts": [{ "username": 7 }] }),
        json!({ "accounts": [{ "username": ["newbie"] }] }),
        json!({ "accounts": [{ "handle": "newbie" }] }),
        json!({ "accounts": [{ "username": "newbie", "admin": true }] }),
        json!({ "accounts": [{ "username": "newbie" }], "id": "1" }),
    ];
    for body in &wrong_shape {
        w.refused(register().json(body).what(body), BAD_REQUEST, "invalid_json").await;
    }
    let fine = accounts(&["newbie"]).to_string();
    for ct in [None, Some("text/plain"), Some(form)] {
        w.refused(register().raw(ct, fine.clone()).what(format!("Content-Type {ct:?}")), BAD_REQUEST, "invalid_json")
            .await;
    }
    // The bulk route takes up to 64 KiB (a thousand 30-character names), no more.
    let padded = format!(r#"{{"accounts":[{{"username":"newbie"}}]{}}}"#, " ".repeat(64 * 1024));
    w.refused(register().raw(Some(JSON), padded).what("65 KiB"), TOO_LARGE, "payload_too_large").await;
    // Only with the operator's token.
    let auths = [
        ("a user's token", format!("Bearer {}", author.token)),
        ("wrong token", "Bearer wrong".to_owned()),
        ("no scheme", ADMIN_TOKEN.to_owned()),
        ("Basic", format!("Basic {ADMIN_TOKEN}")),
        ("token plus a character", format!("Bearer {ADMIN_TOKEN}x")),
    ];
    w.refused(sign_up().json(&accounts(&["newbie"])).what("no token"), UNAUTHORIZED, "unauthorized").await;
    for (what, auth) in auths {
        let req = sign_up().header("Authorization", auth).json(&accounts(&["newbie"])).what(what);
        w.refused(req, UNAUTHORIZED, "unauthorized").await;
    }
    for username in ["", " ", "has space", "a-b", "émile", "x\u{0}", "@newbie", &"h".repeat(31)] {
        let req = register().json(&accounts(&[username])).what(format!("username {username:?}"));
        w.refused(req, UNPROCESSABLE, "validation_failed").await;
    }
    let bad_batches = [
        ("no accounts", accounts(&[])),
        ("a bad name after a good one", accounts(&["newbie", "bad name"])),
        ("a name twice", accounts(&["newbie", "newbie"])),
        ("a name twice, cased differently", accounts(&["newbie", "NewBie"])),
    ];
    for (what, body) in bad_batches {
        w.refused(register().json(&body).what(what), UNPROCESSABLE, "validation_failed").await;
    }
    let names: Vec<String> = (0..1001).map(|i| format!("many_{i}")).collect();
    let too_many = register().json(&accounts(&names.iter().map(String::as_str).collect::<Vec<_>>()));
    let too_many = too_many.what("1001 accounts");
    let sent = w.refused(too_many, UNPROCESSABLE, "validation_failed").await;
    let message = sent.reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1000"), "1001 accounts refused for another reason: {message}");
    for (what, body) in [
        ("a taken name", accounts(&["author"])),
        ("a taken name, cased differently", accounts(&["AUTHOR"])),
        ("a new name and a taken one", accounts(&["newbie", "reader"])),
    ] {
        w.refused(register().json(&body).what(what), CONFLICT, "conflict").await;
    }
    rig.assert_no_user("newbie").await;
    let r = rig.api.call(Method::GET, "/api/v1/accounts/lookup?acct=author", None, None).await;
    assert_eq!(r.body["id"], json!(author.id.to_string()), "the taken name still names its owner");

    // What must be accepted, at the edges of what was refused above: the text comes back
    // as its HTML content, and as plain text from a delete (for "delete and redraft").
    let accepted = [
        ("a".repeat(500), format!("<p>{}</p>", "a".repeat(500))),
        ("é".repeat(500), format!("<p>{}</p>", "é".repeat(500))),
        ("😀".repeat(500), format!("<p>{}</p>", "😀".repeat(500))),
        ("line one\nline two\r\n\ttabbed".into(), "<p>line one<br>line two<br>\ttabbed</p>".into()),
        ("  padded, not empty  ".into(), "<p>  padded, not empty  </p>".into()),
    ];
    for (text, html) in &accepted {
        let sent = create().json(&json!({ "status": text })).what("accepted text").send().await;
        let id = sent.ok(StatusCode::OK)["id"].as_str().expect("id").to_owned();
        let r = rig.api.call(Method::GET, &format!("/api/v1/statuses/{id}"), None, None).await;
        assert_eq!(r.body["content"], json!(html), "the text is the status's content");
        assert_eq!(rig.delete(&author, &id).await["text"], json!(text), "the text round-trips");
    }
    let sent = create().raw(Some("application/json; charset=utf-8"), r#"{"status":"charset"}"#).send().await;
    sent.ok(StatusCode::OK);
    create().json(&json!({ "status": "null parent", "in_reply_to_id": null })).send().await.ok(StatusCode::OK);
    // Forms send empty fields: an empty in_reply_to_id is no parent.
    let sent = create().json(&json!({ "status": "empty parent", "in_reply_to_id": "" })).send().await;
    assert_eq!(sent.ok(StatusCode::OK)["in_reply_to_id"], Value::Null);
    // What Mastodon clients send besides the text is ignored, or allowed at its default.
    let extras = json!({
        "status": "extras",
        "visibility": "public",
        "spoiler_text": "",
        "media_ids": [],
        "sensitive": false,
        "language": "en",
        "poll": null,
        "scheduled_at": null,
    });
    create().json(&extras).send().await.ok(StatusCode::OK);
    let sent = create().raw(Some(form), "status=form+encoded%21").send().await;
    assert_eq!(sent.ok(StatusCode::OK)["content"], "<p>form encoded!</p>");
    let small = gzip(br#"{"status":"zipped"#, 258, br#""}"#);
    let sent = create().header("Content-Encoding", "gzip").raw(Some(JSON), small).send().await;
    let zipped = format!("<p>zipped{}</p>", "d".repeat(258));
    assert_eq!(sent.ok(StatusCode::OK)["content"], json!(zipped), "gzip bodies are read");
    let sent = create().json(&json!({ "status": "a reply", "in_reply_to_id": first })).send().await;
    let reply = sent.ok(StatusCode::OK);
    assert_eq!(reply["in_reply_to_id"], json!(first), "in_reply_to_id is echoed as a string");
    assert_eq!(reply["in_reply_to_account_id"], json!(author.id.to_string()));
    let long = "h".repeat(30);
    let sent = register().json(&accounts(&[long.as_str(), "a_1", "newbie"])).send().await;
    let created = sent.ok(StatusCode::OK)["accounts"].as_array().expect("accounts").clone();
    let names: Vec<&str> = created.iter().filter_map(|a| a["username"].as_str()).collect();
    assert_eq!(names, [long.as_str(), "a_1", "newbie"], "{created:?}");
    for a in &created {
        assert!(a["id"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()), "{a}");
        assert!(a["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{a}");
    }

    // Idempotency: the same key twice is one status, replayed; keys are per author.
    let keyed = rig.user("keyed").await;
    let other = rig.user("other").await;
    let key = format!("retry-{}", "x".repeat(122));
    let keyed_post = |user: &User, text: &str| {
        rig.compose(user).header("Idempotency-Key", &key).json(&json!({ "status": text })).send()
    };
    let first_try = keyed_post(&keyed, "once").await;
    let id = first_try.ok(StatusCode::OK)["id"].clone();
    assert!(first_try.reply.headers.get("Idempotent-Replayed").is_none(), "a first attempt is no replay");
    let retry = keyed_post(&keyed, "once").await;
    assert_eq!(retry.ok(StatusCode::OK)["id"], id, "a retry answers the same status");
    let replayed = retry.reply.headers.get("Idempotent-Replayed").and_then(|v| v.to_str().ok());
    assert_eq!(replayed, Some("true"));
    let changed_retry = keyed_post(&keyed, "twice?").await;
    assert!(!changed_retry.reply.status.is_server_error(), "{}", changed_retry.reply.body);
    let theirs = keyed_post(&other, "mine").await;
    assert_ne!(theirs.ok(StatusCode::OK)["id"], id, "another author's key is another status");
    assert!(theirs.reply.headers.get("Idempotent-Replayed").is_none());
    let posts = rig.api.call(Method::GET, &format!("/api/v1/accounts/{}/statuses", keyed.id), None, None).await;
    let posts = posts.body.as_array().expect("statuses").clone();
    assert_eq!(posts.len(), 1, "one key, one status: {posts:?}");
    assert_eq!(posts[0]["id"], id);

    rig.check_documented().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_401_and_change_nothing() {
    let rig = Rig::start(ENV);
    let me = rig.user("me").await;
    let them = rig.user("them").await;
    rig.follow(&me, &them).await;
    let mine = rig.post(&me, "mine").await;
    rig.post(&them, "theirs").await;
    let w = rig.watch(&[&me, &them]).await;

    // Access tokens are opaque OAuth tokens; service tokens (JWTs signed with the configured
    // secret) are taken too, so forged and broken ones are tried as well.
    let now = unix_now();
    let claims = |sub: &str, exp: u64| json!({ "sub": sub, "handle": me.username, "iat": now, "exp": exp });
    let my_id = me.id.to_string();
    let service_token = jwt(SECRET, Algorithm::HS256, &claims(&my_id, now + 3600));
    let (header, _, signature) = {
        let mut parts = service_token.split('.');
        (parts.next().expect("header"), parts.next(), parts.next().expect("signature"))
    };
    let as_them = b64url(claims(&them.id.to_string(), now + 3600).to_string().as_bytes());
    let unsigned_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned_claims = b64url(claims(&my_id, now + 3600).to_string().as_bytes());
    let bearer = |token: &str| format!("Bearer {token}");
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("Basic scheme", Some("Basic bWU6c2VjcmV0".into())),
        ("Token scheme", Some(format!("Token {}", me.token))),
        ("no scheme", Some(me.token.clone())),
        ("Bearer alone", Some("Bearer".into())),
        ("Bearer and blanks", Some("Bearer    ".into())),
        ("garbage", Some(bearer("garbage"))),
        ("not ASCII", Some(bearer("tökén"))),
        ("token plus a character", Some(bearer(&format!("{}x", me.token)))),
        ("token cut short", Some(bearer(&me.token[..me.token.len() - 1]))),
        ("token and more", Some(format!("Bearer {} extra", me.token))),
        ("three garbage parts", Some(bearer("a.b.c"))),
        ("other secret", Some(bearer(&jwt("another-secret", Algorithm::HS256, &claims(&my_id, now + 3600))))),
        ("expired", Some(bearer(&jwt(SECRET, Algorithm::HS256, &claims(&my_id, now - 60))))),
        ("sub not a number", Some(bearer(&jwt(SECRET, Algorithm::HS256, &claims("abc", now + 3600))))),
        ("sub zero", Some(bearer(&jwt(SECRET, Algorithm::HS256, &claims("0", now + 3600))))),
        ("sub negative", Some(bearer(&jwt(SECRET, Algorithm::HS256, &claims("-1", now + 3600))))),
        ("sub too big", Some(bearer(&jwt(SECRET, Algorithm::HS256, &claims("9223372036854775808", now + 3600))))),
        ("no exp", Some(bearer(&jwt(SECRET, Algorithm::HS256, &json!({ "sub": my_id, "handle": "me" }))))),
        ("HS512", Some(bearer(&jwt(SECRET, Algorithm::HS512, &claims(&my_id, now + 3600))))),
        ("alg none", Some(bearer(&format!("{unsigned_header}.{unsigned_claims}.")))),
        ("claims swapped", Some(bearer(&format!("{header}.{as_them}.{signature}")))),
    ];
    let mut endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/api/v1/statuses".into(), Some(json!({ "status": "not me" }))),
        (Method::DELETE, format!("/api/v1/statuses/{mine}"), None),
    ];
    for action in ["reblog", "unreblog", "favourite", "unfavourite"] {
        endpoints.push((Method::POST, format!("/api/v1/statuses/{mine}/{action}"), None));
    }
    for action in ["follow", "unfollow", "block", "unblock", "mute", "unmute"] {
        endpoints.push((Method::POST, format!("/api/v1/accounts/{}/{action}", them.id), None));
    }
    for (what, auth) in &refused {
        for (method, path, body) in &endpoints {
            let mut req = rig.req(method.clone(), path.as_str()).what(what);
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            w.refused(req, UNAUTHORIZED, "unauthorized").await;
        }
        for path in [
            "/api/v1/timelines/home",
            "/api/v1/mutes",
            "/api/v1/streaming/user",
            "/api/v1/streaming/user/notification",
            "/api/v1/notifications",
        ] {
            let mut req = rig.req(Method::GET, path).what(what);
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            req.send().await.error(UNAUTHORIZED, "unauthorized");
        }
    }
    // The tokens refused above were refused for what was wrong with them: a well-made
    // service token passes, and the scheme is case-insensitive.
    rig.req(Method::GET, "/api/v1/timelines/home").token(&service_token).send().await.ok(StatusCode::OK);
    let home = rig.req(Method::GET, "/api/v1/timelines/home").header("Authorization", format!("bearer {}", me.token));
    home.send().await.ok(StatusCode::OK);

    rig.check_documented().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_relationship_rules() {
    let rig = Rig::start(ENV);
    let alice = rig.user("alice").await;
    let bob = rig.user("bob").await;
    let carol = rig.user("carol").await;
    let dave = rig.user("dave").await;
    rig.follow(&alice, &bob).await;
    rig.block(&carol, &alice).await;
    let alices = rig.post(&alice, "by alice").await;
    let bobs = rig.post(&bob, "by bob").await;
    let gone = rig.post(&dave, "soon gone").await;
    rig.delete(&dave, &gone).await;
    let keyed = rig
        .compose(&dave)
        .header("Idempotency-Key", "deleted-later")
        .json(&json!({ "status": "keyed, soon gone" }))
        .send()
        .await;
    let keyed = keyed.ok(StatusCode::OK)["id"].as_str().expect("id").to_owned();
    rig.delete(&dave, &keyed).await;
    let w = rig.watch(&[&alice, &bob, &carol, &dave]).await;

    // Ids that name nothing, in every place an id goes: 404 not_found.
    let not_a_user = alices.clone();
    let not_a_post = alice.id.to_string();
    let mut user_ids: Vec<&str> = BAD_IDS.to_vec();
    user_ids.push(&not_a_user);
    let mut post_ids: Vec<&str> = BAD_IDS.to_vec();
    post_ids.extend([not_a_post.as_str(), gone.as_str()]);
    let actions = ["follow", "unfollow", "block", "unblock", "mute", "unmute"];
    for id in user_ids {
        for tail in ["", "/followers", "/following", "/statuses"] {
            rig.req(Method::GET, format!("/api/v1/accounts/{id}{tail}")).send().await.error(NOT_FOUND, "not_found");
        }
        for action in actions {
            let req = rig.req(Method::POST, format!("/api/v1/accounts/{id}/{action}")).token(&alice.token);
            w.refused(req, NOT_FOUND, "not_found").await;
        }
    }
    for id in post_ids {
        rig.req(Method::GET, format!("/api/v1/statuses/{id}")).send().await.error(NOT_FOUND, "not_found");
        let req = rig.req(Method::DELETE, format!("/api/v1/statuses/{id}")).token(&dave.token);
        w.refused(req, NOT_FOUND, "not_found").await;
        for action in ["reblog", "unreblog", "favourite", "unfavourite"] {
            let req = rig.req(Method::POST, format!("/api/v1/statuses/{id}/{action}")).token(&alice.token);
            w.refused(req, NOT_FOUND, "not_found").await;
        }
        for list in ["reblogged_by", "favourited_by", "context"] {
            rig.req(Method::GET, format!("/api/v1/statuses/{id}/{list}")).send().await.error(NOT_FOUND, "not_found");
        }
    }

    // Relationship rules. Nothing is done to oneself: 403.
    for action in actions {
        w.refused(rig.edge(&alice, action, &alice).what("yourself"), FORBIDDEN, "forbidden").await;
    }
    // Doing what is already so is fine (Mastodon's are idempotent): 200, the Relationship, no change.
    let again = w.idempotent(rig.edge(&alice, "follow", &bob).what("again")).await;
    assert_eq!((&again["id"], &again["following"]), (&json!(bob.id.to_string()), &json!(true)), "{again}");
    let not_following = w.idempotent(rig.edge(&alice, "unfollow", &carol).what("not following")).await;
    assert_eq!(not_following["following"], false, "{not_following}");
    let not_following = w.idempotent(rig.edge(&bob, "unfollow", &alice).what("not following")).await;
    assert_eq!((&not_following["following"], &not_following["followed_by"]), (&json!(false), &json!(true)));
    let again = w.idempotent(rig.edge(&carol, "block", &alice).what("again")).await;
    assert_eq!(again["blocking"], true, "{again}");
    let not_blocking = w.idempotent(rig.edge(&alice, "unblock", &carol).what("not blocking")).await;
    assert_eq!((&not_blocking["blocking"], &not_blocking["blocked_by"]), (&json!(false), &json!(true)));
    let not_blocking = w.idempotent(rig.edge(&bob, "unblock", &alice).what("not blocking")).await;
    assert_eq!(not_blocking["blocking"], false, "{not_blocking}");
    let not_muting = w.idempotent(rig.edge(&bob, "unmute", &alice).what("not muting")).await;
    assert_eq!(not_muting["muting"], false, "{not_muting}");
    // No follow across a block, either way: 403.
    w.refused(rig.edge(&alice, "follow", &carol).what("blocked by them"), FORBIDDEN, "forbidden").await;
    w.refused(rig.edge(&carol, "follow", &alice).what("blocking them"), FORBIDDEN, "forbidden").await;

    // Statuses.
    let delete = |who: &User, post: &str| rig.req(Method::DELETE, format!("/api/v1/statuses/{post}")).token(&who.token);
    w.refused(delete(&alice, &bobs).what("someone else's"), FORBIDDEN, "forbidden").await;
    w.refused(delete(&bob, &alices).what("someone else's"), FORBIDDEN, "forbidden").await;
    w.refused(delete(&dave, &gone).what("twice"), NOT_FOUND, "not_found").await;
    w.refused(delete(&dave, &keyed).what("twice"), NOT_FOUND, "not_found").await;
    let create = |body: Value| rig.compose(&alice).json(&body);
    let req = create(json!({ "status": "re: gone", "in_reply_to_id": gone })).what("reply to a deleted status");
    w.refused(req, NOT_FOUND, "not_found").await;
    let req = create(json!({ "status": "re: ?", "in_reply_to_id": "1" })).what("reply to an unknown status");
    w.refused(req, NOT_FOUND, "not_found").await;
    let replay = rig
        .compose(&dave)
        .header("Idempotency-Key", "deleted-later")
        .json(&json!({ "status": "keyed, soon gone" }))
        .what("replay of a deleted status");
    w.refused(replay, CONFLICT, "conflict").await;

    // Lookup by name.
    rig.req(Method::GET, "/api/v1/accounts/lookup").send().await.error(BAD_REQUEST, "invalid_parameter");
    for q in ["acc=alice", "handle=alice"] {
        let sent = rig.req(Method::GET, format!("/api/v1/accounts/lookup?{q}")).send().await;
        sent.error(BAD_REQUEST, "invalid_parameter");
    }
    for q in ["acct=nobody", "acct=", "acct=%00", "acct=alice%20", "acct=alice@elsewhere.example", "acct=@"] {
        rig.req(Method::GET, format!("/api/v1/accounts/lookup?{q}")).send().await.error(NOT_FOUND, "not_found");
    }
    for q in ["acct=alice", "acct=@alice"] {
        let sent = rig.req(Method::GET, format!("/api/v1/accounts/lookup?{q}")).send().await;
        assert_eq!(sent.ok(StatusCode::OK)["id"], json!(alice.id.to_string()), "{q}");
    }

    rig.check_documented().await;
}

/// The `rel="next"` target of `sent`'s `Link` header.
fn next_link(sent: &Sent<'_>) -> Option<String> {
    let link = sent.reply.headers.get("Link")?.to_str().ok()?;
    link.split(", ").find(|l| l.ends_with("rel=\"next\"")).map(|l| l.split(['<', '>']).nth(1).unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_cursors_and_limits_are_400() {
    let rig = Rig::start(ENV);
    let author = rig.user("author").await;
    let reader = rig.user("reader").await;
    rig.follow(&reader, &author).await;
    for i in 0..3 {
        rig.post(&author, &format!("post {i}")).await;
    }
    // Delivered to the reader's home timeline before it is paged below.
    rig.api.wait_quiet().await;

    let post_lists = ["/api/v1/timelines/home".to_owned(), format!("/api/v1/accounts/{}/statuses", author.id)];
    let bad_post_queries = [
        "max_id=abc",
        "max_id=-5",
        "max_id=0",
        "max_id=",
        "max_id=1.5",
        "max_id=%2B1",
        "max_id=9223372036854775808",
        "max_id=99999999999999999999",
        "since_id=abc",
        "since_id=-1",
        "min_id=abc",
        "min_id=0",
        "limit=0",
        "limit=000",
        "limit=abc",
        "limit=-1",
        "limit=",
        "limit=1.5",
        "limit=+5",
        "limit=5&limit=abc",
        "max_id=%zz",
        "max_id=%FF",
    ];
    for path in &post_lists {
        for q in bad_post_queries {
            let req = rig.req(Method::GET, format!("{path}?{q}")).token(&reader.token);
            req.send().await.error(BAD_REQUEST, "invalid_parameter");
        }
        let good = ["limit=1", "limit=100", "max_id=9223372036854775807", "since_id=9223372036854775807", "min_id=1"];
        // As in Mastodon: a limit above 100 is served as 100, and min_id wins over since_id.
        let mastodon = ["limit=101", "limit=18446744073709551616", "since_id=1&min_id=2"];
        for q in good.into_iter().chain(mastodon).chain(["min_id=9223372036854775807", "unknown=param"]) {
            let sent = rig.req(Method::GET, format!("{path}?{q}")).token(&reader.token).send().await;
            let body = sent.ok(StatusCode::OK);
            assert!(body.is_array(), "{path}?{q}: {body}");
        }
        // A full page links to the next, with an absolute URL.
        let sent = rig.req(Method::GET, format!("{path}?limit=2")).token(&reader.token).send().await;
        assert_eq!(sent.ok(StatusCode::OK).as_array().map(Vec::len), Some(2), "{path}");
        let next = next_link(&sent).unwrap_or_else(|| panic!("{path}: no next link in {:?}", sent.reply.headers));
        assert!(next.starts_with(&format!("{}{path}?", rig.server.base)), "{path}: next is {next}");
    }
    let account_lists =
        [format!("/api/v1/accounts/{}/followers", author.id), format!("/api/v1/accounts/{}/following", reader.id)];
    let bad_list_queries = [
        "max_id=xyz",
        "max_id=-1",
        "max_id=0",
        "max_id=",
        "max_id=1.5",
        "max_id=9223372036854775808",
        "max_id=%zz",
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=",
    ];
    for path in &account_lists {
        for q in bad_list_queries {
            rig.req(Method::GET, format!("{path}?{q}")).send().await.error(BAD_REQUEST, "invalid_parameter");
        }
        // A limit above 80 is Mastodon's largest page, not an error.
        for q in ["limit=80", "limit=81", "limit=1000", "unknown=param"] {
            let sent = rig.req(Method::GET, format!("{path}?{q}")).send().await;
            assert_eq!(sent.ok(StatusCode::OK).as_array().map(Vec::len), Some(1), "{path}?{q}");
        }
        let sent = rig.req(Method::GET, format!("{path}?limit=1")).send().await;
        assert_eq!(sent.ok(StatusCode::OK).as_array().map(Vec::len), Some(1));
        let next = next_link(&sent).unwrap_or_else(|| panic!("{path}: no next link in {:?}", sent.reply.headers));
        assert!(next.starts_with(&format!("{}{path}?", rig.server.base)), "{path}: next is {next}");
        let sent = rig.req(Method::GET, format!("{path}?max_id={I64_MAX}&limit=1")).send().await;
        assert_eq!(sent.ok(StatusCode::OK), &json!([]));
    }

    rig.check_documented().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_admin_and_openapi() {
    let rig = Rig::start(ENV);
    let me = rig.user("me").await;
    let them = rig.user("them").await;
    rig.follow(&me, &them).await;
    let post = rig.post(&them, "hello").await;
    let w = rig.watch(&[&me, &them]).await;

    // No such endpoint: the JSON 404, whatever the method. The legacy API is gone.
    let unknown = [
        "/",
        "/api",
        "/api/v1",
        "/api/v2/posts",
        "/api/v1/post",
        "/api/v1/posts",
        "/api/v1/posts/",
        "/api/v1/posts/1",
        "/api/v1/posts/1/likes",
        "/api/v1/users",
        "/api/v1/users/lookup",
        "/api/v1/users/1",
        "/api/v1/users/1/",
        "/api/v1/users/1/follow",
        "/api/v1/users/1/posts",
        "/api/v1/statuses/",
        "/api/v1/statuses/1/likes",
        "/api/v1/timelines/public",
        "/admin/v1/cache",
        "/healthz/extra",
        "/%FF",
    ];
    for path in unknown {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let sent = rig.req(method, path).token(&me.token).json(&json!({ "status": "lost" })).send().await;
            assert_error(&sent.what, &sent.reply, NOT_FOUND, "not_found");
        }
    }
    w.unchanged("unknown paths").await;
    // A known path, the wrong method: 405 with the methods it takes, the JSON shape, no change.
    let wrong_method = [
        (Method::PUT, "/api/v1/statuses".to_owned()),
        (Method::GET, "/api/v1/statuses".to_owned()),
        (Method::PATCH, format!("/api/v1/statuses/{post}")),
        (Method::POST, format!("/api/v1/statuses/{post}")),
        (Method::GET, format!("/api/v1/statuses/{post}/reblog")),
        (Method::PUT, format!("/api/v1/accounts/{}", them.id)),
        (Method::DELETE, format!("/api/v1/accounts/{}", them.id)),
        (Method::GET, format!("/api/v1/accounts/{}/follow", them.id)),
        (Method::DELETE, format!("/api/v1/accounts/{}/follow", them.id)),
        (Method::PUT, format!("/api/v1/accounts/{}/block", them.id)),
        (Method::DELETE, format!("/api/v1/accounts/{}/block", them.id)),
        (Method::POST, format!("/api/v1/accounts/{}/followers", them.id)),
        (Method::DELETE, format!("/api/v1/accounts/{}/statuses", them.id)),
        (Method::POST, "/api/v1/timelines/home".to_owned()),
        (Method::GET, "/api/v1/accounts".to_owned()),
        (Method::DELETE, "/api/v1/accounts/lookup".to_owned()),
        (Method::GET, "/admin/v1/accounts".to_owned()),
        (Method::POST, "/healthz".to_owned()),
        (Method::PUT, "/readyz".to_owned()),
        (Method::POST, "/metrics".to_owned()),
        (Method::POST, "/openapi.json".to_owned()),
        (Method::GET, "/admin/v1/cache/clear".to_owned()),
        // Not a notification called "clear" (`/api/v1/notifications/{id}` takes GET).
        (Method::GET, "/api/v1/notifications/clear".to_owned()),
        (Method::DELETE, "/api/v1/notifications/1/dismiss".to_owned()),
    ];
    for (method, path) in wrong_method {
        let body = json!({ "status": "wrong method", "accounts": [{ "username": "wrong" }] });
        let sent = rig.req(method, path).token(&me.token).json(&body).send().await;
        assert_error(&sent.what, &sent.reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        let allow = sent.reply.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(
            !allow.is_empty() && !allow.split(", ").any(|m| m == sent.method.as_str()),
            "{}: Allow {allow:?}",
            sent.what
        );
        w.unchanged(&sent.what).await;
    }

    // The admin API wants its own token.
    let clear = || rig.req(Method::POST, "/admin/v1/cache/clear");
    w.refused(clear().what("no token"), UNAUTHORIZED, "unauthorized").await;
    w.refused(clear().token("wrong").what("wrong token"), UNAUTHORIZED, "unauthorized").await;
    w.refused(clear().token(&me.token).what("a user's token"), UNAUTHORIZED, "unauthorized").await;
    w.refused(clear().header("Authorization", ADMIN_TOKEN).what("no scheme"), UNAUTHORIZED, "unauthorized").await;
    let basic = clear().header("Authorization", format!("Basic {ADMIN_TOKEN}")).what("Basic");
    w.refused(basic, UNAUTHORIZED, "unauthorized").await;
    let suffixed = clear().token(&format!("{ADMIN_TOKEN}x")).what("token plus a character");
    w.refused(suffixed, UNAUTHORIZED, "unauthorized").await;
    clear().token(ADMIN_TOKEN).send().await.ok(StatusCode::NO_CONTENT);
    // A wiped cache is rebuilt on read: the timelines are what they were.
    w.unchanged("clearing the cache").await;

    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        assert_eq!(rig.req(Method::GET, path).send().await.ok(StatusCode::OK)["status"], status);
    }
    assert!(rig.req(Method::GET, "/metrics").send().await.ok(StatusCode::OK).is_string());

    let doc = rig.openapi().await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi version {version:?}");
    let paths = doc["paths"].as_object().expect("paths");
    let exercised = [
        "/api/v1/accounts/lookup",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/follow",
        "/api/v1/accounts/{id}/unfollow",
        "/api/v1/accounts/{id}/block",
        "/api/v1/accounts/{id}/unblock",
        "/api/v1/accounts/{id}/followers",
        "/api/v1/accounts/{id}/following",
        "/api/v1/accounts/{id}/statuses",
        "/api/v1/statuses",
        "/api/v1/statuses/{id}",
        "/api/v1/timelines/home",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/admin/v1/accounts",
        "/admin/v1/cache/clear",
    ];
    for path in exercised {
        assert!(paths.contains_key(path), "{path} is not in /openapi.json");
    }
    let codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("error codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let seen = ["invalid_json", "invalid_parameter", "validation_failed", "unauthorized", "forbidden", "not_found"];
    for code in seen.into_iter().chain(["method_not_allowed", "conflict", "payload_too_large", "rate_limited"]) {
        assert!(codes.contains(&code), "{code} is not a documented error code");
    }

    rig.check_documented().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_burst_are_429() {
    let mut env = ENV.to_vec();
    env.extend([("STARLING__RATE_LIMIT__WRITES_PER_SECOND", "1"), ("STARLING__RATE_LIMIT__BURST", "3")]);
    let rig = Rig::start(&env);
    let hasty = rig.user("hasty").await;
    let others = [rig.user("x").await, rig.user("y").await, rig.user("z").await, rig.user("w").await];

    let mut posts = Vec::new();
    for i in 0..3 {
        posts.push(rig.post(&hasty, &format!("burst {i}")).await);
    }
    let sent = rig.compose(&hasty).json(&json!({ "status": "one too many" })).send().await;
    sent.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = sent
        .reply
        .headers
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {:?}", sent.reply.headers));
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    // Deleting is a write too.
    let sent = rig.req(Method::DELETE, format!("/api/v1/statuses/{}", posts[0])).token(&hasty.token).send().await;
    sent.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let listed = rig.api.call(Method::GET, &format!("/api/v1/accounts/{}/statuses", hasty.id), None, None).await;
    let listed: Vec<&str> = listed.body.as_array().expect("statuses").iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(listed.len(), 3, "the refused status does not exist, the refused delete deleted nothing");
    for id in &posts {
        assert!(listed.contains(&id.as_str()));
    }

    // Follows have their own bucket.
    for other in &others[..3] {
        rig.follow(&hasty, other).await;
    }
    let last = &others[3];
    let sent = rig.edge(&hasty, "follow", last).send().await;
    sent.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(sent.reply.headers.contains_key("Retry-After"));
    assert_eq!(rig.profile(last.id).await["followers_count"], 0, "the refused follow did not happen");
    assert_eq!(rig.profile(hasty.id).await["following_count"], 3);
    // Buckets are per user.
    rig.follow(&others[0], last).await;

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    rig.post(&hasty, "after waiting as told").await;

    rig.check_documented().await;
}
