"""The account page's password, factors and sessions: a person changes their password with the
current one (and their other sessions end), sets up an authenticator app, sees where they are
signed in, and signs out everywhere else. A form posted without its own CSRF token changes
nothing."""

import re

import pyotp
import requests

from conftest import ADMIN_PASSWORD, ALICE, Browser, error_text


def signed_in(server, user=ALICE, password=None):
    """A browser signed in to the account page (the account's own login)."""
    browser = Browser(server)
    start = browser.go(server.url("/login/start")).text
    done = browser.submit(start, "password", username=user.username, password=password or user.password)
    assert not isinstance(done, str) and done.status_code == 200, done
    return browser


def account(browser, server):
    page = browser.go(server.url("/")).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return page, csrf


def change(browser, server, csrf, current, new, confirm=None):
    return browser.go(server.url("/account/password"), "POST",
                      {"csrf": csrf, "current": current, "new": new, "confirm": confirm or new})


def is_signed_in(browser, server):
    return 'id="username"' in browser.go(server.url("/")).text


def test_the_password_changes_only_with_the_current_one_and_other_sessions_end(make_server):
    server = make_server()
    other = signed_in(server)
    browser = signed_in(server)
    page, csrf = account(browser, server)
    assert 'id="change-password"' in page and 'id="current-password"' in page

    wrong = change(browser, server, csrf, "not-the-password", "alice-new-password-2")
    assert wrong.status_code == 422 and "current password is not right" in error_text(wrong.text)
    mismatch = change(browser, server, csrf, ALICE.password, "alice-new-password-2", "something-else-22")
    assert mismatch.status_code == 422 and "not the same" in error_text(mismatch.text)
    weak = change(browser, server, csrf, ALICE.password, "short")
    assert weak.status_code == 422 and "not acceptable" in error_text(weak.text)
    assert not server.audit("user.password_changed")

    done = change(browser, server, csrf, ALICE.password, "alice-new-password-2")
    assert done.status_code == 200 and 'id="username"' in done.text
    assert is_signed_in(browser, server), "the session that changed it stays"
    assert not is_signed_in(other, server), "every other session ends"
    # Only the new password signs in now.
    fresh = Browser(server)
    start = fresh.go(server.url("/login/start")).text
    old = fresh.submit(start, "password", username="alice", password=ALICE.password)
    assert not isinstance(old, str) and old.status_code == 422
    signed_in(server, password="alice-new-password-2")
    [entry] = server.audit("user.password_changed")
    assert entry["actor"] == entry["subject"]


def test_a_stolen_form_or_an_old_sign_in_cannot_change_the_password(make_server):
    server = make_server()
    browser = signed_in(server)
    _, csrf = account(browser, server)
    forged = browser.go(server.url("/account/password"), "POST",
                        {"csrf": "forged", "current": ALICE.password, "new": "alice-new-password-2",
                         "confirm": "alice-new-password-2"})
    assert forged.status_code == 403
    stranger = Browser(server).go(server.url("/account/password"), "POST",
                                  {"csrf": csrf, "current": ALICE.password, "new": "alice-new-password-2",
                                   "confirm": "alice-new-password-2"})
    assert stranger.status_code == 401
    assert not server.audit("user.password_changed")


def test_wrong_current_passwords_are_throttled(make_server):
    server = make_server()
    browser = signed_in(server)
    _, csrf = account(browser, server)
    answers = [change(browser, server, csrf, f"wrong-{i}", "alice-new-password-2") for i in range(12)]
    assert all(a.status_code == 422 for a in answers)
    assert "Too many wrong passwords" in error_text(answers[-1].text)
    # Throttled, even the right one waits.
    right = change(browser, server, csrf, ALICE.password, "alice-new-password-2")
    assert "Too many wrong passwords" in error_text(right.text)


def test_sessions_are_listed_and_the_others_can_be_ended(make_server):
    server = make_server()
    phone = signed_in(server)
    laptop = signed_in(server)
    page, csrf = account(laptop, server)
    rows = re.findall(r"<tr><td>[^<]+</td><td>([^<]*)</td><td>([^<]*)</td></tr>", page)
    assert len(rows) == 2, page
    assert rows[0][1] == "this session" and rows[1][1] == ""
    assert all(methods == "pwd" for methods, _ in rows)
    ended = laptop.go(server.url("/account/sessions/end-others"), "POST", {"csrf": csrf})
    assert ended.status_code == 200
    assert is_signed_in(laptop, server) and not is_signed_in(phone, server)
    assert len(re.findall(r"<tr><td>", account(laptop, server)[0])) == 1
    assert server.audit("session.end_others")


def test_the_other_sessions_end_only_with_the_forms_own_csrf_token(make_server):
    server = make_server()
    phone = signed_in(server)
    laptop = signed_in(server)
    _, phone_csrf = account(phone, server)
    _, csrf = account(laptop, server)
    end_others = server.url("/account/sessions/end-others")
    # No token, a made-up one, and the token of the user's other session (a token is bound to
    # its session, not to the user).
    for data in ({}, {"csrf": "forged-token"}, {"csrf": phone_csrf}):
        refused = laptop.go(end_others, "POST", data)
        assert refused.status_code == 403, (data, refused.status_code)
        assert "security token" in error_text(refused.text), refused.text
        assert is_signed_in(phone, server) and is_signed_in(laptop, server), \
            f"a refused form ended a session: {data}"
    # The page's own token ends the other session: the refusals above were the token's doing.
    assert laptop.go(end_others, "POST", {"csrf": csrf}).status_code == 200
    assert is_signed_in(laptop, server) and not is_signed_in(phone, server)
    assert len(server.audit("session.end_others")) == 1, "only the real form was audited"


def test_an_authenticator_app_set_up_on_the_account_page_is_asked_at_the_next_step_up(make_server):
    server = make_server()
    browser = signed_in(server)
    page, csrf = account(browser, server)
    assert 'id="setup-totp"' in page, "a user without an app is offered one"
    setup = browser.go(server.url("/?setup=totp")).text
    secret = re.search(r'<code id="totp-secret">([^<]*)</code>', setup).group(1)
    assert setup.count("<li><code>") == 10, "recovery codes come with the app"
    assert re.search(r'<code id="totp-secret">([^<]*)</code>', browser.go(server.url("/?setup=totp")).text).group(1) == secret, \
        "a reload shows the same key, not a new one"
    totp = pyotp.TOTP(secret)

    wrong_code = str((int(totp.now()) + 1) % 1_000_000).zfill(6)
    wrong = browser.go(server.url("/account/totp"), "POST", {"csrf": csrf, "code": wrong_code})
    assert wrong.status_code == 422 and "wrong" in error_text(wrong.text), error_text(wrong.text)
    forged = browser.go(server.url("/account/totp"), "POST", {"csrf": "forged", "code": totp.now()})
    assert forged.status_code == 403

    done = browser.go(server.url("/account/totp"), "POST", {"csrf": csrf, "code": totp.now()})
    assert done.status_code == 200, done.text
    assert 'data-kind="totp"' in done.text and 'data-kind="recovery_code"' in done.text
    assert 'id="setup-totp"' not in done.text, "one app is enough: no second offer"
    [added] = server.audit("factor.added")
    assert added["detail"] == {"kind": "totp"} and added["subject"] == added["actor"]


def passkeys(server, username="alice"):
    """The user's passkeys as the store holds them, read through the admin API (reading the
    account page would start a new passkey registration for the session)."""
    auth = ("admin", ADMIN_PASSWORD)
    users = requests.get(server.url("/admin/v1/users"), params={"q": username}, auth=auth, timeout=10).json()
    (user,) = [u for u in users["users"] if u["username"] == username]
    factors = requests.get(server.url(f"/admin/v1/users/{user['id']}/factors"), auth=auth, timeout=10).json()
    return [f["id"] for f in factors["factors"] if f["kind"] == "passkey"]


def test_a_passkey_is_added_or_removed_only_with_the_forms_own_csrf_token(make_server, web_browser):
    server = make_server()
    other_csrf = account(signed_in(server), server)[1]
    web = web_browser(server)
    assert web.open(server.url("/login/start")) is None
    web.page.fill("#password-username", ALICE.username)
    web.page.fill("#password-password", ALICE.password)
    assert web.click("#option-password button[type=submit]") is None
    assert web.page.locator("#add-passkey").count() == 1, web.html()

    def post(path, form, csrf):
        """Posts `form` with this browser's cookies and `csrf` (None: no token at all)."""
        if csrf is not None:
            form = dict(form, csrf=csrf)
        return web.context.request.post(server.url(path), form=form, max_redirects=0)

    # A real answer to the page's registration, posted without the page's token: no token, a
    # made-up one, the token of the user's other session.
    answer = web.passkey_answer(form="add-passkey")
    for csrf in (None, "forged-token", other_csrf):
        refused = post("/account/passkeys", {"credential": answer, "label": "Forged"}, csrf)
        assert refused.status == 403 and "security token" in error_text(refused.text()), (csrf, refused.status)
        assert passkeys(server) == [], f"a passkey was added with csrf={csrf!r}"
    # The same answer through the page's own form is added: only the token was missing.
    assert web.submit_credential(answer, form="add-passkey") is None
    [added] = passkeys(server)
    assert f'data-id="{added}"' in web.html()

    for csrf in (None, "forged-token", other_csrf):
        refused = post("/account/factors/remove", {"factor": added}, csrf)
        assert refused.status == 403 and "security token" in error_text(refused.text()), (csrf, refused.status)
        assert passkeys(server) == [added], f"the passkey was removed with csrf={csrf!r}"
    # The page's own remove button removes it.
    assert web.click(f'li[data-id="{added}"] button[type=submit]') is None
    assert passkeys(server) == [] and f'data-id="{added}"' not in web.html()
