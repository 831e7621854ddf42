"""idflow as an OpenID Provider, driven by Authlib as the relying party: authorization code with
PKCE, ID token verification against the JWKS, userinfo, refresh, introspection, revocation,
client credentials, logout, and restart durability."""

import base64
import hashlib
import json
import secrets
import signal
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from conftest import (
    SPA_REDIRECT, WEB_REDIRECT, WEB_SECRET, Browser, query,
)


def discovery(server):
    return requests.get(server.url("/.well-known/openid-configuration"), timeout=10).json()


def web_client(scope="openid profile email roles"):
    return OAuth2Session(
        "demo-web", WEB_SECRET, scope=scope, redirect_uri=WEB_REDIRECT,
        code_challenge_method="S256",
    )


def verify_id_token(server, id_token, audience, nonce=None):
    keys = KeySet.import_key_set(requests.get(discovery(server)["jwks_uri"], timeout=10).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256"])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": server.issuer},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    registry.validate(token.claims)
    if nonce is not None:
        assert token.claims["nonce"] == nonce
    return token


def code_login(server, client, browser=None, **extra):
    """Runs authorization code + PKCE; returns (token response, nonce, browser)."""
    meta = discovery(server)
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **extra
    )
    browser = browser or Browser(server)
    callback = browser.login(url)
    assert isinstance(callback, str), f"expected a redirect to the app, got {callback.text}"
    params = query(callback)
    assert params["state"] == state
    assert params["iss"] == server.issuer
    token = client.fetch_token(
        meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
    )
    return token, nonce, browser


def test_discovery_names_every_endpoint(server):
    meta = discovery(server)
    assert meta["issuer"] == server.issuer
    for endpoint in ["authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                     "jwks_uri", "end_session_endpoint", "introspection_endpoint",
                     "revocation_endpoint"]:
        assert meta[endpoint].startswith(server.issuer + "/"), endpoint
    assert meta["code_challenge_methods_supported"] == ["S256"]
    keys = requests.get(meta["jwks_uri"], timeout=10).json()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "ES256"}


def test_code_flow_with_pkce_issues_verifiable_tokens(server):
    client = web_client()
    token, nonce, _ = code_login(server, client)
    claims = verify_id_token(server, token["id_token"], "demo-web", nonce).claims
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["amr"] == ["pwd"]
    assert claims["auth_time"] <= time.time() + 1
    assert claims["sid"]
    # at_hash binds the ID token to the access token (OpenID Connect Core 3.1.3.6).
    digest = hashlib.sha256(token["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    info = client.get(discovery(server)["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"]
    assert info["name"] == "Alice Liddell"
    assert info["email"] == "alice@example.com"


def test_refresh_rotates_and_tokens_introspect_and_revoke(server):
    meta = discovery(server)
    client = web_client()
    token, _, _ = code_login(server, client)
    first_refresh = token["refresh_token"]
    refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
    assert refreshed["refresh_token"] != first_refresh
    assert "id_token" not in refreshed, "no ID token on refresh unless configured"

    active = client.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
    assert active["active"] is True
    assert active["client_id"] == "demo-web"
    assert active["username"] == "alice"
    assert "openid" in active["scope"].split()
    spent = client.introspect_token(meta["introspection_endpoint"], token=first_refresh).json()
    assert spent == {"active": False}

    assert client.revoke_token(meta["revocation_endpoint"], token=refreshed["access_token"]).status_code == 200
    after = client.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
    assert after == {"active": False}
    userinfo = requests.get(meta["userinfo_endpoint"], timeout=10,
                            headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert userinfo.status_code == 401
    assert 'error="invalid_token"' in userinfo.headers["WWW-Authenticate"]

    assert client.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"]).status_code == 200
    gone = requests.post(meta["token_endpoint"], timeout=10, auth=("demo-web", WEB_SECRET),
                         data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_grant"


def test_public_client_uses_pkce_without_a_secret(server):
    client = OAuth2Session("demo-spa", None, scope="openid", redirect_uri=SPA_REDIRECT,
                           code_challenge_method="S256", token_endpoint_auth_method="none")
    token, nonce, _ = code_login(server, client)
    verify_id_token(server, token["id_token"], "demo-spa", nonce)


def test_client_credentials(server):
    meta = discovery(server)
    client = OAuth2Session("demo-web", WEB_SECRET, scope="api.read")
    token = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and "id_token" not in token and "refresh_token" not in token
    claims = client.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    assert claims["active"] is True and claims["sub"] == "demo-web" and claims["scope"] == "api.read"
    # client_secret_post works as well as Basic.
    posted = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "client_credentials", "client_id": "demo-web", "client_secret": WEB_SECRET})
    assert posted.status_code == 200, posted.text


def test_single_sign_on_prompt_none_and_prompt_login(server):
    meta = discovery(server)
    client = web_client()
    _, _, browser = code_login(server, client)
    # A second authorization in the same browser is answered from the session, no page.
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=secrets.token_urlsafe(48), prompt="none")
    callback = browser.go(url)
    assert isinstance(callback, str) and "code" in query(callback)
    # prompt=login asks again.
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=secrets.token_urlsafe(48), prompt="login")
    page = browser.go(url)
    assert not isinstance(page, str) and "password" in page.text
    # A fresh browser with prompt=none gets login_required, at the application.
    url, state = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=secrets.token_urlsafe(48), prompt="none")
    callback = Browser(server).go(url)
    assert query(callback)["error"] == "login_required" and query(callback)["state"] == state


def test_max_age_forces_a_new_login(server):
    meta = discovery(server)
    client = web_client()
    _, _, browser = code_login(server, client)
    time.sleep(1.1)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=secrets.token_urlsafe(48), max_age="0")
    page = browser.go(url)
    assert not isinstance(page, str) and "password" in page.text


def test_rp_initiated_logout_ends_the_session(server):
    meta = discovery(server)
    client = web_client()
    token, _, browser = code_login(server, client)
    done = browser.go(meta["end_session_endpoint"] + "?" + requests.compat.urlencode({
        "id_token_hint": token["id_token"],
        "post_logout_redirect_uri": "http://localhost:8000/",
        "state": "bye",
    }))
    assert isinstance(done, str) and query(done) == {"state": "bye"}
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=secrets.token_urlsafe(48), prompt="none")
    assert query(browser.go(url))["error"] == "login_required"


def test_a_session_and_a_refresh_token_survive_kill_9(server):
    meta = discovery(server)
    client = web_client()
    token, _, browser = code_login(server, client)
    server.stop(signal.SIGKILL)
    server.start()
    refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["access_token"]
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=secrets.token_urlsafe(48), prompt="none")
    callback = browser.go(url)
    assert isinstance(callback, str) and "code" in query(callback), "the SSO session survived"


def test_metrics_count_logins_and_grants(server):
    client = web_client()
    code_login(server, client)
    text = requests.get(server.url("/metrics"), timeout=10).text
    assert 'idflow_logins_total{flow="password",state="password",outcome="complete"} 1' in text
    assert 'idflow_grants_total{grant="authorization_code",outcome="ok"} 1' in text
    assert 'idflow_http_request_duration_seconds_count{route="/token"}' in text


def test_id_token_claims_are_json_web_token_standard(server):
    client = web_client(scope="openid")
    token, _, _ = code_login(server, client)
    header = json.loads(base64.urlsafe_b64decode(token["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["kid"]
    claims = verify_id_token(server, token["id_token"], "demo-web").claims
    # With only `openid`, no profile or email claims are released.
    assert "email" not in claims and "preferred_username" not in claims
