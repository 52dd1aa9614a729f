"""A Mastodon.py session against a Starling server: the library as an app would use it.

Usage: python mastodon_py_session.py BASE_URL [--statuses]

Registers an app, signs a person up with the app's token, logs in with the password
grant, reads the account, follows a second account found by `acct` (relationships,
followers, counts), unfollows it, reads the instance, revokes the token and checks it no longer
works. With --statuses (a base that also serves the post-service's and the
timeline-service's routes) it also posts, replies to, reads and deletes statuses, and
pages the home timeline to its end. Mastodon.py parses leniently, so shapes are asserted here, not just
status codes. Exits non-zero on the first failure.
"""

import sys
import uuid
from datetime import datetime

from mastodon import Mastodon
from mastodon.errors import MastodonUnauthorizedError


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
