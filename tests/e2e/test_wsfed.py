"""WS-Federation passive sign-in: a relying party that reads the RSTR posted to its reply URL
and verifies the signed SAML 2.0 assertion in it with Debian's xmlsec1 against the
certificate of idflow's federation metadata, as a .NET or ADFS-era application would."""

import base64
import html
import pathlib
import re
import subprocess
import tempfile
import urllib.parse

import pytest
import requests

from conftest import ALICE, Browser, forms

REALM = "urn:intranet:realm"
REPLY = "http://localhost:8000/wsfed-reply"

CONFIG = f"""
[service_providers.intranet]
name = "Intranet"
entity_id = "{REALM}"
acs_urls = ["{REPLY}"]
attributes = {{ "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress" = "email", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name" = "username" }}
"""

pytestmark = pytest.mark.skipif(not pathlib.Path("/usr/bin/xmlsec1").exists(), reason="xmlsec1 is not installed (scripts/setup --e2e)")


@pytest.fixture
def server(make_server):
    return make_server(extra_config=CONFIG)


def sign_in(server, browser, **extra):
    query = urllib.parse.urlencode({"wa": "wsignin1.0", "wtrealm": REALM, **extra})
    page = browser.go(server.url(f"/wsfed?{query}"))
    assert not isinstance(page, str) and page.status_code == 200, page
    answer = browser.submit(page.text, "password", username=ALICE.username, password=ALICE.password)
    assert not isinstance(answer, str) and answer.status_code == 200, answer
    return forms(answer.text)[0]


def metadata_certificate(server):
    metadata = requests.get(server.url("/FederationMetadata/2007-06/FederationMetadata.xml"), timeout=10)
    assert metadata.status_code == 200 and "fed:SecurityTokenServiceType" in metadata.text, metadata.text
    assert f"<wsa:Address>{server.issuer}/wsfed</wsa:Address>" in metadata.text
    der = re.search(r"<ds:X509Certificate>([^<]+)</ds:X509Certificate>", metadata.text).group(1)
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(der[i:i + 64] for i in range(0, len(der), 64)) + "\n-----END CERTIFICATE-----\n"


def xmlsec_verifies(assertion, certificate):
    with tempfile.TemporaryDirectory() as folder:
        (pathlib.Path(folder) / "cert.pem").write_text(certificate)
        (pathlib.Path(folder) / "token.xml").write_text(assertion)
        result = subprocess.run(
            ["xmlsec1", "--verify", "--pubkey-cert-pem", f"{folder}/cert.pem",
             "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", f"{folder}/token.xml"],
            capture_output=True, text=True, timeout=30,
        )
        return result.returncode == 0


def assertion_of(wresult):
    match = re.search(r"<saml:Assertion\b.*</saml:Assertion>", wresult, re.S)
    assert match, wresult
    return match.group(0)


def test_sign_in_posts_a_signed_token_for_the_realm_to_the_reply_url(server):
    browser = Browser(server)
    form = sign_in(server, browser, wctx="rp-context-1")
    assert form["action"] == REPLY
    fields = form["fields"]
    assert fields["wa"] == "wsignin1.0" and fields["wctx"] == "rp-context-1", fields
    wresult = fields["wresult"]
    assert "<t:RequestSecurityTokenResponse" in wresult
    assert f"<wsa:Address>{REALM}</wsa:Address>" in wresult
    assertion = assertion_of(wresult)
    assert f"<saml:Audience>{REALM}</saml:Audience>" in assertion
    assert f'Recipient="{REPLY}"' in assertion
    assert "rsa-sha256" in assertion and "xmlenc#sha256" in assertion
    assert ALICE.email in assertion and ">alice<" in assertion
    certificate = metadata_certificate(server)
    assert xmlsec_verifies(assertion, certificate), "the token does not verify against the metadata"
    tampered = assertion.replace(ALICE.email, "mallory@example.com")
    assert not xmlsec_verifies(tampered, certificate), "a tampered token verified"


def test_a_second_relying_party_visit_is_single_sign_on(server):
    browser = Browser(server)
    sign_in(server, browser)
    query = urllib.parse.urlencode({"wa": "wsignin1.0", "wtrealm": REALM})
    again = browser.go(server.url(f"/wsfed?{query}"))
    assert not isinstance(again, str) and again.status_code == 200
    assert forms(again.text)[0]["action"] == REPLY, "answered without a login page"
    # wfresh=0 asks for a fresh sign-in.
    fresh = browser.go(server.url(f"/wsfed?{query}&wfresh=0"))
    assert any(f["fields"].get("option") == "password" for f in forms(fresh.text)), fresh.text


@pytest.mark.parametrize("query, complaint", [
    ({"wa": "wsignin1.0", "wtrealm": REALM, "wreply": "https://evil.example/steal"}, "not registered"),
    ({"wa": "wsignin1.0", "wtrealm": "urn:unknown"}, "not a registered relying party"),
    ({"wa": "wsignin1.0"}, "wtrealm"),
    ({"wa": "wattr1.0", "wtrealm": REALM}, "not supported"),
])
def test_bad_requests_get_a_page_and_nothing_is_posted(server, query, complaint):
    page = Browser(server).go(server.url("/wsfed?" + urllib.parse.urlencode(query)))
    assert not isinstance(page, str) and page.status_code == 400, page
    assert complaint in html.unescape(page.text), page.text
    assert not forms(page.text), "a page refusing a request posts nothing"


def test_sign_out_ends_the_session_and_returns_only_to_a_registered_reply(server):
    browser = Browser(server)
    sign_in(server, browser)
    out = browser.session.get(server.url("/wsfed?" + urllib.parse.urlencode({"wa": "wsignout1.0", "wreply": REPLY})),
                              allow_redirects=False, timeout=10)
    assert out.status_code in (302, 303) and out.headers["Location"] == REPLY
    query = urllib.parse.urlencode({"wa": "wsignin1.0", "wtrealm": REALM})
    page = browser.go(server.url(f"/wsfed?{query}"))
    assert any(f["fields"].get("option") == "password" for f in forms(page.text)), "still signed in"
    evil = browser.session.get(server.url("/wsfed?" + urllib.parse.urlencode({"wa": "wsignout1.0", "wreply": "https://evil.example/"})),
                               allow_redirects=False, timeout=10)
    assert evil.status_code == 200 and "signed out" in evil.text
