"""One-time codes by email: on `wiki` (flow passwordless-passkey: passkey | email_otp first) and as
the second factor of `demo-web` when the client asks for acr mfa. The server writes each mail as
an .eml file into <data dir>/outbox/. Codes are single-use, expire, cannot be re-sent within
30 s (HTTP 429), and the page does not tell whether an address has an account."""

import re
import time

from conftest import (
    ALICE, BOB, MFA_ACR, Browser, RelyingParty, error_text, free_port, mail_code, option_form,
    page_options,
)

FAST_RESEND = "\n[mfa]\nemail_resend_seconds = 1\n"


def wiki_email_form(server):
    rp = RelyingParty(server, "wiki")
    browser = Browser(server)
    page = browser.go(rp.authorize_url())
    assert not isinstance(page, str) and page.status_code == 200, page
    assert page_options(page.text) == ["passkey", "email_otp"], page_options(page.text)
    assert "identifier" in option_form(page.text, "email_otp")["fields"], "no user yet: the form asks who"
    return rp, browser, page.text


def send(browser, page, **fields):
    return browser.submit(page, "email_otp", send="1", **fields)


def submit_code(browser, page, code):
    """Posts a code with the email form of `page`, whether or not the page shows a code field."""
    return browser.go(browser.server.url("/login"), "POST", dict(option_form(page, "email_otp")["fields"], code=code))


def mask(address):
    local, domain = address.split("@")
    return f"{local[0]}••••@{domain}"


def test_a_mailed_code_signs_in_to_wiki_and_leads_to_passkey_enrollment(make_server):
    server = make_server()
    rp, browser, page = wiki_email_form(server)
    sent = send(browser, page, identifier="alice@example.com")
    assert sent.status_code == 200, sent.text
    assert f"We sent a code to {mask('alice@example.com')}" in sent.text
    assert "code" in option_form(sent.text, "email_otp")["fields"], "the page now asks for the code"

    mails = server.outbox()
    assert len(mails) == 1
    assert mails[0]["To"] == "alice@example.com"
    code = mail_code(mails[0])

    # A malformed code gets its own message; the right one passes the sign-in step, and a user
    # without a passkey is asked to register one (enroll passkey).
    wrong = browser.submit(sent.text, "email_otp", code=code[:5])
    assert wrong.status_code == 422 and "six digits" in error_text(wrong.text), error_text(wrong.text)
    passed = browser.submit(wrong.text, "email_otp", code=code)
    assert not isinstance(passed, str), f"wiki must ask for a passkey before finishing: {passed}"
    assert passed.status_code == 200
    assert page_options(passed.text) == ["passkey"]
    assert 'data-webauthn="create"' in passed.text
    assert '"name":"alice"' in passed.text, "the passkey is made for the user the code identified"


def second_factor_page(server):
    """A demo-web login with acr mfa, past the password: the email code is the second factor
    of a known user (no identifier field)."""
    rp = RelyingParty(server, "demo-web")
    browser = Browser(server)
    page = browser.go(rp.authorize_url(acr_values=MFA_ACR))
    after = browser.submit(page.text, "password", username="alice", password=ALICE.password)
    assert not isinstance(after, str), "acr mfa: the password alone must not do"
    assert "email_otp" in page_options(after.text)
    assert "identifier" not in option_form(after.text, "email_otp")["fields"], "the user is known"
    return rp, browser, after.text


def test_an_email_code_works_once_as_a_second_factor(make_server):
    server = make_server(extra_config=FAST_RESEND)
    rp, browser, page = second_factor_page(server)
    sent = send(browser, page)
    assert sent.status_code == 200, sent.text
    first = mail_code(server.outbox()[-1])
    claims = rp.finish(browser.submit(sent.text, "email_otp", code=first))
    assert claims["acr"] == MFA_ACR
    assert {"pwd", "otp"} <= set(claims["amr"]), claims["amr"]

    # The spent code in a new login, before any new code was sent: refused.
    time.sleep(1.1)
    _, browser, page = second_factor_page(server)
    reused = submit_code(browser, page, first)
    assert not isinstance(reused, str), f"a spent code was accepted: {reused}"
    assert reused.status_code == 422 and error_text(reused.text), reused.text

    # And after a new code was sent: the old one is refused, the new one passes.
    rp, browser, page = second_factor_page(server)
    sent = send(browser, page)
    assert sent.status_code == 200, error_text(sent.text)
    assert len(server.outbox()) == 2
    second = mail_code(server.outbox()[-1])
    if second != first:  # (1 in a million: the new code happens to equal the old one)
        again = browser.submit(sent.text, "email_otp", code=first)
        assert not isinstance(again, str), f"a spent code was accepted: {again}"
        assert again.status_code == 422 and "wrong" in error_text(again.text), error_text(again.text)
        sent = again
    rp.finish(browser.submit(sent.text, "email_otp", code=second))

    refusals = [e for e in server.audit("login.factor_refused") if e["detail"]["option"] == "email_otp"]
    assert len(refusals) >= 2, refusals


def test_a_new_code_after_a_wrong_one_shows_a_clean_page(make_server):
    server = make_server(extra_config=FAST_RESEND)
    rp, browser, page = second_factor_page(server)
    sent = send(browser, page)
    wrong = browser.submit(sent.text, "email_otp", code="000000" if mail_code(server.outbox()[-1]) != "000000" else "111111")
    assert wrong.status_code == 422 and "wrong" in error_text(wrong.text)
    time.sleep(1.1)
    resent = send(browser, wrong.text)
    assert len(server.outbox()) == 2, "the new code was mailed"
    assert (resent.status_code, error_text(resent.text)) == (200, None), \
        "after a successful send the page must not repeat the previous error"
    rp.finish(browser.submit(resent.text, "email_otp", code=mail_code(server.outbox()[-1])))


def test_a_second_code_within_30_seconds_is_refused_with_429(make_server):
    server = make_server()
    rp, browser, page = second_factor_page(server)
    sent = send(browser, page)
    assert sent.status_code == 200 and len(server.outbox()) == 1
    again = send(browser, sent.text)  # "Send a new code"
    assert again.status_code == 429, (again.status_code, error_text(again.text))
    assert re.search(r"wait \d+ seconds", error_text(again.text), re.I), error_text(again.text)
    # Typed addresses are limited by what was typed (however capitalised), across logins. (A
    # limit keyed by the account a typed name belongs to would answer differently for names
    # that have one.)
    _, other_browser, other_page = wiki_email_form(server)
    first = send(other_browser, other_page, identifier="alice@example.com")
    assert first.status_code == 200 and len(server.outbox()) == 2
    _, third_browser, third_page = wiki_email_form(server)
    other = send(third_browser, third_page, identifier="ALICE@example.com")
    assert other.status_code == 429, (other.status_code, error_text(other.text))
    assert len(server.outbox()) == 2, "no third mail"
    # The first code still works.
    rp.finish(submit_code(browser, again.text, mail_code(server.outbox()[0])))


def test_send_a_new_code_on_wiki_remembers_the_address(make_server):
    """On wiki the address is typed in the email form; its "Send a new code" button (in the
    code form, which has no identifier field) must still know whom to mail."""
    server = make_server()
    _, browser, page = wiki_email_form(server)
    sent = send(browser, page, identifier="alice")
    assert sent.status_code == 200 and len(server.outbox()) == 1
    again = send(browser, sent.text)
    assert again.status_code == 429, (again.status_code, error_text(again.text))
    assert re.search(r"wait \d+ seconds", error_text(again.text), re.I), error_text(again.text)


def test_an_expired_code_is_refused(make_server):
    server = make_server(extra_config="\n[mfa]\nemail_code_seconds = 1\n")
    _, browser, page = wiki_email_form(server)
    sent = send(browser, page, identifier="alice@example.com")
    code = mail_code(server.outbox()[-1])
    time.sleep(2.1)
    late = browser.submit(sent.text, "email_otp", code=code)
    assert not isinstance(late, str) and late.status_code == 422, late
    assert 'data-webauthn="create"' not in late.text
    assert error_text(late.text), late.text


def normalized(page, typed):
    """The page with what differs per request (tokens, challenges, the masked address that
    echoes what was typed) blanked out."""
    page = page.replace(mask(typed), "MASKED") if "@" in typed else page
    page = re.sub(r'value="[A-Za-z0-9_-]{20,}"', 'value="TOKEN"', page)
    return re.sub(r'"challenge":"[A-Za-z0-9_-]+"', '"challenge":"CHALLENGE"', page)


def test_an_unknown_address_gets_the_same_page_and_no_mail(make_server):
    server = make_server(users=[ALICE, BOB])
    answers = {}
    for address in ("nobody@example.com", "alice@example.com"):
        _, browser, page = wiki_email_form(server)
        before = len(server.outbox())
        answers[address] = (send(browser, page, identifier=address), len(server.outbox()) - before, browser)
    (unknown, unknown_mails, unknown_browser), (known, known_mails, _) = answers.values()
    assert (unknown_mails, known_mails) == (0, 1)
    assert unknown.status_code == known.status_code == 200
    assert f"We sent a code to {mask('nobody@example.com')}" in unknown.text
    assert normalized(unknown.text, "nobody@example.com") == normalized(known.text, "alice@example.com")
    # A guess at the code for the unknown address reads like a wrong code for a real one.
    guess = unknown_browser.submit(unknown.text, "email_otp", code="123456")
    assert guess.status_code == 422 and "wrong" in error_text(guess.text), error_text(guess.text)
    assert not any(m["To"] == "nobody@example.com" for m in server.outbox())


def test_an_unknown_username_gets_the_same_page_as_a_known_one(make_server):
    server = make_server(users=[ALICE, BOB])
    pages = []
    for name in ("nobody", "bob"):
        _, browser, page = wiki_email_form(server)
        pages.append(send(browser, page, identifier=name))
    unknown, known = pages
    assert len(server.outbox()) == 1 and server.outbox()[0]["To"] == "bob@example.com"
    assert unknown.status_code == known.status_code == 200
    sent_to = [re.search(r"We sent a code to ([^<]*)</p>", p.text).group(1) for p in pages]
    assert sent_to[0] == sent_to[1], f"the page tells an unknown username from a known one: {sent_to}"


def test_asking_again_answers_the_same_for_an_unknown_address(make_server):
    server = make_server()
    answers = []
    for address in ("nobody@example.com", "alice@example.com"):
        _, browser, page = wiki_email_form(server)
        sent = send(browser, page, identifier=address)
        again = send(browser, sent.text)  # "Send a new code", within 30 s
        answers.append((again.status_code, error_text(again.text)))
    unknown, known = answers
    assert known[0] == 429
    # The wait counts down in whole seconds, and the two asks are a moment apart: a clock tick
    # between them may take one second off. Anything else would tell the addresses apart.
    waits = [int(re.search(r"Wait (\d+) seconds", text).group(1)) for _, text in answers]
    assert abs(waits[0] - waits[1]) <= 1, answers
    same = [(status, re.sub(r"Wait \d+ seconds", "Wait N seconds", text)) for status, text in answers]
    assert same[0] == same[1], f"'Send a new code' tells an unknown address from a known one: {answers}"


def test_codes_go_out_over_smtp(make_server):
    """`[email] sender = "smtp"`: the code reaches a real SMTP server (aiosmtpd) on loopback."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Keep(Message):
        def handle_message(self, message):
            received.append(message)

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        server = make_server(extra_config=(
            "[email]\n"
            'sender = "smtp"\n'
            f'smtp_url = "smtp://127.0.0.1:{port}"\n'
            'from = "idflow <no-reply@example.com>"\n'
        ))
        rp = RelyingParty(server, "wiki")
        browser = Browser(server)
        page = browser.go(rp.authorize_url()).text
        page = browser.submit(page, "email_otp", identifier="alice@example.com", send="1")
        assert page.status_code == 200, page.text
        assert not server.outbox(), "nothing is written to the outbox"
        # The server hands the mail over in the background (equal timing for unknown addresses).
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(received) == 1, received
        mail = received[0]
        assert mail["To"] == "alice@example.com" and "no-reply@example.com" in mail["From"]
        code = re.search(r"\b(\d{6})\b", mail["Subject"]).group(1)
        assert code in mail.get_payload(decode=True).decode()
        after = browser.submit(page.text, "email_otp", code=code)
        assert after.status_code == 200 and 'data-webauthn="create"' in after.text, \
            "the code signed alice in; wiki now asks her to register a passkey"
    finally:
        controller.stop()
