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
    handle: String,
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

    async fn user(&self, handle: &str) -> User {
        let (id, token) = self.api.register(handle).await;
        User { id, handle: handle.to_owned(), token }
    }

    async fn post(&self, user: &User, text: &str) -> String {
        let r = self.api.call(Method::POST, "/api/v1/posts", Some(&user.token), Some(json!({ "text": text }))).await;
        assert_eq!(r.status, StatusCode::CREATED, "post {text:?}: {}", r.body);
        r.body["id"].as_str().expect("post id").to_owned()
    }

    async fn write(&self, method: Method, path: &str, user: &User, expected: StatusCode) {
        let r = self.api.call(method.clone(), path, Some(&user.token), None).await;
        assert_eq!(r.status, expected, "{method} {path}: {}", r.body);
    }

    async fn follow(&self, who: &User, whom: &User) {
        self.write(Method::POST, &format!("/api/v1/users/{}/follow", whom.id), who, StatusCode::OK).await;
    }

    async fn block(&self, who: &User, whom: &User) {
        self.write(Method::POST, &format!("/api/v1/users/{}/block", whom.id), who, StatusCode::OK).await;
    }

    async fn delete(&self, who: &User, post: &str) {
        self.write(Method::DELETE, &format!("/api/v1/posts/{post}"), who, StatusCode::NO_CONTENT).await;
    }

    async fn profile(&self, id: u64) -> Value {
        let r = self.api.call(Method::GET, &format!("/api/v1/users/{id}"), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "user {id}: {}", r.body);
        r.body
    }

    async fn assert_no_user(&self, handle: &str) {
        let r = self.api.call(Method::GET, &format!("/api/v1/users/lookup?handle={handle}"), None, None).await;
        assert_eq!(r.status, NOT_FOUND, "a refused registration created {handle}: {}", r.body);
    }

    /// Everything a client can observe about `users`, to compare before and after.
    async fn snapshot(&self, users: &[User]) -> Vec<(String, StatusCode, Value)> {
        let mut gets: Vec<(String, String, Option<&str>)> = Vec::new();
        for u in users {
            for tail in ["", "/posts?limit=100", "/followers?limit=100", "/following?limit=100"] {
                let path = format!("/api/v1/users/{}{tail}", u.id);
                gets.push((path.clone(), path, None));
            }
            let home = "/api/v1/timelines/home?limit=100".to_owned();
            gets.push((format!("home timeline of {}", u.handle), home, Some(&u.token)));
            gets.push((format!("mutes of {}", u.handle), "/api/v1/mutes?limit=80".to_owned(), Some(&u.token)));
        }
        let replies =
            join_all(gets.iter().map(|(_, path, token)| self.api.call(Method::GET, path, *token, None))).await;
        let mut post_ids: Vec<String> = replies
            .iter()
            .filter_map(|r| r.body["posts"].as_array())
            .flatten()
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        post_ids.sort();
        post_ids.dedup();
        // Each post as a Status too: its reblog and favourite counts.
        let post_paths: Vec<String> =
            post_ids.iter().flat_map(|id| [format!("/api/v1/posts/{id}"), format!("/api/v1/statuses/{id}")]).collect();
        let by_id = join_all(post_paths.iter().map(|path| self.api.call(Method::GET, path, None, None))).await;
        let mut state: Vec<(String, StatusCode, Value)> = gets
            .into_iter()
            .map(|(label, _, _)| label)
            .chain(post_paths)
            .zip(replies.into_iter().chain(by_id))
            .map(|(label, r)| (label, r.status, r.body))
            .collect();
        let events = self.api.metric("starling_fanout_events_total").await;
        state.push(("starling_fanout_events_total".into(), StatusCode::OK, json!(events)));
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
/// (`/api/v1/users/lookup` over `/api/v1/users/{id}`).
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
    async fn refused(&self, req: Req<'_>, status: StatusCode, code: &str) {
        let sent = req.send().await;
        sent.error(status, code);
        self.unchanged(&sent.what).await;
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

/// A `{"text": ...}` body of exactly `len` bytes.
fn post_body_of_len(len: usize) -> String {
    let frame = r#"{"text":""}"#.len();
    format!(r#"{{"text":"{}"}}"#, "a".repeat(len - frame))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_post_and_register_bodies_change_nothing() {
    let rig = Rig::start(ENV);
    let author = rig.user("author").await;
    let reader = rig.user("reader").await;
    rig.follow(&reader, &author).await;
    let first = rig.post(&author, "first post").await;
    let w = rig.watch(&[&author, &reader]).await;
    let create = || rig.req(Method::POST, "/api/v1/posts").token(&author.token);
    let fine = json!({ "text": "hi" }).to_string();

    // Not JSON, or not JSON of the expected shape and types: 400 invalid_json.
    let deep = format!(r#"{{"text":{}{}}}"#, "[".repeat(4000), "]".repeat(4000));
    let not_json: Vec<(&str, Vec<u8>)> = vec![
        ("unclosed object", b"{".to_vec()),
        ("unclosed string", br#"{"text": "hi"#.to_vec()),
        ("plain words", b"not json".to_vec()),
        ("trailing garbage", br#"{"text":"hi"} trailing"#.to_vec()),
        ("two documents", br#"{"text":"hi"}{"text":"hi"}"#.to_vec()),
        ("trailing comma", br#"{"text":"hi",}"#.to_vec()),
        ("single quotes", b"{'text':'hi'}".to_vec()),
        ("empty body", Vec::new()),
        ("whitespace body", b"  \n ".to_vec()),
        ("duplicate field", br#"{"text":"a","text":"b"}"#.to_vec()),
        ("lone surrogate", br#"{"text":"\ud800"}"#.to_vec()),
        ("invalid UTF-8", b"{\"text\":\"\xff\xfe\"}".to_vec()),
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
        json!({}),
        json!({ "reply_to": first }),
        json!({ "text": 42 }),
        json!({ "text": 1.5 }),
        json!({ "text": null }),
        json!({ "text": true }),
        json!({ "text": ["hi"] }),
        json!({ "text": { "hi": 1 } }),
        json!({ "text": "hi", "reply_to": 123 }),
        json!({ "text": "hi", "reply_to": first.parse::<u64>().expect("numeric id") }),
        json!({ "text": "hi", "reply_to": [first] }),
        json!({ "text": "hi", "reply_to": "abc" }),
        json!({ "text": "hi", "reply_to": "" }),
        json!({ "text": "hi", "reply_to": "0" }),
        json!({ "text": "hi", "reply_to": "-1" }),
        json!({ "text": "hi", "reply_to": " 1" }),
        json!({ "text": "hi", "reply_to": "9223372036854775808" }),
        json!({ "text": "hi", "extra": 1 }),
        json!({ "text": "hi", "Text": "hi" }),
        json!({ "text": "hi", "author": { "id": "1" } }),
    ];
    for body in &wrong_shape {
        w.refused(create().json(body).what(body), BAD_REQUEST, "invalid_json").await;
    }
    // A fine body that does not say it is JSON.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        Some("nonsense"),
    ] {
        w.refused(create().raw(ct, fine.clone()).what(format!("Content-Type {ct:?}")), BAD_REQUEST, "invalid_json")
            .await;
    }

    // Well-formed but against the rules: 422 validation_failed.
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
        let what = format!("text of {} chars {:?}", text.chars().count(), text.get(..12).unwrap_or(text));
        w.refused(create().json(&json!({ "text": text })).what(what), UNPROCESSABLE, "validation_failed").await;
    }
    for parent in ["1", I64_MAX] {
        let body = json!({ "text": "a reply", "reply_to": parent });
        w.refused(create().json(&body).what("reply to an unknown post"), UNPROCESSABLE, "validation_failed").await;
    }
    // Exactly the size limit is read (and refused for its text, not its size).
    let at_limit = post_body_of_len(MAX_BODY);
    w.refused(create().raw(Some(JSON), at_limit).what("body of exactly 16 KiB"), UNPROCESSABLE, "validation_failed")
        .await;

    // Too big: 413 payload_too_large, whether the size is announced or discovered.
    for len in [MAX_BODY + 1, 64 * 1024, 1024 * 1024] {
        let what = format!("body of {len} bytes");
        w.refused(create().raw(Some(JSON), post_body_of_len(len)).what(what), TOO_LARGE, "payload_too_large").await;
    }
    let body = post_body_of_len(17 * 1024);
    let chunked = post_chunked(&rig.server.base, "/api/v1/posts", &author.token, body.as_bytes()).await;
    assert_error("chunked body of 17 KiB", &chunked, TOO_LARGE, "payload_too_large");
    w.unchanged("chunked body of 17 KiB").await;
    // Compressed bodies count at their inflated size: 7 KB that inflate to 1 MB are too large.
    let bomb = gzip(br#"{"text":"hi" "#, 258 * 4000, b"}");
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
        let req = create().header("Idempotency-Key", key).json(&json!({ "text": "keyed" })).what(what);
        w.refused(req, BAD_REQUEST, "invalid_parameter").await;
    }

    // Registration.
    let register = || rig.req(Method::POST, "/api/v1/users");
    for (what, body) in [("unclosed", "{"), ("empty", ""), ("trailing", r#"{"handle":"newbie"} x"#)] {
        w.refused(register().raw(Some(JSON), body).what(what), BAD_REQUEST, "invalid_json").await;
    }
    let wrong_shape = [
        json!({}),
        json!(["newbie"]),
        json!({ "handle": null }),
        json!({ "handle": 7 }),
        json!({ "handle": ["newbie"] }),
        json!({ "handle": { "name": "newbie" } }),
        json!({ "handle": "newbie", "admin": true }),
        json!({ "handle": "newbie", "id": "1" }),
    ];
    for body in &wrong_shape {
        w.refused(register().json(body).what(body), BAD_REQUEST, "invalid_json").await;
    }
    let fine = json!({ "handle": "newbie" }).to_string();
    for ct in [None, Some("text/plain")] {
        w.refused(register().raw(ct, fine.clone()).what(format!("Content-Type {ct:?}")), BAD_REQUEST, "invalid_json")
            .await;
    }
    let padded = format!(r#"{{"handle":"newbie"{}}}"#, " ".repeat(MAX_BODY));
    w.refused(register().raw(Some(JSON), padded).what("17 KiB"), TOO_LARGE, "payload_too_large").await;
    rig.assert_no_user("newbie").await;
    for handle in ["", " ", "has space", "a-b", "émile", "x\u{0}", &"h".repeat(31)] {
        let req = register().json(&json!({ "handle": handle })).what(format!("handle {handle:?}"));
        w.refused(req, UNPROCESSABLE, "validation_failed").await;
    }
    w.refused(register().json(&json!({ "handle": "author" })).what("taken handle"), CONFLICT, "conflict").await;
    let r = rig.api.call(Method::GET, "/api/v1/users/lookup?handle=author", None, None).await;
    assert_eq!(r.body["id"], json!(author.id.to_string()), "the taken handle still names its owner");

    // What must be accepted, at the edges of what was refused above.
    let accepted = [
        "a".repeat(500),
        "é".repeat(500),
        "😀".repeat(500),
        "line one\nline two\r\n\ttabbed".into(),
        "  padded, not empty  ".into(),
    ];
    for text in &accepted {
        let body = create().json(&json!({ "text": text })).what("accepted text").send().await;
        let id = body.ok(StatusCode::CREATED)["id"].as_str().expect("id").to_owned();
        let r = rig.api.call(Method::GET, &format!("/api/v1/posts/{id}"), None, None).await;
        assert_eq!(r.body["text"], json!(text), "the text round-trips");
    }
    let sent = create().raw(Some("application/json; charset=utf-8"), r#"{"text":"charset"}"#).send().await;
    sent.ok(StatusCode::CREATED);
    create().json(&json!({ "text": "null parent", "reply_to": null })).send().await.ok(StatusCode::CREATED);
    let small = gzip(br#"{"text":"zipped"#, 258, br#""}"#);
    let sent = create().header("Content-Encoding", "gzip").raw(Some(JSON), small).send().await;
    assert_eq!(sent.ok(StatusCode::CREATED)["text"].as_str().map(str::len), Some(6 + 258), "gzip bodies are read");
    let sent = create().json(&json!({ "text": "a reply", "reply_to": first })).send().await;
    assert_eq!(sent.ok(StatusCode::CREATED)["reply_to"], json!(first), "reply_to is echoed as a string");
    register().json(&json!({ "handle": "h".repeat(30) })).send().await.ok(StatusCode::CREATED);

    // Idempotency: the same key twice is one post, replayed; keys are per author.
    let keyed = rig.user("keyed").await;
    let other = rig.user("other").await;
    let key = format!("retry-{}", "x".repeat(122));
    let keyed_post = |user: &User, text: &str| {
        rig.req(Method::POST, "/api/v1/posts")
            .token(&user.token)
            .header("Idempotency-Key", &key)
            .json(&json!({ "text": text }))
            .send()
    };
    let first_try = keyed_post(&keyed, "once").await;
    let id = first_try.ok(StatusCode::CREATED)["id"].clone();
    assert!(first_try.reply.headers.get("Idempotent-Replayed").is_none(), "a first attempt is no replay");
    let retry = keyed_post(&keyed, "once").await;
    assert_eq!(retry.ok(StatusCode::CREATED)["id"], id, "a retry answers the same post");
    let replayed = retry.reply.headers.get("Idempotent-Replayed").and_then(|v| v.to_str().ok());
    assert_eq!(replayed, Some("true"));
    let changed_retry = keyed_post(&keyed, "twice?").await;
    assert!(!changed_retry.reply.status.is_server_error(), "{}", changed_retry.reply.body);
    let theirs = keyed_post(&other, "mine").await;
    assert_ne!(theirs.ok(StatusCode::CREATED)["id"], id, "another author's key is another post");
    assert!(theirs.reply.headers.get("Idempotent-Replayed").is_none());
    let posts = rig.api.call(Method::GET, &format!("/api/v1/users/{}/posts", keyed.id), None, None).await;
    let posts = posts.body["posts"].as_array().expect("posts").clone();
    assert_eq!(posts.len(), 1, "one key, one post: {posts:?}");
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

    let now = unix_now();
    let claims = |sub: &str, exp: u64| json!({ "sub": sub, "handle": me.handle, "iat": now, "exp": exp });
    let my_id = me.id.to_string();
    let (header, _, signature) = {
        let mut parts = me.token.split('.');
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
        ("three garbage parts", Some(bearer("a.b.c"))),
        ("token and more", Some(format!("Bearer {} extra", me.token))),
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
    let follow = format!("/api/v1/users/{}/follow", them.id);
    let block = format!("/api/v1/users/{}/block", them.id);
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/api/v1/posts".into(), Some(json!({ "text": "not me" }))),
        (Method::DELETE, format!("/api/v1/posts/{mine}"), None),
        (Method::POST, follow.clone(), None),
        (Method::DELETE, follow, None),
        (Method::POST, block.clone(), None),
        (Method::DELETE, block, None),
        (Method::POST, format!("/api/v1/statuses/{mine}/reblog"), None),
        (Method::POST, format!("/api/v1/statuses/{mine}/unreblog"), None),
        (Method::POST, format!("/api/v1/statuses/{mine}/favourite"), None),
        (Method::POST, format!("/api/v1/statuses/{mine}/unfavourite"), None),
        (Method::POST, format!("/api/v1/accounts/{}/mute", them.id), None),
        (Method::POST, format!("/api/v1/accounts/{}/unmute", them.id), None),
    ];
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
        for path in ["/api/v1/timelines/home", "/api/v1/mutes", "/api/v1/streaming/user", "/api/v1/notifications"] {
            let mut req = rig.req(Method::GET, path).what(what);
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            req.send().await.error(UNAUTHORIZED, "unauthorized");
        }
    }
    // The scheme is case-insensitive.
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
        .req(Method::POST, "/api/v1/posts")
        .token(&dave.token)
        .header("Idempotency-Key", "deleted-later")
        .json(&json!({ "text": "keyed, soon gone" }))
        .send()
        .await;
    let keyed = keyed.ok(StatusCode::CREATED)["id"].as_str().expect("id").to_owned();
    rig.delete(&dave, &keyed).await;
    let w = rig.watch(&[&alice, &bob, &carol, &dave]).await;

    // Ids that name nothing, in every place an id goes: 404 not_found.
    let not_a_user = alices.clone();
    let not_a_post = alice.id.to_string();
    let mut user_ids: Vec<&str> = BAD_IDS.to_vec();
    user_ids.push(&not_a_user);
    let mut post_ids: Vec<&str> = BAD_IDS.to_vec();
    post_ids.extend([not_a_post.as_str(), gone.as_str()]);
    for id in user_ids {
        for tail in ["", "/followers", "/following", "/posts"] {
            rig.req(Method::GET, format!("/api/v1/users/{id}{tail}")).send().await.error(NOT_FOUND, "not_found");
        }
        for tail in ["/follow", "/block"] {
            for method in [Method::POST, Method::DELETE] {
                let req = rig.req(method, format!("/api/v1/users/{id}{tail}")).token(&alice.token);
                w.refused(req, NOT_FOUND, "not_found").await;
            }
        }
        for action in ["mute", "unmute"] {
            let req = rig.req(Method::POST, format!("/api/v1/accounts/{id}/{action}")).token(&alice.token);
            w.refused(req, NOT_FOUND, "not_found").await;
        }
    }
    for id in post_ids {
        rig.req(Method::GET, format!("/api/v1/posts/{id}")).send().await.error(NOT_FOUND, "not_found");
        let req = rig.req(Method::DELETE, format!("/api/v1/posts/{id}")).token(&dave.token);
        w.refused(req, NOT_FOUND, "not_found").await;
        for action in ["reblog", "unreblog", "favourite", "unfavourite"] {
            let req = rig.req(Method::POST, format!("/api/v1/statuses/{id}/{action}")).token(&alice.token);
            w.refused(req, NOT_FOUND, "not_found").await;
        }
        for list in ["reblogged_by", "favourited_by", "context"] {
            rig.req(Method::GET, format!("/api/v1/statuses/{id}/{list}")).send().await.error(NOT_FOUND, "not_found");
        }
    }
    let req = rig.req(Method::POST, format!("/api/v1/accounts/{}/mute", alice.id)).token(&alice.token);
    w.refused(req.what("muting oneself"), UNPROCESSABLE, "validation_failed").await;

    // Relationship rules.
    let edge = |who: &User, method: Method, what: &str, whom: &User| {
        rig.req(method, format!("/api/v1/users/{}/{what}", whom.id)).token(&who.token)
    };
    for what in ["follow", "block"] {
        for method in [Method::POST, Method::DELETE] {
            let req = edge(&alice, method, what, &alice).what("yourself");
            w.refused(req, UNPROCESSABLE, "validation_failed").await;
        }
    }
    w.refused(edge(&alice, Method::POST, "follow", &bob).what("again"), CONFLICT, "conflict").await;
    w.refused(edge(&alice, Method::DELETE, "follow", &carol).what("not following"), CONFLICT, "conflict").await;
    w.refused(edge(&bob, Method::DELETE, "follow", &alice).what("not following"), CONFLICT, "conflict").await;
    w.refused(edge(&alice, Method::POST, "follow", &carol).what("blocked by them"), FORBIDDEN, "forbidden").await;
    w.refused(edge(&carol, Method::POST, "follow", &alice).what("blocking them"), FORBIDDEN, "forbidden").await;
    w.refused(edge(&carol, Method::POST, "block", &alice).what("again"), CONFLICT, "conflict").await;
    w.refused(edge(&alice, Method::DELETE, "block", &carol).what("not blocking"), CONFLICT, "conflict").await;
    w.refused(edge(&bob, Method::DELETE, "block", &alice).what("not blocking"), CONFLICT, "conflict").await;

    // Posts.
    let delete = |who: &User, post: &str| rig.req(Method::DELETE, format!("/api/v1/posts/{post}")).token(&who.token);
    w.refused(delete(&alice, &bobs).what("someone else's"), FORBIDDEN, "forbidden").await;
    w.refused(delete(&bob, &alices).what("someone else's"), FORBIDDEN, "forbidden").await;
    w.refused(delete(&dave, &gone).what("twice"), NOT_FOUND, "not_found").await;
    w.refused(delete(&dave, &keyed).what("twice"), NOT_FOUND, "not_found").await;
    let create = |body: Value| rig.req(Method::POST, "/api/v1/posts").token(&alice.token).json(&body);
    let req = create(json!({ "text": "re: gone", "reply_to": gone })).what("reply to a deleted post");
    w.refused(req, UNPROCESSABLE, "validation_failed").await;
    let req = create(json!({ "text": "re: ?", "reply_to": "1" })).what("reply to an unknown post");
    w.refused(req, UNPROCESSABLE, "validation_failed").await;
    let replay = rig
        .req(Method::POST, "/api/v1/posts")
        .token(&dave.token)
        .header("Idempotency-Key", "deleted-later")
        .json(&json!({ "text": "keyed, soon gone" }))
        .what("replay of a deleted post");
    w.refused(replay, CONFLICT, "conflict").await;

    // Lookup by handle.
    rig.req(Method::GET, "/api/v1/users/lookup").send().await.error(BAD_REQUEST, "invalid_parameter");
    rig.req(Method::GET, "/api/v1/users/lookup?handel=alice").send().await.error(BAD_REQUEST, "invalid_parameter");
    for q in ["handle=nobody", "handle=", "handle=%00", "handle=alice%20"] {
        rig.req(Method::GET, format!("/api/v1/users/lookup?{q}")).send().await.error(NOT_FOUND, "not_found");
    }

    rig.check_documented().await;
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

    let post_lists = ["/api/v1/timelines/home".to_owned(), format!("/api/v1/users/{}/posts", author.id)];
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
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=",
        "limit=1.5",
        "limit=18446744073709551616",
        "limit=5&limit=abc",
        "since_id=1&min_id=2",
        "max_id=%zz",
        "max_id=%FF",
    ];
    for path in &post_lists {
        for q in bad_post_queries {
            let req = rig.req(Method::GET, format!("{path}?{q}")).token(&reader.token);
            req.send().await.error(BAD_REQUEST, "invalid_parameter");
        }
        let good = ["limit=1", "limit=100", "max_id=9223372036854775807", "since_id=9223372036854775807", "min_id=1"];
        for q in good.into_iter().chain(["min_id=9223372036854775807", "unknown=param"]) {
            let sent = rig.req(Method::GET, format!("{path}?{q}")).token(&reader.token).send().await;
            // The home timeline is Mastodon's (an array), a user's posts Starling's.
            let body = sent.ok(StatusCode::OK);
            assert!(body.is_array() || body["posts"].is_array(), "{body}");
        }
    }
    let user_lists =
        [format!("/api/v1/users/{}/followers", author.id), format!("/api/v1/users/{}/following", reader.id)];
    let bad_list_queries = [
        "cursor=xyz",
        "cursor=-1",
        "cursor=0",
        "cursor=",
        "cursor=1.5",
        "cursor=9223372036854775808",
        "cursor=%zz",
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=",
    ];
    for path in &user_lists {
        for q in bad_list_queries {
            rig.req(Method::GET, format!("{path}?{q}")).send().await.error(BAD_REQUEST, "invalid_parameter");
        }
        let sent = rig.req(Method::GET, format!("{path}?limit=100")).send().await;
        assert_eq!(sent.ok(StatusCode::OK)["users"].as_array().map(Vec::len), Some(1));
        let sent = rig.req(Method::GET, format!("{path}?cursor={I64_MAX}&limit=1")).send().await;
        assert_eq!(sent.ok(StatusCode::OK)["users"], json!([]));
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

    // No such endpoint: the JSON 404, whatever the method.
    let unknown = [
        "/",
        "/api",
        "/api/v1",
        "/api/v2/posts",
        "/api/v1/post",
        "/api/v1/posts/",
        "/api/v1/users/1/",
        "/api/v1/posts/1/likes",
        "/api/v1/timelines/public",
        "/admin/v1/cache",
        "/healthz/extra",
        "/%FF",
    ];
    for path in unknown {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let sent = rig.req(method, path).token(&me.token).json(&json!({ "text": "lost" })).send().await;
            assert_error(&sent.what, &sent.reply, NOT_FOUND, "not_found");
        }
    }
    w.unchanged("unknown paths").await;
    // A known path, the wrong method: 405 with the methods it takes, the JSON shape, no change.
    let wrong_method = [
        (Method::PUT, "/api/v1/posts".to_owned()),
        (Method::GET, "/api/v1/posts".to_owned()),
        (Method::PATCH, format!("/api/v1/posts/{post}")),
        (Method::POST, format!("/api/v1/posts/{post}")),
        (Method::PUT, format!("/api/v1/users/{}", them.id)),
        (Method::DELETE, format!("/api/v1/users/{}", them.id)),
        (Method::GET, format!("/api/v1/users/{}/follow", them.id)),
        (Method::PUT, format!("/api/v1/users/{}/block", them.id)),
        (Method::POST, format!("/api/v1/users/{}/followers", them.id)),
        (Method::DELETE, format!("/api/v1/users/{}/posts", them.id)),
        (Method::POST, "/api/v1/timelines/home".to_owned()),
        (Method::GET, "/api/v1/users".to_owned()),
        (Method::DELETE, "/api/v1/users/lookup".to_owned()),
        (Method::POST, "/healthz".to_owned()),
        (Method::PUT, "/readyz".to_owned()),
        (Method::POST, "/metrics".to_owned()),
        (Method::POST, "/openapi.json".to_owned()),
        (Method::GET, "/admin/v1/cache/clear".to_owned()),
    ];
    for (method, path) in wrong_method {
        let body = json!({ "text": "wrong method", "handle": "wrong" });
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
        "/api/v1/users",
        "/api/v1/users/lookup",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/follow",
        "/api/v1/users/{id}/block",
        "/api/v1/users/{id}/followers",
        "/api/v1/users/{id}/following",
        "/api/v1/users/{id}/posts",
        "/api/v1/posts",
        "/api/v1/posts/{id}",
        "/api/v1/timelines/home",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
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
    for code in ["invalid_json", "invalid_parameter", "validation_failed", "unauthorized", "payload_too_large"] {
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
    let create = rig.req(Method::POST, "/api/v1/posts").token(&hasty.token).json(&json!({ "text": "one too many" }));
    let sent = create.send().await;
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
    let sent = rig.req(Method::DELETE, format!("/api/v1/posts/{}", posts[0])).token(&hasty.token).send().await;
    sent.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let listed = rig.api.call(Method::GET, &format!("/api/v1/users/{}/posts", hasty.id), None, None).await;
    let listed: Vec<&str> =
        listed.body["posts"].as_array().expect("posts").iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(listed.len(), 3, "the refused post does not exist, the refused delete deleted nothing");
    for id in &posts {
        assert!(listed.contains(&id.as_str()));
    }

    // Follows have their own bucket.
    for other in &others[..3] {
        rig.follow(&hasty, other).await;
    }
    let last = &others[3];
    let sent = rig.req(Method::POST, format!("/api/v1/users/{}/follow", last.id)).token(&hasty.token).send().await;
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
