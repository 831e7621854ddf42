"""End-to-end harness: starts the real `idflow` binary on a free loopback port with its own
data directory, and drives the login pages like a browser would (cookies, forms, redirects).

The binary comes from IDFLOW_BIN (scripts/test sets it). Each server gets a configuration made
from the quickstart one, with a cheap argon2id cost so that tests spend their time on protocol
behaviour rather than hashing.
"""

import base64
import email
import email.policy
import html
import html.parser
import json
import os
import re
import secrets
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = str(pathlib.Path(os.environ.get("IDFLOW_BIN", REPO / "target" / "debug" / "idflow")).resolve())
ADMIN_PASSWORD = "admin-password-for-tests"
WEB_SECRET = "demo-web-secret-change-me"
WEB_REDIRECT = "http://localhost:8000/callback"
SPA_REDIRECT = "http://localhost:8000/spa/callback"
USER_PASSWORD = "alice-password-1"
# The applications the MFA flows apply to (flows/*.flow `applies_to`): the quickstart declares
# them without clients; the tests make each a confidential client with the demo redirect URI.
APP_SECRETS = {
    "demo-web": WEB_SECRET,
    "crm": "crm-secret-for-tests",
    "wiki": "wiki-secret-for-tests",
    "payroll": "payroll-secret-for-tests",
}
APP_URL = "http://localhost:8000/"
MFA_ACR = "urn:idflow:acr:mfa"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config(directory, extra=""):
    """The quickstart configuration with absolute flow paths and a cheap password hash."""
    text = (REPO / "examples" / "quickstart" / "idflow.toml").read_text()
    text = text.replace('flows = "../../flows"', f'flows = "{REPO / "flows"}"')
    text = text.replace("memory_kib = 19456", "memory_kib = 1024").replace(
        "iterations = 2", "iterations = 1"
    )
    for app in ("crm", "wiki", "payroll"):
        client = (f'[applications.{app}]\nclient_secret = "{APP_SECRETS[app]}"\n'
                  f'redirect_uris = ["{WEB_REDIRECT}"]\n')
        text, count = re.subn(rf"^\[applications\.{app}\]\n", client, text, flags=re.M)
        assert count == 1, f"the quickstart no longer declares [applications.{app}]"
    # A table the extra configuration declares replaces the quickstart's (TOML has no repeats).
    for table in re.findall(r"^\[([a-z_.-]+)\]$", extra, flags=re.M):
        text = re.sub(rf"^\[{re.escape(table)}\]\n(?:[^\[\n].*\n)*", "", text, flags=re.M)
    path = pathlib.Path(directory) / "idflow.toml"
    path.write_text(text + extra)
    return path


class Server:
    """One idflow process with its own data directory."""

    def __init__(self, directory, extra_config="", scheme="http", ca=None):
        self.directory = pathlib.Path(directory)
        self.config = test_config(self.directory, extra_config)
        self.data = self.directory / "data"
        self.port = free_port()
        self.issuer = f"{scheme}://localhost:{self.port}"
        # What requests verifies the server's certificate against (https only).
        self.ca = ca
        self.process = None
        self.log = self.directory / "server.log"

    def cli(self, *args, stdin=None, check=True):
        """Runs an idflow command against this server's data directory (server stopped)."""
        result = subprocess.run(
            [BIN, *args, "--config", str(self.config), "--data-dir", str(self.data)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"idflow {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self):
        env = dict(os.environ, IDFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD)
        self.process = subprocess.Popen(
            [
                BIN, "serve",
                "--config", str(self.config),
                "--data-dir", str(self.data),
                "--listen", f"127.0.0.1:{self.port}",
                "--issuer", self.issuer,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"idflow exited: {self.log.read_text()}")
            try:
                ready = requests.get(f"{self.issuer}/readyz", timeout=1, verify=self.ca or True)
                if ready.status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"idflow did not become ready: {self.log.read_text()}")

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def url(self, path):
        return f"{self.issuer}{path}"

    def audit(self, event=None, limit=1000):
        """The audit log (newest first), optionally only one event. The CLI needs the store, so
        a running server is stopped for it and started again on the same port (in-memory
        state such as throttle counters does not survive that)."""
        running = self.process is not None
        if running:
            self.stop()
        try:
            out = self.cli("audit", "--limit", str(limit)).stdout
        finally:
            if running:
                self.start()
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in entries if event is None or e["event"] == event]

    def outbox(self):
        """The mails the server wrote (oldest first) as email.message objects."""
        folder = self.data / "outbox"
        files = sorted(folder.glob("*.eml"), key=lambda f: (f.stat().st_mtime_ns, f.name)) if folder.exists() else []
        return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]


def mail_code(message):
    """The six-digit code of a sign-in mail; it must be in both the subject and the body."""
    subject = re.search(r"\b(\d{6})\b", message["Subject"])
    assert subject, f"no six-digit code in the subject: {message['Subject']!r}"
    body = message.get_body(("plain",)).get_content()
    assert subject.group(1) in body, f"the body does not carry the code of the subject:\n{body}"
    return subject.group(1)


class User:
    def __init__(self, username, password, email=None, roles=()):
        self.username, self.password, self.email, self.roles = username, password, email, tuple(roles)


ALICE = User("alice", USER_PASSWORD, "alice@example.com")
BOB = User("bob", "bob-password-123", "bob@example.com", roles=["admin"])
CAROL = User("carol", "carol-password-123", "carol@example.com", roles=["admin"])
DAVE = User("dave", "dave-password-123", "dave@example.com")


@pytest.fixture
def make_server():
    """Makes servers with the given users (roles are created first) and extra configuration;
    each is stopped and its directory removed at the end of the test."""
    made = []

    def make(users=(ALICE,), extra_config=""):
        directory = tempfile.mkdtemp(prefix="idflow-e2e-")
        srv = Server(directory, extra_config)
        made.append(srv)
        for role in sorted({r for u in users for r in u.roles}):
            srv.cli("role", "add", role)
        for u in users:
            args = ["user", "add", u.username, "--password-stdin"]
            if u.email:
                args += ["--email", u.email]
            for role in u.roles:
                args += ["--role", role]
            srv.cli(*args, stdin=u.password + "\n")
        return srv.start()

    yield make
    for srv in made:
        srv.stop()
        shutil.rmtree(srv.directory, ignore_errors=True)


@pytest.fixture
def server():
    directory = tempfile.mkdtemp(prefix="idflow-e2e-")
    srv = Server(directory)
    # Users are data in the store; the CLI writes them before the server opens it.
    srv.cli("user", "add", "alice", "--email", "alice@example.com",
            "--display-name", "Alice Liddell", "--password-stdin", stdin=USER_PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(directory, ignore_errors=True)


class Forms(html.parser.HTMLParser):
    """Collects the forms of a page: action, and the inputs' names and values."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "fields": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""


def forms(page):
    parser = Forms()
    parser.feed(page)
    return parser.forms


def option_form(page, option):
    for form in forms(page):
        if form["fields"].get("option") == option:
            return form
    raise AssertionError(f"no form for option {option!r} in page:\n{page}")


class Browser:
    """A person at a browser: follows redirects on this server, stops at the application's."""

    def __init__(self, server):
        self.server = server
        self.session = requests.Session()

    def go(self, url, method="GET", data=None, stop_prefix="http://localhost:8000"):
        """Requests `url`, following redirects until one leaves for the application (returned
        as the final Location) or a page is shown (returned as a response)."""
        for _ in range(10):
            response = self.session.request(method, url, data=data, allow_redirects=False, timeout=30)
            if response.status_code in (302, 303, 307):
                location = urllib.parse.urljoin(url, response.headers["Location"])
                if location.startswith(stop_prefix):
                    return location
                url, method, data = location, "GET", None
                continue
            return response
        raise AssertionError("redirect loop")

    def submit(self, page, option, **fields):
        form = option_form(page, option)
        data = dict(form["fields"])
        data.update(fields)
        return self.go(self.server.url(form["action"]), "POST", data)

    def login(self, authorize_url, username="alice", password=USER_PASSWORD):
        """Runs the password login that `authorize_url` starts; returns the redirect to the app."""
        page = self.go(authorize_url)
        assert not isinstance(page, str), f"expected a login page, got a redirect to {page}"
        assert page.status_code == 200, page.text
        return self.submit(page.text, "password", username=username, password=password)


def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def error_text(page):
    """The text of the page's error paragraph (`<p id="error">`), or None."""
    match = re.search(r'<p\b[^>]*\bid="error"[^>]*>(.*?)</p>', page, re.S)
    return html.unescape(match.group(1)).strip() if match else None


def page_options(page):
    """The login options a page offers (its forms' `option` fields, cancel left out)."""
    return [f["fields"]["option"] for f in forms(page) if f["fields"].get("option") not in (None, "cancel")]


def decode_jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class RelyingParty:
    """A third-party OpenID Connect client (Authlib) of one application: authorization code
    with PKCE and a nonce, ID token verified against the JWKS."""

    def __init__(self, server, client_id, scope="openid profile email"):
        from authlib.integrations.requests_client import OAuth2Session
        self.server = server
        self.client_id = client_id
        self.client = OAuth2Session(client_id, APP_SECRETS[client_id], scope=scope,
                                    redirect_uri=WEB_REDIRECT, code_challenge_method="S256")
        self.meta = requests.get(server.url("/.well-known/openid-configuration"), timeout=10).json()

    def authorize_url(self, **extra):
        self.verifier = secrets.token_urlsafe(48)
        self.nonce = secrets.token_urlsafe(16)
        url, self.state = self.client.create_authorization_url(
            self.meta["authorization_endpoint"], code_verifier=self.verifier, nonce=self.nonce, **extra)
        return url

    def finish(self, callback):
        """Exchanges the code of `callback` (the redirect to the app); returns the verified ID
        token's claims."""
        from joserfc import jwt
        from joserfc.jwk import KeySet
        assert isinstance(callback, str), f"expected a redirect to the app, got a page: {getattr(callback, 'text', callback)}"
        params = query(callback)
        assert "code" in params, f"the login did not succeed: {callback}"
        assert params["state"] == self.state and params["iss"] == self.server.issuer
        token = self.client.fetch_token(self.meta["token_endpoint"], authorization_response=callback,
                                        code_verifier=self.verifier)
        keys = KeySet.import_key_set(requests.get(self.meta["jwks_uri"], timeout=10).json())
        claims = jwt.decode(token["id_token"], keys, algorithms=["RS256", "ES256"]).claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.server.issuer},
            aud={"essential": True, "value": self.client_id},
            nonce={"essential": True, "value": self.nonce},
            sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
        ).validate(claims)
        return claims


# Chromium (Playwright) with a WebAuthn virtual authenticator, for passkeys.

CHROMIUM = os.environ.get("IDFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session. Missing Chromium or Playwright is a failure (CI
    must run these tests) unless IDFLOW_E2E_NO_BROWSER=1 says to skip browser tests."""
    if os.environ.get("IDFLOW_E2E_NO_BROWSER") == "1":
        pytest.skip("IDFLOW_E2E_NO_BROWSER=1: browser tests are not run")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set IDFLOW_CHROMIUM; "
                    "IDFLOW_E2E_NO_BROWSER=1 skips the browser tests)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed (pip install -r tests/e2e/requirements.txt)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class WebBrowser:
    """A person at Chromium with a platform authenticator (CDP virtual authenticator: ctap2,
    internal, resident keys, user verification). Always on http://localhost:PORT, the RP ID.
    `open`/`click`/`submit_credential` return the URL the server sent the browser to at the
    application (answered by a stub page), or None when a page of the server was shown."""

    def __init__(self, chromium, server):
        self.server = server
        self.context = chromium.new_context()
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        self.authenticator = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True,
            "automaticPresenceSimulation": True}})["authenticatorId"]
        self.log = []
        self.page.on("console", lambda m: self.log.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.log.append(f"page error: {e}"))
        self.cdp.on("Fetch.requestPaused", self._application)
        self.cdp.send("Fetch.enable", {"patterns": [{"urlPattern": APP_URL + "*", "requestStage": "Request"}]})

    # The authenticator's credentials (CDP: binary fields in standard base64).

    def credentials(self):
        return self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})["credentials"]

    def clear_credentials(self):
        self.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": self.authenticator})

    def remove_credential(self, credential_id):
        self.cdp.send("WebAuthn.removeCredential",
                      {"authenticatorId": self.authenticator, "credentialId": credential_id})

    def add_credential(self, credential, sign_count=None):
        fields = ("credentialId", "isResidentCredential", "rpId", "privateKey", "userHandle", "signCount")
        credential = {k: credential[k] for k in fields}
        if sign_count is not None:
            credential["signCount"] = sign_count
        self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.authenticator, "credential": credential})

    def forget_session(self):
        """Clears cookies: the next authorize starts a new login without single sign-on."""
        self.context.clear_cookies()

    # Navigation.

    def _application(self, event):
        """The application's pages (CDP Fetch: unlike Playwright's routes it also sees the
        redirects from the server): a stub page, so the browser lands somewhere real."""
        self.cdp.send("Fetch.fulfillRequest", {
            "requestId": event["requestId"], "responseCode": 200,
            "responseHeaders": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
            "body": base64.b64encode(b"<!doctype html><title>application</title>").decode()})

    def _settle(self, action):
        from playwright.sync_api import Error as PlaywrightError
        try:
            with self.page.expect_navigation(wait_until="load"):
                action()
        except PlaywrightError as error:
            raise AssertionError(f"{error}\nstatus: {self.status()}\nlog: {self.log}") from None
        url = self.page.url
        return url if url.startswith(APP_URL) else None

    def open(self, url):
        assert url.startswith(self.server.issuer), url
        return self._settle(lambda: self.page.goto(url, wait_until="commit"))

    def click(self, selector):
        return self._settle(lambda: self.page.click(selector))

    def html(self):
        return self.page.content()

    def error(self):
        return error_text(self.html())

    def status(self):
        """The passkey status line (what webauthn.js reports when a ceremony fails)."""
        try:
            return self.page.locator(".webauthn-status").all_text_contents()
        except Exception as error:  # the page is navigating
            return repr(error)

    # Passkey ceremonies with the page's own script, for tests that change the answer.

    def passkey_answer(self, form="option-passkey", patch=None):
        """Runs the ceremony of `form` with window.idflowWebauthn (optionally replacing keys of
        the publicKey options) and returns the JSON answer instead of submitting it."""
        return self.page.evaluate("""async ([formId, patch]) => {
            const form = document.getElementById(formId);
            let options = document.getElementById(form.dataset.options).textContent;
            if (patch) {
                const parsed = JSON.parse(options);
                Object.assign(parsed.publicKey, patch);
                options = JSON.stringify(parsed);
            }
            return form.dataset.webauthn === "create"
                ? await window.idflowWebauthn.create(options)
                : await window.idflowWebauthn.get(options);
        }""", [form, patch])

    def submit_credential(self, answer, form="option-passkey"):
        return self._settle(lambda: self.page.evaluate("""([formId, answer]) => {
            const form = document.getElementById(formId);
            form.querySelector("input[name=credential]").value = answer;
            setTimeout(() => form.submit(), 0);
        }""", [form, answer]))

    def close(self):
        self.context.close()


@pytest.fixture
def web_browser(chromium):
    """Makes WebBrowser contexts (each with its own cookies and authenticator); closed at the
    end of the test."""
    made = []

    def make(server):
        browser = WebBrowser(chromium, server)
        made.append(browser)
        return browser

    yield make
    for browser in made:
        browser.close()
