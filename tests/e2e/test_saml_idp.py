"""idflow as a SAML 2.0 identity provider, driven by a real service provider: pysaml2's
Saml2Client, configured here with idflow's metadata as served by the running IdP. pysaml2 makes
the AuthnRequests (HTTP-Redirect and HTTP-POST, unsigned and signed) and verifies every answer
as a strict SP would: the response's and the assertion's signatures (with xmlsec1), issuer,
destination, audience, InResponseTo and validity window.

A person at conftest's Browser carries each request to /saml2/sso, signs in with the password at
idflow's login page, and receives the page that posts SAMLResponse to the ACS URL.

Requests that cannot be trusted (unknown issuer, unregistered ACS URL, bad or missing signature,
a replay, a DOCTYPE, too large or badly encoded, too old) must each be a 4xx page for the person:
no login page, no 5xx, and nothing posted anywhere. Problems found after the SP and its ACS URL
are trusted (a NameID format that cannot be given) are SAML failure responses to the ACS."""

import base64
import datetime
import os
import pathlib
import re
import shutil
import tempfile
import urllib.parse
import zlib

import pytest
import requests
import saml2.response
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from saml2.response import StatusInvalidNameidPolicy, StatusNoPassive
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, NameID
from saml2.samlp import STATUS_PARTIAL_LOGOUT, STATUS_REQUEST_DENIED, STATUS_SUCCESS, Status, StatusCode
from saml2.sigver import RSACrypto, verify_redirect_signature
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

from conftest import USER_PASSWORD, Server, Browser, error_text, forms, query

XMLSEC = os.environ.get("IDFLOW_XMLSEC1", "/usr/bin/xmlsec1")

# The service providers (their addresses are never contacted: the browser stops at the form).
SP_A = "http://localhost:8000/sp-a"
ACS_A = "http://localhost:8000/sp-a/acs"
ACS_A2 = "http://localhost:8000/sp-a/acs-2"
SP_B = "http://localhost:8000/sp-b"
ACS_B = "http://localhost:8000/sp-b/acs"
SP_SIGNED = "http://localhost:8000/sp-signed"
ACS_SIGNED = "http://localhost:8000/sp-signed/acs"
# Signs with a 4096-bit key (Shibboleth's SP makes 3072-bit ones, many make 4096).
SP_LARGE_KEY = "http://localhost:8000/sp-large-key"
ACS_LARGE_KEY = "http://localhost:8000/sp-large-key/acs"

PASSWORD_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
EMAIL = "alice@example.com"
DISPLAY_NAME = "Alice Liddell"
ROLES = ["auditors", "staff"]


# The SP's signing credentials: the registered one and one idflow does not know.

class Credential:
    def __init__(self, directory, name, bits=2048):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self.key_file = pathlib.Path(directory) / f"{name}.key"
        self.cert_file = pathlib.Path(directory) / f"{name}.pem"
        self.key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        self.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    if not os.access(XMLSEC, os.X_OK):
        pytest.fail(f"no xmlsec1 at {XMLSEC}: pysaml2 verifies signatures with it "
                    "(apt-get install xmlsec1, or scripts/setup --e2e)", pytrace=False)
    directory = tmp_path_factory.mktemp("saml-sp")
    return {"registered": Credential(directory, "sp-signed"), "foreign": Credential(directory, "sp-foreign"),
            "large": Credential(directory, "sp-large-key", bits=4096)}


def idp_config(credentials):
    return f"""
[service_providers.sp-a]
name = "Service A"
entity_id = "{SP_A}"
acs_urls = ["{ACS_A}", "{ACS_A2}"]
attributes = {{ "mail" = "email", "displayName" = "name", "uid" = "username", "groups" = "roles" }}

[service_providers.sp-b]
entity_id = "{SP_B}"
acs_urls = ["{ACS_B}"]

[service_providers.sp-signed]
entity_id = "{SP_SIGNED}"
acs_urls = ["{ACS_SIGNED}"]
certificate_file = "{credentials['registered'].cert_file}"
require_signed_requests = true

[service_providers.sp-large-key]
entity_id = "{SP_LARGE_KEY}"
acs_urls = ["{ACS_LARGE_KEY}"]
certificate_file = "{credentials['large'].cert_file}"
require_signed_requests = true
"""


@pytest.fixture
def idp(credentials):
    """idflow with the three SPs and alice (email, display name, two roles), and `nomail`, a
    user without an email address. (conftest's make_server gives users no display name.)"""
    directory = tempfile.mkdtemp(prefix="idflow-e2e-saml-")
    server = Server(directory, idp_config(credentials))
    try:
        for role in ROLES:
            server.cli("role", "add", role)
        server.cli("user", "add", "alice", "--email", EMAIL, "--display-name", DISPLAY_NAME,
                   *[arg for role in ROLES for arg in ("--role", role)],
                   "--password-stdin", stdin=USER_PASSWORD + "\n")
        server.cli("user", "add", "nomail", "--password-stdin", stdin=USER_PASSWORD + "\n")
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# pysaml2 as the service provider.

class ServiceProvider:
    def __init__(self, idp, entity_id, acs_urls, credential=None, unsolicited=False):
        metadata = requests.get(idp.url("/saml2/metadata"), timeout=10)
        assert metadata.status_code == 200, metadata.text
        assert metadata.headers["Content-Type"].startswith("application/samlmetadata+xml")
        self.idp_entity_id = idp.url("/saml2/metadata")
        assert f'entityID="{self.idp_entity_id}"' in metadata.text, metadata.text
        sp = {
            "endpoints": {"assertion_consumer_service": [(url, BINDING_HTTP_POST) for url in acs_urls]},
            "want_response_signed": True,
            "want_assertions_signed": True,
            "authn_requests_signed": credential is not None,
            "allow_unsolicited": unsolicited,
        }
        config = {
            "entityid": entity_id,
            "xmlsec_binary": XMLSEC,
            "metadata": {"inline": [metadata.text]},
            "service": {"sp": sp},
            "allow_unknown_attributes": True,
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
            "accepted_time_diff": 5,
        }
        if credential:
            config["key_file"] = str(credential.key_file)
            config["cert_file"] = str(credential.cert_file)
        conf = SPConfig()
        conf.load(config)
        self.client = Saml2Client(conf)
        self.entity_id = entity_id

    def redirect(self, relay_state="", **kwargs):
        """An AuthnRequest over HTTP-Redirect: (request id, the URL of idflow's SSO endpoint)."""
        request_id, info = self.client.prepare_for_authenticate(
            entityid=self.idp_entity_id, relay_state=relay_state, binding=BINDING_HTTP_REDIRECT, **kwargs)
        return request_id, dict(info["headers"])["Location"]

    def post(self, relay_state="", **kwargs):
        """An AuthnRequest over HTTP-POST: (request id, the form pysaml2 would have the browser
        post: its action and fields)."""
        request_id, binding, info = self.client.prepare_for_negotiated_authenticate(
            entityid=self.idp_entity_id, relay_state=relay_state, binding=BINDING_HTTP_POST, **kwargs)
        assert binding == BINDING_HTTP_POST
        (form,) = forms(info["data"])
        return request_id, form

    def accept(self, answer, request_id=None):
        """pysaml2's verdict on the posted answer (signatures, issuer, audience, destination,
        InResponseTo, times): the verified AuthnResponse."""
        outstanding = {request_id: "/"} if request_id else {}
        response = self.client.parse_authn_request_response(
            answer["fields"]["SAMLResponse"], BINDING_HTTP_POST, outstanding=outstanding)
        assert response is not None, "pysaml2 could not read the response"
        return response


def sp_a(idp, **kwargs):
    return ServiceProvider(idp, SP_A, [ACS_A, ACS_A2], **kwargs)


def sp_b(idp, **kwargs):
    return ServiceProvider(idp, SP_B, [ACS_B], **kwargs)


def sp_signed(idp, credentials, credential="registered", **kwargs):
    return ServiceProvider(idp, SP_SIGNED, [ACS_SIGNED], credential=credentials[credential], **kwargs)


def sp_large_key(idp, credentials):
    return ServiceProvider(idp, SP_LARGE_KEY, [ACS_LARGE_KEY], credential=credentials["large"])


# The browser's side.

def login_page(page):
    assert not isinstance(page, str), f"expected idflow's login page, got a redirect to {page}"
    assert page.status_code == 200, f"{page.status_code}: {error_text(page.text) or page.text}"
    assert 'name="password"' in page.text, f"expected the password form, got:\n{page.text}"
    return page


def autopost(page, acs_url):
    """The form posting SAMLResponse to `acs_url` on the page idflow answered with."""
    assert not isinstance(page, str), f"expected the page posting to the ACS, got a redirect to {page}"
    assert page.status_code == 200, f"{page.status_code}: {error_text(page.text) or page.text}"
    posted = [f for f in forms(page.text) if "SAMLResponse" in f["fields"]]
    assert len(posted) == 1, f"expected one form with SAMLResponse, got:\n{page.text}"
    form = posted[0]
    assert form["action"] == acs_url, form["action"]
    # The page may send its form to the ACS origin only.
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(acs_url))
    assert f"form-action {origin}" in page.headers.get("Content-Security-Policy", ""), page.headers
    return form


def sign_in(browser, start, acs_url, username="alice"):
    """Follows `start` (a URL, or (action, fields) to post) to the login page, signs in with the
    password and returns the form idflow posts to the ACS."""
    page = browser.go(start) if isinstance(start, str) else browser.go(start[0], "POST", start[1])
    page = login_page(page)
    return autopost(browser.submit(page.text, "password", username=username, password=USER_PASSWORD), acs_url)


def refused(page, *why, status=400):
    """A page for the person refusing the request: `status`, no login form, nothing posted to
    any address, and the reason in the text."""
    assert not isinstance(page, str), f"expected a refusal page, got a redirect to {page}"
    assert page.status_code == status, f"expected {status}, got {page.status_code}: {page.text[:2000]}"
    assert 'name="password"' not in page.text, "a login page was shown for a refused request"
    assert "SAMLResponse" not in page.text, f"something was posted for a refused request:\n{page.text}"
    assert not [f for f in forms(page.text) if f["action"] and f["action"].startswith("http")], page.text
    text = error_text(page.text) or ""
    for fragment in why:
        assert fragment.lower() in text.lower(), f"expected {fragment!r} in the error, got {text!r}"
    return text


def attributes(response):
    """The assertion's attributes, name → values, as sent (before pysaml2's name mapping)."""
    out = {}
    for statement in response.assertion.attribute_statement:
        for attribute in statement.attribute:
            out[attribute.name] = [value.text for value in attribute.attribute_value]
    return out


def check_success(response, sp, acs_url, request_id):
    """What every successful answer to `request_id` (None: unsolicited) must say."""
    assertion = response.assertion
    assert response.response.issuer.text == sp.idp_entity_id
    assert assertion.issuer.text == sp.idp_entity_id
    assert response.response.destination == acs_url
    assert response.response.in_response_to == request_id
    confirmation = assertion.subject.subject_confirmation[0]
    assert confirmation.method == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
    assert confirmation.subject_confirmation_data.in_response_to == request_id
    assert confirmation.subject_confirmation_data.recipient == acs_url
    audiences = [a.text for r in assertion.conditions.audience_restriction for a in r.audience]
    assert audiences == [sp.entity_id], audiences
    (statement,) = assertion.authn_statement
    assert statement.authn_context.authn_context_class_ref.text == PASSWORD_CONTEXT
    # Both signed (want_response_signed and want_assertions_signed made pysaml2 verify both).
    assert response.response.signature is not None and assertion.signature is not None
    for signature in (response.response.signature, assertion.signature):
        assert signature.signed_info.signature_method.algorithm == SIG_RSA_SHA256
        assert signature.signed_info.reference[0].digest_method.algorithm == DIGEST_SHA256


def now_instant(offset=0):
    """SAML's time format, `offset` seconds from now."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# 1. SP-initiated single sign-on.

def test_redirect_binding_signs_in_with_a_persistent_subject_and_the_mapped_attributes(idp):
    sp = sp_a(idp)
    request_id, url = sp.redirect(relay_state="/after/login?x=1")
    assert url.startswith(idp.url("/saml2/sso?SAMLRequest="))
    answer = sign_in(Browser(idp), url, ACS_A)
    assert answer["fields"]["RelayState"] == "/after/login?x=1"

    response = sp.accept(answer, request_id)
    check_success(response, sp, ACS_A, request_id)
    name_id = response.name_id
    assert name_id.format == NAMEID_FORMAT_PERSISTENT
    # Opaque: not the username, the email or anything else the SP learns from the attributes.
    assert name_id.text and name_id.text not in ("alice", EMAIL, DISPLAY_NAME), name_id.text
    assert "alice" not in name_id.text.lower()
    assert attributes(response) == {
        "mail": [EMAIL], "displayName": [DISPLAY_NAME], "uid": ["alice"], "groups": ROLES,
    }, attributes(response)


def test_post_binding_gives_the_same_subject_and_another_sp_another_one(idp):
    sp = sp_a(idp)
    first_id, url = sp.redirect()
    first = sp.accept(sign_in(Browser(idp), url, ACS_A), first_id)

    # A second login, in another browser, over HTTP-POST.
    request_id, form = sp.post(relay_state="post-state")
    assert form["action"] == idp.url("/saml2/sso")
    browser = Browser(idp)
    answer = sign_in(browser, (form["action"], form["fields"]), ACS_A)
    assert answer["fields"]["RelayState"] == "post-state"
    second = sp.accept(answer, request_id)
    check_success(second, sp, ACS_A, request_id)
    assert second.name_id.format == NAMEID_FORMAT_PERSISTENT
    assert second.name_id.text == first.name_id.text, "the persistent NameID is not stable"

    # Service B in the same browser: single sign-on (no login page), a different pairwise
    # subject, B's audience, and B's default attributes.
    other = sp_b(idp)
    request_id, url = other.redirect()
    page = browser.go(url)
    answer = autopost(page, ACS_B)
    at_b = other.accept(answer, request_id)
    check_success(at_b, other, ACS_B, request_id)
    assert at_b.name_id.format == NAMEID_FORMAT_PERSISTENT
    assert at_b.name_id.text != first.name_id.text, "the persistent NameID links the user across SPs"
    assert attributes(at_b) == {"email": [EMAIL], "name": [DISPLAY_NAME], "username": ["alice"], "roles": ROLES}


def test_a_registered_second_acs_url_is_answered_there_by_url_or_index(idp):
    sp = sp_a(idp)
    request_id, url = sp.redirect(assertion_consumer_service_url=ACS_A2)
    response = sp.accept(sign_in(Browser(idp), url, ACS_A2), request_id)
    check_success(response, sp, ACS_A2, request_id)

    request_id, url = sp.redirect(assertion_consumer_service_index="1")
    assert "AssertionConsumerServiceIndex" in zlib.decompress(
        base64.b64decode(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["SAMLRequest"][0]), -15).decode()
    response = sp.accept(sign_in(Browser(idp), url, ACS_A2), request_id)
    check_success(response, sp, ACS_A2, request_id)

    _, url = sp.redirect(assertion_consumer_service_index="7")
    refused(Browser(idp).go(url), "index 7")


def test_single_sign_on_force_authn_and_is_passive(idp):
    sp = sp_a(idp)
    # IsPassive without a session: a NoPassive failure at the ACS, and no login page.
    request_id, url = sp.redirect(is_passive="true")
    browser = Browser(idp)
    with pytest.raises(StatusNoPassive):
        sp.accept(autopost(browser.go(url), ACS_A), request_id)

    request_id, url = sp.redirect()
    first = sp.accept(sign_in(browser, url, ACS_A), request_id)
    # With the session: IsPassive succeeds without interaction, with the same subject.
    request_id, url = sp.redirect(is_passive="true")
    passive = sp.accept(autopost(browser.go(url), ACS_A), request_id)
    check_success(passive, sp, ACS_A, request_id)
    assert passive.name_id.text == first.name_id.text
    # ForceAuthn: the password is asked again despite the session.
    request_id, url = sp.redirect(force_authn="true")
    forced = sp.accept(sign_in(browser, url, ACS_A), request_id)
    check_success(forced, sp, ACS_A, request_id)
    assert forced.name_id.text == first.name_id.text


def test_a_relay_state_over_1024_bytes_is_refused(idp):
    sp = sp_a(idp)
    _, url = sp.redirect(relay_state="r" * 1025)
    refused(Browser(idp).go(url), "RelayState")
    _, form = sp.post(relay_state="r" * 1025)
    refused(Browser(idp).go(form["action"], "POST", form["fields"]), "RelayState")


def test_a_response_altered_after_signing_is_refused_by_the_sp(idp):
    # The signatures cover what the SP reads: another subject spliced in does not verify.
    sp = sp_a(idp)
    request_id, url = sp.redirect()
    answer = sign_in(Browser(idp), url, ACS_A)
    xml = base64.b64decode(answer["fields"]["SAMLResponse"]).decode()
    altered = re.sub(r"(<saml:AttributeValue[^>]*>)alice(</saml:AttributeValue>)", r"\1mallory\2", xml)
    assert altered != xml
    answer["fields"]["SAMLResponse"] = base64.b64encode(altered.encode()).decode()
    with pytest.raises(Exception) as error:
        sp.accept(answer, request_id)
    assert "signature" in str(error.value).lower() or "Signature" in type(error.value).__name__, error.value


# 2. Signed requests.

def test_signed_redirect_requests_verify_and_tampered_or_unsigned_ones_are_refused(idp, credentials):
    sp = sp_signed(idp, credentials)
    request_id, url = sp.redirect(relay_state="signed-state", sign=True, sigalg=SIG_RSA_SHA256)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["SigAlg"] == [SIG_RSA_SHA256] and "Signature" in query

    # The same request with one byte of the signature changed.
    signature = bytearray(base64.b64decode(query["Signature"][0]))
    signature[10] ^= 0x01
    tampered = re.sub(r"Signature=[^&]+",
                      "Signature=" + urllib.parse.quote_plus(base64.b64encode(bytes(signature)).decode()), url)
    refused(Browser(idp).go(tampered), "signature")
    # The same request without its signature.
    unsigned = re.sub(r"&(SigAlg|Signature)=[^&]+", "", url)
    assert "Signature" not in unsigned and "SAMLRequest=" in unsigned
    refused(Browser(idp).go(unsigned), "signature")
    # The same request with another RelayState than the one signed.
    refused(Browser(idp).go(url.replace("RelayState=signed-state", "RelayState=other-state")), "signature")

    # The request as signed: the refusals above did not use it up.
    answer = sign_in(Browser(idp), url, ACS_SIGNED)
    assert answer["fields"]["RelayState"] == "signed-state"
    check_success(sp.accept(answer, request_id), sp, ACS_SIGNED, request_id)


def test_a_request_signed_with_another_key_is_refused(idp, credentials):
    sp = sp_signed(idp, credentials, credential="foreign")
    _, url = sp.redirect(sign=True, sigalg=SIG_RSA_SHA256)
    refused(Browser(idp).go(url), "signature")
    _, form = sp.post(sign=True, sigalg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    refused(Browser(idp).go(form["action"], "POST", form["fields"]), "signature")


def test_unsigned_requests_of_an_sp_that_signs_are_refused(idp, credentials):
    sp = sp_signed(idp, credentials)
    _, url = sp.redirect(sign=False)
    refused(Browser(idp).go(url), "signature")
    _, form = sp.post(sign=False)
    refused(Browser(idp).go(form["action"], "POST", form["fields"]), "signature")


@pytest.mark.parametrize("key", ["2048", "4096"])
def test_signed_post_requests_verify_and_altered_ones_are_refused(idp, credentials, key):
    sp, acs_url = (sp_signed(idp, credentials), ACS_SIGNED) if key == "2048" else (sp_large_key(idp, credentials), ACS_LARGE_KEY)
    request_id, form = sp.post(relay_state="signed-post", sign=True, sigalg=SIG_RSA_SHA256,
                               digest_alg=DIGEST_SHA256)
    xml = base64.b64decode(form["fields"]["SAMLRequest"]).decode()
    assert ":Signature " in xml and SIG_RSA_SHA256 in xml, xml

    # Altered after signing (ForceAuthn added): the enveloped signature no longer verifies.
    altered = re.sub(r"<(\w+:)?AuthnRequest ", lambda m: f'<{m.group(1) or ""}AuthnRequest ForceAuthn="true" ', xml, count=1)
    assert altered != xml
    fields = dict(form["fields"], SAMLRequest=base64.b64encode(altered.encode()).decode())
    refused(Browser(idp).go(form["action"], "POST", fields), "signature")

    answer = sign_in(Browser(idp), (form["action"], form["fields"]), acs_url)
    assert answer["fields"]["RelayState"] == "signed-post"
    check_success(sp.accept(answer, request_id), sp, acs_url, request_id)


def test_a_redirect_request_signed_with_rsa_sha1_is_refused(idp, credentials):
    sp = sp_signed(idp, credentials)
    _, url = sp.redirect(sign=True, sigalg=SIG_RSA_SHA1)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["SigAlg"] == [SIG_RSA_SHA1]
    refused(Browser(idp).go(url), "RSA-SHA256")


def signed_post_request(sp, idp, **kwargs):
    """A signed AuthnRequest (XML text) made by pysaml2 with RSA-SHA256 over SHA-256."""
    request_id, xml = sp.client.create_authn_request(
        kwargs.pop("destination", idp.url("/saml2/sso")), binding=BINDING_HTTP_POST, sign=True,
        sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256, **kwargs)
    return request_id, str(xml)


@pytest.mark.parametrize("binding", ["post", "redirect"])
def test_a_signed_request_addressed_to_another_idp_is_refused(idp, credentials, binding):
    # SAML Bindings 3.4.5.2/3.5.5.2: a signed message's Destination MUST be checked against
    # where it arrived, or a request an SP signed for another IdP can be replayed here.
    sp = sp_signed(idp, credentials)
    elsewhere = "https://other-idp.example/saml2/sso"
    if binding == "post":
        _, xml = signed_post_request(sp, idp, destination=elsewhere)
        assert f'Destination="{elsewhere}"' in xml
        page = Browser(idp).go(idp.url("/saml2/sso"), "POST", {"SAMLRequest": base64.b64encode(xml.encode()).decode()})
    else:
        _, request = sp.client.create_authn_request(elsewhere, binding=BINDING_HTTP_POST)
        info = sp.client.apply_binding(BINDING_HTTP_REDIRECT, str(request), idp.url("/saml2/sso"), "",
                                       sign=True, sigalg=SIG_RSA_SHA256)
        url = dict(info["headers"])["Location"]
        assert url.startswith(idp.url("/saml2/sso?")) and "Signature=" in url
        page = Browser(idp).go(url)
    text = refused(page).lower()
    assert "destination" in text or "addressed" in text, text


def test_a_wrapped_signed_request_never_answers_at_the_unsigned_acs_url(idp, credentials):
    # Signature wrapping: the signed request inside an unsigned one that names another ACS URL
    # (and another id). Either refused, or read as the signed request alone.
    sp = sp_signed(idp, credentials)
    request_id, signed = signed_post_request(sp, idp)
    inner = re.sub(r"^<\?xml[^>]*>\s*", "", signed)
    wrapper = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_wrapper" Version="2.0" '
        f'IssueInstant="{now_instant()}" AssertionConsumerServiceURL="http://evil.example/acs">'
        f'<saml:Issuer>{SP_SIGNED}</saml:Issuer><samlp:Extensions>{inner}</samlp:Extensions>'
        '</samlp:AuthnRequest>'
    )
    browser = Browser(idp)
    page = browser.go(idp.url("/saml2/sso"), "POST", {"SAMLRequest": base64.b64encode(wrapper.encode()).decode()})
    assert not isinstance(page, str) and "evil.example" not in page.text, page
    if page.status_code == 400:
        refused(page)
        return
    answer = autopost(browser.submit(login_page(page).text, "password", username="alice", password=USER_PASSWORD),
                      ACS_SIGNED)
    check_success(sp.accept(answer, request_id), sp, ACS_SIGNED, request_id)


def test_the_relay_state_is_posted_back_escaped(idp):
    sp = sp_a(idp)
    relay_state = '"><script>alert(1)</script><input name="SAMLResponse" value="x'
    browser = Browser(idp)
    request_id, url = sp.redirect(relay_state=relay_state)
    page = browser.submit(login_page(browser.go(url)).text, "password", username="alice", password=USER_PASSWORD)
    assert "<script>alert(1)" not in page.text
    answer = autopost(page, ACS_A)
    assert answer["fields"]["RelayState"] == relay_state
    check_success(sp.accept(answer, request_id), sp, ACS_A, request_id)


# 3. IdP-initiated.

def test_idp_initiated_sign_in_is_accepted_unsolicited_with_the_relay_state(idp):
    sp = sp_a(idp, unsolicited=True)
    answer = sign_in(Browser(idp), idp.url("/saml2/sso?sp=sp-a&RelayState=x"), ACS_A)
    assert answer["fields"]["RelayState"] == "x"
    response = sp.accept(answer)
    check_success(response, sp, ACS_A, None)
    assert response.name_id.format == NAMEID_FORMAT_PERSISTENT
    assert attributes(response)["uid"] == ["alice"]

    # An SP that does not accept unsolicited responses refuses it (pysaml2 does its part).
    strict = sp_a(idp)
    answer = sign_in(Browser(idp), idp.url("/saml2/sso?sp=sp-a"), ACS_A)
    assert "RelayState" not in answer["fields"]
    with pytest.raises(Exception, match="(?i)unsolicited"):
        strict.accept(answer)


def test_idp_initiated_for_an_unknown_sp_is_refused(idp):
    refused(Browser(idp).go(idp.url("/saml2/sso?sp=nobody&RelayState=x")), "not a registered service provider")
    refused(Browser(idp).go(idp.url("/saml2/sso")), "no SAMLRequest")


# 4. Requests that must be refused before anything is posted.

def test_an_unregistered_acs_url_is_refused(idp):
    sp = sp_a(idp)
    for url in ("http://evil.example/acs", ACS_B, ACS_A + "/", ACS_A + "?x=1"):
        _, start = sp.redirect(assertion_consumer_service_url=url)
        refused(Browser(idp).go(start), "not registered")
        _, form = sp.post(assertion_consumer_service_url=url)
        page = Browser(idp).go(form["action"], "POST", form["fields"])
        refused(page, "not registered")


def test_an_unknown_issuer_is_refused(idp):
    stranger = ServiceProvider(idp, "http://localhost:8000/stranger", ["http://localhost:8000/stranger/acs"])
    _, url = stranger.redirect()
    refused(Browser(idp).go(url), "not a registered service provider")
    _, form = stranger.post()
    refused(Browser(idp).go(form["action"], "POST", form["fields"]), "not a registered service provider")


def test_a_replayed_request_is_refused(idp):
    sp = sp_a(idp)
    request_id, url = sp.redirect(relay_state="once")
    first = Browser(idp)
    page = login_page(first.go(url))
    # The exact same query again, in another browser and in the same one: refused.
    refused(Browser(idp).go(url), "already used")
    refused(first.go(url), "already used")
    # The first login still completes.
    answer = autopost(first.submit(page.text, "password", username="alice", password=USER_PASSWORD), ACS_A)
    check_success(sp.accept(answer, request_id), sp, ACS_A, request_id)

    # Over HTTP-POST too.
    _, form = sp.post()
    login_page(Browser(idp).go(form["action"], "POST", form["fields"]))
    refused(Browser(idp).go(form["action"], "POST", form["fields"]), "already used")


def hand_request(issuer=SP_A, acs=ACS_A, issue_instant=None, request_id="_hand1", prolog="", issuer_text=None):
    return (
        f'{prolog}<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{request_id}" Version="2.0" '
        f'IssueInstant="{issue_instant or now_instant()}" AssertionConsumerServiceURL="{acs}" '
        f'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f'<saml:Issuer>{issuer_text or issuer}</saml:Issuer></samlp:AuthnRequest>'
    )


def redirect_value(xml):
    """Raw DEFLATE, then base64 (the HTTP-Redirect encoding)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(compressor.compress(xml.encode()) + compressor.flush()).decode()


def send_redirect(idp, value, **extra):
    query = urllib.parse.urlencode({"SAMLRequest": value, **extra})
    return Browser(idp).go(idp.url(f"/saml2/sso?{query}"))


def send_post(idp, value, **extra):
    return Browser(idp).go(idp.url("/saml2/sso"), "POST", {"SAMLRequest": value, **extra})


def test_a_hand_built_request_is_accepted(idp):
    # The control for the hand-built requests below: as it is, it reaches the login page.
    login_page(send_redirect(idp, redirect_value(hand_request(request_id="_hand-redirect"))))
    login_page(send_post(idp, base64.b64encode(hand_request(request_id="_hand-post").encode()).decode()))


@pytest.mark.parametrize("doctype", [
    # The issuer comes from an internal entity: a parser that expanded it would trust it.
    f'<!DOCTYPE samlp:AuthnRequest [<!ENTITY issuer "{SP_A}">]>',
    # An external entity (XXE).
    '<!DOCTYPE samlp:AuthnRequest [<!ENTITY issuer SYSTEM "file:///etc/passwd">]>',
    # Billion laughs, in miniature.
    '<!DOCTYPE samlp:AuthnRequest [<!ENTITY a "aaaaaaaaaa"><!ENTITY issuer "&a;&a;&a;&a;&a;&a;&a;">]>',
])
def test_a_doctype_or_entity_is_refused(idp, doctype):
    prolog = '<?xml version="1.0" encoding="UTF-8"?>' + doctype
    for number, send, encode in (
        (1, send_redirect, redirect_value),
        (2, send_post, lambda xml: base64.b64encode(xml.encode()).decode()),
    ):
        xml = hand_request(request_id=f"_doctype{number}", prolog=prolog, issuer_text="&issuer;")
        text = refused(send(idp, encode(xml)), "DOCTYPE")
        assert "root:" not in text


def padded_request(request_id, size):
    """A hand-built request carrying a comment of `size` bytes."""
    return hand_request(request_id=request_id).replace(
        "</samlp:AuthnRequest>", "<!--" + "x" * size + "--></samlp:AuthnRequest>")


def test_an_oversized_request_is_refused(idp):
    big = padded_request("_big", 300_000)
    # HTTP-POST: ~400 KB of form, refused unread (the body limit's 413, or a 400 page).
    posted = send_post(idp, base64.b64encode(big.encode()).decode())
    assert not isinstance(posted, str) and posted.status_code in (400, 413), posted
    assert "SAMLResponse" not in posted.text and 'name="password"' not in posted.text
    if posted.status_code == 400:
        refused(posted)
    # HTTP-Redirect: ~300 KB of URL, refused by the HTTP server (414) or as a page.
    redirected = send_redirect(idp, base64.b64encode(os.urandom(225_000)).decode())
    assert not isinstance(redirected, str) and redirected.status_code in (400, 414), redirected
    assert "SAMLResponse" not in redirected.text and 'name="password"' not in redirected.text
    # A 1 KB query that inflates to 300 KB (a compression bomb): refused as too large.
    value = redirect_value(big)
    assert len(value) < 4096
    refused(send_redirect(idp, value), "larger than")
    # The control: a 16 KB request (the size of one signed with a certificate chain) is read.
    login_page(send_post(idp, base64.b64encode(padded_request("_mid-post", 16_000).encode()).decode()))
    login_page(send_redirect(idp, redirect_value(padded_request("_mid-redirect", 16_000))))


@pytest.mark.parametrize("send,value,why", [
    (send_redirect, "%%%not base64!!!", "not base64"),
    (send_redirect, base64.b64encode(b"<samlp:AuthnRequest/> not deflated").decode(), "not DEFLATE"),
    (send_redirect, base64.b64encode(b"\x00\x01\x02garbage").decode(), ""),
    (send_post, "%%%not base64!!!", "not base64"),
    (send_post, base64.b64encode(b"\xff\xfe\x00not UTF-8").decode(), "UTF-8"),
    (send_post, base64.b64encode(b"<samlp:AuthnRequest").decode(), "malformed"),
    (send_post, base64.b64encode(b"<x>not a request</x>").decode(), "malformed"),
], ids=["redirect-not-base64", "redirect-not-deflate", "redirect-garbage", "post-not-base64",
        "post-not-utf8", "post-truncated-xml", "post-not-a-request"])
def test_a_badly_encoded_request_is_refused(idp, send, value, why):
    refused(send(idp, value), why)


@pytest.mark.parametrize("offset,binding", [(-3600, "redirect"), (-3600, "post"), (3600, "redirect")])
def test_a_request_an_hour_old_or_from_the_future_is_refused(idp, offset, binding):
    xml = hand_request(request_id=f"_stale{offset}{binding}", issue_instant=now_instant(offset))
    if binding == "redirect":
        page = send_redirect(idp, redirect_value(xml))
    else:
        page = send_post(idp, base64.b64encode(xml.encode()).decode())
    refused(page, "too long ago")


def test_a_pysaml2_request_with_an_old_issue_instant_is_refused(idp):
    sp = sp_a(idp)
    _, request = sp.client.create_authn_request(idp.url("/saml2/sso"), binding=BINDING_HTTP_POST)
    request.issue_instant = now_instant(-3600)
    info = sp.client.apply_binding(BINDING_HTTP_REDIRECT, str(request), idp.url("/saml2/sso"), "")
    refused(Browser(idp).go(dict(info["headers"])["Location"]), "too long ago")


# 5. NameID formats.

def test_the_email_name_id_format_gives_the_email(idp):
    sp = sp_a(idp)
    request_id, url = sp.redirect(nameid_format=NAMEID_FORMAT_EMAILADDRESS)
    response = sp.accept(sign_in(Browser(idp), url, ACS_A), request_id)
    check_success(response, sp, ACS_A, request_id)
    assert response.name_id.format == NAMEID_FORMAT_EMAILADDRESS
    assert response.name_id.text == EMAIL


def test_transient_name_ids_differ_every_time(idp):
    sp = sp_a(idp)
    seen = []
    browser = Browser(idp)
    for number in range(2):
        request_id, url = sp.redirect(nameid_format=NAMEID_FORMAT_TRANSIENT)
        # The first signs in; the second is single sign-on in the same browser.
        answer = sign_in(browser, url, ACS_A) if number == 0 else autopost(browser.go(url), ACS_A)
        response = sp.accept(answer, request_id)
        assert response.name_id.format == NAMEID_FORMAT_TRANSIENT
        seen.append(response.name_id.text)
    assert seen[0] != seen[1] and "alice" not in seen


def test_a_name_id_format_that_cannot_be_given_is_a_saml_failure_at_the_acs(idp):
    sp = sp_a(idp)
    # A format idflow does not offer: a failure posted to the (registered) ACS, no login.
    request_id, url = sp.redirect(nameid_format="urn:oasis:names:tc:SAML:2.0:nameid-format:kerberos")
    answer = autopost(Browser(idp).go(url), ACS_A)
    with pytest.raises(StatusInvalidNameidPolicy):
        sp.accept(answer, request_id)
    # The email format for a user without an email address: a failure after the login.
    request_id, url = sp.redirect(nameid_format=NAMEID_FORMAT_EMAILADDRESS)
    answer = sign_in(Browser(idp), url, ACS_A, username="nomail")
    with pytest.raises(StatusInvalidNameidPolicy):
        sp.accept(answer, request_id)


# 6. Single Logout (HTTP-Redirect, /saml2/slo): pysaml2 SPs with a Single Logout service.

SLO_A = "http://localhost:8000/sp-a/slo"
SLO_B = "http://localhost:8000/sp-b/slo"
SLO_SIGNED = "http://localhost:8000/sp-signed/slo"
# An SP whose metadata sends logout responses elsewhere than requests (ResponseLocation).
SP_C = "http://localhost:8000/sp-c"
ACS_C = "http://localhost:8000/sp-c/acs"
SLO_C = "http://localhost:8000/sp-c/slo"
SLO_C_RESPONSES = "http://localhost:8000/sp-c/slo-responses"
# An SP without a Single Logout service.
SP_NO_SLO = "http://localhost:8000/sp-no-slo"
ACS_NO_SLO = "http://localhost:8000/sp-no-slo/acs"
SESSION_COOKIE = "idflow_session"


def slo_sp_settings(entity_id, acs_url, slo_url, credential=None):
    """pysaml2's SP configuration with an HTTP-Redirect Single Logout service."""
    config = {
        "entityid": entity_id,
        "xmlsec_binary": XMLSEC,
        "service": {"sp": {
            "endpoints": {
                "assertion_consumer_service": [(acs_url, BINDING_HTTP_POST)],
                "single_logout_service": [(slo_url, BINDING_HTTP_REDIRECT)],
            },
            "want_response_signed": True,
            "want_assertions_signed": True,
            "authn_requests_signed": credential is not None,
            "logout_requests_signed": credential is not None,
            "allow_unsolicited": False,
        }},
        "allow_unknown_attributes": True,
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "accepted_time_diff": 5,
    }
    if credential:
        config["key_file"] = str(credential.key_file)
        config["cert_file"] = str(credential.cert_file)
    return config


class LogoutServiceProvider(ServiceProvider):
    """A pysaml2 SP (as ServiceProvider) that also has a Single Logout service."""

    def __init__(self, idp, entity_id, acs_url, slo_url, credential=None):
        metadata = requests.get(idp.url("/saml2/metadata"), timeout=10)
        assert metadata.status_code == 200, metadata.text
        self.idp_entity_id = idp.url("/saml2/metadata")
        self.idp_slo = idp.url("/saml2/slo")
        self.entity_id, self.acs_url, self.slo_url = entity_id, acs_url, slo_url
        config = slo_sp_settings(entity_id, acs_url, slo_url, credential)
        config["metadata"] = {"inline": [metadata.text]}
        conf = SPConfig()
        conf.load(config)
        self.client = Saml2Client(conf)

    def start(self):
        """An AuthnRequest over HTTP-Redirect (signed when this SP signs): (its id, the URL)."""
        signing = {"sign": True, "sigalg": SIG_RSA_SHA256} if self.client.logout_requests_signed else {}
        return self.redirect(**signing)

    def sign_in(self, browser, silently=False):
        """SSO in `browser` (with the password, or by single sign-on when `silently`): the
        verified AuthnResponse, which pysaml2 also remembers for its logout."""
        request_id, url = self.start()
        answer = autopost(browser.go(url), self.acs_url) if silently else sign_in(browser, url, self.acs_url)
        response = self.accept(answer, request_id)
        check_success(response, self, self.acs_url, request_id)
        return response

    def logout_request(self, name_id, relay_state="sp-relay", sign=None, session_index=None,
                       destination=None, issue_instant=None):
        """A LogoutRequest over HTTP-Redirect to idflow's /saml2/slo: (its id, the URL)."""
        request_id, request = self.client.create_logout_request(
            destination or self.idp_slo, self.idp_entity_id, name_id=name_id,
            session_indexes=[session_index] if session_index else None, sign=False)
        if issue_instant:
            request.issue_instant = issue_instant
        sign = self.client.logout_requests_signed if sign is None else sign
        info = self.client.apply_binding(BINDING_HTTP_REDIRECT, str(request), self.idp_slo, relay_state,
                                         sign=sign, sigalg=SIG_RSA_SHA256)
        url = dict(info["headers"])["Location"]
        assert url.startswith(self.idp_slo + "?SAMLRequest=") and ("Signature=" in url) == bool(sign), url
        return request_id, url

    def message(self, url, parameter, to=None):
        """The query of a Redirect-binding message idflow sent to this SP's SLO service (or
        `to`), after checking its RSA-SHA256 signature with idflow's metadata certificate."""
        assert isinstance(url, str), f"expected a redirect to the SP, got a page: {getattr(url, 'status_code', '')} " \
                                     f"{error_text(url.text) if hasattr(url, 'text') else url}"
        to = to or self.slo_url
        assert url.startswith(f"{to}?{parameter}="), f"expected a {parameter} to {to}, got {url}"
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))
        assert params.get("SigAlg") == SIG_RSA_SHA256, params
        certificates = [c for _, c in self.client.metadata.certs(self.idp_entity_id, "idpsso", "signing")]
        assert certificates

        def verifies(message):
            return any(verify_redirect_signature(message, RSACrypto(None), cert) for cert in certificates)

        assert verifies(params), f"idflow's query signature does not verify: {url}"
        # The control: one byte of the signature changed, or another RelayState, does not.
        signature = bytearray(base64.b64decode(params["Signature"]))
        signature[7] ^= 0x01
        assert not verifies(dict(params, Signature=base64.b64encode(bytes(signature)).decode()))
        assert not verifies(dict(params, RelayState=params.get("RelayState", "") + "x"))
        return params

    def logout_response(self, url, request_id, relay_state=None, to=None):
        """The verified LogoutResponse idflow sent for `request_id`."""
        params = self.message(url, "SAMLResponse", to)
        assert params.get("RelayState") == relay_state, params
        response = self.client.parse_logout_request_response(params["SAMLResponse"], BINDING_HTTP_REDIRECT)
        assert response is not None, "pysaml2 could not read the LogoutResponse"
        assert response.response.issuer.text == self.idp_entity_id
        assert response.response.destination == (to or self.slo_url)
        assert response.response.in_response_to == request_id
        return response

    def answer_logout(self, url, name_id, status_ok=True):
        """Reads idflow's LogoutRequest for `name_id` (the NameID this SP got), logs out locally
        (pysaml2's handle_logout_request) and returns (the request, the URL that carries the
        LogoutResponse back to idflow with the RelayState)."""
        params = self.message(url, "SAMLRequest")
        assert params.get("RelayState"), f"no RelayState (the chain token) in {url}"
        request = self.client.parse_logout_request(params["SAMLRequest"], BINDING_HTTP_REDIRECT)
        assert request is not None
        message = request.message
        assert message.issuer.text == self.idp_entity_id
        assert message.destination == self.slo_url
        assert message.name_id.text == name_id.text and message.name_id.format == name_id.format, message.name_id
        if status_ok:
            info = self.client.handle_logout_request(params["SAMLRequest"], name_id, BINDING_HTTP_REDIRECT,
                                                     relay_state=params["RelayState"])
            back = dict(info["headers"])["Location"]
        else:
            response = self.client.create_logout_response(
                message, bindings=[BINDING_HTTP_REDIRECT],
                status=Status(status_code=StatusCode(value=STATUS_REQUEST_DENIED)))
            rinfo = self.client.response_args(message, [BINDING_HTTP_REDIRECT])
            info = self.client.apply_binding(BINDING_HTTP_REDIRECT, response, rinfo["destination"],
                                             params["RelayState"], response=True)
            back = dict(info["headers"])["Location"]
        assert back.startswith(self.idp_slo + "?SAMLResponse="), back
        assert query(back)["RelayState"] == params["RelayState"]
        return message, back


def sp_metadata_xml(entity_id, acs_url, slo_url):
    """The SP's metadata as pysaml2 publishes it (what an operator gives idflow as
    metadata_file)."""
    conf = SPConfig()
    conf.load(slo_sp_settings(entity_id, acs_url, slo_url))
    return str(entity_descriptor(conf))


def slo_config(credentials, directory):
    directory = pathlib.Path(directory)
    (directory / "sp-b.xml").write_text(sp_metadata_xml(SP_B, ACS_B, SLO_B))
    (directory / "sp-c.xml").write_text(
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'entityID="{SP_C}"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f'<md:SingleLogoutService Binding="{BINDING_HTTP_REDIRECT}" Location="{SLO_C}" ResponseLocation="{SLO_C_RESPONSES}"/>'
        f'<md:AssertionConsumerService Binding="{BINDING_HTTP_POST}" Location="{ACS_C}" index="0"/>'
        '</md:SPSSODescriptor></md:EntityDescriptor>')
    return f"""
[service_providers.sp-a]
entity_id = "{SP_A}"
acs_urls = ["{ACS_A}"]
slo_url = "{SLO_A}"

[service_providers.sp-b]
metadata_file = "{directory / 'sp-b.xml'}"

[service_providers.sp-c]
metadata_file = "{directory / 'sp-c.xml'}"

[service_providers.sp-no-slo]
entity_id = "{SP_NO_SLO}"
acs_urls = ["{ACS_NO_SLO}"]

[service_providers.sp-signed]
entity_id = "{SP_SIGNED}"
acs_urls = ["{ACS_SIGNED}"]
certificate_file = "{credentials['registered'].cert_file}"
require_signed_requests = true
slo_url = "{SLO_SIGNED}"
"""


@pytest.fixture
def slo_idp(credentials):
    """idflow with SPs that have Single Logout: sp-a and sp-signed (slo_url in idflow's
    configuration), sp-b and sp-c (from their metadata), sp-no-slo (none); and alice."""
    directory = tempfile.mkdtemp(prefix="idflow-e2e-saml-slo-")
    server = Server(directory, slo_config(credentials, directory))
    try:
        server.cli("user", "add", "alice", "--email", EMAIL, "--display-name", DISPLAY_NAME,
                   "--password-stdin", stdin=USER_PASSWORD + "\n")
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def slo_a(idp):
    return LogoutServiceProvider(idp, SP_A, ACS_A, SLO_A)


def slo_b(idp):
    return LogoutServiceProvider(idp, SP_B, ACS_B, SLO_B)


def slo_signed(idp, credentials, credential="registered"):
    return LogoutServiceProvider(idp, SP_SIGNED, ACS_SIGNED, SLO_SIGNED, credential=credentials[credential])


def signed_out_at_idflow(browser, sp):
    """The browser has no session at idflow: its cookie is cleared and a new sign-in at `sp`
    shows the login page instead of answering by single sign-on."""
    assert SESSION_COOKIE not in browser.session.cookies, "the session cookie was not cleared"
    _, url = sp.start()
    login_page(browser.go(url))


def still_signed_in(browser, sp):
    """The browser's session at idflow is alive: a sign-in at `sp` is answered by single
    sign-on, without the login page."""
    sp.sign_in(browser, silently=True)


def session_index(response):
    (statement,) = response.assertion.authn_statement
    assert statement.session_index, "the assertion has no SessionIndex"
    return statement.session_index


def test_sp_initiated_logout_with_one_sp_answers_success_signed_and_ends_the_session(slo_idp, credentials):
    sp = slo_signed(slo_idp, credentials)
    browser = Browser(slo_idp)
    signed_in = sp.sign_in(browser)
    name_id = signed_in.name_id
    assert sp.client.is_logged_in(name_id)

    # pysaml2's own logout: a signed LogoutRequest (with the assertion's SessionIndex) over
    # HTTP-Redirect to the SingleLogoutService of idflow's metadata.
    (binding, info), = sp.client.global_logout(name_id, sign=True, sign_alg=SIG_RSA_SHA256).values()
    assert binding == BINDING_HTTP_REDIRECT
    url = dict(info["headers"])["Location"]
    sent = query(url)
    assert url.startswith(slo_idp.url("/saml2/slo?SAMLRequest=")) and sent["SigAlg"] == SIG_RSA_SHA256
    request_xml = zlib.decompress(base64.b64decode(sent["SAMLRequest"]), -15).decode()
    assert session_index(signed_in) in request_xml
    request_id = re.search(r'\bID="([^"]+)"', request_xml).group(1)

    answer = browser.go(url)
    response = sp.logout_response(answer, request_id, relay_state=sent["RelayState"])
    assert response.response.status.status_code.value == STATUS_SUCCESS
    # pysaml2 completes its logout with it.
    assert sp.client.handle_logout_response(response)[:2] == (0, "200 Ok")
    assert not sp.client.is_logged_in(name_id)

    signed_out_at_idflow(browser, sp)
    entries = slo_idp.audit()
    (entry,) = [e for e in entries if e["event"] == "logout"]
    logins = {e["subject"] for e in entries if e["event"] == "login.success"}
    assert entry["subject"] in logins and entry["actor"] == entry["subject"], entry
    assert entry.get("detail", {}).get("saml_sp") == "sp-signed", entry


def test_sp_initiated_logout_tells_the_other_sp_first(slo_idp):
    a, b = slo_a(slo_idp), slo_b(slo_idp)
    browser = Browser(slo_idp)
    at_a = a.sign_in(browser)
    at_b = b.sign_in(browser, silently=True)
    assert at_a.name_id.text != at_b.name_id.text

    # A (no registered certificate: unsigned is accepted) logs out.
    request_id, url = a.logout_request(at_a.name_id, relay_state="a-relay", session_index=session_index(at_a))
    to_b = browser.go(url)
    # First B, with B's NameID (B's SLO address came from B's metadata).
    request, back = b.answer_logout(to_b, at_b.name_id)
    assert not b.client.is_logged_in(at_b.name_id)
    # B's answer back at idflow: then A gets Success, with its RelayState.
    final = browser.go(back)
    response = a.logout_response(final, request_id, relay_state="a-relay")
    assert response.response.status.status_code.value == STATUS_SUCCESS
    assert response.response.status.status_code.status_code is None

    signed_out_at_idflow(browser, b)
    # The chain's token is used up: B's answer again is refused.
    refused(Browser(slo_idp).go(back), "sign-out in progress")


def idp_logout(browser, idp, **params):
    """Signs out at idflow's /logout: the confirmation page, then its form posted. Returns
    where idflow sends the browser (a URL at an SP or the application, or a page)."""
    start = idp.url("/logout") + ("?" + urllib.parse.urlencode(params) if params else "")
    page = browser.go(start)
    assert not isinstance(page, str) and page.status_code == 200 and "Sign out?" in page.text, page
    (form,) = [f for f in forms(page.text) if f["action"] == "/logout"]
    assert form["fields"]["csrf"]
    return browser.go(idp.url("/logout"), "POST", form["fields"])


def test_idp_initiated_logout_tells_the_sp_then_signs_out(slo_idp):
    sp = slo_a(slo_idp)
    browser = Browser(slo_idp)
    at_a = sp.sign_in(browser)

    to_sp = idp_logout(browser, slo_idp)
    request, back = sp.answer_logout(to_sp, at_a.name_id)
    assert not sp.client.is_logged_in(at_a.name_id)
    # After the SP's answer, /logout's own answer: the account page, signed out.
    final = browser.go(back)
    assert not isinstance(final, str) and final.status_code == 200, final
    assert "You are not signed in" in final.text or "You are signed out" in final.text, final.text
    signed_out_at_idflow(browser, sp)
    assert len(slo_idp.audit("logout")) == 1


def test_idp_initiated_logout_runs_through_every_sp_then_redirects_to_the_client(slo_idp):
    a, b = slo_a(slo_idp), slo_b(slo_idp)
    browser = Browser(slo_idp)
    at_a = a.sign_in(browser)
    at_b = b.sign_in(browser, silently=True)
    # An SP without Single Logout (it cannot be told) is skipped.
    no_slo = ServiceProvider(slo_idp, SP_NO_SLO, [ACS_NO_SLO])
    request_id, url = no_slo.redirect()
    no_slo.accept(autopost(browser.go(url), ACS_NO_SLO), request_id)
    to_a = idp_logout(browser, slo_idp, client_id="demo-web", post_logout_redirect_uri="http://localhost:8000/",
                      state="bye")
    _, back = a.answer_logout(to_a, at_a.name_id)
    to_b = browser.go(back)
    _, back = b.answer_logout(to_b, at_b.name_id)
    final = browser.go(back)
    assert final == "http://localhost:8000/?state=bye", final
    signed_out_at_idflow(browser, a)


# Single Logout requests that must not end the session.

def test_an_unsigned_or_badly_signed_logout_request_of_an_sp_with_a_certificate_is_refused(slo_idp, credentials):
    sp = slo_signed(slo_idp, credentials)
    browser = Browser(slo_idp)
    signed_in = sp.sign_in(browser)
    _, unsigned = sp.logout_request(signed_in.name_id, sign=False)
    refused(browser.go(unsigned), "signature")
    _, signed = sp.logout_request(signed_in.name_id, relay_state="signed")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(signed).query)
    signature = bytearray(base64.b64decode(params["Signature"][0]))
    signature[10] ^= 0x01
    tampered = re.sub(r"Signature=[^&]+",
                      "Signature=" + urllib.parse.quote_plus(base64.b64encode(bytes(signature)).decode()), signed)
    refused(browser.go(tampered), "signature")
    refused(browser.go(signed.replace("RelayState=signed", "RelayState=other")), "signature")
    # Signed with a key idflow does not know for this SP.
    _, foreign = slo_signed(slo_idp, credentials, "foreign").logout_request(signed_in.name_id)
    refused(browser.go(foreign), "signature")
    assert not slo_idp.audit("logout")
    still_signed_in(browser, sp)
    # The control: the request as signed ends the session.
    request_id, signed = sp.logout_request(signed_in.name_id, relay_state="signed")
    assert sp.logout_response(browser.go(signed), request_id, "signed").response.status.status_code.value == STATUS_SUCCESS
    signed_out_at_idflow(browser, sp)


def test_a_logout_request_for_another_name_id_or_session_does_not_end_the_session(slo_idp):
    a, b = slo_a(slo_idp), slo_b(slo_idp)
    browser = Browser(slo_idp)
    at_a = a.sign_in(browser)
    at_b = b.sign_in(browser, silently=True)
    cases = [
        # Another subject.
        (a, NameID(format=NAMEID_FORMAT_PERSISTENT, text="someone-else"), None),
        # B names the NameID A got.
        (b, at_a.name_id, None),
        # A's NameID with another session's index.
        (a, at_a.name_id, "not-this-session"),
    ]
    for sp, name_id, index in cases:
        request_id, url = sp.logout_request(name_id, relay_state="other", session_index=index)
        # The SP still gets an answer, directly (no other SP is told): its principal is not
        # this browser's (Requester / UnknownPrincipal), which pysaml2 raises as such.
        with pytest.raises(saml2.response.StatusUnknownPrincipal):
            sp.logout_response(browser.go(url), request_id, relay_state="other")
        still_signed_in(browser, a)
    assert SESSION_COOKIE in browser.session.cookies
    assert not slo_idp.audit("logout")
    # The control: B naming its own NameID, with its session's index, ends it.
    request_id, url = b.logout_request(at_b.name_id, session_index=session_index(at_b))
    _, back = a.answer_logout(browser.go(url), at_a.name_id)
    assert b.logout_response(browser.go(back), request_id, relay_state="sp-relay") \
        .response.status.status_code.value == STATUS_SUCCESS
    signed_out_at_idflow(browser, a)


def hand_logout_request(issuer, name_id="x", request_id="_hand-logout", destination=None, issue_instant=None):
    destination = f' Destination="{destination}"' if destination else ""
    return (
        '<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{request_id}" Version="2.0" '
        f'IssueInstant="{issue_instant or now_instant()}"{destination}>'
        f'<saml:Issuer>{issuer}</saml:Issuer>'
        f'<saml:NameID Format="{NAMEID_FORMAT_PERSISTENT}">{name_id}</saml:NameID>'
        '</samlp:LogoutRequest>'
    )


def slo_get(browser, idp, **params):
    return browser.go(idp.url("/saml2/slo?" + urllib.parse.urlencode(params)))


def test_unknown_issuers_other_destinations_and_unknown_relay_states_are_refused(slo_idp):
    sp = slo_a(slo_idp)
    browser = Browser(slo_idp)
    at_a = sp.sign_in(browser)
    # An issuer that is not a registered SP (pysaml2 as a stranger, and by hand).
    stranger = LogoutServiceProvider(slo_idp, "http://localhost:8000/stranger", "http://localhost:8000/stranger/acs",
                                     "http://localhost:8000/stranger/slo")
    _, url = stranger.logout_request(at_a.name_id)
    refused(browser.go(url), "not a registered service provider")
    refused(slo_get(browser, slo_idp, SAMLRequest=redirect_value(hand_logout_request("http://evil.example"))),
            "not a registered service provider")
    # Addressed to another server.
    _, url = sp.logout_request(at_a.name_id, destination="https://other-idp.example/saml2/slo")
    refused(browser.go(url), "another server")
    # An SP without a Single Logout address cannot be answered.
    refused(slo_get(browser, slo_idp, SAMLRequest=redirect_value(hand_logout_request(SP_NO_SLO, at_a.name_id.text))),
            "no Single Logout")
    # A LogoutResponse that belongs to no chain (an unknown RelayState, or none).
    response = (
        '<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r" Version="2.0" '
        f'IssueInstant="{now_instant()}" InResponseTo="_nothing"><saml:Issuer>{SP_A}</saml:Issuer>'
        f'<samlp:Status><samlp:StatusCode Value="{STATUS_SUCCESS}"/></samlp:Status></samlp:LogoutResponse>'
    )
    refused(slo_get(browser, slo_idp, SAMLResponse=redirect_value(response), RelayState="no-such-chain"),
            "sign-out in progress")
    # Without a RelayState, or with nothing at all (the page names the parameters it needs, so
    # refused()'s "nothing posted" check, which looks for SAMLResponse, does not apply).
    for page in (slo_get(browser, slo_idp, SAMLResponse=redirect_value(response)), slo_get(browser, slo_idp)):
        assert not isinstance(page, str) and page.status_code == 400, page
        assert "RelayState" in (error_text(page.text) or ""), page.text
        assert not forms(page.text), page.text
    assert not slo_idp.audit("logout")
    still_signed_in(browser, sp)


# Single Logout as SAML core 3.7 (session authority rules) and the metadata describe it.

def test_the_logout_request_to_an_sp_names_the_session_it_ended_or_none(slo_idp):
    # Core 3.7.1: SessionIndex is "the identifier that indexes this session at the message
    # recipient" (the assertion's SessionIndex); 3.7.3.1: with none, all the principal's
    # sessions end. An empty one names a session the SP does not have, so it logs out nothing.
    sp = slo_a(slo_idp)
    browser = Browser(slo_idp)
    at_a = sp.sign_in(browser)
    request, _ = sp.answer_logout(idp_logout(browser, slo_idp), at_a.name_id)
    indexes = [index.text for index in request.session_index]
    assert indexes in ([], [session_index(at_a)]), f"SessionIndex {indexes}, the assertion's {session_index(at_a)!r}"


def test_the_logout_request_to_an_sp_expires(slo_idp):
    # Core 3.7.3.2: "When constructing a logout request message, the session authority MUST set
    # the value of the NotOnOrAfter attribute of the message".
    sp = slo_a(slo_idp)
    browser = Browser(slo_idp)
    at_a = sp.sign_in(browser)
    request, _ = sp.answer_logout(idp_logout(browser, slo_idp), at_a.name_id)
    assert request.not_on_or_after, "the LogoutRequest has no NotOnOrAfter"
    assert request.not_on_or_after > now_instant(), request.not_on_or_after


def test_an_sp_that_does_not_log_out_makes_the_answer_a_partial_logout(slo_idp):
    # Core 3.7.3.2: idflow's own session ended (top-level Success), but when not every other
    # participant confirmed, the answer MUST carry the second-level status PartialLogout.
    a, b = slo_a(slo_idp), slo_b(slo_idp)
    browser = Browser(slo_idp)
    at_a = a.sign_in(browser)
    at_b = b.sign_in(browser, silently=True)
    request_id, url = a.logout_request(at_a.name_id, relay_state="a-relay")
    _, back = b.answer_logout(browser.go(url), at_b.name_id, status_ok=False)
    response = a.logout_response(browser.go(back), request_id, relay_state="a-relay")
    status = response.response.status.status_code
    assert status.value == STATUS_SUCCESS
    assert status.status_code is not None and status.status_code.value == STATUS_PARTIAL_LOGOUT, status
    signed_out_at_idflow(browser, a)


def test_logout_responses_go_to_the_response_location_of_the_sp_metadata(slo_idp):
    # Metadata 2.2.2: ResponseLocation is where responses to the endpoint's binding are sent.
    xml = hand_logout_request(SP_C, request_id="_to-sp-c", destination=slo_idp.url("/saml2/slo"))
    answer = slo_get(Browser(slo_idp), slo_idp, SAMLRequest=redirect_value(xml), RelayState="c")
    assert isinstance(answer, str), f"expected a redirect to SP C, got {answer}"
    assert answer.startswith(SLO_C_RESPONSES + "?SAMLResponse="), answer


def test_a_forced_reauthentication_keeps_the_sps_to_tell_at_logout(slo_idp):
    # B signs in, then A asks for ForceAuthn in the same browser: logging out at idflow must
    # still tell B (the session that signed the user in to B is the browser's session).
    a, b = slo_a(slo_idp), slo_b(slo_idp)
    browser = Browser(slo_idp)
    at_b = b.sign_in(browser)
    request_id, url = a.redirect(force_authn="true")
    at_a = a.accept(sign_in(browser, url, ACS_A), request_id)
    told = []
    step = idp_logout(browser, slo_idp)
    for _ in range(3):
        if not isinstance(step, str):
            break
        sp, name_id = (a, at_a.name_id) if step.startswith(SLO_A) else (b, at_b.name_id)
        told.append(sp.entity_id)
        _, back = sp.answer_logout(step, name_id)
        step = browser.go(back)
    assert sorted(told) == [SP_A, SP_B], f"the SPs told: {told}"


def test_the_metadata_advertises_only_the_logout_bindings_idflow_serves(slo_idp):
    metadata = requests.get(slo_idp.url("/saml2/metadata"), timeout=10).text
    advertised = re.findall(r'<md:SingleLogoutService Binding="([^"]+)" Location="([^"]+)"', metadata)
    assert (BINDING_HTTP_REDIRECT, slo_idp.url("/saml2/slo")) in advertised, advertised
    for binding, location in advertised:
        if binding == BINDING_HTTP_POST:
            xml = hand_logout_request(SP_A, request_id="_posted")
            posted = requests.post(location, data={"SAMLRequest": base64.b64encode(xml.encode()).decode()},
                                   allow_redirects=False, timeout=10)
            assert posted.status_code != 405, f"the metadata offers {binding} at {location}, which answers 405"


@pytest.mark.parametrize("how", ["replayed", "an hour old"])
def test_a_replayed_or_old_logout_request_does_not_end_a_later_session(slo_idp, credentials, how):
    # As /saml2/sso refuses a replayed or stale AuthnRequest: a signed LogoutRequest that leaked
    # (a log, a browser history) must not sign the user out again later.
    sp = slo_signed(slo_idp, credentials)
    browser = Browser(slo_idp)
    signed_in = sp.sign_in(browser)
    if how == "replayed":
        request_id, url = sp.logout_request(signed_in.name_id)
        sp.logout_response(browser.go(url), request_id, "sp-relay")
        signed_out_at_idflow(browser, sp)
        signed_in = sp.sign_in(browser)
    else:
        _, url = sp.logout_request(signed_in.name_id, issue_instant=now_instant(-3600))
    page = browser.go(url)
    assert not isinstance(page, str), f"the {how} LogoutRequest was answered: {page}"
    refused(page)
    still_signed_in(browser, sp)


def test_a_logout_request_with_a_relay_state_over_1024_bytes_is_refused(slo_idp):
    # As at /saml2/sso (Bindings 3.4.3: at most 80 bytes is all an SP may count on; idflow takes
    # 1024): refused, rather than answered without the RelayState the SP needs.
    sp = slo_a(slo_idp)
    browser = Browser(slo_idp)
    at_a = sp.sign_in(browser)
    _, url = sp.logout_request(at_a.name_id, relay_state="r" * 1025)
    refused(browser.go(url), "RelayState")
    still_signed_in(browser, sp)
    # The control: 1024 bytes come back as sent.
    request_id, url = sp.logout_request(at_a.name_id, relay_state="r" * 1024)
    sp.logout_response(browser.go(url), request_id, relay_state="r" * 1024)
    signed_out_at_idflow(browser, sp)
