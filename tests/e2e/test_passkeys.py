"""Passkeys in a real browser: headless Chromium (Playwright) with a CDP virtual authenticator,
the login pages' own /static/webauthn.js, and Authlib as the application. On `wiki` a user who
signs in by email code registers a passkey and then signs in with it without typing a name; on
`payroll` admins must pass a passkey (registering one first) while others pass with a password.
Forged, replayed, cloned and other users' assertions are refused with a message and an audit
entry."""

import base64
import json

from conftest import (
    ALICE, BOB, CAROL, MFA_ACR, Browser, RelyingParty, mail_code,
)


def b64url(cdp_base64):
    """CDP's standard base64 as the base64url (no padding) WebAuthn JSON uses."""
    return base64.urlsafe_b64encode(base64.b64decode(cdp_base64)).rstrip(b"=").decode()


def passkey_options(web):
    form = web.page.locator("#option-passkey")
    mode = form.get_attribute("data-webauthn")
    options = json.loads(web.page.locator(f"#{form.get_attribute('data-options')}").text_content())
    return mode, options["publicKey"]


def wiki_email_login(server, web, user=ALICE):
    """wiki: types the address, reads the code from the outbox, types it. Returns the RP."""
    rp = RelyingParty(server, "wiki")
    assert web.open(rp.authorize_url()) is None
    web.page.fill("#email_otp-identifier", user.email)
    assert web.click("#option-email_otp button[name=send]") is None, "a page asking for the code"
    web.page.fill("#email_otp-code", mail_code(server.outbox()[-1]))
    assert web.click("#option-email_otp button[type=submit]:not([name])") is None, \
        "wiki asks a user without a passkey to register one"
    return rp


def password_login(server, web, app, user):
    """Password on `app`; returns (RP, the redirect to the app or None if a page is shown)."""
    rp = RelyingParty(server, app)
    assert web.open(rp.authorize_url()) is None
    web.page.fill("#password-username", user.username)
    web.page.fill("#password-password", user.password)
    return rp, web.click("#option-password button[type=submit]")


def enroll_on_payroll(server, web, admin):
    """An admin's first payroll login: password, then the passkey must be registered."""
    rp, after = password_login(server, web, "payroll", admin)
    assert after is None, f"payroll issued a code to an admin without a passkey: {after}"
    mode, options = passkey_options(web)
    assert mode == "create" and options["user"]["name"] == admin.username, options
    claims = rp.finish(web.click("#option-passkey button.webauthn"))
    [credential] = [c for c in web.credentials() if c["userName"] == admin.username]
    return claims, credential


def admin_at_passkey_step(server, web, admin, credential_id):
    """A later payroll login of an admin, past the password, at the passkey sign-in."""
    web.forget_session()
    rp, after = password_login(server, web, "payroll", admin)
    assert after is None, f"payroll issued a code to an admin on the password alone: {after}"
    mode, options = passkey_options(web)
    assert mode == "get", mode
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(credential_id)], options
    return rp


def assert_refused(web, result):
    assert result is None, f"the assertion was accepted: {result}"
    assert "passkey" in (web.error() or "").lower(), f"no message about the passkey:\n{web.html()}"
    assert web.page.locator("#option-passkey").count() == 1, "the passkey is asked for again"
    return web.error()


def passkey_refusals(server, subject):
    return [e for e in server.audit("login.factor_refused")
            if e["detail"]["option"] == "passkey" and e["subject"] == subject]


def test_email_sign_in_registers_a_passkey_then_usernameless_sign_in(make_server, web_browser):
    server = make_server()
    first = web_browser(server)
    rp = wiki_email_login(server, first)
    mode, options = passkey_options(first)
    assert mode == "create" and options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    claims = rp.finish(first.click("#option-passkey button.webauthn"))
    assert claims["preferred_username"] == "alice"
    assert "otp" in claims["amr"], claims["amr"]
    [credential] = first.credentials()
    assert credential["rpId"] == "localhost" and credential["isResidentCredential"]
    first.close()

    # Another browser with the same passkey (synced): nobody typed a name, the passkey says who.
    second = web_browser(server)
    second.add_credential(credential)
    rp = RelyingParty(server, "wiki")
    assert second.open(rp.authorize_url()) is None
    mode, options = passkey_options(second)
    assert mode == "get" and options["allowCredentials"] == [], "usernameless: a discoverable get"
    again = rp.finish(second.click("#option-passkey button.webauthn"))
    assert again["sub"] == claims["sub"] and again["preferred_username"] == "alice"
    assert "hwk" in again["amr"], again["amr"]
    assert second.credentials()[0]["signCount"] > credential["signCount"]


def test_payroll_admins_need_a_passkey_others_a_password(make_server, web_browser):
    server = make_server(users=[ALICE, BOB])
    web = web_browser(server)
    claims, credential = enroll_on_payroll(server, web, BOB)
    assert "pwd" in claims["amr"], claims["amr"]

    rp = admin_at_passkey_step(server, web, BOB, credential["credentialId"])
    assert web.page.locator("#option-password").count() == 0
    claims = rp.finish(web.click("#option-passkey button.webauthn"))
    assert claims["preferred_username"] == "bob"
    assert {"pwd", "hwk"} <= set(claims["amr"]) and claims["acr"] == MFA_ACR, claims

    # A user without the admin role: the password is enough.
    rp = RelyingParty(server, "payroll")
    callback = Browser(server).login(rp.authorize_url(), ALICE.username, ALICE.password)
    plain = rp.finish(callback)
    assert plain["preferred_username"] == "alice" and plain["amr"] == ["pwd"], plain


def tamper_signature(answer):
    parsed = json.loads(answer)
    signature = bytearray(base64.urlsafe_b64decode(parsed["response"]["signature"] + "=="))
    signature[-3] ^= 0x01
    parsed["response"]["signature"] = base64.urlsafe_b64encode(bytes(signature)).rstrip(b"=").decode()
    return json.dumps(parsed)


def test_a_forged_assertion_is_refused(make_server, web_browser):
    server = make_server(users=[BOB])
    web = web_browser(server)
    claims, credential = enroll_on_payroll(server, web, BOB)
    rp = admin_at_passkey_step(server, web, BOB, credential["credentialId"])
    forged = tamper_signature(web.passkey_answer())
    assert_refused(web, web.submit_credential(forged))
    # The honest passkey still works on the page shown again.
    rp.finish(web.click("#option-passkey button.webauthn"))
    assert len(passkey_refusals(server, claims["sub"])) == 1


def test_a_replayed_assertion_is_refused(make_server, web_browser):
    server = make_server(users=[BOB])
    web = web_browser(server)
    claims, credential = enroll_on_payroll(server, web, BOB)
    rp = admin_at_passkey_step(server, web, BOB, credential["credentialId"])
    answer = web.passkey_answer()
    rp.finish(web.submit_credential(answer))

    admin_at_passkey_step(server, web, BOB, credential["credentialId"])
    assert_refused(web, web.submit_credential(answer))
    assert len(passkey_refusals(server, claims["sub"])) == 1


def test_a_cloned_authenticator_whose_counter_went_back_is_refused(make_server, web_browser):
    server = make_server(users=[BOB])
    web = web_browser(server)
    claims, credential = enroll_on_payroll(server, web, BOB)
    rp = admin_at_passkey_step(server, web, BOB, credential["credentialId"])
    rp.finish(web.click("#option-passkey button.webauthn"))
    [used] = web.credentials()
    assert used["signCount"] >= 2, used

    # The clone: same key, counter reset; its next assertion counts below what the server saw.
    web.remove_credential(used["credentialId"])
    web.add_credential(used, sign_count=0)
    admin_at_passkey_step(server, web, BOB, credential["credentialId"])
    assert_refused(web, web.click("#option-passkey button.webauthn"))
    assert web.credentials()[0]["signCount"] < used["signCount"], "the clone did answer"
    assert len(passkey_refusals(server, claims["sub"])) == 1


def test_another_users_passkey_is_refused(make_server, web_browser):
    server = make_server(users=[BOB, CAROL])
    web = web_browser(server)
    _, carols = enroll_on_payroll(server, web, CAROL)
    web.clear_credentials()
    web.forget_session()
    bob_claims, bobs = enroll_on_payroll(server, web, BOB)

    # Bob's password, then Carol's passkey (the only one on this authenticator now) answering
    # Bob's challenge: the page asks for Bob's credential, so the test lifts that restriction.
    web.clear_credentials()
    web.add_credential(carols)
    admin_at_passkey_step(server, web, BOB, bobs["credentialId"])
    answer = web.passkey_answer(patch={"allowCredentials": []})
    assert json.loads(answer)["rawId"] == b64url(carols["credentialId"])
    assert_refused(web, web.submit_credential(answer))
    assert len(passkey_refusals(server, bob_claims["sub"])) == 1


def test_an_admin_password_session_steps_up_with_the_passkey_on_payroll(make_server, web_browser):
    """Single sign-on from demo-web (password) to payroll: the admin is asked only for the
    passkey, and the new ID token records both factors."""
    server = make_server(users=[BOB])
    web = web_browser(server)
    _, credential = enroll_on_payroll(server, web, BOB)
    web.forget_session()
    rp, callback = password_login(server, web, "demo-web", BOB)
    assert rp.finish(callback)["amr"] == ["pwd"]

    rp = RelyingParty(server, "payroll")
    assert web.open(rp.authorize_url()) is None, "payroll must ask the admin for the passkey"
    assert web.page.locator("#option-password").count() == 0, "the password was passed in this session"
    mode, options = passkey_options(web)
    assert mode == "get" and [c["id"] for c in options["allowCredentials"]] == [b64url(credential["credentialId"])]
    claims = rp.finish(web.click("#option-passkey button.webauthn"))
    assert claims["preferred_username"] == "bob"
    assert {"pwd", "hwk"} <= set(claims["amr"]) and claims["acr"] == MFA_ACR, claims


def test_the_account_page_lists_adds_and_removes_passkeys(make_server, web_browser):
    """From the account page a signed-in user adds a passkey (which then signs in without a
    name on wiki), sees it listed, and removes it (after which it no longer signs in)."""
    server = make_server()
    web = web_browser(server)
    rp, after = password_login(server, web, "demo-web", ALICE)
    rp.finish(after)
    assert web.open(server.url("/")) is None
    assert web.page.locator("#username").text_content() == "alice"
    assert web.page.locator("#factors li").count() == 0
    web.page.fill("#passkey-label", "Laptop")
    assert web.click("#add-passkey button.webauthn") is None
    listed = web.page.locator("#factors li[data-kind=passkey]")
    assert listed.count() == 1 and "Laptop" in listed.text_content(), web.html()
    [credential] = web.credentials()
    assert [e["detail"]["kind"] for e in server.audit("factor.added")] == ["passkey"]

    # The new passkey signs in to wiki with no name typed (it is discoverable).
    web.forget_session()
    rp = RelyingParty(server, "wiki")
    assert web.open(rp.authorize_url()) is None
    claims = rp.finish(web.click("#option-passkey button.webauthn"))
    assert claims["preferred_username"] == "alice" and "hwk" in claims["amr"], claims

    # Removed, it is refused.
    assert web.open(server.url("/")) is None
    assert web.click("#factors li[data-kind=passkey] button") is None
    assert web.page.locator("#factors li").count() == 0, web.html()
    assert len(server.audit("factor.removed")) == 1
    web.forget_session()
    rp = RelyingParty(server, "wiki")
    assert web.open(rp.authorize_url()) is None
    assert web.click("#option-passkey button.webauthn") is None
    assert "not registered" in (web.error() or ""), web.html()
    assert web.credentials()[0]["credentialId"] == credential["credentialId"], "the browser still has it"
