"""A Mastodon.py session against a Starling server: the library as an app would use it.

Usage: python mastodon_py_session.py BASE_URL [--statuses]

Registers an app, signs a person up with the app's token, logs in with the password
grant, reads the account, follows a second account found by `acct` (relationships,
followers, counts), unfollows it, reads the instance, revokes the token and checks it no longer
works. With --statuses (a base that also serves the post-service's and the
timeline-service's routes) it also posts, replies to, reads and deletes statuses, pages
the home timeline to its end, and checks reblogs (one entry per original however many
reblog it), favourites, mutes and a thread's context against the timeline the contract
expects, with `stream_user` (server-sent events) receiving a followee's post, reblog and
delete and the notification of a favourite as they happen. Mastodon.py parses leniently, so shapes are asserted here, not just
status codes. Exits non-zero on the first failure.
"""

import sys
import threading
import time
import uuid
from datetime import datetime

from mastodon import Mastodon, StreamListener
from mastodon.errors import MastodonUnauthorizedError


def home_entries(user):
    """The whole home timeline as (status id, reblogged status id or None, account name)."""
    page = user.timeline_home(limit=3)
    out = []
    while page:
        for s in page:
            assert isinstance(s["created_at"], datetime), s["created_at"]
            inner = s["reblog"]
            out.append((s["id"], inner["id"] if inner else None, s["account"]["username"]))
        page = user.fetch_next(page)
    return out


def eventually(user, expected, what):
    """Polls the home timeline until it equals `expected` (the fan-out is asynchronous)."""
    deadline = time.monotonic() + 5
    while True:
        got = home_entries(user)
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: home timeline {got} != expected {expected}")
        time.sleep(0.05)


class Listener(StreamListener):
    """Collects what `stream_user` delivers; `open` is set by the first heartbeat."""

    def __init__(self):
        super().__init__()
        self.updates, self.deletes, self.notifications = [], [], []
        self.open = threading.Event()

    def handle_heartbeat(self):
        self.open.set()

    def on_update(self, status):
        self.updates.append(status)

    def on_delete(self, status_id):
        self.deletes.append(str(status_id))

    def on_notification(self, notification):
        self.notifications.append(notification)


def streamed(found, what, within=2.0):
    """Waits up to `within` seconds for `found()` to hold."""
    deadline = time.monotonic() + within
    while not found():
        if time.monotonic() > deadline:
            raise AssertionError(f"the stream did not deliver {what} within {within} s")
        time.sleep(0.02)


def logged_in(base, client_id, client_secret, app, name, password):
    app.create_account(name, password, f"{name}@example.com", agreement=True)
    m = Mastodon(client_id=client_id, client_secret=client_secret, api_base_url=base, ratelimit_method="throw")
    m.log_in(f"{name}@example.com", password, scopes=["read", "write", "follow"], allow_http=True)
    return m, m.account_verify_credentials()


def interactions(base, client_id, client_secret, app, user, password, name, own):
    """Reblogs, favourites and mutes, with the home timeline checked after each."""
    friend, friend_acct = logged_in(base, client_id, client_secret, app, name + "f", password)
    stranger, _ = logged_in(base, client_id, client_secret, app, name + "s", password)
    fname = friend_acct["username"]
    user.account_follow(friend_acct["id"])
    listener = Listener()
    stream = user.stream_user(listener, run_async=True)
    assert listener.open.wait(5), "the user stream did not open"
    theirs = friend.status_post("a friend's post")
    streamed(lambda: any(u["id"] == theirs["id"] for u in listener.updates), "a followee's post")
    update = next(u for u in listener.updates if u["id"] == theirs["id"])
    assert update["account"]["username"] == fname and isinstance(update["created_at"], datetime), update
    # The friend favourites the reader's status: the notification is streamed.
    friend.status_favourite(own[0]["id"])
    streamed(
        lambda: any(n["type"] == "favourite" and n["account"]["username"] == fname for n in listener.notifications),
        "the notification of a favourite",
    )
    (note,) = [n for n in listener.notifications if n["type"] == "favourite"]
    assert note["status"]["id"] == own[0]["id"] and isinstance(note["created_at"], datetime), note
    far = stranger.status_post("a stranger's post")
    mine = [(s["id"], None, name) for s in own]
    home = [(theirs["id"], None, fname)] + mine
    eventually(user, home, "after a followee posted")

    fav = user.status_favourite(theirs["id"])
    assert fav["favourited"] is True and fav["favourites_count"] == 1, fav
    assert [a["username"] for a in user.status_favourited_by(theirs["id"])] == [name]
    (seen,) = [s for s in user.timeline_home() if s["id"] == theirs["id"]]
    assert seen["favourited"] is True and seen["favourites_count"] == 1, "the home timeline shows one's favourite"

    # A followee's reblog of a stranger's post reaches the home timeline as a reblog...
    shared = friend.status_reblog(far["id"])
    assert shared["reblog"]["id"] == far["id"] and shared["account"]["username"] == fname, shared
    assert shared["reblogged"] is True, shared
    home = [(shared["id"], far["id"], fname)] + home
    eventually(user, home, "after a followee's reblog")
    streamed(
        lambda: any(u["id"] == shared["id"] and u["reblog"]["id"] == far["id"] for u in listener.updates),
        "a followee's reblog",
    )
    assert not any(u["id"] == far["id"] for u in listener.updates), "a stranger's post was streamed"

    # ...and once only: the reader's own later reblog of it is not a second entry.
    own_reblog = user.status_reblog(far["id"])
    assert own_reblog["reblog"]["id"] == far["id"], own_reblog
    assert user.status_reblog(far["id"])["id"] == own_reblog["id"], "a second reblog is the first"
    assert user.status(far["id"])["reblogs_count"] == 2
    (entry,) = [s for s in user.timeline_home() if s["id"] == shared["id"]]
    assert entry["reblogged"] is True and entry["reblog"]["reblogs_count"] == 2, entry
    assert [a["username"] for a in user.status_reblogged_by(far["id"])] == [name, fname]
    time.sleep(0.3)
    eventually(user, home, "after the reader's own reblog of the same status")
    user.status_unreblog(far["id"])
    assert user.status(far["id"])["reblogged"] is False

    # Muting the followee hides its posts and reblogs; the follow stays.
    user.account_mute(friend_acct["id"])
    (rel,) = user.account_relationships([friend_acct["id"]])
    assert rel["muting"] is True and rel["following"] is True, rel
    assert [a["username"] for a in user.mutes()] == [fname]
    eventually(user, mine, "after muting the followee")
    user.account_unmute(friend_acct["id"])
    eventually(user, home, "after unmuting the followee")

    # Deleting the original takes the reblog along.
    stranger.status_delete(far["id"])
    home = [e for e in home if e[1] != far["id"]]
    eventually(user, home, "after the reblogged status was deleted")
    streamed(lambda: str(shared["id"]) in listener.deletes, "the delete of a reblog whose original went")
    # Closing waits for the blocked read to return, at the next heartbeat (15 s): not here.
    threading.Thread(target=stream.close, daemon=True).start()

    # The thread around the reader's reply: its parent above, a friend's answer below.
    answer = friend.status_post("a reply to you", in_reply_to_id=own[0]["id"])
    context = user.status_context(own[0]["id"])
    assert [s["id"] for s in context["ancestors"]] == [own[1]["id"]], context
    assert [s["id"] for s in context["descendants"]] == [answer["id"]], context

    # Notifications: the friend was followed and favourited by us; we were replied to.
    got = {(n["type"], n["account"]["username"]) for n in friend.notifications()}
    assert ("follow", name) in got and ("favourite", name) in got, got
    mentions = user.notifications(types=["mention"])
    assert [n["status"]["id"] for n in mentions] == [answer["id"]], mentions
    assert isinstance(mentions[0]["created_at"], datetime), mentions[0]

    # Dismissed one at a time (a follow's is kept by the graph-service), then all.
    (followed,) = [n for n in friend.notifications() if n["type"] == "follow"]
    friend.notifications_dismiss(followed["id"])
    left = friend.notifications()
    assert left and all(n["id"] != followed["id"] for n in left), left
    friend.notifications_clear()
    assert friend.notifications() == [], "notifications left after a clear"
    assert user.notifications(types=["mention"]), "another's notifications went with the clear"


def main(base: str, statuses: bool) -> None:
    client_id, client_secret = Mastodon.create_app(
        "mastodon.py session", api_base_url=base, scopes=["read", "write", "follow", "push"]
    )
    assert client_id and client_secret, "create_app returned no credentials"

    app = Mastodon(client_id=client_id, client_secret=client_secret, api_base_url=base, ratelimit_method="throw")
    name = "py" + uuid.uuid4().hex[:10]
    email = f"{name}@example.com"
    password = "a long password " + name
    signup_token = app.create_account(name, password, email, agreement=True)
    assert signup_token, "create_account returned no token"

    user = Mastodon(client_id=client_id, client_secret=client_secret, api_base_url=base, ratelimit_method="throw")
    token = user.log_in(email, password, scopes=["read", "write", "follow", "push"], allow_http=True)
    assert token, "log_in returned no token"

    me = user.account_verify_credentials()
    assert isinstance(me["id"], (str, int)), me
    assert str(me["id"]).isdigit(), f"id {me['id']!r}"
    assert me["username"] == name and me["acct"] == name, me
    assert isinstance(me["created_at"], datetime), f"created_at did not parse: {me['created_at']!r}"
    assert me["followers_count"] == 0 and me["following_count"] == 0, me

    # A second account to follow, found by acct.
    other_name = name + "b"
    app.create_account(other_name, password, f"{other_name}@example.com", agreement=True)
    other = user.account_lookup(other_name)
    assert other["username"] == other_name, other
    rel = user.account_follow(other["id"])
    assert rel["following"] is True and str(rel["id"]) == str(other["id"]), rel
    (rel,) = user.account_relationships([other["id"]])
    assert rel["following"] is True and rel["followed_by"] is False, rel
    followers = user.account_followers(other["id"])
    assert [a["username"] for a in followers] == [name], followers
    assert user.account(other["id"])["followers_count"] == 1
    rel = user.account_unfollow(other["id"])
    assert rel["following"] is False, rel

    if statuses:
        posted = user.status_post("hello from <mastodon.py> & friends")
        assert str(posted["id"]).isdigit(), posted
        assert posted["content"] == "<p>hello from &lt;mastodon.py&gt; &amp; friends</p>", posted["content"]
        assert posted["account"]["username"] == name, posted["account"]
        assert isinstance(posted["created_at"], datetime), posted["created_at"]
        reply = user.status_post("and a reply", in_reply_to_id=posted["id"], idempotency_key="reply-" + name)
        again = user.status_post("and a reply", in_reply_to_id=posted["id"], idempotency_key="reply-" + name)
        assert reply["id"] == again["id"], "the idempotency key did not replay"
        assert str(reply["in_reply_to_id"]) == str(posted["id"]), reply
        assert user.status(posted["id"])["id"] == posted["id"]
        mine = user.account_statuses(me["id"], limit=1)
        assert [s["id"] for s in mine] == [reply["id"]], mine
        older = user.fetch_next(mine)
        assert [s["id"] for s in older] == [posted["id"]], older
        # The home timeline (one's own statuses are in it), paged to its end.
        home = user.timeline_home(limit=1)
        seen = []
        while home:
            seen.extend(s["id"] for s in home)
            assert home[0]["account"]["username"] == name, home[0]["account"]
            home = user.fetch_next(home)
        assert seen == [reply["id"], posted["id"]], seen
        interactions(base, client_id, client_secret, app, user, password, name, [reply, posted])
        deleted = user.status_delete(posted["id"])
        assert deleted["text"] == "hello from <mastodon.py> & friends", deleted

    instance = user.instance()
    assert str(instance["version"]).startswith("4."), instance["version"]

    user.revoke_access_token()
    revoked = Mastodon(access_token=token, api_base_url=base, ratelimit_method="throw")
    try:
        revoked.account_verify_credentials()
    except MastodonUnauthorizedError:
        pass
    else:
        raise AssertionError("a revoked token still worked")
    print(f"mastodon.py session ok: account {name} (id {me['id']})")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--statuses"):
        sys.exit("usage: mastodon_py_session.py BASE_URL [--statuses]")
    main(sys.argv[1], len(sys.argv) == 3)
