"""Step-up and single sign-on: a session carried into a new authorization request keeps the steps
it passed and asks only for what the new request's flow still needs (acr_values asking for
MFA, or an application whose flow demands more of this user, cf. keycloak#38308)."""

from conftest import (
    ALICE, BOB, MFA_ACR, WEB_REDIRECT, Browser, RelyingParty, error_text, mail_code, option_form,
    page_options, query,
)


def password_session(server, user, app="demo-web"):
    """Signs `user` in to `app` with the password; returns (browser with the session, claims)."""
    rp = RelyingParty(server, app)
    browser = Browser(server)
    claims = rp.finish(browser.login(rp.authorize_url(), user.username, user.password))
    return browser, claims


def test_acr_mfa_on_a_password_session_asks_only_for_the_second_factor(make_server):
    server = make_server()
    browser, first = password_session(server, ALICE)
    assert first["amr"] == ["pwd"] and first["acr"] != MFA_ACR, first

    rp = RelyingParty(server, "demo-web")
    page = browser.go(rp.authorize_url(acr_values=MFA_ACR))
    assert not isinstance(page, str), f"acr mfa was not met, yet a code was issued: {page}"
    assert page.status_code == 200
    assert "password" not in page_options(page.text) and 'name="password"' not in page.text, \
        "the password was passed in this session: it must not be asked again"
    assert "email_otp" in page_options(page.text), page_options(page.text)
    assert "identifier" not in option_form(page.text, "email_otp")["fields"]

    sent = browser.submit(page.text, "email_otp", send="1")
    assert sent.status_code == 200, error_text(sent.text)
    assert server.outbox()[-1]["To"] == ALICE.email
    stepped = rp.finish(browser.submit(sent.text, "email_otp", code=mail_code(server.outbox()[-1])))
    assert stepped["sub"] == first["sub"]
    assert stepped["acr"] == MFA_ACR
    assert {"pwd", "otp"} <= set(stepped["amr"]), stepped["amr"]

    # Both factors are now in the session: asking for mfa again needs no interaction.
    rp = RelyingParty(server, "demo-web")
    again = browser.go(rp.authorize_url(acr_values=MFA_ACR, prompt="none"))
    assert isinstance(again, str), f"expected a code without interaction, got {again.text}"
    assert rp.finish(again)["acr"] == MFA_ACR


def test_an_admin_password_session_does_not_open_payroll(make_server):
    server = make_server(users=[ALICE, BOB])
    browser, first = password_session(server, BOB)
    assert first["amr"] == ["pwd"]

    # payroll's flow asks admins for a passkey: the session's password is not enough.
    rp = RelyingParty(server, "payroll")
    page = browser.go(rp.authorize_url())
    assert not isinstance(page, str), f"payroll issued a code on an admin's password session: {page}"
    assert page.status_code == 200
    assert page_options(page.text) == ["passkey"], page_options(page.text)
    assert 'name="password"' not in page.text
    assert 'data-webauthn="create"' in page.text, "bob has no passkey yet: he must register one"

    # Without interaction it cannot go on: interaction_required back to the client.
    rp = RelyingParty(server, "payroll")
    silent = browser.go(rp.authorize_url(prompt="none"))
    assert isinstance(silent, str) and silent.startswith(WEB_REDIRECT), silent
    params = query(silent)
    assert params["error"] == "interaction_required", params
    assert params["state"] == rp.state and params["iss"] == server.issuer
    assert "code" not in params


def test_a_normal_users_password_session_opens_payroll_without_asking(make_server):
    # The contrast to the admin: for alice the payroll flow needs only the password.
    server = make_server(users=[ALICE, BOB])
    browser, first = password_session(server, ALICE)
    rp = RelyingParty(server, "payroll")
    callback = browser.go(rp.authorize_url(prompt="none"))
    assert isinstance(callback, str), f"expected single sign-on, got a page: {callback.text}"
    claims = rp.finish(callback)
    assert claims["sub"] == first["sub"] and claims["amr"] == ["pwd"]


def test_one_session_signs_in_to_two_applications_at_once(make_server):
    """Two tabs opening two applications from one session (the second still sending the
    cookie as it was before the first finished): single sign-on that asks for nothing keeps the
    session, so both get codes, with the session's sid."""
    server = make_server()
    browser, first = password_session(server, ALICE)
    cookies = browser.session.cookies.copy()
    rp_a = RelyingParty(server, "demo-web")
    a = rp_a.finish(browser.go(rp_a.authorize_url()))
    other = Browser(server)
    other.session.cookies = cookies
    rp_b = RelyingParty(server, "crm")
    b_page = other.go(rp_b.authorize_url())
    # crm wants a second factor: asked, not refused, on the same session.
    assert not isinstance(b_page, str) and b_page.status_code == 200, b_page
    assert "totp" in page_options(b_page.text), page_options(b_page.text)
    rp_c = RelyingParty(server, "demo-web")
    c = rp_c.finish(other.go(rp_c.authorize_url()))
    assert a["sub"] == c["sub"] == first["sub"]
    assert a["sid"] == c["sid"] == first["sid"], "the session was kept, not replaced"
    assert a["auth_time"] == first["auth_time"], "signing in again by session is not a new sign-in"
