"""Federation over SAML 2.0 between two idflow instances on loopback: the upstream is an idflow
SAML identity provider with the downstream registered as a service provider; the downstream
imports the upstream's metadata and its flow for demo-web signs in with `federated(upstream)`,
with JIT rules creating the account on the first login and finding it by its link on the next.

The negative tests alter the upstream's genuine answer on its way through the browser (as an
attacker at the browser can) and check that each alteration is refused, audited, and creates
nothing."""

import base64
import pathlib
import re
import shutil
import tempfile
import time
import urllib.parse
import zlib

import pytest
import requests

from conftest import ALICE, Browser, RelyingParty, Server, forms, free_port

FLOW = """flow: upstream-login
applies_to: [demo-web]
steps:
  - id: sign-in
    authenticate: [{ federated: upstream }]
jit:
  - idp: upstream
    match: email
    create:
      username: claims.username
      attributes:
        email: claims.email
        display_name: claims.name
      roles: [partner]
"""


def make_pair(upstream_sp="", downstream_saml=""):
    """(upstream, downstream, cleanup): alice exists only upstream. `upstream_sp` adds lines to
    the upstream's entry for the downstream; `downstream_saml` is the downstream's [saml]."""
    upstream_dir = tempfile.mkdtemp(prefix="idflow-saml-up-")
    downstream_dir = tempfile.mkdtemp(prefix="idflow-saml-down-")
    down_port = free_port()
    down_issuer = f"http://localhost:{down_port}"
    upstream = Server(upstream_dir, extra_config=(
        "\n[service_providers.downstream]\n"
        f'entity_id = "{down_issuer}/federation/saml/metadata"\n'
        f'acs_urls = ["{down_issuer}/federation/saml/acs"]\n'
        + upstream_sp
    ))
    # Another host than the downstream's, as two real servers would have.
    upstream.issuer = f"http://127.0.0.1:{upstream.port}"
    upstream.cli("user", "add", ALICE.username, "--email", ALICE.email, "--display-name", "Alice Liddell",
                 "--password-stdin", stdin=ALICE.password + "\n")
    upstream.start()
    metadata = requests.get(upstream.url("/saml2/metadata"), timeout=10)
    assert metadata.status_code == 200 and "IDPSSODescriptor" in metadata.text, metadata.text
    (pathlib.Path(downstream_dir) / "upstream-idp.xml").write_text(metadata.text)

    flows = pathlib.Path(downstream_dir) / "flows"
    flows.mkdir()
    (flows / "upstream-login.yaml").write_text(FLOW)
    downstream = Server(downstream_dir, extra_config=(
        "\n[server]\n"
        f'flows = "{flows}"\n'
        "\n[identity_providers.upstream]\n"
        'type = "saml"\n'
        'display_name = "Upstream idflow"\n'
        f'metadata_file = "{downstream_dir}/upstream-idp.xml"\n'
        'verified_attributes = ["email"]\n'
        + downstream_saml
    ))
    downstream.port = down_port
    downstream.issuer = down_issuer
    downstream.start()

    def cleanup():
        for server in (upstream, downstream):
            server.stop()
        shutil.rmtree(upstream_dir, ignore_errors=True)
        shutil.rmtree(downstream_dir, ignore_errors=True)

    return upstream, downstream, cleanup


@pytest.fixture
def pair():
    upstream, downstream, cleanup = make_pair()
    yield upstream, downstream
    cleanup()


def to_upstream_answer(upstream, downstream, browser):
    """Starts demo-web's login at the downstream, signs in at the upstream, and returns the
    relying party and the upstream's auto-posting form (action and fields), not yet posted."""
    rp = RelyingParty(downstream, "demo-web")
    page = browser.go(rp.authorize_url())
    assert not isinstance(page, str) and page.status_code == 200, page
    assert page.url.startswith(upstream.issuer + "/login"), f"not sent to the upstream: {page.url}"
    at_upstream = Browser(upstream)
    at_upstream.session = browser.session
    answer = at_upstream.submit(page.text, "password", username=ALICE.username, password=ALICE.password)
    assert not isinstance(answer, str) and answer.status_code == 200, answer
    form = forms(answer.text)[0]
    assert form["action"] == downstream.url("/federation/saml/acs"), form
    assert "form-action " + downstream.issuer in answer.headers["Content-Security-Policy"]
    return rp, form["fields"]


def post_answer(downstream, browser, fields):
    return browser.go(downstream.url("/federation/saml/acs"), "POST", fields)


def decoded(fields):
    return base64.b64decode(fields["SAMLResponse"]).decode()


def encoded(fields, xml):
    return {**fields, "SAMLResponse": base64.b64encode(xml.encode()).decode()}


def refusals(downstream):
    """The refusals audited, newest first."""
    return downstream.audit("federation.refused")


def assert_nothing_created(downstream):
    downstream.stop()
    listed = downstream.cli("user", "list").stdout
    assert "alice" not in listed, listed
    log = downstream.audit()
    made = [e for e in log if e["event"] in ("identity.link", "login.success")
            or (e["event"] == "user.create" and e["detail"].get("by") == "jit")]
    assert not made, made


def test_first_login_creates_the_account_and_the_next_links_to_it(pair):
    upstream, downstream = pair
    browser = Browser(downstream)
    rp, fields = to_upstream_answer(upstream, downstream, browser)
    xml = decoded(fields)
    assert "rsa-sha256" in xml and "xmlenc#sha256" in xml and "xmldsig#sha1" not in xml
    first = rp.finish(post_answer(downstream, browser, fields))
    assert first["preferred_username"] == "alice" and first["email"] == ALICE.email, first

    browser = Browser(downstream)
    rp, fields = to_upstream_answer(upstream, downstream, browser)
    second = rp.finish(post_answer(downstream, browser, fields))
    assert second["sub"] == first["sub"]

    downstream.stop()
    shown = downstream.cli("user", "show", "alice").stdout
    assert '"partner"' in shown and "Alice Liddell" in shown, shown
    log = downstream.audit()
    created = [e for e in log if e["event"] == "user.create" and e["detail"].get("by") == "jit"]
    assert len(created) == 1 and created[0]["subject"] == first["sub"], created
    assert [e["event"] for e in log].count("federation.passed") == 2
    assert any(e["event"] == "identity.link" and e["detail"]["idp"] == "upstream" for e in log)


def test_sp_metadata_names_the_acs_and_our_signing_certificate(pair):
    _, downstream = pair
    metadata = requests.get(downstream.url("/federation/saml/metadata"), timeout=10)
    assert metadata.status_code == 200
    assert metadata.headers["Content-Type"] == "application/samlmetadata+xml"
    assert f'Location="{downstream.issuer}/federation/saml/acs"' in metadata.text
    assert f'entityID="{downstream.issuer}/federation/saml/metadata"' in metadata.text
    assert "<ds:X509Certificate>" in metadata.text


def strip_signatures(xml):
    return re.sub(r"<ds:Signature\b.*?</ds:Signature>", "", xml, flags=re.S)


def test_an_altered_or_unsigned_answer_is_refused_audited_and_creates_nothing(pair):
    upstream, downstream = pair
    cases = {
        "altered": lambda xml: xml.replace(">alice<", ">mallory<").replace(ALICE.email, "mallory@evil.example"),
        "unsigned": strip_signatures,
    }
    for name, alter in cases.items():
        browser = Browser(downstream)
        _, fields = to_upstream_answer(upstream, downstream, browser)
        changed = alter(decoded(fields))
        assert changed != decoded(fields), name
        before = len(refusals(downstream))
        page = post_answer(downstream, browser, encoded(fields, changed))
        assert not isinstance(page, str), f"{name}: sent to the application: {page}"
        assert page.status_code in (400, 403, 422), (name, page.status_code)
        assert "did not succeed" in page.text or "cannot continue" in page.text, (name, page.text)
        after = refusals(downstream)
        new = after[:len(after) - before]
        assert len(new) == 1 and "signature" in new[0]["detail"]["reason"], (name, new)
    assert_nothing_created(downstream)


def test_a_wrapped_assertion_is_refused(pair):
    upstream, downstream = pair
    browser = Browser(downstream)
    _, fields = to_upstream_answer(upstream, downstream, browser)
    xml = decoded(fields)
    start = xml.index("<saml:Assertion")
    evil = strip_signatures(xml[start:xml.index("</saml:Assertion>") + len("</saml:Assertion>")])
    evil = evil.replace(">alice<", ">mallory<").replace('ID="_', 'ID="_evil', 1)
    wrapped = xml[:start] + evil + xml[start:]
    page = post_answer(downstream, browser, encoded(fields, wrapped))
    assert not isinstance(page, str), page
    assert "exactly one assertion" in refusals(downstream)[0]["detail"]["reason"]
    assert_nothing_created(downstream)


def test_a_replayed_answer_is_refused(pair):
    upstream, downstream = pair
    browser = Browser(downstream)
    rp, fields = to_upstream_answer(upstream, downstream, browser)
    rp.finish(post_answer(downstream, browser, fields))
    # The same answer again, at once: its sign-in is over.
    again = post_answer(downstream, browser, fields)
    assert not isinstance(again, str) and again.status_code == 400, again
    # The same answer for another sign-in in progress: it answers another request.
    other = Browser(downstream)
    _, fresh = to_upstream_answer(upstream, downstream, other)
    replayed = post_answer(downstream, other, {**fresh, "SAMLResponse": fields["SAMLResponse"]})
    assert not isinstance(replayed, str), replayed
    reasons = [e["detail"]["reason"] for e in refusals(downstream)]
    assert any("no sign-in in progress" in r for r in reasons), reasons
    assert any("another request" in r for r in reasons), reasons


def test_an_answer_for_another_audience_is_refused():
    """The upstream also serves another SP whose ACS (misconfigured, or an attacker's choice)
    is the downstream's: its assertions, brought into a downstream sign-in, are not for us."""
    upstream, downstream, cleanup = make_pair(upstream_sp=(
        "\n[service_providers.other]\n"
        'entity_id = "https://other.example/sp"\n'
        "acs_urls = [\"http://localhost:1/federation/saml/acs\"]\n"
    ))
    try:
        upstream.stop()
        config = pathlib.Path(upstream.config)
        config.write_text(config.read_text().replace("http://localhost:1/", downstream.issuer + "/"))
        upstream.start()
        browser = Browser(downstream)
        url = RelyingParty(downstream, "demo-web").authorize_url()
        for _ in range(5):
            response = browser.session.get(url, allow_redirects=False, timeout=10)
            url = urllib.parse.urljoin(url, response.headers["Location"])
            if url.startswith(upstream.issuer):
                break
        state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["RelayState"]
        page = browser.go(upstream.url(f"/saml2/sso?sp=other&RelayState={state}"))
        at_upstream = Browser(upstream)
        at_upstream.session = browser.session
        answer = at_upstream.submit(page.text, "password", username=ALICE.username, password=ALICE.password)
        fields = forms(answer.text)[0]["fields"]
        assert "https://other.example/sp" in decoded(fields)
        refused = post_answer(downstream, browser, fields)
        assert not isinstance(refused, str), refused
        assert "not meant for this service provider" in refusals(downstream)[0]["detail"]["reason"]
        assert_nothing_created(downstream)
    finally:
        cleanup()


def test_an_expired_answer_is_refused():
    upstream, downstream, cleanup = make_pair(downstream_saml="\n[saml]\nskew_seconds = 0\n")
    try:
        upstream.stop()
        config = pathlib.Path(upstream.directory) / "idflow.toml"
        config.write_text(config.read_text() + "\n[saml]\nassertion_seconds = 10\n")
        upstream.start()
        browser = Browser(downstream)
        _, fields = to_upstream_answer(upstream, downstream, browser)
        time.sleep(11)
        page = post_answer(downstream, browser, fields)
        assert not isinstance(page, str), page
        assert "validity window" in refusals(downstream)[0]["detail"]["reason"]
        assert_nothing_created(downstream)
    finally:
        cleanup()


def test_a_fresh_sign_in_asked_of_us_is_asked_of_the_idp(pair):
    upstream, downstream = pair
    for extra, forced in (({}, False), ({"prompt": "login"}, True)):
        browser = Browser(downstream)
        url = RelyingParty(downstream, "demo-web").authorize_url(**extra)
        for _ in range(5):
            response = browser.session.get(url, allow_redirects=False, timeout=10)
            url = urllib.parse.urljoin(url, response.headers["Location"])
            if url.startswith(upstream.issuer):
                break
        sent = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        xml = zlib.decompress(base64.b64decode(sent["SAMLRequest"]), -15).decode()
        assert ('ForceAuthn="true"' in xml) == forced, xml
        assert sent["SigAlg"].endswith("rsa-sha256") and sent["Signature"], sent
