"""Self sign-up (`register` states) at `shop`, whose flow self-signup asks for a username, an email
address, a full name and a password, proves the address with an emailed code and gives the
`customer` role. Covered: how a sign-up starts (OpenID Connect `prompt=create`, or "Create an
account" on the login page, which only flows with a register state offer) and how it goes back
to signing in; what the details form refuses and refills; the emailed code (wrong codes count
down to a denial, the right one creates the account and signs the person in, "Change my
details"); an address that already has an account (same page, a mail saying so, no code that
passes); the account created (verified address, name, role, audit, later password sign-ins);
flows without `verify_email`, with `approval`, and with a role that grants privileges (every
sign-up refused); cancel; and the form's CSRF token."""

import re
import shutil
import time

import requests

import conftest
from conftest import (
    ADMIN_PASSWORD, ALICE, REPO, User, WEB_REDIRECT, Browser, RelyingParty, error_text, mail_code,
    option_form, page_options, query,
)

SHOP_SECRET = "shop-secret-for-tests"
conftest.APP_SECRETS["shop"] = SHOP_SECRET
# The quickstart declares shop a public client with its own redirect URI; the tests make it a
# confidential client like the others, with the demo redirect URI RelyingParty uses.
SHOP = (f'\n[applications.shop]\nname = "Shop"\nclient_secret = "{SHOP_SECRET}"\n'
        f'redirect_uris = ["{WEB_REDIRECT}"]\n')
FAST_RESEND = "\n[mfa]\nemail_resend_seconds = 1\n"
# The role sign-ups give must exist (a missing one refuses every sign-up); make_server creates
# the roles its users hold.
SAM = User("sam", "sam-password-123", "sam@example.com", roles=["customer"])
SHOP_USERS = [ALICE, SAM]

CARLA = {"username": "carla", "email": "carla@example.com", "attr.name": "Carla Díaz",
         "password": "carla-password-1", "password2": "carla-password-1"}

NO_VERIFY_FLOW = """flow signup-open "Sign-up without a code" {
  applies_to shop
  start route
  state route {
    decide `request.signup`
    next true -> join, false -> password
  }
  state join {
    register {
      attributes name
      roles customer
    }
    next success
  }
  state password {
    authenticate password
    next success
  }
}
"""
APPROVAL_FLOW = NO_VERIFY_FLOW.replace("signup-open", "signup-approval").replace(
    "Sign-up without a code", "Sign-up awaiting approval").replace("roles customer", "approval")
ADMIN_ROLE_FLOW = NO_VERIFY_FLOW.replace("signup-open", "signup-admins").replace(
    "Sign-up without a code", "Sign-up giving admin").replace("roles customer", "roles admin")


def use_flow(server, name, text):
    """Restarts `server` on a copy of the shipped flows in which `text` replaces self-signup."""
    server.stop()
    flows = server.directory / "flows"
    shutil.copytree(REPO / "flows", flows, ignore=shutil.ignore_patterns("self-signup.*"))
    (flows / f"{name}.flow").write_text(text)
    config = server.config.read_text()
    pointed = config.replace(f'flows = "{REPO / "flows"}"', f'flows = "{flows}"')
    assert pointed != config, "the test configuration no longer names the shipped flows directory"
    server.config.write_text(pointed)
    return server.start()


def users(server):
    """The accounts in the directory by username (admin API)."""
    answer = requests.get(server.url("/admin/v1/users"), params={"limit": 1000},
                          auth=("admin", ADMIN_PASSWORD), timeout=10)
    assert answer.status_code == 200, answer.text
    return {u["username"]: u for u in answer.json()["users"]}


def audit(server, event):
    answer = requests.get(server.url("/admin/v1/audit"), params={"event": event, "limit": 1000},
                          auth=("admin", ADMIN_PASSWORD), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


def mask(address):
    local, domain = address.split("@")
    return f"{local[0]}••••@{domain}"


def signup_page(server, via="prompt"):
    """A shop login that asks to create an account: (relying party, browser, the form's page)."""
    rp = RelyingParty(server, "shop")
    browser = Browser(server)
    if via == "prompt":
        page = browser.go(rp.authorize_url(prompt="create"))
    else:
        login = browser.go(rp.authorize_url())
        assert not isinstance(login, str) and login.status_code == 200, login
        page = browser.submit(login.text, "signup")
    assert not isinstance(page, str), f"expected the sign-up form, got a redirect to {page}"
    assert page.status_code == 200, (page.status_code, error_text(page.text))
    assert 'id="register"' in page.text, page.text
    return rp, browser, page.text


def fill(browser, page, **changes):
    """Submits the details form with Carla's details, `changes` replacing some (attr_name for
    attr.name)."""
    details = dict(CARLA, **{k.replace("attr_", "attr."): v for k, v in changes.items()})
    return browser.submit(page, "details", **details)


def code_page(server, details=CARLA, via="prompt"):
    """A sign-up with `details` submitted: (relying party, browser, the page asking for the code)."""
    rp, browser, page = signup_page(server, via)
    sent = browser.submit(page, "details", **details)
    assert not isinstance(sent, str), f"verify_email: the account must wait for the code: {sent}"
    assert sent.status_code == 200, (sent.status_code, error_text(sent.text))
    assert 'id="register-code"' in sent.text, sent.text
    return rp, browser, sent.text


def other_code(code):
    return "000000" if code != "000000" else "111111"


def test_only_a_flow_with_a_register_state_offers_create_an_account(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    meta = requests.get(server.url("/.well-known/openid-configuration"), timeout=10).json()
    assert "create" in meta["prompt_values_supported"], meta["prompt_values_supported"]

    shop = Browser(server).go(RelyingParty(server, "shop").authorize_url())
    assert shop.status_code == 200 and page_options(shop.text) == ["password", "signup"], \
        page_options(shop.text)
    assert 'id="signup"' in shop.text and "Create an account" in shop.text

    # demo-web runs the password flow: no register state, so no offer, and posting one anyway
    # is refused without restarting the login.
    browser = Browser(server)
    demo = browser.go(RelyingParty(server, "demo-web").authorize_url())
    assert demo.status_code == 200 and page_options(demo.text) == ["password"], page_options(demo.text)
    assert "Create an account" not in demo.text
    form = option_form(demo.text, "password")
    forced = browser.go(server.url(form["action"]), "POST", dict(form["fields"], option="signup"))
    assert not isinstance(forced, str), forced
    assert error_text(forced.text) == "Creating an account is not offered here.", error_text(forced.text)
    assert 'id="register"' not in forced.text
    assert set(users(server)) == {"admin", "alice", "sam"}


def test_signing_up_with_the_emailed_code_creates_the_account_and_signs_in(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    rp, browser, page = signup_page(server)
    fields = option_form(page, "details")["fields"]
    assert {"username", "email", "attr.name", "password", "password2"} <= set(fields), fields
    assert 'id="signin"' in page, "prompt=create: the page offers signing in instead"

    sent = browser.submit(page, "details", **CARLA)
    assert not isinstance(sent, str) and sent.status_code == 200, sent
    assert f"We sent a code to {mask(CARLA['email'])}" in sent.text, sent.text
    assert "Attempts left: 3" in sent.text
    assert "carla" not in users(server), "no account before the code is typed"
    mails = server.outbox()
    assert len(mails) == 1 and mails[0]["To"] == CARLA["email"]
    assert mails[0]["Subject"].startswith("Your code to create an account: "), mails[0]["Subject"]

    claims = rp.finish(browser.submit(sent.text, "code", code=mail_code(mails[0])))
    carla = users(server)["carla"]
    assert claims["sub"] == carla["id"], (claims, carla)
    assert carla["email"] == CARLA["email"] and carla["email_verified"] is True, carla
    assert carla["name"] == "Carla Díaz", "the display name comes from the attribute `name`"
    assert carla["roles"] == ["customer"] and carla["disabled"] is False, carla
    assert carla["has_password"], carla

    created = audit(server, "user.create")
    mine = [e for e in created if e["subject"] == carla["id"]]
    assert len(mine) == 1 and mine[0]["detail"]["by"] == "signup", created
    assert mine[0]["detail"]["username"] == "carla"

    # Later, in another browser, Carla signs in with her username and password.
    later = RelyingParty(server, "shop")
    again = later.finish(Browser(server).login(later.authorize_url(), "carla", CARLA["password"]))
    assert again["sub"] == carla["id"]


def test_create_an_account_on_the_login_page_and_sign_in_instead_go_back_and_forth(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    rp, browser, page = signup_page(server, via="link")
    assert 'id="signin"' in page and "Already have an account?" in page

    back = browser.submit(page, "signin")
    assert not isinstance(back, str) and back.status_code == 200, back
    assert 'id="register"' not in back.text
    assert page_options(back.text) == ["password", "signup"], page_options(back.text)
    claims = rp.finish(browser.submit(back.text, "password", username="alice", password=ALICE.password))
    assert claims["sub"] == users(server)["alice"]["id"]

    # Through the link the sign-up leads to the same account creation as prompt=create.
    rp, browser, sent = code_page(server, via="link")
    claims = rp.finish(browser.submit(sent, "code", code=mail_code(server.outbox()[-1])))
    assert claims["sub"] == users(server)["carla"]["id"]


def test_the_details_form_says_what_to_fix_and_refills_all_but_the_passwords(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    _, browser, page = signup_page(server)
    cases = [
        ({"username": "  "}, "Choose a username."),
        ({"username": "carla diaz"}, "A username is at most 64 letters, digits, dots, dashes or underscores."),
        ({"username": "carla@shop"}, "A username is at most 64 letters, digits, dots, dashes or underscores."),
        ({"username": "c" * 65}, "A username is at most 64 letters, digits, dots, dashes or underscores."),
        ({"email": "carla.example.com"}, "Type your email address, like name@example.com."),
        ({"email": "carla@localhost"}, "Type your email address, like name@example.com."),
        ({"attr_name": ""}, "Fill in full name (at most 256 characters)."),
        ({"attr_name": "x" * 257}, "Fill in full name (at most 256 characters)."),
        ({"password2": "carla-password-2"}, "The two passwords are not the same."),
        ({"password": "short", "password2": "short"}, "The password must be at least 8 characters long."),
        ({"username": "alice"}, "That username is taken. Choose another."),
        ({"username": "ALICE"}, "That username is taken. Choose another."),
    ]
    for changes, expected in cases:
        answer = fill(browser, page, **changes)
        assert not isinstance(answer, str), f"{changes}: accepted ({answer})"
        assert (answer.status_code, error_text(answer.text)) == (422, expected), \
            (changes, answer.status_code, error_text(answer.text))
        refilled = option_form(answer.text, "details")["fields"]
        typed = dict(CARLA, **{k.replace("attr_", "attr."): v for k, v in changes.items()})
        for name in ("username", "email", "attr.name"):
            assert refilled[name] == typed[name].strip(), (changes, name, refilled[name])
        assert refilled["password"] == refilled["password2"] == "", "passwords are never refilled"
        assert typed["password"] not in answer.text and typed["password2"] not in answer.text
        page = answer.text
    assert server.outbox() == [], "no code is sent for a refused form"
    assert set(users(server)) == {"admin", "alice", "sam"}

    # The form, fixed, goes on to the code.
    sent = fill(browser, page)
    assert sent.status_code == 200 and 'id="register-code"' in sent.text, error_text(sent.text)


def test_wrong_codes_count_down_and_the_last_one_denies_the_sign_up(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    rp, browser, page = code_page(server)
    wrong = other_code(mail_code(server.outbox()[-1]))
    for left in (2, 1):
        answer = browser.submit(page, "code", code=wrong)
        assert not isinstance(answer, str), f"a wrong code ended the sign-up early: {answer}"
        assert answer.status_code == 422, answer.status_code
        assert error_text(answer.text) == "That code is wrong; check the latest email.", error_text(answer.text)
        assert f"Attempts left: {left}" in answer.text, answer.text
        page = answer.text
    denied = browser.submit(page, "code", code=wrong)
    assert isinstance(denied, str), f"the third wrong code must end the sign-up: {denied.text}"
    assert denied.startswith(WEB_REDIRECT) and query(denied)["error"] == "access_denied", denied
    assert "code" not in query(denied)
    assert "carla" not in users(server)
    assert len(audit(server, "signup.code_refused")) == 3


def test_change_my_details_and_send_a_new_code(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP + FAST_RESEND)
    rp, browser, page = code_page(server)
    form = option_form(page, "code")["fields"]
    post = lambda option: browser.go(server.url("/login"), "POST",
                                     {"login": form["login"], "csrf": form["csrf"], "option": option})
    first = mail_code(server.outbox()[-1])

    time.sleep(1.1)
    resent = post("resend")
    assert resent.status_code == 200 and 'id="register-code"' in resent.text, error_text(resent.text)
    assert len(server.outbox()) == 2, "a new code was mailed"
    second = mail_code(server.outbox()[-1])

    # "Change my details": the form again; the codes sent for the old details pass no more.
    changed = post("change")
    assert changed.status_code == 200 and 'id="register"' in changed.text, changed.text
    assert 'id="register-code"' not in changed.text
    dora = dict(CARLA, username="dora", email="dora@example.com", **{"attr.name": "Dora"})
    sent = browser.submit(changed.text, "details", **dora)
    assert sent.status_code == 200 and mask("dora@example.com") in sent.text, error_text(sent.text)
    third = mail_code(server.outbox()[-1])
    for stale in {first, second} - {third}:
        refused = browser.submit(sent.text, "code", code=stale)
        assert not isinstance(refused, str) and refused.status_code == 422, refused
        sent = refused
    claims = rp.finish(browser.submit(sent.text, "code", code=third))
    accounts = users(server)
    assert "carla" not in accounts and claims["sub"] == accounts["dora"]["id"], accounts


def normalized(page, address):
    """The page with the masked address and the per-login tokens blanked out."""
    page = page.replace(mask(address), "MASKED")
    return re.sub(r'value="[A-Za-z0-9_-]{20,}"', 'value="TOKEN"', page)


def test_an_address_with_an_account_gets_the_same_page_a_mail_saying_so_and_no_code(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    _, fresh_browser, fresh = code_page(server)
    # Alice's address, capitalised otherwise: addresses are compared without case.
    typed = "Alice@Example.com"
    rp, browser, page = code_page(server, dict(CARLA, username="carla2", email=typed))
    assert f"We sent a code to {mask(typed)}" in page
    assert normalized(page, typed) == normalized(fresh, CARLA["email"]), \
        "the page tells an address with an account from a new one"
    # A malformed code is answered alike as well: the format is checked whether a code was
    # sent or not.
    malformed = browser.submit(page, "code", code="x")
    fresh_malformed = fresh_browser.submit(fresh, "code", code="x")
    assert (malformed.status_code, error_text(malformed.text)) == \
        (fresh_malformed.status_code, error_text(fresh_malformed.text)) == \
        (422, "The code in the email is six digits."), error_text(malformed.text)
    page = malformed.text

    mail = server.outbox()[-1]
    assert mail["To"].lower() == ALICE.email and mail["Subject"] == "You already have an account", mail["Subject"]
    body = mail.get_body(("plain",)).get_content()
    assert not re.search(r"\b\d{6}\b", mail["Subject"] + body), f"a code was sent:\n{body}"

    answer = browser.submit(page, "code", code="123456")
    assert not isinstance(answer, str), f"a guessed code created an account: {answer}"
    assert answer.status_code == 422
    assert error_text(answer.text) == "That code is wrong; check the latest email.", error_text(answer.text)
    answer = browser.submit(answer.text, "code", code="000000")
    assert isinstance(answer, str) and query(answer)["error"] == "access_denied", answer
    accounts = users(server)
    assert "carla2" not in accounts and set(accounts) == {"admin", "alice", "sam"}, accounts


def test_without_verify_email_the_account_is_made_at_once_and_a_known_address_is_refused(make_server):
    server = use_flow(make_server(users=SHOP_USERS, extra_config=SHOP), "signup-open", NO_VERIFY_FLOW)
    _, browser, page = signup_page(server)
    known = fill(browser, page, email="Alice@Example.com")
    assert (known.status_code, error_text(known.text)) == \
        (422, "An account with this email address exists. Sign in instead."), error_text(known.text)

    rp, browser, page = signup_page(server)
    claims = rp.finish(fill(browser, page))
    assert server.outbox() == [], "no code without verify_email"
    carla = users(server)["carla"]
    assert claims["sub"] == carla["id"]
    assert carla["email_verified"] is False, "an address nobody proved is not verified"
    assert carla["roles"] == ["customer"] and carla["name"] == "Carla Díaz", carla


def test_a_sign_up_awaiting_approval_signs_in_only_once_enabled(make_server):
    server = use_flow(make_server(users=SHOP_USERS, extra_config=SHOP), "signup-approval", APPROVAL_FLOW)
    _, browser, page = signup_page(server)
    waiting = fill(browser, page)
    assert not isinstance(waiting, str), f"an account awaiting approval must not sign in: {waiting}"
    assert waiting.status_code == 200, (waiting.status_code, waiting.text)
    assert "<title>Your account awaits approval" in waiting.text, waiting.text
    carla = users(server)["carla"]
    assert carla["disabled"] is True, carla
    assert [e["subject"] for e in audit(server, "signup.awaiting_approval")] == [carla["id"]]
    created = [e for e in audit(server, "user.create") if e["subject"] == carla["id"]]
    assert [e["detail"] for e in created] == [
        {"username": "carla", "by": "signup", "awaiting_approval": True}], created

    rp = RelyingParty(server, "shop")
    refused = Browser(server).login(rp.authorize_url(), "carla", CARLA["password"])
    assert not isinstance(refused, str), f"a disabled account signed in: {refused}"
    assert refused.status_code == 422 and error_text(refused.text), (refused.status_code, refused.text)

    server.stop()
    server.cli("user", "enable", "carla")
    server.start()
    rp = RelyingParty(server, "shop")
    claims = rp.finish(Browser(server).login(rp.authorize_url(), "carla", CARLA["password"]))
    assert claims["sub"] == carla["id"]


def test_a_register_state_giving_a_privileged_role_refuses_every_sign_up(make_server):
    server = use_flow(make_server(users=SHOP_USERS, extra_config=SHOP), "signup-admins", ADMIN_ROLE_FLOW)
    _, browser, page = signup_page(server)
    refused = fill(browser, page)
    assert not isinstance(refused, str), f"a stranger signed up as admin: {refused}"
    assert refused.status_code == 503, (refused.status_code, refused.text)
    assert "Sign-up is not available" in refused.text
    assert set(users(server)) == {"admin", "alice", "sam"}
    assert all(e["detail"].get("by") != "signup" for e in audit(server, "user.create"))
    assert "grants privileges" in server.log.read_text(), "the log says why sign-up is refused"


def test_a_register_state_giving_a_role_that_does_not_exist_refuses_every_sign_up(make_server):
    # A role made later could be given privileges with strangers already in it: fail closed.
    flow = NO_VERIFY_FLOW.replace("signup-open", "signup-ghost").replace("roles customer", "roles ghost")
    server = use_flow(make_server(users=SHOP_USERS, extra_config=SHOP), "signup-ghost", flow)
    _, browser, page = signup_page(server)
    refused = fill(browser, page)
    assert not isinstance(refused, str) and refused.status_code == 503, refused
    assert "Sign-up is not available" in refused.text
    assert set(users(server)) == {"admin", "alice", "sam"}
    assert "does not exist" in server.log.read_text()


def test_cancel_on_the_sign_up_page_returns_access_denied_to_the_application(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    rp, browser, page = signup_page(server)
    cancelled = browser.submit(page, "cancel")
    assert isinstance(cancelled, str) and cancelled.startswith(WEB_REDIRECT), cancelled
    params = query(cancelled)
    assert params["error"] == "access_denied" and params["state"] == rp.state, params
    # Also from the code page: nothing is created.
    rp, browser, page = code_page(server)
    cancelled = browser.submit(page, "cancel")
    assert isinstance(cancelled, str) and query(cancelled)["error"] == "access_denied", cancelled
    assert "carla" not in users(server)


def test_the_details_form_without_its_csrf_token_is_refused(make_server):
    server = make_server(users=SHOP_USERS, extra_config=SHOP)
    _, browser, page = signup_page(server)
    form = option_form(page, "details")
    data = dict(form["fields"], **CARLA)
    for forged in ({k: v for k, v in data.items() if k != "csrf"}, dict(data, csrf="x" * 43)):
        answer = browser.go(server.url(form["action"]), "POST", forged)
        assert not isinstance(answer, str) and answer.status_code == 403, answer
    assert server.outbox() == [] and "carla" not in users(server)
    # The genuine form still works.
    assert fill(browser, page).status_code == 200 and len(server.outbox()) == 1
