"""The same flows drive SAML logins as OIDC ones: a service provider is an application in a
flow's `applies_to`, its second factor is asked for, what the flow reached is the response's
AuthnContextClassRef, and an SP asking for MFA in its RequestedAuthnContext gets the shipped
password flow's step-up."""

import base64
import pathlib
import re
import urllib.parse
import zlib

from conftest import ALICE, Browser, forms, mail_code, page_options

MFA_FLOW = """flow: saml-mfa
applies_to: [sp-mfa]
steps:
  - id: first
    authenticate: [password]
  - id: second
    authenticate: [email_otp]
"""


def config(flows):
    return f"""
[server]
flows = "{flows}"

[service_providers.sp-mfa]
entity_id = "https://sp-mfa.example/sp"
acs_urls = ["https://sp-mfa.example/acs"]

[service_providers.sp-plain]
entity_id = "https://sp-plain.example/sp"
acs_urls = ["https://sp-plain.example/acs"]
"""


def redirect_request(server, entity_id, acs, extra=""):
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_r{abs(hash(entity_id + extra)) % 10**12}x{len(extra)}" Version="2.0" '
        f'IssueInstant="{__import__("datetime").datetime.now(__import__("datetime").timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}" '
        f'AssertionConsumerServiceURL="{acs}">'
        f"<saml:Issuer>{entity_id}</saml:Issuer>{extra}</samlp:AuthnRequest>"
    )
    deflated = zlib.compress(xml.encode())[2:-4]
    query = urllib.parse.urlencode({"SAMLRequest": base64.b64encode(deflated).decode()})
    return server.url(f"/saml2/sso?{query}")


def response_xml(page):
    form = forms(page.text)[0]
    return base64.b64decode(form["fields"]["SAMLResponse"]).decode()


def context_class(xml):
    return re.search(r"<saml:AuthnContextClassRef>([^<]+)</saml:AuthnContextClassRef>", xml).group(1)


def test_a_flow_for_a_service_provider_asks_its_second_factor_and_says_so(make_server, tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "saml-mfa.yaml").write_text(MFA_FLOW)
    (flows / "password.yaml").write_text(
        (pathlib.Path(__file__).parents[2] / "flows" / "password.yaml").read_text())
    server = make_server(extra_config=config(flows))
    browser = Browser(server)
    page = browser.go(redirect_request(server, "https://sp-mfa.example/sp", "https://sp-mfa.example/acs"))
    after_password = browser.submit(page.text, "password", username=ALICE.username, password=ALICE.password)
    assert page_options(after_password.text) == ["email_otp"], "the flow's second step is asked"
    sent = browser.submit(after_password.text, "email_otp", send="1")
    code = mail_code(server.outbox()[-1])
    answer = browser.submit(sent.text, "email_otp", code=code)
    xml = response_xml(answer)
    assert context_class(xml) == "https://refeds.org/profile/mfa", xml

    # Another SP whose flow is the shipped password flow: single sign-on, one factor is enough.
    plain = browser.go(redirect_request(server, "https://sp-plain.example/sp", "https://sp-plain.example/acs"))
    assert forms(plain.text)[0]["action"] == "https://sp-plain.example/acs", "no login page"


def test_an_sp_asking_for_mfa_gets_the_password_flows_step_up(make_server, tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "password.yaml").write_text(
        (pathlib.Path(__file__).parents[2] / "flows" / "password.yaml").read_text())
    (flows / "saml-mfa.yaml").write_text(MFA_FLOW)
    server = make_server(extra_config=config(flows))
    browser = Browser(server)
    plain = browser.go(redirect_request(server, "https://sp-plain.example/sp", "https://sp-plain.example/acs"))
    answer = browser.submit(plain.text, "password", username=ALICE.username, password=ALICE.password)
    assert context_class(response_xml(answer)) == "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    mfa = ('<samlp:RequestedAuthnContext Comparison="exact">'
           "<saml:AuthnContextClassRef>https://refeds.org/profile/mfa</saml:AuthnContextClassRef>"
           "</samlp:RequestedAuthnContext>")
    step_up = browser.go(redirect_request(server, "https://sp-plain.example/sp", "https://sp-plain.example/acs", mfa))
    assert not isinstance(step_up, str) and step_up.status_code == 200
    assert "password" not in page_options(step_up.text), "the session's password is carried"
    assert page_options(step_up.text), "a second factor is asked for"
