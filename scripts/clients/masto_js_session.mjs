// A masto.js session against a Starling server: the library as a web app would use it
// (JSON bodies, multipart forms for OAuth and sign-up, as masto.js sends them).
//
// Usage: MASTO_JS=<path to masto's dist/esm/index.js> node masto_js_session.mjs BASE_URL [--statuses]
//
// Registers an app, takes an app token, signs a person up, logs in with the password
// grant, reads the account, follows a second account (relationships), and with
// --statuses posts, reads and deletes a status, pages the home timeline, and checks
// reblogs (one entry per original), favourites and mutes against the timeline the
// contract expects, with the WebSocket user stream receiving a followee's post and reblog and a favourite's notification (on the user:notification stream too); then revokes the token and checks it no longer works. Shapes are asserted, not just status codes. Exits non-zero on the first
// failure.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const [base, flag] = process.argv.slice(2);
if (!base || (flag !== undefined && flag !== "--statuses") || !process.env.MASTO_JS) {
  console.error("usage: MASTO_JS=<masto dist/esm/index.js> node masto_js_session.mjs BASE_URL [--statuses]");
  process.exit(2);
}
const { createOAuthAPIClient, createRestAPIClient, createStreamingAPIClient, MastoHttpError } = await import(
  pathToFileURL(process.env.MASTO_JS).href
);

const rest = (accessToken) => createRestAPIClient({ url: base, accessToken });
const oauth = createOAuthAPIClient({ url: base });
const OOB = "urn:ietf:wg:oauth:2.0:oob";
const scope = "read write follow push";

const app = await rest().v1.apps.create({ clientName: "masto.js session", redirectUris: OOB, scopes: scope });
assert.ok(app.clientId && app.clientSecret, "apps.create returned no credentials");
assert.match(app.id, /^\d+$/);

const credentials = { clientId: app.clientId, clientSecret: app.clientSecret, redirectUri: OOB };
const appToken = await oauth.token.create({ ...credentials, grantType: "client_credentials", scope });
assert.equal(appToken.tokenType, "Bearer");

const name = "js" + randomUUID().replaceAll("-", "").slice(0, 10);
const password = "a long password " + name;
const signUp = await rest(appToken.accessToken).v1.accounts.create({
  username: name,
  email: `${name}@example.com`,
  password,
  agreement: true,
  locale: "en",
});
assert.ok(signUp.accessToken, "accounts.create returned no token");

const token = await oauth.token.create({ ...credentials, grantType: "password", username: name, password, scope });
const me = rest(token.accessToken);
const account = await me.v1.accounts.verifyCredentials();
assert.equal(account.username, name);
assert.equal(account.acct, name);
assert.match(account.id, /^\d+$/, "ids are strings of digits");
assert.ok(!Number.isNaN(Date.parse(account.createdAt)), `createdAt ${account.createdAt}`);

const otherName = name + "b";
await rest(appToken.accessToken).v1.accounts.create({
  username: otherName,
  email: `${otherName}@example.com`,
  password,
  agreement: true,
  locale: "en",
});
const other = await me.v1.accounts.lookup({ acct: otherName });
const followed = await me.v1.accounts.$select(other.id).follow();
assert.equal(followed.following, true);
const [relationship] = await me.v1.accounts.relationships.fetch({ id: [other.id] });
assert.equal(relationship.id, other.id);
assert.equal(relationship.following, true);
assert.equal((await me.v1.accounts.$select(other.id).fetch()).followersCount, 1);

if (flag === "--statuses") {
  const status = await me.v1.statuses.create({ status: "hello from <masto.js>" });
  assert.match(status.id, /^\d+$/);
  assert.equal(status.content, "<p>hello from &lt;masto.js&gt;</p>");
  assert.equal(status.account.id, account.id);
  const reply = await me.v1.statuses.create({ status: "a reply", inReplyToId: status.id });
  assert.equal(reply.inReplyToId, status.id);
  assert.equal((await me.v1.statuses.$select(status.id).fetch()).id, status.id);
  // The home timeline, paged through masto.js's paginator (it follows the Link header).
  const seen = [];
  for await (const page of me.v1.timelines.home.list({ limit: 1 })) {
    seen.push(...page.map((s) => s.id));
    assert.ok(page.every((s) => s.account.username === name));
  }
  assert.deepEqual(seen, [reply.id, status.id]);
  await interactions([reply, status]);
  const deleted = await me.v1.statuses.$select(status.id).remove();
  assert.equal(deleted.text, "hello from <masto.js>");
}

// The whole home timeline as [status id, reblogged status id or null, account name].
async function homeEntries() {
  const out = [];
  for await (const page of me.v1.timelines.home.list({ limit: 2 })) {
    for (const s of page) {
      assert.ok(!Number.isNaN(Date.parse(s.createdAt)));
      out.push([s.id, s.reblog ? s.reblog.id : null, s.account.username]);
    }
  }
  return out;
}

// Polls the home timeline until it is `expected`: the fan-out is asynchronous.
async function eventually(expected, what) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const got = await homeEntries();
    try {
      assert.deepEqual(got, expected);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what}: ${e.message}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function loggedIn(username) {
  await rest(appToken.accessToken).v1.accounts.create({
    username,
    email: `${username}@example.com`,
    password,
    agreement: true,
    locale: "en",
  });
  const t = await oauth.token.create({ ...credentials, grantType: "password", username, password, scope });
  return rest(t.accessToken);
}

// `own` are the reader's statuses, newest first. The reader follows `other` here.
async function interactions(own) {
  const friend = await loggedIn(otherName + "x");
  const friendAccount = await friend.v1.accounts.verifyCredentials();
  await me.v1.accounts.$select(friendAccount.id).follow();
  const stranger = await loggedIn(name + "s");
  // The user stream over a WebSocket, at the URL the instance names.
  const instance = await me.v1.instance.fetch();
  const streaming = createStreamingAPIClient({
    streamingApiUrl: instance.urls.streamingApi,
    accessToken: token.accessToken,
    retry: false,
  });
  const streamed = [];
  const subscription = streaming.user.subscribe();
  const reading = (async () => {
    for await (const event of subscription) streamed.push(event);
  })();
  // The notifications alone, on the same socket.
  const notified = [];
  const notifications = streaming.user.notification.subscribe();
  const readingNotifications = (async () => {
    for await (const event of notifications) notified.push(event);
  })();
  const arrives = async (test, what, events = streamed) => {
    const deadline = Date.now() + 2000;
    while (!events.some(test)) {
      if (Date.now() > deadline) throw new Error(`the stream did not deliver ${what} within 2 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  // masto.js 7 waits one backoff step (1 s) before it first connects, then sends its
  // subscribe message, which the protocol does not answer: give it that long.
  await new Promise((r) => setTimeout(r, 1500));
  const theirs = await friend.v1.statuses.create({ status: "a friend's post" });
  await arrives((e) => e.event === "update" && e.payload.id === theirs.id, "a followee's post");
  // The friend favourites the reader's status: the notification reaches both streams.
  await friend.v1.statuses.$select(own[0].id).favourite();
  const favourited = (e) =>
    e.event === "notification" &&
    e.payload.type === "favourite" &&
    e.payload.account.id === friendAccount.id &&
    e.payload.status?.id === own[0].id;
  await arrives(favourited, "the notification of a favourite");
  await arrives(favourited, "the notification of a favourite, on user:notification", notified);
  assert.ok(
    notified.every((e) => e.event === "notification"),
    `user:notification showed ${notified.map((e) => e.event).join(", ")}`,
  );
  assert.ok(!Number.isNaN(Date.parse(notified.find(favourited).payload.createdAt)));
  const far = await stranger.v1.statuses.create({ status: "a stranger's post" });
  const mine = own.map((s) => [s.id, null, name]);
  let home = [[theirs.id, null, friendAccount.username], ...mine];
  await eventually(home, "after a followee posted");

  const fav = await me.v1.statuses.$select(theirs.id).favourite();
  assert.equal(fav.favourited, true);
  assert.equal(fav.favouritesCount, 1);
  const page = await me.v1.timelines.home.list({ limit: 20 });
  const seen = page.find((s) => s.id === theirs.id);
  assert.ok(seen.favourited && seen.favouritesCount === 1, "the home timeline shows one's favourite");

  const shared = await friend.v1.statuses.$select(far.id).reblog();
  assert.equal(shared.reblog.id, far.id);
  home = [[shared.id, far.id, friendAccount.username], ...home];
  await eventually(home, "after a followee's reblog");
  await arrives((e) => e.event === "update" && e.payload.reblog?.id === far.id, "a followee's reblog");
  subscription.unsubscribe();
  notifications.unsubscribe();
  streaming.close();
  await Promise.race([
    Promise.all([reading, readingNotifications]).catch(() => {}),
    new Promise((r) => setTimeout(r, 500)),
  ]);
  const mineToo = await me.v1.statuses.$select(far.id).reblog();
  assert.equal(mineToo.reblog.id, far.id);
  assert.equal((await me.v1.statuses.$select(far.id).fetch()).reblogsCount, 2);
  await eventually(home, "after the reader's own reblog of the same status");
  const undone = await me.v1.statuses.$select(far.id).unreblog();
  assert.equal(undone.reblogged, false);

  const muted = await me.v1.accounts.$select(friendAccount.id).mute();
  assert.equal(muted.muting, true);
  assert.equal(muted.following, true);
  await eventually(mine, "after muting the followee");
  await me.v1.accounts.$select(friendAccount.id).unmute();
  await eventually(home, "after unmuting the followee");
  await stranger.v1.statuses.$select(far.id).remove();
  await eventually(home.filter((e) => e[1] !== far.id), "after the reblogged status was deleted");

  // Notifications: the friend was followed and favourited by the reader.
  const notes = await friend.v1.notifications.list();
  const got = new Set(notes.map((n) => `${n.type} ${n.account.username}`));
  assert.ok(got.has(`follow ${name}`) && got.has(`favourite ${name}`), [...got].join(", "));
  assert.equal(notes.find((n) => n.type === "favourite").status.id, theirs.id);

  // Dismissed one at a time (a follow's is kept by the graph-service), then all.
  const followed = notes.find((n) => n.type === "follow");
  await friend.v1.notifications.$select(followed.id).dismiss();
  const left = await friend.v1.notifications.list();
  assert.ok(left.length > 0 && !left.some((n) => n.id === followed.id), "the dismissed notification is still listed");
  await friend.v1.notifications.clear();
  assert.deepEqual(await friend.v1.notifications.list(), []);
}

await oauth.revoke({ ...credentials, token: token.accessToken });
try {
  await me.v1.accounts.verifyCredentials();
  assert.fail("a revoked token still worked");
} catch (e) {
  assert.ok(e instanceof MastoHttpError && e.statusCode === 401, `expected a 401, got ${e}`);
}
console.log(`masto.js session ok: account ${name} (id ${account.id})`);
