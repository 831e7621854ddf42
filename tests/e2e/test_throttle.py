"""Throttling of failed credential attempts per user and address, and per address: once the limit
is reached the next attempt, even with the right password, is refused with HTTP 429 and audited
as login.throttled, while other users from the same address are not affected."""

import time

from conftest import ALICE, BOB, CAROL, DAVE, Browser, error_text, query
from test_security import authorize_url


def attempt(server, user, password, browser=None, page=None):
    browser = browser or Browser(server)
    if page is None:
        page = browser.go(authorize_url(server)).text
    return browser, browser.submit(page, "password", username=user.username, password=password)


def assert_throttled(result, window=900):
    assert not isinstance(result, str), f"the attempt went through: {result}"
    assert result.status_code == 429, (result.status_code, error_text(result.text))
    assert "Too many failed attempts" in result.text, result.text
    assert 'name="password"' not in result.text, "no password form while throttled"
    assert 0 < int(result.headers["Retry-After"]) <= window, result.headers.get("Retry-After")


def fail_three_times(server, user):
    browser, first = attempt(server, user, "wrong-password-1")
    assert first.status_code == 422
    _, second = attempt(server, user, "wrong-password-2", browser, first.text)
    assert second.status_code == 422
    _, third = attempt(server, user, "wrong-password-3", browser, second.text)
    # The password step allows 3 attempts per login, so this login ends here.
    assert isinstance(third, str) and query(third)["error"] == "access_denied", third


def test_the_fourth_attempt_at_one_user_from_one_address_is_throttled(make_server):
    server = make_server(users=[ALICE, BOB], extra_config="\n[throttle]\nuser_ip_failures = 3\n")
    fail_three_times(server, ALICE)
    _, fourth = attempt(server, ALICE, ALICE.password)
    assert_throttled(fourth)
    _, fifth = attempt(server, ALICE, "wrong-password-5")
    assert_throttled(fifth)
    # Another user from the same address is not affected.
    _, other = attempt(server, BOB, BOB.password)
    assert isinstance(other, str) and "code" in query(other), other

    throttled = server.audit("login.throttled")
    assert throttled, "no login.throttled audit entry"
    assert {e["ip"] for e in throttled} == {"127.0.0.1"}
    assert {e["detail"]["limit"] for e in throttled} == {"user_ip"}, throttled
    # Throttled attempts are not checked, so they are no password failures either.
    assert len([e for e in server.audit("login.factor_refused") if e["detail"]["option"] == "password"]) == 3


def test_the_window_ends(make_server):
    server = make_server(extra_config="\n[throttle]\nuser_ip_failures = 3\nwindow_seconds = 3\n")
    started = time.time()
    fail_three_times(server, ALICE)
    _, fourth = attempt(server, ALICE, ALICE.password)
    assert_throttled(fourth, window=3)
    time.sleep(max(0, started + 3.2 - time.time()))
    _, later = attempt(server, ALICE, ALICE.password)
    assert isinstance(later, str) and "code" in query(later), later


def test_failures_across_users_from_one_address_are_throttled(make_server):
    server = make_server(users=[ALICE, BOB, CAROL, DAVE], extra_config="\n[throttle]\nip_failures = 3\n")
    for user in (ALICE, BOB, CAROL):
        _, result = attempt(server, user, "wrong-password")
        assert result.status_code == 422
    _, fourth = attempt(server, DAVE, DAVE.password)
    assert_throttled(fourth)
    throttled = server.audit("login.throttled")
    assert throttled and {e["detail"]["limit"] for e in throttled} == {"ip"}, throttled
