"""A tiny web application that signs in with idflow and shows the ID token's claims.

Run idflow (`./scripts/run`), then, with the test venv (`./scripts/setup --e2e`):

    .venv/bin/python examples/quickstart/demo_app.py

and open http://localhost:8000. It is the quickstart's `demo-web` client: authorization code
with PKCE, the ID token verified against idflow's JWKS, userinfo, and sign-out through
idflow's end_session_endpoint. Flags override the issuer, client and port.
"""

import argparse
import html
import http.server
import json
import secrets
import urllib.parse

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet


def make_handler(args, meta):
    pending = {}  # state -> (code_verifier, nonce)
    sessions = {}  # cookie -> claims
    redirect_uri = f"{args.base}/callback"

    def client():
        return OAuth2Session(args.client_id, args.client_secret, scope="openid profile email roles",
                             redirect_uri=redirect_uri, code_challenge_method="S256")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def page(self, body, status=200, headers=()):
            data = f"<!doctype html><title>idflow demo</title><main>{body}</main>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def redirect(self, location, headers=()):
            self.send_response(303)
            self.send_header("Location", location)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()

        def session(self):
            cookie = self.headers.get("Cookie", "")
            for part in cookie.split(";"):
                name, _, value = part.strip().partition("=")
                if name == "demo" and value in sessions:
                    return value, sessions[value]
            return None, None

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/":
                _, claims = self.session()
                if claims is None:
                    return self.page('<h1>idflow demo</h1><p>Not signed in.</p><p><a href="/login">Sign in</a></p>')
                rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                               for k, v in sorted(claims["id_token"].items()))
                info = html.escape(json.dumps(claims["userinfo"], indent=2))
                return self.page(f"<h1>Signed in as {html.escape(str(claims['id_token'].get('preferred_username')))}</h1>"
                                 f"<h2>ID token</h2><table>{rows}</table><h2>UserInfo</h2><pre>{info}</pre>"
                                 '<p><a href="/logout">Sign out</a></p>')
            if url.path == "/login":
                verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
                location, state = client().create_authorization_url(
                    meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
                pending[state] = (verifier, nonce)
                return self.redirect(location)
            if url.path == "/callback":
                if "error" in params:
                    return self.page(f"<h1>Sign-in failed</h1><p>{html.escape(params['error'])}</p>", 400)
                verifier, nonce = pending.pop(params.get("state", ""), (None, None))
                if verifier is None:
                    return self.page("<h1>Unknown state</h1>", 400)
                oauth = client()
                token = oauth.fetch_token(meta["token_endpoint"], code=params["code"], code_verifier=verifier)
                keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
                id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256", "ES256"])
                jwt.JWTClaimsRegistry(iss={"essential": True, "value": meta["issuer"]},
                                      aud={"essential": True, "value": args.client_id},
                                      nonce={"essential": True, "value": nonce}).validate(id_token.claims)
                userinfo = oauth.get(meta["userinfo_endpoint"]).json()
                cookie = secrets.token_urlsafe(16)
                sessions[cookie] = {"id_token": id_token.claims, "userinfo": userinfo, "raw": token["id_token"]}
                return self.redirect("/", [("Set-Cookie", f"demo={cookie}; Path=/; HttpOnly; SameSite=Lax")])
            if url.path == "/logout":
                cookie, claims = self.session()
                sessions.pop(cookie, None)
                query = {"post_logout_redirect_uri": f"{args.base}/"}
                if claims:
                    query["id_token_hint"] = claims["raw"]
                return self.redirect(meta["end_session_endpoint"] + "?" + urllib.parse.urlencode(query))
            return self.page("<h1>Not found</h1>", 404)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", default="http://localhost:8080")
    parser.add_argument("--client-id", default="demo-web")
    parser.add_argument("--client-secret", default="demo-web-secret-change-me")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    args.base = f"http://localhost:{args.port}"
    meta = requests.get(f"{args.issuer}/.well-known/openid-configuration", timeout=10).json()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args, meta))
    print(f"demo app on {args.base} (issuer {args.issuer})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
