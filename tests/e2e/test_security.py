"""The security rules of DESIGN.md that apply to the OpenID Provider, each as a negative test:
exact redirect URIs, PKCE, single-use codes whose reuse revokes, refresh rotation with reuse
detection, client authentication, CSRF and browser binding on login and sign-out forms,
throttling, the decoy hash's timing, secrets stored only as hashes, bounded and well-formed
input. Every answer must be the right OAuth error or page, never a 500."""

import base64
import hashlib
import re
import secrets
import shutil
import tempfile
import time
import urllib.parse

import pytest
import requests

from conftest import (
    ALICE, BOB, CAROL, DAVE, SPA_REDIRECT, USER_PASSWORD, WEB_REDIRECT, WEB_SECRET, Browser, Server,
    forms, option_form, query,
)


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        __import__("hashlib").sha256(verifier.encode()).digest()
    ).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(server, **params):
    base = {"client_id": "demo-web", "redirect_uri": WEB_REDIRECT, "response_type": "code",
            "scope": "openid", "state": "s1"}
    base.update(params)
    base = {k: v for k, v in base.items() if v is not None}
    return server.url("/authorize?" + urllib.parse.urlencode(base))


def get_code(server, browser=None, **params):
    """Logs in through /authorize and returns (code, browser)."""
    browser = browser or Browser(server)
    callback = browser.login(authorize_url(server, **params))
    assert isinstance(callback, str), getattr(callback, "text", callback)
    return query(callback)["code"], browser


def token_request(server, auth=("demo-web", WEB_SECRET), **data):
    return requests.post(server.url("/token"), data=data, auth=auth, timeout=10)


def exchange(server, code, verifier=None, **extra):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT}
    if verifier:
        data["code_verifier"] = verifier
    data.update(extra)
    return token_request(server, **data)


def assert_oauth_error(response, error, status=400):
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text
    assert response.headers["Cache-Control"] == "no-store"


def assert_page_not_redirect(response, status=400):
    assert response.status_code == status, response.text
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")


# Redirect URIs: exact match only, errors before validation are pages (no open redirect).

@pytest.mark.parametrize("redirect_uri", [
    "http://localhost:8000/callback/extra",
    "http://localhost:8000/callback?next=https://evil.example",
    "http://localhost:8000/callbac",
    "http://evil.example/callback",
    "http://localhost:8000/CALLBACK",
    "https://localhost:8000/callback",
    "//evil.example/callback",
])
def test_redirect_uri_must_match_exactly(server, redirect_uri):
    response = requests.get(authorize_url(server, redirect_uri=redirect_uri), allow_redirects=False, timeout=10)
    assert_page_not_redirect(response)
    assert "redirect_uri" in response.text


def test_unknown_client_and_missing_redirect_uri_are_pages(server):
    assert_page_not_redirect(requests.get(authorize_url(server, client_id="ghost"), allow_redirects=False, timeout=10))
    assert_page_not_redirect(requests.get(authorize_url(server, redirect_uri=None), allow_redirects=False, timeout=10))


def test_errors_after_validation_go_back_to_the_client_with_state(server):
    response = requests.get(authorize_url(server, response_type="token"), allow_redirects=False, timeout=10)
    assert response.status_code in (302, 303)
    params = query(response.headers["Location"])
    assert params["error"] == "unsupported_response_type" and params["state"] == "s1"
    assert params["iss"] == server.issuer


def test_post_logout_redirect_must_be_registered(server):
    response = requests.get(server.url("/logout?client_id=demo-web&post_logout_redirect_uri=http://evil.example/"),
                            allow_redirects=False, timeout=10)
    assert_page_not_redirect(response)


# PKCE.

def test_public_clients_must_use_pkce(server):
    response = requests.get(authorize_url(server, client_id="demo-spa", redirect_uri=SPA_REDIRECT),
                            allow_redirects=False, timeout=10)
    assert query(response.headers["Location"])["error"] == "invalid_request"


def test_plain_pkce_is_refused(server):
    response = requests.get(authorize_url(server, code_challenge="x" * 43, code_challenge_method="plain"),
                            allow_redirects=False, timeout=10)
    assert query(response.headers["Location"])["error"] == "invalid_request"


def test_wrong_or_missing_verifier_fails_without_burning_the_code(server):
    verifier, challenge = pkce_pair()
    code, _ = get_code(server, code_challenge=challenge, code_challenge_method="S256")
    assert_oauth_error(exchange(server, code), "invalid_grant")
    assert_oauth_error(exchange(server, code, secrets.token_urlsafe(48)), "invalid_grant")
    assert exchange(server, code, verifier).status_code == 200


def test_a_verifier_without_a_challenge_is_refused(server):
    code, _ = get_code(server)
    assert_oauth_error(exchange(server, code, secrets.token_urlsafe(48)), "invalid_grant")


# Codes: single use, bound to client and redirect URI, short-lived.

def test_code_reuse_revokes_what_the_code_issued(server):
    code, _ = get_code(server, scope="openid profile")
    first = exchange(server, code)
    assert first.status_code == 200
    tokens = first.json()
    assert_oauth_error(exchange(server, code), "invalid_grant")
    introspected = requests.post(server.url("/introspect"), auth=("demo-web", WEB_SECRET),
                                 data={"token": tokens["access_token"]}, timeout=10).json()
    assert introspected == {"active": False}, "the access token from the first use is revoked"
    refresh = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert_oauth_error(refresh, "invalid_grant")


def test_a_code_is_bound_to_its_client_and_redirect_uri(server):
    code, _ = get_code(server)
    wrong_redirect = exchange(server, code, redirect_uri="http://localhost:8000/other")
    assert_oauth_error(wrong_redirect, "invalid_grant")
    spa = requests.post(server.url("/token"), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT,
        "client_id": "demo-spa"})
    assert_oauth_error(spa, "invalid_grant")
    assert exchange(server, code).status_code == 200, "the failed attempts did not spend it"


def test_an_id_token_on_refresh_when_configured():
    directory = tempfile.mkdtemp(prefix="idflow-e2e-")
    server = Server(directory, "\n[tokens]\nid_token_on_refresh = true\n")
    server.cli("user", "add", "alice", "--password-stdin", stdin=USER_PASSWORD + "\n")
    server.start()
    try:
        code, _ = get_code(server)
        first = exchange(server, code).json()
        refreshed = token_request(server, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
        header, payload, _ = refreshed["id_token"].split(".")
        claims = __import__("json").loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert "nonce" not in claims and claims["aud"] == "demo-web"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_expired_codes_are_refused():
    directory = tempfile.mkdtemp(prefix="idflow-e2e-")
    server = Server(directory, "\n[tokens]\ncode_seconds = 1\n")
    server.cli("user", "add", "alice", "--password-stdin", stdin=USER_PASSWORD + "\n")
    server.start()
    try:
        code, _ = get_code(server)
        time.sleep(2.1)
        assert_oauth_error(exchange(server, code), "invalid_grant")
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# Refresh tokens: rotation, reuse detection.

def test_refresh_token_reuse_revokes_the_family(server):
    code, _ = get_code(server)
    tokens = exchange(server, code).json()
    rotated = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert rotated.status_code == 200
    successor = rotated.json()["refresh_token"]
    reuse = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert_oauth_error(reuse, "invalid_grant")
    assert_oauth_error(token_request(server, grant_type="refresh_token", refresh_token=successor), "invalid_grant")


def test_a_refresh_cannot_widen_scopes_or_change_client(server):
    code, _ = get_code(server, scope="openid")
    tokens = exchange(server, code).json()
    wider = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"], scope="openid email")
    assert_oauth_error(wider, "invalid_scope")
    other = requests.post(server.url("/token"), timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "demo-spa"})
    assert_oauth_error(other, "invalid_grant")


# Client authentication.

def test_bad_client_secret_is_invalid_client(server):
    response = token_request(server, auth=("demo-web", "wrong-secret-123456"), grant_type="client_credentials")
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    posted = requests.post(server.url("/token"), timeout=10, data={
        "grant_type": "client_credentials", "client_id": "demo-web", "client_secret": "nope"})
    assert_oauth_error(posted, "invalid_client", 401)
    none = requests.post(server.url("/token"), timeout=10, data={"grant_type": "client_credentials", "client_id": "demo-web"})
    assert_oauth_error(none, "invalid_client", 401)


def test_public_clients_cannot_use_client_credentials_or_introspect(server):
    response = requests.post(server.url("/token"), timeout=10, data={"grant_type": "client_credentials", "client_id": "demo-spa"})
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("unauthorized_client", "invalid_client")
    introspect = requests.post(server.url("/introspect"), timeout=10, data={"token": "x", "client_id": "demo-spa"})
    assert_oauth_error(introspect, "invalid_client", 401)


def test_unknown_scopes_for_client_credentials_are_refused(server):
    response = token_request(server, grant_type="client_credentials", scope="admin.everything")
    assert_oauth_error(response, "invalid_scope")


# Login forms: CSRF token and browser binding.

def login_page(server):
    browser = Browser(server)
    page = browser.go(authorize_url(server))
    return browser, page.text


def test_login_form_without_or_with_a_wrong_csrf_token_is_refused(server):
    browser, page = login_page(server)
    form = option_form(page, "password")
    for csrf in (None, "forged-token"):
        data = dict(form["fields"], username="alice", password=USER_PASSWORD)
        if csrf is None:
            del data["csrf"]
        else:
            data["csrf"] = csrf
        response = browser.session.post(server.url("/login"), data=data, allow_redirects=False, timeout=10)
        assert_page_not_redirect(response, 403)
    # The real form still works afterwards.
    callback = browser.submit(page, "password", username="alice", password=USER_PASSWORD)
    assert isinstance(callback, str) and "code" in query(callback)


def test_the_sign_out_form_without_its_own_csrf_token_signs_nobody_out(server):
    _, browser = get_code(server)
    _, other = get_code(server)

    def still_signed_in(who):
        return "code" in query(who.go(authorize_url(server, prompt="none")))

    def sign_out_form(who):
        page = who.go(server.url("/logout"))
        assert page.status_code == 200 and "Sign out?" in page.text, page.text
        (form,) = [f for f in forms(page.text) if f["action"] == "/logout"]
        return form["fields"]

    fields = sign_out_form(browser)
    # No token, a made-up one, and the token of another session: each is only asked again.
    for csrf in (None, "forged-token", sign_out_form(other)["csrf"]):
        data = {k: v for k, v in fields.items() if k != "csrf"}
        if csrf is not None:
            data["csrf"] = csrf
        response = browser.session.post(server.url("/logout"), data=data, allow_redirects=False, timeout=10)
        assert response.status_code == 200 and "Sign out?" in response.text, (csrf, response.status_code)
        assert "idflow_session" not in response.headers.get("Set-Cookie", "")
        assert still_signed_in(browser), f"signed out with csrf={csrf!r}"
    # The form as served signs out (this browser only): the refusals were the token's doing.
    done = browser.session.post(server.url("/logout"), data=fields, allow_redirects=False, timeout=10)
    assert done.status_code == 303, done.text
    assert not still_signed_in(browser) and still_signed_in(other)


def test_a_login_cannot_be_continued_from_another_browser(server):
    _, page = login_page(server)
    form = option_form(page, "password")
    thief = requests.Session()
    response = thief.post(server.url("/login"), data=dict(form["fields"], username="alice", password=USER_PASSWORD),
                          allow_redirects=False, timeout=10)
    assert_page_not_redirect(response, 403)


def test_cookies_are_http_only_and_same_site(server):
    browser = Browser(server)
    response = browser.session.get(authorize_url(server), allow_redirects=False, timeout=10)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = browser.go(response.headers["Location"] if response.headers["Location"].startswith("http") else server.url(response.headers["Location"]))
    form = option_form(page.text, "password")
    done = browser.session.post(server.url("/login"), data=dict(form["fields"], username="alice", password=USER_PASSWORD),
                                allow_redirects=False, timeout=10)
    session_cookie = [c for c in done.headers["Set-Cookie"].split(", ") if "idflow_session=" in c][0]
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
    assert "Secure" not in session_cookie, "http issuer: no Secure flag"


def test_login_pages_forbid_framing_and_caching(server):
    response = requests.get(server.url("/"), timeout=10)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


# Throttling and account state.

def test_failed_passwords_lock_the_account(server):
    # The password flow: 3 tries per login, the account locks after 5 consecutive failures.
    browser = Browser(server)
    page = browser.go(authorize_url(server)).text
    for _ in range(2):
        page = browser.submit(page, "password", username="alice", password="wrong-password")
        assert page.status_code == 422 and "did not work" in page.text
        page = page.text
    denied = browser.submit(page, "password", username="alice", password="wrong-password")
    assert query(denied)["error"] == "access_denied"
    page = browser.go(authorize_url(server)).text
    page = browser.submit(page, "password", username="alice", password="wrong-password").text
    denied = browser.submit(page, "password", username="alice", password="wrong-password")
    assert query(denied)["error"] == "access_denied", "the fifth failure locks the account"
        # Now even the right password is refused, with the answer a wrong one gets: a locked
    # account must not confirm a guess.
    page = browser.go(authorize_url(server)).text
    right = browser.submit(page, "password", username="alice", password=USER_PASSWORD)
    wrong = browser.submit(right.text, "password", username="alice", password="wrong-password")
    assert right.status_code == wrong.status_code == 422
    assert "did not work" in right.text and "did not work" in wrong.text
    denied = browser.submit(wrong.text, "password", username="alice", password=USER_PASSWORD)
    assert query(denied)["error"] == "access_denied"
    server.stop()
    shown = server.cli("user", "show", "alice").stdout
    assert '"locked_until": 0' not in shown
    server.start()


def test_concurrent_submits_of_one_login_apply_one_at_a_time(server):
    # Parallel guesses on one login (an attacker racing the attempt counter, or a double
    # click): each step applies only from the state it read, so at most `attempts` (3) of
    # them are processed and the others get a conflict page.
    import concurrent.futures
    browser = Browser(server)
    page = browser.go(authorize_url(server)).text
    form = option_form(page, "password")
    cookies = browser.session.cookies.get_dict()

    def guess(password):
        return requests.post(server.url("/login"), cookies=cookies, allow_redirects=False, timeout=30,
                             data=dict(form["fields"], username="alice", password=password))

    passwords = [f"wrong-guess-{i}" for i in range(11)] + [USER_PASSWORD]
    with concurrent.futures.ThreadPoolExecutor(len(passwords)) as pool:
        responses = list(pool.map(guess, passwords))
    statuses = sorted(r.status_code for r in responses)
    # 303: processed (to the next page or back to the app); 409: lost the race; 400: the
    # login was already over when the request arrived; 429: [throttle] had already counted ten
    # failures at alice from this address (each racing guess is checked, so each counts).
    assert set(statuses) <= {303, 400, 409, 429}, statuses
    processed = [r for r in responses if r.status_code == 303]
    assert 1 <= len(processed) <= 3, statuses


def test_two_tabs_can_each_run_a_login(server):
    browser = Browser(server)
    tab_one = browser.go(authorize_url(server, state="one")).text
    tab_two = browser.go(authorize_url(server, state="two")).text
    one = browser.submit(tab_one, "password", username="alice", password=USER_PASSWORD)
    assert query(one)["state"] == "one" and "code" in query(one)
    two = browser.submit(tab_two, "password", username="alice", password=USER_PASSWORD)
    assert query(two)["state"] == "two" and "code" in query(two)


def test_tokens_do_not_carry_the_session_cookie(server):
    browser = Browser(server)
    code, browser = get_code(server, browser)
    tokens = exchange(server, code).json()
    cookie = browser.session.cookies.get("idflow_session")
    payload = tokens["id_token"].split(".")[1]
    claims = __import__("json").loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sid"] and cookie and claims["sid"] != cookie
    assert cookie not in tokens["access_token"] and cookie not in tokens["id_token"]
    thief = requests.Session()
    thief.cookies.set("idflow_session", claims["sid"], domain="localhost.local")
    response = thief.get(authorize_url(server, prompt="none"), allow_redirects=False,
                         headers={"Cookie": f"idflow_session={claims['sid']}"}, timeout=10)
    assert query(response.headers["Location"])["error"] == "login_required"


def test_cors_only_for_public_client_origins(server):
    allowed = requests.options(server.url("/token"), timeout=10, headers={
        "Origin": "http://localhost:8000", "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:8000"
    evil = requests.options(server.url("/token"), timeout=10, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    jwks = requests.get(server.url("/jwks"), headers={"Origin": "http://anywhere.example"}, timeout=10)
    assert jwks.headers["Access-Control-Allow-Origin"] == "*"


def test_a_locked_user_cannot_refresh_but_keeps_the_grant(server):
    code, _ = get_code(server)
    tokens = exchange(server, code).json()
    browser = Browser(server)
    for _ in range(2):
        page = browser.go(authorize_url(server)).text
        for _ in range(3 if _ == 0 else 2):
            result = browser.submit(page, "password", username="alice", password="wrong-password")
            if isinstance(result, str):
                break
            page = result.text
    locked = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert_oauth_error(locked, "invalid_grant")
    introspected = requests.post(server.url("/introspect"), auth=("demo-web", WEB_SECRET),
                                 data={"token": tokens["refresh_token"]}, timeout=10).json()
    assert introspected["active"] is True, "a temporary lock does not revoke the user's grants"


def test_an_unknown_user_looks_like_a_wrong_password(server):
    browser = Browser(server)
    page = browser.go(authorize_url(server)).text
    unknown = browser.submit(page, "password", username="nobody", password="whatever-123")
    page = browser.go(authorize_url(server)).text
    wrong = browser.submit(page, "password", username="alice", password="whatever-123")
    assert unknown.status_code == wrong.status_code == 422
    strip = lambda text: [f["fields"].get("option") for f in forms(text)]
    assert strip(unknown.text) == strip(wrong.text)


def test_an_unknown_user_takes_as_long_as_a_wrong_password(make_server):
    # The decoy hash: a name without an account is checked against a decoy argon2id hash, so
    # that the answer takes as long as a wrong password for a real account. With the
    # quickstart's cost (19 MiB, 2 passes) the hash is most of the time an attempt takes. No
    # throttle (it would answer some attempts before any hash); each known user fails twice
    # only (five failures would lock it, and a locked account is checked against the decoy).
    users = [ALICE, BOB, CAROL, DAVE]
    server = make_server(users=users, extra_config=(
        "\n[password]\nmemory_kib = 19456\niterations = 2\nparallelism = 1\n"
        "\n[throttle]\nip_failures = 0\nuser_ip_failures = 0\n"))

    def attempt(username, password="wrong-password-123"):
        """The time from posting the password form to its answer, a fresh login each time."""
        browser = Browser(server)
        form = option_form(browser.go(authorize_url(server)).text, "password")
        data = dict(form["fields"], username=username, password=password)
        started = time.perf_counter()
        answer = browser.session.post(server.url(form["action"]), data=data, allow_redirects=False, timeout=60)
        elapsed = time.perf_counter() - started
        # The answer is a redirect to the login page, which says the attempt failed.
        assert answer.status_code == 303, (username, answer.status_code)
        page = browser.go(server.url(answer.headers["Location"]))
        assert page.status_code == 422 and "did not work" in page.text, (username, page.status_code)
        return elapsed

    for i in range(3):  # warm up (each hashing thread sizes its memory once)
        attempt(f"nobody-warm-{i}")
    known, unknown, unhashed = [], [], []
    for i in range(8):
        # Interleaved, and in a different order each round, so that drift hits all alike.
        runs = [
            lambda: known.append(attempt(users[i % len(users)].username)),
            lambda: unknown.append(attempt(f"nobody-{i}")),
            # Control: the same failure without any hash (a password over 1024 bytes is
            # refused before hashing): what an unknown user would cost without the decoy.
            lambda: unhashed.append(attempt(users[i % len(users)].username, "x" * 2000)),
        ]
        for run in runs[i % 3:] + runs[:i % 3]:
            run()
    median = lambda values: sorted(values)[len(values) // 2]
    timings = f"known {median(known):.4f}s, unknown {median(unknown):.4f}s, no hash {median(unhashed):.4f}s"
    assert median(unhashed) < 0.5 * median(known), \
        f"hashing is not most of an attempt here, so this test could not see a missing decoy: {timings}"
    assert 0.5 <= median(unknown) / median(known) <= 2, f"an unknown user answers at another speed: {timings}"


def test_a_disabled_user_cannot_log_in(server):
    server.stop()
    server.cli("user", "disable", "alice")
    server.start()
    browser = Browser(server)
    page = browser.go(authorize_url(server)).text
    for _ in range(2):
        result = browser.submit(page, "password", username="alice", password=USER_PASSWORD)
        assert result.status_code == 422, "the right password of a disabled account reads as wrong"
        page = result.text
    denied = browser.submit(page, "password", username="alice", password=USER_PASSWORD)
    assert query(denied)["error"] == "access_denied"


# Secrets at rest: the store keeps codes, tokens, cookies, login handles and recovery codes
# only as SHA-256 (ARCHITECTURE.md), and TOTP keys sealed.

def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def leave_secrets(server):
    """Drives `server` until its store holds one of each secret it must keep only as a SHA-256,
    and returns them: {name: (raw value, the SHA-256 hex the store keys it by)}. Also sets up an
    authenticator app on the account page and returns its key (sealed, so with no hash) and its
    recovery codes."""
    left = {}
    browser = Browser(server)
    code, _ = get_code(server, browser)
    tokens = exchange(server, code).json()
    rotated = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    left["redeemed code"] = code
    left["rotated refresh token"] = tokens["refresh_token"]
    left["refresh token"] = rotated.json()["refresh_token"]
    # Signed in already: a code at once, not redeemed.
    left["code"] = query(browser.go(authorize_url(server)))["code"]
    left["session cookie"] = browser.session.cookies.get("idflow_session")
    # A login in progress, one wrong password in (so it is written for good).
    waiting = Browser(server)
    page = waiting.go(authorize_url(server)).text
    wrong = waiting.submit(page, "password", username="alice", password="wrong-password")
    assert wrong.status_code == 422, wrong.text
    left["login handle"] = option_form(wrong.text, "password")["fields"]["login"]
    left["browser cookie"] = waiting.session.cookies.get("idflow_browser")  # binds that login
    assert all(left.values()), left
    hashed = {name: (value, sha256_hex(value)) for name, value in left.items()}
    # An authenticator app with its recovery codes, set up on the account page.
    person = Browser(server)
    start = person.go(server.url("/login/start")).text
    assert person.submit(start, "password", username="alice", password=USER_PASSWORD).status_code == 200
    setup = person.go(server.url("/?setup=totp")).text
    key = re.search(r'<code id="totp-secret">([^<]*)</code>', setup).group(1)
    codes = re.findall(r"<li><code>([^<]*)</code></li>", setup)
    csrf = re.search(r'name="csrf" value="([^"]+)"', setup).group(1)
    import pyotp
    done = person.go(server.url("/account/totp"), "POST", {"csrf": csrf, "code": pyotp.TOTP(key).now()})
    assert done.status_code == 200 and 'data-kind="totp"' in done.text, done.text
    assert len(codes) == 10, setup
    for i, code in enumerate(codes):
        # Stored as the SHA-256 of the code as typed without separators.
        hashed[f"recovery code {i}"] = (code, sha256_hex(code.replace("-", "")))
    return hashed, key


def assert_stored_only_hashed(stored, hashed, totp_key, known=("alice", "demo-web")):
    """No secret of `hashed` is in `stored` (bytes), neither as text nor decoded, and each one's
    SHA-256 is: the search finds what is there, so an absence means something. The TOTP key is
    in neither its base32 text nor its raw bytes."""
    for text in known:
        assert text.encode() in stored, f"{text!r} is not in what was read: is this the store?"
    for name, (value, digest) in hashed.items():
        forms = {value.encode(), value.replace("-", "").encode()}
        try:
            forms.add(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except ValueError:
            pass
        for form in forms:
            assert form not in stored, f"the {name} is stored as it is ({form!r})"
        assert digest.encode() in stored, f"the {name} is not stored under its SHA-256"
    raw_key = base64.b32decode(totp_key + "=" * (-len(totp_key) % 8))
    assert totp_key.encode() not in stored and raw_key not in stored, "the TOTP key is stored unsealed"


def test_secrets_are_stored_only_as_hashes(server):
    hashed, totp_key = leave_secrets(server)
    # Stopped, so that every write is in the files (a login before its first input is committed
    # without a flush); then every file of the data directory, byte for byte.
    server.stop()
    files = sorted(p for p in server.data.rglob("*") if p.is_file())
    assert any(p.name == "idflow.redb" for p in files), files
    assert_stored_only_hashed(b"".join(p.read_bytes() for p in files), hashed, totp_key)


# Malformed and oversized input.

def test_repeated_and_oversized_parameters(server):
    url = authorize_url(server) + "&state=again"
    assert_page_not_redirect(requests.get(url, allow_redirects=False, timeout=10))
    huge = requests.get(authorize_url(server, state="x" * 5000), allow_redirects=False, timeout=10)
    assert_page_not_redirect(huge)
    body = requests.post(server.url("/token"), data={"grant_type": "client_credentials", "pad": "x" * 100_000},
                         auth=("demo-web", WEB_SECRET), timeout=10)
    assert body.status_code == 413
    repeated = requests.post(server.url("/token"), data="grant_type=client_credentials&grant_type=password",
                             headers={"Content-Type": "application/x-www-form-urlencoded"},
                             auth=("demo-web", WEB_SECRET), timeout=10)
    assert_oauth_error(repeated, "invalid_request")


@pytest.mark.parametrize("path,kwargs", [
    ("/token", {"data": b"\xff\xfe\x00garbage", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
    ("/token", {"json": {"grant_type": "client_credentials"}, "auth": ("demo-web", WEB_SECRET)}),
    ("/token", {"data": {"grant_type": "client_credentials"}, "headers": {"Authorization": "Basic !!!notbase64"}}),
    ("/token", {"data": {"grant_type": "password", "username": "alice", "password": "x"}, "auth": ("demo-web", WEB_SECRET)}),
    ("/token", {"data": {"grant_type": "authorization_code", "code": "forged", "redirect_uri": WEB_REDIRECT}, "auth": ("demo-web", WEB_SECRET)}),
    ("/token", {"data": {"grant_type": "refresh_token", "refresh_token": "forged"}, "auth": ("demo-web", WEB_SECRET)}),
    ("/introspect", {"data": {"token": "a.b.c"}, "auth": ("demo-web", WEB_SECRET)}),
    ("/revoke", {"data": {"token": "not-a-token"}, "auth": ("demo-web", WEB_SECRET)}),
    ("/userinfo", {"headers": {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}}),
    ("/login", {"data": {"login": "nope", "csrf": "x", "option": "password"}}),
])
def test_malformed_requests_get_clear_errors_not_500(server, path, kwargs):
    response = requests.post(server.url(path), timeout=10, allow_redirects=False, **kwargs)
    assert 400 <= response.status_code < 500 or (path in ("/introspect", "/revoke") and response.status_code == 200), response.text
    if path in ("/token", "/introspect", "/revoke") and response.status_code != 200:
        assert "error" in response.json()
    if path == "/introspect":
        assert response.json() == {"active": False}


def test_a_garbage_id_token_hint_asks_before_signing_out(server):
    code, browser = get_code(server)
    response = browser.session.post(server.url("/logout"), data={"id_token_hint": "garbage"},
                                    allow_redirects=False, timeout=10)
    assert response.status_code == 200 and "Sign out?" in response.text
    url = authorize_url(server, prompt="none")
    assert "code" in query(browser.go(url)), "still signed in"


def test_forged_access_tokens_are_refused(server):
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b'{"sub":"admin","scope":"openid","exp":9999999999}').rstrip(b"=").decode()
    for token in (f"{header}.{payload}.", f"{header}.{payload}.c2ln"):
        response = requests.get(server.url("/userinfo"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 401
