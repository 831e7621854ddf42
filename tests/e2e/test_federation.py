"""Federation over OpenID Connect between two idflow instances on loopback: the upstream is an
ordinary idflow OpenID Provider with the downstream registered as a client; the downstream's
flow for demo-web signs in with `federated(upstream)` and JIT rules create the account on the
first login and find it by its link on the next."""

import pathlib
import shutil
import tempfile
import urllib.parse

import pytest

from conftest import ALICE, Browser, RelyingParty, Server, error_text, forms, free_port, page_options, query

FLOW = """flow: upstream-login
applies_to: [demo-web]
steps:
  - id: sign-in
    authenticate: [{ federated: upstream }]
jit:
  - idp: upstream
    match: email
    create:
      username: claims.preferred_username
      attributes:
        email: claims.email
        display_name: claims.name
      roles: [partner]
"""

DOWNSTREAM_SECRET = "downstream-secret-for-tests"


OIDC_UPSTREAM = """
[identity_providers.upstream]
type = "oidc"
display_name = "Upstream idflow"
issuer = "{issuer}"
client_id = "downstream"
client_secret = "{secret}"
verified_attributes = ["email"]
"""

# The same upstream as a plain OAuth 2.0 provider (GitHub-style): no ID token is read, the
# user comes from the UserInfo URL and a claim mapping.
OAUTH2_UPSTREAM = """
[identity_providers.upstream]
type = "oauth2"
display_name = "Upstream idflow (OAuth 2.0)"
issuer = "{issuer}"
authorize_url = "{issuer}/authorize"
token_url = "{issuer}/token"
userinfo_url = "{issuer}/userinfo"
client_id = "downstream"
client_secret = "{secret}"
scopes = ["openid", "email", "profile"]
subject_claim = "sub"
claims = {{ email = "email", preferred_username = "preferred_username", name = "name" }}
verified_attributes = ["email"]
"""


@pytest.fixture(params=["oidc", "oauth2"])
def pair(request):
    """(upstream, downstream): alice exists only upstream; the downstream reaches it over
    OpenID Connect or plain OAuth 2.0."""
    made = []

    upstream_dir = tempfile.mkdtemp(prefix="idflow-up-")
    downstream_dir = tempfile.mkdtemp(prefix="idflow-down-")
    down_port = free_port()
    down_issuer = f"http://localhost:{down_port}"
    upstream = Server(upstream_dir, extra_config=(
        "\n[applications.downstream]\n"
        f'client_secret = "{DOWNSTREAM_SECRET}"\n'
        f'redirect_uris = ["{down_issuer}/federation/callback"]\n'
    ))
    # Another host name than the downstream's, as two real servers would have: browsers keep
    # cookies per host, not per port.
    upstream.issuer = f"http://127.0.0.1:{upstream.port}"
    made.append(upstream)
    upstream.cli("user", "add", ALICE.username, "--email", ALICE.email, "--display-name", "Alice Liddell",
                 "--password-stdin", stdin=ALICE.password + "\n")
    upstream.start()

    flows = pathlib.Path(downstream_dir) / "flows"
    flows.mkdir()
    (flows / "upstream-login.yaml").write_text(FLOW)
    downstream = Server(downstream_dir, extra_config=(
        "\n[server]\n"
        f'flows = "{flows}"\n'
        + (OIDC_UPSTREAM if request.param == "oidc" else OAUTH2_UPSTREAM).format(
            issuer=upstream.issuer, secret=DOWNSTREAM_SECRET)
    ))
    downstream.port = down_port
    downstream.issuer = down_issuer
    downstream.kind = request.param
    made.append(downstream)
    downstream.start()
    yield upstream, downstream
    for server in made:
        server.stop()
    shutil.rmtree(upstream_dir, ignore_errors=True)
    shutil.rmtree(downstream_dir, ignore_errors=True)


def federated_login(upstream, downstream, browser):
    """demo-web at the downstream: off to the upstream's login page, the password there, back
    through the callback to the application. Returns the downstream's ID token claims."""
    rp = RelyingParty(downstream, "demo-web")
    page = browser.go(rp.authorize_url())
    assert not isinstance(page, str) and page.status_code == 200, page
    assert page.url.startswith(upstream.issuer + "/login"), f"not sent to the upstream: {page.url}"
    # The same browser (cookie jar), now at the upstream's pages.
    at_upstream = Browser(upstream)
    at_upstream.session = browser.session
    back = at_upstream.submit(page.text, "password", username=ALICE.username, password=ALICE.password)
    return rp.finish(back)


def test_first_login_creates_the_account_and_the_next_links_to_it(pair):
    upstream, downstream = pair
    browser = Browser(downstream)
    first = federated_login(upstream, downstream, browser)
    assert first["preferred_username"] == "alice" and first["email"] == ALICE.email, first

    # The next login, from a browser with no session at either server, maps to the same user.
    second = federated_login(upstream, downstream, Browser(downstream))
    assert second["sub"] == first["sub"]

    downstream.stop()
    shown = downstream.cli("user", "show", "alice").stdout
    assert '"partner"' in shown and "Alice Liddell" in shown, shown
    log = downstream.audit()
    created = [e for e in log if e["event"] == "user.create" and e["detail"].get("by") == "jit"]
    assert len(created) == 1 and created[0]["subject"] == first["sub"], created
    assert [e["event"] for e in log].count("federation.passed") == 2
    assert any(e["event"] == "identity.link" for e in log)


def test_a_tampered_answer_is_refused_and_creates_nothing(pair):
    upstream, downstream = pair
    browser = Browser(downstream)
    rp = RelyingParty(downstream, "demo-web")
    # Follow the redirects by hand to see the one to the upstream, with its state.
    url = rp.authorize_url()
    for _ in range(5):
        response = browser.session.get(url, allow_redirects=False, timeout=10)
        url = urllib.parse.urljoin(url, response.headers["Location"])
        if url.startswith(upstream.issuer):
            break
    assert url.startswith(upstream.issuer + "/authorize"), url
    sent = query(url)
    assert sent["client_id"] == "downstream" and sent["code_challenge_method"] == "S256", sent
    assert sent["state"] and (sent.get("nonce") or downstream.kind == "oauth2"), sent
    # The upstream's answer with a state this downstream never issued.
    forged = browser.go(downstream.url("/federation/callback?state=forged&code=whatever"))
    assert forged.status_code == 400, forged.text
    # A real state with a code the upstream never issued: the exchange fails, nothing is created.
    state = sent["state"]
    refused = browser.go(downstream.url(f"/federation/callback?state={state}&code=not-a-code"))
    # The sign-in page again, saying so, with the provider to try again: not another trip to it.
    assert not isinstance(refused, str) and refused.status_code == 422, refused
    assert "did not succeed" in error_text(refused.text), refused.text
    assert "federated(upstream)" in page_options(refused.text)
    # Another sign-in whose answer names another issuer (RFC 9207 mix-up) is refused before
    # its code is used.
    browser = Browser(downstream)
    url = RelyingParty(downstream, "demo-web").authorize_url()
    for _ in range(5):
        response = browser.session.get(url, allow_redirects=False, timeout=10)
        url = urllib.parse.urljoin(url, response.headers["Location"])
        if url.startswith(upstream.issuer):
            break
    mixed = query(url)["state"]
    evil = urllib.parse.quote("https://evil.example", safe="")
    browser.go(downstream.url(f"/federation/callback?state={mixed}&code=x&iss={evil}"))
    downstream.stop()
    assert "alice" not in downstream.cli("user", "list").stdout
    downstream.start()
    reasons = [e["detail"]["reason"] for e in downstream.audit("federation.refused")]
    assert any("code was not redeemed" in r for r in reasons), reasons
    assert any("another issuer" in r for r in reasons), reasons


PROMPTING_FLOW = FLOW.replace("      roles: [partner]\n", "      roles: [partner]\n    prompt: [consent, username, password]\n")


def test_jit_prompts_for_consent_a_username_and_a_password_before_creating_the_account(pair):
    upstream, downstream = pair
    if downstream.kind != "oidc":
        return  # the prompts do not depend on the protocol; once is enough
    downstream.stop()
    (downstream.directory / "flows" / "upstream-login.yaml").write_text(PROMPTING_FLOW)
    (downstream.directory / "flows" / "local.yaml").write_text(
        "flow: local\napplies_to: [crm]\nsteps:\n  - id: sign-in\n    authenticate: [password]\n")
    downstream.start()
    browser = Browser(downstream)
    rp = RelyingParty(downstream, "demo-web")
    page = browser.go(rp.authorize_url())
    at_upstream = Browser(upstream)
    at_upstream.session = browser.session
    confirm = at_upstream.submit(page.text, "password", username=ALICE.username, password=ALICE.password)
    assert not isinstance(confirm, str) and confirm.status_code == 200, confirm
    assert "Create your account" in confirm.text and "Upstream idflow" in confirm.text
    form = forms(confirm.text)[0]
    assert form["fields"]["username"] == "alice", "the upstream's name is suggested"
    hidden = {k: form["fields"][k] for k in ("login", "csrf", "option")}
    post = lambda **fields: browser.go(downstream.url("/login"), "POST", {**hidden, **fields})
    # Each missing or wrong answer shows the page again, saying what to correct.
    no_consent = post(username="alice2", password="a long passphrase 1", password2="a long passphrase 1")
    assert no_consent.status_code == 422 and "agree" in error_text(no_consent.text)
    mismatch = post(consent="yes", username="alice2", password="a long passphrase 1", password2="another")
    assert mismatch.status_code == 422 and "not the same" in error_text(mismatch.text)
    taken = post(consent="yes", username="admin", password="a long passphrase 1", password2="a long passphrase 1")
    assert taken.status_code == 422 and "taken" in error_text(taken.text)
    done = post(consent="yes", username="alice2", password="a long passphrase 1", password2="a long passphrase 1")
    claims = rp.finish(done)
    assert claims["preferred_username"] == "alice2", claims
    # The password set there signs in locally, without the upstream.
    local = Browser(downstream)
    downstream.stop()
    shown = downstream.cli("user", "show", "alice2").stdout
    assert ALICE.email in shown and '"partner"' in shown, shown
    downstream.start()
    default_rp = RelyingParty(downstream, "crm")
    back = local.login(default_rp.authorize_url(), username="alice2", password="a long passphrase 1")
    assert default_rp.finish(back)["sub"] == claims["sub"]


def redirect_to_upstream(upstream, downstream, browser, **extra):
    """Follows demo-web's sign-in at the downstream up to the redirect to the upstream."""
    url = RelyingParty(downstream, "demo-web").authorize_url(**extra)
    for _ in range(5):
        response = browser.session.get(url, allow_redirects=False, timeout=10)
        url = urllib.parse.urljoin(url, response.headers["Location"])
        if url.startswith(upstream.issuer):
            return url
    raise AssertionError(f"never sent to the upstream: {url}")


def test_a_fresh_sign_in_asked_of_us_is_asked_of_the_provider(pair):
    upstream, downstream = pair
    browser = Browser(downstream)
    plain = query(redirect_to_upstream(upstream, downstream, browser))
    assert "prompt" not in plain, plain
    fresh = query(redirect_to_upstream(upstream, downstream, browser, prompt="login"))
    assert fresh.get("prompt") == "login", fresh
    aged = query(redirect_to_upstream(upstream, downstream, Browser(downstream), max_age="0"))
    assert aged.get("prompt") == "login", aged
