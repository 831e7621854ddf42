"""Prints N refresh tokens for the quickstart's demo-web client: one password login, then
authorization codes from the SSO session, each exchanged for tokens. Used by bench/load."""

import re
import sys
import urllib.parse

import requests

issuer, username, password, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
redirect = "http://localhost:8000/callback"
authorize = (f"{issuer}/authorize?client_id=demo-web&response_type=code&scope=openid"
             f"&redirect_uri={urllib.parse.quote(redirect, safe='')}")
browser = requests.Session()


def code():
    url = authorize
    for _ in range(5):
        response = browser.get(url, allow_redirects=False, timeout=10)
        if response.status_code == 200:
            page = response.text
            fields = dict(re.findall(r'name="(login|csrf)" value="([^"]+)"', page))
            response = browser.post(f"{issuer}/login", allow_redirects=False, timeout=10, data=dict(
                fields, option="password", username=username, password=password))
        location = urllib.parse.urljoin(url, response.headers["Location"])
        if location.startswith(redirect):
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
        url = location
    raise SystemExit("no code")


for _ in range(count):
    tokens = requests.post(f"{issuer}/token", auth=("demo-web", "demo-web-secret-change-me"), timeout=10, data={
        "grant_type": "authorization_code", "code": code(), "redirect_uri": redirect}).json()
    print(tokens["refresh_token"])
