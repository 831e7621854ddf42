"""Password + TOTP on the `crm` application (flow password-totp), driven by Authlib as a
third-party OpenID Connect client: enrollment on first login (secret, otpauth URI, QR code,
recovery codes), then TOTP or a recovery code on later logins, with replay protection, single-use
recovery codes and clear messages for wrong and malformed codes."""

import base64
import html
import re
import time

import pyotp
import pytest
import requests

from conftest import (
    APP_SECRETS, ALICE, MFA_ACR, Browser, RelyingParty, error_text, option_form, page_options, query,
)


def password_step(server, user=ALICE):
    """Starts a crm login and passes the password; returns (relying party, browser, page)."""
    rp = RelyingParty(server, "crm")
    browser = Browser(server)
    page = browser.go(rp.authorize_url())
    assert not isinstance(page, str) and page.status_code == 200, page
    after = browser.submit(page.text, "password", username=user.username, password=user.password)
    assert not isinstance(after, str), f"crm must not issue a code after the password alone: {after}"
    assert after.status_code == 200, after.text
    return rp, browser, after.text


def enrollment(page):
    """What the enrollment page shows: the TOTP secret, the otpauth URI and the recovery codes."""
    secret = re.search(r'<code id="totp-secret">([^<]*)</code>', page)
    assert secret, f"no #totp-secret on the enrollment page:\n{page}"
    uri = re.search(r'<a id="totp-uri" href="([^"]*)"', page)
    assert uri, "no #totp-uri link"
    codes_list = re.search(r'<ul[^>]*id="recovery-codes"[^>]*>(.*?)</ul>', page, re.S)
    assert codes_list, "no #recovery-codes list"
    codes = re.findall(r"<li><code>([^<]+)</code></li>", codes_list.group(1))
    return secret.group(1), html.unescape(uri.group(1)), codes


def enroll(server, user=ALICE):
    """First crm login: password, then set up the app. Returns (totp, step used, recovery
    codes, ID token claims)."""
    rp, browser, page = password_step(server, user)
    secret, _, codes = enrollment(page)
    totp = pyotp.TOTP(secret)
    step = int(time.time() // 30)
    callback = browser.submit(page, "totp", code=totp.at(step * 30))
    return totp, step, codes, rp.finish(callback)


def not_a_code_of(totp, step):
    """A six-digit code that is none of the codes near `step` (so it is certainly wrong)."""
    near = {totp.at((step + d) * 30) for d in range(-2, 4)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1000000, 111111)) if c not in near)


def refused(result, message_part, status=422):
    """A factor attempt that must be refused: the login page again, with a specific message."""
    assert not isinstance(result, str), f"the attempt was accepted (redirect to {result})"
    assert result.status_code == status, (result.status_code, result.text)
    message = error_text(result.text)
    assert message, f"no error message on the page:\n{result.text}"
    assert message_part.lower() in message.lower(), message
    return result.text


def test_first_login_enrolls_an_authenticator_app_and_later_logins_ask_for_it(make_server):
    server = make_server()
    rp, browser, page = password_step(server)

    # The enrollment page: a 160-bit base32 secret, the same secret in the otpauth URI, an
    # inline QR code, and single-use recovery codes.
    assert "enroll" in page.lower() or "set up" in page.lower(), page
    assert page_options(page) == ["totp"]
    secret, uri, codes = enrollment(page)
    assert len(base64.b32decode(secret)) == 20, secret
    parsed = pyotp.parse_uri(uri)
    assert uri.startswith("otpauth://totp/") and parsed.secret == secret and parsed.issuer == "idflow", uri
    assert re.search(r'id="option-totp".*<svg\b.*</svg>.*</form>', page, re.S), "no inline SVG QR code in the form"
    assert len(codes) >= 5 and len(set(codes)) == len(codes), codes
    assert all(re.fullmatch(r"[a-z0-9]{4}(-[a-z0-9]{4}){3}", c) for c in codes), codes

    # A wrong code does not enroll; the right one does and completes the login.
    totp = pyotp.TOTP(secret)
    step = int(time.time() // 30)
    page = refused(browser.submit(page, "totp", code=not_a_code_of(totp, step)), "wrong")
    assert secret in page, "the same secret is shown again after a wrong code"
    claims = rp.finish(browser.submit(page, "totp", code=totp.at(step * 30)))
    assert claims["preferred_username"] == "alice"
    assert {"pwd", "otp"} <= set(claims["amr"]), claims["amr"]
    assert claims["acr"] == MFA_ACR

    # The next login asks for the app (or a recovery code), not to enroll again.
    rp, browser, page = password_step(server)
    assert page_options(page) == ["totp", "recovery_code"], page_options(page)
    assert 'id="totp-secret"' not in page and 'id="recovery-codes"' not in page, "the secret is never shown again"

    page = refused(browser.submit(page, "totp", code=not_a_code_of(totp, step)), "wrong")
    # The enrollment code's time step was spent: the same code is a replay, even in another
    # login within the same 30 s window.
    page = refused(browser.submit(page, "totp", code=totp.at(step * 30)), "already used")
    # The next time step's code is within the one-step drift window and passes.
    claims2 = rp.finish(browser.submit(page, "totp", code=totp.at((step + 1) * 30)))
    assert claims2["sub"] == claims["sub"]
    assert {"pwd", "otp"} <= set(claims2["amr"]) and claims2["acr"] == MFA_ACR

    # And that step is now spent too, in a third login.
    _, browser, page = password_step(server)
    refused(browser.submit(page, "totp", code=totp.at((step + 1) * 30)), "already used")

    refusals = [e for e in server.audit("login.factor_refused") if e["detail"]["option"] == "totp"]
    reasons = [e["detail"]["reason"] for e in refusals]
    assert sum("already used" in r for r in reasons) == 2, reasons
    assert sum("wrong" in r for r in reasons) == 2, reasons
    assert all(e["subject"] == claims["sub"] for e in refusals), refusals


def test_a_recovery_code_works_once(make_server):
    server = make_server()
    totp, step, codes, claims = enroll(server)

    rp, browser, page = password_step(server)
    by_code = rp.finish(browser.submit(page, "recovery_code", code=codes[0]))
    assert by_code["sub"] == claims["sub"] and by_code["acr"] == MFA_ACR
    assert "pwd" in by_code["amr"] and len(by_code["amr"]) >= 2, by_code["amr"]

    rp, browser, page = password_step(server)
    page = refused(browser.submit(page, "recovery_code", code=codes[0]), "already used")
    # Another code still works, and a spent one stays spent.
    rp.finish(browser.submit(page, "recovery_code", code=codes[1]))
    _, browser, page = password_step(server)
    refused(browser.submit(page, "recovery_code", code=codes[1]), "already used")

    refusals = [e for e in server.audit("login.factor_refused") if e["detail"]["option"] == "recovery_code"]
    assert len(refusals) == 2, refusals


@pytest.mark.parametrize("code", ["12345", "abcdef", "1234567"])
def test_malformed_totp_codes_get_a_clear_message(make_server, code):
    server = make_server()
    enroll(server)
    _, browser, page = password_step(server)
    page = refused(browser.submit(page, "totp", code=code), "six digits")
    assert page_options(page) == ["totp", "recovery_code"], "the same choice is offered again"


def test_code_fields_start_empty(make_server):
    """The code inputs of the enrollment and second-factor pages must not be pre-filled (least
    of all with the username typed on the password step)."""
    server = make_server()
    _, browser, page = password_step(server)
    assert option_form(page, "totp")["fields"]["code"] == "", "enrollment: the code field is pre-filled"
    totp = pyotp.TOTP(enrollment(page)[0])
    callback = browser.submit(page, "totp", code=totp.now())
    assert "code" in query(callback)
    _, _, page = password_step(server)
    for option in ("totp", "recovery_code"):
        value = option_form(page, option)["fields"]["code"]
        assert value == "", f"the {option} code field is pre-filled with {value!r}"


def factor_ids(page):
    return re.findall(r'<li data-kind="([a-z_]+)" data-id="([^"]+)"', page)


def test_the_account_page_removes_a_factor_only_soon_after_a_sign_in(make_server):
    """The authenticator app and recovery codes are listed on the account page; removing one
    needs the session's CSRF token and a sign-in within `[mfa] reauth_seconds`; after removal
    the next crm login enrolls again."""
    server = make_server(extra_config="\n[mfa]\nreauth_seconds = 2\n")
    rp, browser, page = password_step(server)
    totp = pyotp.TOTP(enrollment(page)[0])
    rp.finish(browser.submit(page, "totp", code=totp.now()))

    account = browser.go(server.url("/")).text
    listed = factor_ids(account)
    assert [kind for kind, _ in listed] == ["totp", "recovery_code"], listed
    totp_id = listed[0][1]
    csrf = re.search(r'name="csrf" value="([^"]+)"', account).group(1)
    remove = server.url("/account/factors/remove")

    forged = browser.go(remove, "POST", {"csrf": "not-the-token", "factor": totp_id})
    assert forged.status_code == 403
    assert [k for k, _ in factor_ids(browser.go(server.url("/")).text)] == ["totp", "recovery_code"]

    time.sleep(3)
    stale = browser.go(server.url("/"))
    assert 'id="reauth"' in stale.text and "/account/factors/remove" not in stale.text
    late = browser.go(remove, "POST", {"csrf": csrf, "factor": totp_id})
    assert late.status_code == 403 and "Sign in again" in late.text, late.text
    assert not server.audit("factor.removed")

    # A fresh sign-in (the account's own login) makes it possible again.
    start = browser.go(server.url("/login/start")).text
    done = browser.submit(start, "password", username=ALICE.username, password=ALICE.password)
    assert not isinstance(done, str) and done.status_code == 200, done
    account = browser.go(server.url("/")).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', account).group(1)
    removed = browser.go(remove, "POST", {"csrf": csrf, "factor": totp_id})
    assert removed.status_code == 200 and [k for k, _ in factor_ids(removed.text)] == ["recovery_code"]
    [entry] = server.audit("factor.removed")
    assert entry["detail"]["kind"] == "totp"

    # Without the app, crm asks to set one up again.
    _, _, page = password_step(server)
    assert 'id="totp-secret"' in page


def test_removing_a_lost_factor_ends_sessions_and_refresh_tokens(make_server):
    """`idflow user remove-factor NAME all` (a lost phone): the browser session that passed with
    it no longer signs in, and refresh tokens granted to it stop working."""
    server = make_server()
    rp, browser, page = password_step(server)
    totp = pyotp.TOTP(enrollment(page)[0])
    rp.finish(browser.submit(page, "totp", code=totp.now()))
    refresh_token = rp.client.token["refresh_token"]

    server.stop()
    removed = server.cli("user", "remove-factor", "alice", "all").stdout
    assert "removed 2 factor(s)" in removed, removed
    server.start()

    again = RelyingParty(server, "crm")
    page = browser.go(again.authorize_url())
    assert not isinstance(page, str) and 'name="password"' in page.text, \
        "the session that passed with the removed app must not sign in any more"
    refreshed = requests.post(server.url("/token"), data={
        "grant_type": "refresh_token", "refresh_token": refresh_token,
    }, auth=("crm", APP_SECRETS["crm"]), timeout=10)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
