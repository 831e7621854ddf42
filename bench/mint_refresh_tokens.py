"""Prints N refresh tokens of the `demo-web` client from an OpenID Provider whose login page is
an HTML form: for each, a fresh browser (no cookies) signs in through the authorization code
flow and exchanges the code. Works against idflow and against the oidc-provider peer of
bench/vs-oidc-provider, the same way bench/wrk/browser_login.lua does. Used by bench/load and
bench/vs-oidc-provider.

    mint_refresh_tokens.py ISSUER USERNAME PASSWORD COUNT [AUTHORIZE_PATH] [SCOPE]

AUTHORIZE_PATH defaults to idflow's /authorize, SCOPE to "openid"."""

import html
import re
import sys
import urllib.parse

import requests

issuer, username, password, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
authorize_path = sys.argv[5] if len(sys.argv) > 5 else "/authorize"
scope = sys.argv[6] if len(sys.argv) > 6 else "openid"
client = ("demo-web", "demo-web-secret-change-me")
redirect = "http://localhost:8000/callback"
authorize = (f"{issuer}{authorize_path}?client_id=demo-web&response_type=code"
             f"&scope={urllib.parse.quote(scope)}&state=s"
             f"&redirect_uri={urllib.parse.quote(redirect, safe='')}")
ATTRIBUTES = {"path", "expires", "domain", "samesite", "max-age"}


def remember(jar, response):
    # requests joins repeated Set-Cookie headers with ", "; the peer may fold them itself.
    for name, value in re.findall(r"([\w.\-]+)=([^;,]*)", response.headers.get("Set-Cookie", "")):
        if name.lower() not in ATTRIBUTES:
            if value:
                jar[name] = value
            else:
                jar.pop(name, None)


def password_form(page):
    for form in re.findall(r"<form(.*?)</form>", page, re.S):
        if 'type="password"' in form:
            action = html.unescape(re.search(r'action="([^"]*)"', form).group(1))
            fields = {}
            for attributes in re.findall(r"<input([^>]*)>", form):
                if 'type="hidden"' in attributes:
                    name = re.search(r'name="([^"]*)"', attributes).group(1)
                    value = re.search(r'value="([^"]*)"', attributes)
                    fields[name] = html.unescape(value.group(1)) if value else ""
            return action, dict(fields, username=username, password=password)
    raise SystemExit("no password form on the login page")


def code():
    jar, url, form = {}, authorize, None
    for _ in range(10):
        cookies = "; ".join(f"{k}={v}" for k, v in jar.items())
        if form:
            response = requests.post(url, data=form, headers={"Cookie": cookies}, allow_redirects=False, timeout=30)
        else:
            response = requests.get(url, headers={"Cookie": cookies}, allow_redirects=False, timeout=30)
        remember(jar, response)
        if response.status_code == 200 and not form:
            action, form = password_form(response.text)
            url = urllib.parse.urljoin(url, action)
            continue
        location = response.headers.get("Location")
        if not location:
            raise SystemExit(f"login failed: {response.status_code} {response.text[:200]}")
        location, form = urllib.parse.urljoin(url, location), None
        if location.startswith(redirect):
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
        url = location
    raise SystemExit("no code")


for _ in range(count):
    tokens = requests.post(f"{issuer}/token", auth=client, timeout=30, data={
        "grant_type": "authorization_code", "code": code(), "redirect_uri": redirect}).json()
    print(tokens["refresh_token"])
