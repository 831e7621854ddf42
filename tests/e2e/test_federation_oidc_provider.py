"""Federation over OpenID Connect with an upstream that is not idflow: node-oidc-provider (an
OpenID Certified implementation, pinned in oidc_provider/package-lock.json; `scripts/setup --e2e`
installs it) runs on loopback with the downstream registered as a confidential client
(client_secret_basic, PKCE required). The downstream's flow for demo-web signs in with
`federated(op)`; its JIT rule creates the account on the first login and finds it by its link on
the next. The person's side is plain HTTP: the provider's login and consent forms are posted like
a browser would."""

import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import requests

from conftest import Browser, RelyingParty, Server, forms, free_port, query

HERE = pathlib.Path(__file__).resolve().parent
OP_DIR = HERE / "oidc_provider"
CLIENT_ID = "idflow-downstream"
CLIENT_SECRET = "op-client-secret-for-tests"
OP_USERNAME = "alice"
OP_PASSWORD = "op-alice-password"
# The account provider.mjs serves.
OP_SUB = "op-alice"
OP_EMAIL = "alice@op.example"
OP_NAME = "Alice Oppenheimer"

FLOW = """flow: op-login
applies_to: [demo-web]
steps:
  - id: sign-in
    authenticate: [{ federated: op }]
jit:
  - idp: op
    match: email
    create:
      username: claims.preferred_username
      attributes:
        email: claims.email
        display_name: claims.name
"""


class OpenIdProvider:
    """node-oidc-provider (oidc_provider/provider.mjs) on 127.0.0.1."""

    def __init__(self, directory, redirect_uri):
        node = shutil.which("node")
        if node is None:
            pytest.skip("Node.js is not installed (scripts/setup --e2e installs it): "
                        "the oidc-provider upstream cannot run")
        if not (OP_DIR / "node_modules" / "oidc-provider").is_dir():
            pytest.fail(f"oidc-provider is not installed in {OP_DIR}: run scripts/setup --e2e "
                        "(npm ci there)", pytrace=False)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log = pathlib.Path(directory) / "oidc-provider.log"
        env = dict(os.environ, OP_CLIENT_ID=CLIENT_ID, OP_CLIENT_SECRET=CLIENT_SECRET,
                   OP_USERNAME=OP_USERNAME, OP_PASSWORD=OP_PASSWORD)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [node, str(OP_DIR / "provider.mjs"), str(self.port), redirect_uri],
                cwd=OP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"oidc-provider exited: {self.log.read_text()}")
            try:
                found = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                if found.status_code == 200:
                    assert found.json()["issuer"] == self.issuer, found.text
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"oidc-provider did not start: {self.log.read_text()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def federation():
    """(provider, downstream): the account exists only at the provider."""
    directory = tempfile.mkdtemp(prefix="idflow-op-")
    down_port = free_port()
    down_issuer = f"http://localhost:{down_port}"
    provider = None
    downstream = None
    try:
        provider = OpenIdProvider(directory, f"{down_issuer}/federation/callback")
        flows = pathlib.Path(directory) / "flows"
        flows.mkdir()
        (flows / "op-login.yaml").write_text(FLOW)
        downstream = Server(directory, extra_config=(
            "\n[server]\n"
            f'flows = "{flows}"\n'
            "\n[identity_providers.op]\n"
            'type = "oidc"\n'
            'display_name = "node-oidc-provider"\n'
            f'issuer = "{provider.issuer}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'client_secret = "{CLIENT_SECRET}"\n'
            'scopes = ["email", "profile"]\n'
            'verified_attributes = ["email"]\n'
        ))
        downstream.port = down_port
        downstream.issuer = down_issuer
        downstream.start()
        yield provider, downstream
    finally:
        if downstream:
            downstream.stop()
        if provider:
            provider.stop()
        shutil.rmtree(directory, ignore_errors=True)


def post_form(browser, page, **fields):
    """Submits the page's first form (its action relative to the page) with `fields`."""
    found = forms(page.text)
    assert found, f"no form on {page.url}:\n{page.text}"
    data = dict(found[0]["fields"])
    data.update(fields)
    return browser.go(urllib.parse.urljoin(page.url, found[0]["action"]), "POST", data)


def to_provider(provider, downstream, browser, rp):
    """demo-web's authorize at the downstream, followed to the provider's login page."""
    page = browser.go(rp.authorize_url())
    assert not isinstance(page, str), f"expected the provider's login page, got a redirect to {page}"
    assert page.status_code == 200, page.text
    assert page.url.startswith(provider.issuer + "/interaction/"), f"not sent to the provider: {page.url}"
    assert 'name="password"' in page.text, page.text
    return page


def federated_login(provider, downstream, browser):
    """The whole journey: the provider's login and consent, back through the downstream's
    callback to the application. Returns the downstream's verified ID token claims."""
    rp = RelyingParty(downstream, "demo-web")
    page = to_provider(provider, downstream, browser, rp)
    consent = post_form(browser, page, username=OP_USERNAME, password=OP_PASSWORD)
    assert not isinstance(consent, str) and consent.status_code == 200, consent
    assert consent.url.startswith(provider.issuer + "/interaction/"), consent.url
    assert "Authorize" in consent.text and "email" in consent.text, consent.text
    back = post_form(browser, consent)
    return rp.finish(back)


def users(downstream):
    downstream.stop()
    try:
        return downstream.cli("user", "list").stdout
    finally:
        downstream.start()


def test_first_login_creates_the_account_and_the_next_links_to_it(federation):
    provider, downstream = federation
    first = federated_login(provider, downstream, Browser(downstream))
    # The downstream's own tokens, for a local user made from the provider's claims (email and
    # name come from its UserInfo: node-oidc-provider keeps them out of the code flow's ID token).
    assert first["iss"] == downstream.issuer and first["sub"] != OP_SUB, first
    assert first["email"] == OP_EMAIL and first["preferred_username"] == OP_SUB, first

    # The next login, from a browser with no session at either server, maps to the same user.
    second = federated_login(provider, downstream, Browser(downstream))
    assert second["sub"] == first["sub"], (first, second)

    downstream.stop()
    listed = downstream.cli("user", "list").stdout
    assert listed.count(OP_SUB) == 1, listed
    shown = downstream.cli("user", "show", OP_SUB).stdout
    assert OP_EMAIL in shown and OP_NAME in shown, shown
    log = downstream.audit()
    created = [e for e in log if e["event"] == "user.create"
               and e["detail"].get("by") == "jit"]
    assert len(created) == 1 and created[0]["subject"] == first["sub"], created
    assert created[0]["detail"]["username"] == OP_SUB, created
    links = [e for e in log if e["event"] == "identity.link"]
    assert len(links) == 1, links
    assert links[0]["subject"] == first["sub"], links
    assert links[0]["detail"] == {"idp": "op", "subject": OP_SUB}, links
    passed = [e for e in log if e["event"] == "federation.passed"]
    assert [e["detail"] for e in passed] == [{"idp": "op", "subject": OP_SUB}] * 2, passed
    assert not [e for e in log if e["event"] == "federation.refused"], log


def decline(provider, downstream):
    """Signs in at the provider and declines its consent form. Returns the RelyingParty, the
    URLs the browser was sent to from the declining post on, and where it ended (a page, or the
    application's URL)."""
    browser = Browser(downstream)
    rp = RelyingParty(downstream, "demo-web")
    page = to_provider(provider, downstream, browser, rp)
    consent = post_form(browser, page, username=OP_USERNAME, password=OP_PASSWORD)
    assert not isinstance(consent, str) and consent.status_code == 200, consent
    form = forms(consent.text)[0]
    url = urllib.parse.urljoin(consent.url, form["action"])
    method, data, visited = "POST", {"confirm": "no"}, []
    for _ in range(20):
        visited.append(url)
        if url.startswith("http://localhost:8000"):
            return rp, visited, url
        response = browser.session.request(method, url, data=data, allow_redirects=False, timeout=30)
        if response.status_code not in (302, 303, 307):
            return rp, visited, response
        url, method, data = urllib.parse.urljoin(url, response.headers["Location"]), "GET", None
    raise AssertionError(f"redirect loop: {visited}")


def test_consent_declined_at_the_provider_signs_nobody_in(federation):
    provider, downstream = federation
    rp, visited, end = decline(provider, downstream)
    # The provider answers the downstream's callback with error=access_denied (and its iss).
    callback = next(u for u in visited if u.startswith(downstream.url("/federation/callback")))
    assert query(callback)["error"] == "access_denied" and query(callback)["iss"] == provider.issuer, callback
    if isinstance(end, str):
        assert "code" not in query(end), f"the application got a code: {end}"
    else:
        assert end.status_code < 500, (end.status_code, end.text)
    assert OP_SUB not in users(downstream)
    refused = downstream.audit("federation.refused")
    assert [e["detail"] for e in refused] == [
        {"idp": "op", "reason": "the provider answered access_denied"}], refused
    log = downstream.audit()
    assert not [e for e in log if e["event"] in ("identity.link", "federation.passed", "login.success")
                or (e["event"] == "user.create" and not e["detail"].get("bootstrap"))], log


def test_a_declined_sign_in_ends_rather_than_going_back_to_the_provider(federation):
    """The person said no at the provider: the downstream tells them (a page of its own) or the
    application (error=access_denied) that the sign-in did not succeed; it does not send them
    straight back to the provider's consent page as if nothing had happened."""
    provider, downstream = federation
    rp, visited, end = decline(provider, downstream)
    after = visited[next(i for i, u in enumerate(visited)
                         if u.startswith(downstream.url("/federation/callback"))) + 1:]
    back = [u for u in after if u.startswith(provider.issuer)]
    assert not back, f"after the refusal the downstream sent the browser back to the provider: {after}"
    if isinstance(end, str):
        answer = query(end)
        assert answer.get("error") == "access_denied" and answer.get("state") == rp.state, end
    else:
        assert end.url.startswith(downstream.issuer), end.url
        assert 200 <= end.status_code < 500, (end.status_code, end.text)
