"""Federation with an upstream OpenID Provider that answers wrongly. The provider is written here
(http.server in a thread): discovery, JWKS, an authorization endpoint that signs the person in at
once, a token endpoint and UserInfo, RS256 ID tokens signed with joserfc. It checks what the
downstream sends as a strict provider would (client authentication, redirect URI, PKCE, the code
used once) and is correct in every respect but the one a test changes, so each test fails for
exactly that reason; a test with nothing changed shows that the honest answer signs in.

Every wrong ID token must be refused: no code for the application, no account, no link, and a
`federation.refused` audit entry that names the reason. A right answer brought back by another
browser must be refused before its code is redeemed. (A callback with a `state` the downstream
never issued is covered by test_federation.py.)"""

import base64
import hashlib
import http.server
import json
import pathlib
import secrets
import shutil
import tempfile
import threading
import time
import urllib.parse

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey

from conftest import RelyingParty, Server, free_port, query

CLIENT_ID = "idflow-downstream"
CLIENT_SECRET = "rogue-client-secret-for-tests"
SUB = "rogue-alice"
EMAIL = "alice@rogue.example"
KID = "rogue-rs256"
# The provider's signing key (published in its JWKS) and one it does not publish.
SIGNING_KEY = RSAKey.generate_key(2048, parameters={"kid": KID, "use": "sig", "alg": "RS256"}, private=True)
FOREIGN_KEY = RSAKey.generate_key(2048, parameters={"kid": KID, "use": "sig", "alg": "RS256"}, private=True)
APPLICATION = "http://localhost:8000"

FLOW = """flow: rogue-login
applies_to: [demo-web]
steps:
  - id: sign-in
    authenticate: [{ federated: rogue }]
jit:
  - idp: rogue
    match: email
    create:
      username: claims.preferred_username
      attributes:
        email: claims.email
        display_name: claims.name
"""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def s256(verifier):
    return b64url(hashlib.sha256(verifier.encode()).digest())


class RogueProvider:
    """An OpenID Provider on 127.0.0.1 whose ID tokens `tamper(header, claims)` may change
    (both dicts, in place) and `sign(header, claims)` may sign otherwise. `errors` collects every
    request it refused: a test expects none, so the downstream is refused for the one reason the
    test gave and not because it sent something wrong."""

    def __init__(self):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = None
        self.tamper = lambda header, claims: None
        self.sign = lambda header, claims: jwt.encode(header, claims, SIGNING_KEY)
        self.codes = {}
        self.access_tokens = {}
        self.errors = []
        self.authorizations = 0
        self.tokens = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                provider.handle(self, "GET")

            def do_POST(self):
                provider.handle(self, "POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # HTTP.

    def handle(self, request, method):
        url = urllib.parse.urlsplit(request.path)
        routes = {
            ("GET", "/.well-known/openid-configuration"): self.discovery,
            ("GET", "/jwks"): self.jwks,
            ("GET", "/authorize"): self.authorize,
            ("POST", "/token"): self.token,
            ("GET", "/userinfo"): self.userinfo,
        }
        route = routes.get((method, url.path))
        if route is None:
            return self.refuse(request, 404, "not_found", f"{method} {url.path}")
        params = dict(urllib.parse.parse_qsl(url.query))
        if method == "POST":
            length = int(request.headers.get("Content-Length") or 0)
            params = dict(urllib.parse.parse_qsl(request.rfile.read(length).decode()))
        try:
            route(request, params)
        except Exception as error:  # a bug in this provider must show, not hang the login
            self.refuse(request, 500, "server_error", repr(error))

    def answer(self, request, status, body=None, headers=()):
        data = json.dumps(body).encode() if body is not None else b""
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        if body is not None:
            request.send_header("Content-Type", "application/json")
        request.send_header("Cache-Control", "no-store")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def refuse(self, request, status, error, description, headers=()):
        self.errors.append(f"{request.command} {request.path.split('?')[0]}: {error}: {description}")
        self.answer(request, status, {"error": error, "error_description": description}, headers)

    # The endpoints.

    def discovery(self, request, _params):
        self.answer(request, 200, {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email",
                                 "email_verified", "name", "preferred_username"],
            "authorization_response_iss_parameter_supported": True,
        })

    def jwks(self, request, _params):
        self.answer(request, 200, {"keys": [SIGNING_KEY.as_dict(private=False)]})

    def authorize(self, request, params):
        """Signs the person in at once (no page) and sends the code back."""
        self.authorizations += 1
        if params.get("client_id") != CLIENT_ID or params.get("redirect_uri") != self.redirect_uri:
            return self.refuse(request, 400, "invalid_request", f"unknown client or redirect URI: {params}")
        wrong = [
            what for what, ok in (
                ("response_type", params.get("response_type") == "code"),
                ("scope", "openid" in params.get("scope", "").split()),
                ("state", bool(params.get("state"))),
                ("nonce", bool(params.get("nonce"))),
                ("code_challenge", len(params.get("code_challenge", "")) == 43),
                ("code_challenge_method", params.get("code_challenge_method") == "S256"),
            ) if not ok
        ]
        if wrong:
            return self.refuse(request, 400, "invalid_request", f"bad {', '.join(wrong)}: {params}")
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "nonce": params["nonce"],
            "challenge": params["code_challenge"],
            "redirect_uri": params["redirect_uri"],
            "scope": params["scope"].split(),
        }
        answer = urllib.parse.urlencode({"code": code, "state": params["state"], "iss": self.issuer})
        request.send_response(302)
        request.send_header("Location", f"{self.redirect_uri}?{answer}")
        request.send_header("Content-Length", "0")
        request.end_headers()

    def token(self, request, params):
        self.tokens += 1
        basic = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(
            f"{urllib.parse.quote(CLIENT_ID, safe='')}:{urllib.parse.quote(CLIENT_SECRET, safe='')}".encode()
        ).decode()
        if basic != expected:
            return self.refuse(request, 401, "invalid_client", f"client authentication: {basic!r}",
                               headers=[("WWW-Authenticate", 'Basic realm="rogue"')])
        if params.get("grant_type") != "authorization_code":
            return self.refuse(request, 400, "unsupported_grant_type", str(params))
        grant = self.codes.pop(params.get("code", ""), None)
        if grant is None:
            return self.refuse(request, 400, "invalid_grant", "unknown or used code")
        if params.get("redirect_uri") != grant["redirect_uri"]:
            return self.refuse(request, 400, "invalid_grant", "redirect_uri differs")
        if s256(params.get("code_verifier", "")) != grant["challenge"]:
            return self.refuse(request, 400, "invalid_grant", "PKCE verifier does not match")
        access_token = secrets.token_urlsafe(32)
        self.access_tokens[access_token] = grant["scope"]
        self.answer(request, 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": " ".join(grant["scope"]),
            "id_token": self.id_token(grant, access_token),
        })

    def id_token(self, grant, access_token):
        now = int(time.time())
        header = {"alg": "RS256", "kid": KID, "typ": "JWT"}
        claims = {
            "iss": self.issuer,
            "sub": SUB,
            "aud": CLIENT_ID,
            "exp": now + 300,
            "iat": now,
            "auth_time": now,
            "nonce": grant["nonce"],
            "at_hash": b64url(hashlib.sha256(access_token.encode()).digest()[:16]),
            "email": EMAIL,
            "email_verified": True,
            "name": "Alice Rogue",
            "preferred_username": SUB,
        }
        self.tamper(header, claims)
        return self.sign(header, claims)

    def userinfo(self, request, _params):
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            return self.refuse(request, 401, "invalid_token", "unknown access token",
                               headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')])
        self.answer(request, 200, {"sub": SUB, "email": EMAIL, "email_verified": True,
                                   "name": "Alice Rogue", "preferred_username": SUB})


@pytest.fixture
def rogue():
    """(provider, downstream): the downstream federates demo-web's sign-in to the provider."""
    directory = tempfile.mkdtemp(prefix="idflow-rogue-")
    provider = RogueProvider()
    downstream = None
    try:
        flows = pathlib.Path(directory) / "flows"
        flows.mkdir()
        (flows / "rogue-login.yaml").write_text(FLOW)
        downstream = Server(directory, extra_config=(
            "\n[server]\n"
            f'flows = "{flows}"\n'
            "\n[identity_providers.rogue]\n"
            'type = "oidc"\n'
            'display_name = "Rogue OP"\n'
            f'issuer = "{provider.issuer}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'client_secret = "{CLIENT_SECRET}"\n'
            'verified_attributes = ["email"]\n'
        ))
        provider.redirect_uri = f"{downstream.issuer}/federation/callback"
        downstream.start()
        yield provider, downstream
    finally:
        if downstream:
            downstream.stop()
        provider.stop()
        shutil.rmtree(directory, ignore_errors=True)


def sign_in(provider, downstream):
    """demo-web's sign-in at the downstream, every redirect followed (the provider signs the
    person in without a page) until a page is shown or the application is reached. Returns the
    RelyingParty, the URLs visited and the last response (or the application's URL)."""
    rp = RelyingParty(downstream, "demo-web")
    session = requests.Session()
    url, visited = rp.authorize_url(), []
    for _ in range(40):
        visited.append(url)
        if url.startswith(APPLICATION):
            return rp, visited, url
        response = session.get(url, allow_redirects=False, timeout=30)
        if response.status_code not in (301, 302, 303, 307):
            return rp, visited, response
        url = urllib.parse.urljoin(url, response.headers["Location"])
    raise AssertionError(f"redirect loop: {visited}")


def assert_refused(provider, downstream, reason):
    """The sign-in ends without a code for the application, with no account and no link at the
    downstream, and every callback it took is audited as refused for `reason`."""
    rp, visited, end = sign_in(provider, downstream)
    # Today a refused answer sends the browser straight back to the provider until the step's
    # attempts (3) are used up (see test_federation_oidc_provider.py), so there may be several.
    callbacks = [u for u in visited if u.startswith(downstream.url("/federation/callback"))]
    assert callbacks, f"the provider never answered the downstream: {visited}\n{provider.errors}"
    assert provider.errors == [], provider.errors
    assert provider.tokens == len(callbacks), (provider.tokens, visited)
    if isinstance(end, str):
        # The downstream told the application the sign-in failed.
        answer = query(end)
        assert "code" not in answer, f"the application got a code: {end}"
        assert answer.get("error") == "access_denied" and answer.get("state") == rp.state, end
        assert answer.get("iss") == downstream.issuer, end
    else:
        # Or it showed the person a page (of its own, not an error of the server).
        assert end.url.startswith(downstream.issuer), f"ended at {end.url}: {visited}"
        assert 400 <= end.status_code < 500 or end.status_code == 200, (end.status_code, end.text)
    downstream.stop()
    assert SUB not in downstream.cli("user", "list").stdout
    log = downstream.cli("audit", "--limit", "1000").stdout
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    # (The only account made is the bootstrap admin, at the first start.)
    made = [e for e in entries if e["event"] in ("identity.link", "federation.passed", "login.success")
            or (e["event"] == "user.create" and not e["detail"].get("bootstrap"))]
    assert made == [], made
    if isinstance(end, str):
        assert [e["event"] for e in entries].count("login.failure") == 1, entries
    refused = [e["detail"] for e in entries if e["event"] == "federation.refused"]
    assert len(refused) == len(callbacks), (refused, visited)
    for detail in refused:
        assert detail["idp"] == "rogue", detail
        assert reason in detail["reason"], detail
    return refused


def test_the_honest_answer_signs_in(rogue):
    """The control: unchanged, the provider's answer creates and signs in the account, so the
    refusals below are for what each test changed."""
    provider, downstream = rogue
    rp, visited, end = sign_in(provider, downstream)
    assert provider.errors == [], provider.errors
    claims = rp.finish(end)
    assert claims["email"] == EMAIL and claims["preferred_username"] == SUB, claims
    downstream.stop()
    assert SUB in downstream.cli("user", "list").stdout
    entries = [json.loads(line) for line in downstream.cli("audit").stdout.splitlines() if line.strip()]
    events = [e["event"] for e in entries]
    assert "federation.refused" not in events, entries
    assert events.count("federation.passed") == 1 and events.count("identity.link") == 1, events


def test_an_id_token_with_another_nonce_is_refused(rogue):
    provider, downstream = rogue
    provider.tamper = lambda header, claims: claims.update(nonce=secrets.token_urlsafe(16))
    assert_refused(provider, downstream, "Invalid nonce: nonce mismatch")


def test_an_id_token_without_a_nonce_is_refused(rogue):
    provider, downstream = rogue
    provider.tamper = lambda header, claims: claims.pop("nonce")
    assert_refused(provider, downstream, "Invalid nonce")


def test_an_id_token_from_another_issuer_is_refused(rogue):
    provider, downstream = rogue
    provider.tamper = lambda header, claims: claims.update(iss="https://op.example")
    assert_refused(provider, downstream, "Invalid issuer")


@pytest.mark.parametrize("kid", [KID, "unpublished-key"], ids=["published-kid", "unknown-kid"])
def test_an_id_token_signed_with_a_key_not_in_the_jwks_is_refused(rogue, kid):
    provider, downstream = rogue

    def foreign(header, claims):
        header["kid"] = kid
        return jwt.encode(header, claims, FOREIGN_KEY)

    provider.sign = foreign
    assert_refused(provider, downstream, "Signature verification failed")


@pytest.mark.parametrize("aud", ["another-client", [CLIENT_ID, "another-client"]],
                         ids=["another-client", "also-another-client"])
def test_an_id_token_for_another_client_is_refused(rogue, aud):
    provider, downstream = rogue
    provider.tamper = lambda header, claims: claims.update(aud=aud)
    assert_refused(provider, downstream, "Invalid audiences")


def test_an_expired_id_token_is_refused(rogue):
    provider, downstream = rogue
    now = int(time.time())
    provider.tamper = lambda header, claims: claims.update(iat=now - 900, auth_time=now - 900, exp=now - 600)
    assert_refused(provider, downstream, "Expired")


def test_an_unsigned_id_token_is_refused(rogue):
    """`alg: none`, even though the ID token comes straight from the token endpoint."""
    provider, downstream = rogue

    def unsigned(header, claims):
        header = {"alg": "none", "typ": "JWT"}
        return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."

    provider.sign = unsigned
    assert_refused(provider, downstream, "Signature verification failed")


def test_an_id_token_for_another_access_token_is_refused(rogue):
    """`at_hash` names another access token than the one the token endpoint returned with it."""
    provider, downstream = rogue
    other = b64url(hashlib.sha256(b"another access token").digest()[:16])
    provider.tamper = lambda header, claims: claims.update(at_hash=other)
    assert_refused(provider, downstream, "at_hash does not match")


def test_an_answer_brought_back_by_another_browser_is_refused_before_its_code_is_used(rogue):
    """The provider's answer (right state, good code) arrives in another browser than the one
    the sign-in started in (login CSRF: someone else's answer planted in a victim's browser)."""
    provider, downstream = rogue
    rp = RelyingParty(downstream, "demo-web")
    started = requests.Session()
    url = rp.authorize_url()
    for _ in range(10):
        if url.startswith(downstream.url("/federation/callback")):
            break
        response = started.get(url, allow_redirects=False, timeout=30)
        assert response.status_code in (302, 303), (url, response.status_code, response.text)
        url = urllib.parse.urljoin(url, response.headers["Location"])
    assert url.startswith(downstream.url("/federation/callback")) and "code" in query(url), url
    other = requests.get(url, allow_redirects=False, timeout=30)
    assert other.status_code == 403, (other.status_code, other.headers, other.text)
    assert "another browser" in other.text, other.text
    assert provider.tokens == 0, "the code was redeemed for another browser"
    assert provider.errors == [], provider.errors
    downstream.stop()
    assert SUB not in downstream.cli("user", "list").stdout
    entries = [json.loads(line) for line in downstream.cli("audit").stdout.splitlines() if line.strip()]
    assert not [e for e in entries if e["event"] in ("identity.link", "federation.passed", "login.success")
                or (e["event"] == "user.create" and not e["detail"].get("bootstrap"))], entries
