"""Hot reload: `idflow reload` (POST /admin/v1/reload), SIGHUP and `serve --watch` read the
configuration file and the flows again and make them live as one unit, or, when anything is
wrong, keep what runs. Logins in flight finish on the flow version they started on, and a reload
under login load breaks no request.

Each server here runs on its own copy of the shipped flows (without the `password.flow` twin, so
that editing `password.yaml` alone is a valid change) and a configuration whose issuer is the
server's, so `idflow reload --config ...` finds the server the way an operator's would."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from unittest import mock

import pytest

from conftest import ADMIN_PASSWORD, ALICE, BIN, DAVE, REPO, WEB_SECRET, Browser, Server, User, query
from test_security import authorize_url, exchange, pkce_pair, token_request

PASSWORD_FLOW = (REPO / "flows" / "password.yaml").read_text()
REPORTS_SECRET = "reports-secret-for-tests-0123456789"
REPORTS_APP = (f'\n[applications.reports]\nname = "Reports"\nclient_secret = "{REPORTS_SECRET}"\n'
               f'scopes = ["reports.read"]\n')
# A flow that claims demo-web and allows one password try.
STRICT_FLOW = """flow: strict
description: "One password try for the demo web app."
applies_to:
- demo-web
steps:
- id: password
  authenticate:
  - password
  attempts: 1
"""
REFUSED = "error: reload refused, the running configuration stays: "


class WatchingServer(Server):
    """A Server whose process runs `idflow serve ... --watch`."""

    def start(self):
        popen = subprocess.Popen
        with mock.patch.object(subprocess, "Popen", lambda args, **kw: popen([*args, "--watch"], **kw)):
            return super().start()


@pytest.fixture
def make_reloadable():
    """Makes started servers (alice and dave as users) on their own copy of the flows."""
    made = []

    def make(watch=False):
        directory = tempfile.mkdtemp(prefix="idflow-reload-")
        srv = (WatchingServer if watch else Server)(directory)
        made.append(srv)
        srv.flows = srv.directory / "flows"
        shutil.copytree(REPO / "flows", srv.flows)
        (srv.flows / "password.flow").unlink()
        text = srv.config.read_text()
        for old, new in ((f'flows = "{REPO / "flows"}"', f'flows = "{srv.flows}"'),
                         ('issuer = "http://localhost:8080"', f'issuer = "{srv.issuer}"')):
            assert old in text, f"the test configuration no longer has {old}"
            text = text.replace(old, new)
        srv.config.write_text(text)
        srv.original_config = text
        for user in (ALICE, DAVE):
            srv.cli("user", "add", user.username, "--email", user.email, "--password-stdin",
                    stdin=user.password + "\n")
        return srv.start()

    yield make
    for srv in made:
        srv.stop()
        shutil.rmtree(srv.directory, ignore_errors=True)


def run_reload(srv, user=None, password=ADMIN_PASSWORD, token=None, via_config=False):
    """`idflow reload` against `srv` (by --server, or by its configuration's issuer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDFLOW_")}
    if token is not None:
        env["IDFLOW_ADMIN_TOKEN"] = token
    if password is not None:
        env["IDFLOW_ADMIN_PASSWORD"] = password
    if user is not None:
        env["IDFLOW_ADMIN_USER"] = user
    where = (["--config", str(srv.config), "--data-dir", str(srv.data)] if via_config
             else ["--server", srv.issuer])
    return subprocess.run([BIN, "reload", *where], env=env, capture_output=True, text=True, timeout=120)


def reloaded(result):
    """The generation an accepted reload reports, and its output lines."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    lines = result.stdout.splitlines()
    match = re.fullmatch(r"reloaded: generation (\d+)", lines[0] if lines else "")
    assert match, result.stdout
    return int(match.group(1)), lines


def refused(result, *expected):
    """Checks that the server refused the reload (exit 1) naming each of `expected`."""
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert result.stderr.startswith(REFUSED), result.stderr
    for text in expected:
        assert text in result.stderr, f"{text!r} not in {result.stderr}"


def set_password_attempts(srv, attempts):
    """Writes password.yaml with `attempts` tries at its password step; returns its version."""
    path = srv.flows / "password.yaml"
    path.write_text(PASSWORD_FLOW.replace("attempts: 3", f"attempts: {attempts}", 1))
    return flow_version(path)


def flow_version(path):
    result = subprocess.run([BIN, "flow", "compile", str(path), "--emit", "version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def write_config(srv, extra=""):
    srv.config.write_text(srv.original_config + extra)


# Logins: authorization code with PKCE for demo-web (the default password flow), code redeemed
# at /token.

def start_login(srv, scope="openid"):
    """Authorize and the login page fetched: (browser, verifier, page)."""
    verifier, challenge = pkce_pair()
    browser = Browser(srv)
    page = browser.go(authorize_url(srv, code_challenge=challenge, code_challenge_method="S256", scope=scope))
    assert not isinstance(page, str) and page.status_code == 200, getattr(page, "text", page)
    return browser, verifier, page.text


def submit_password(started, user=ALICE):
    """The login page answered with the right password: (code, verifier)."""
    browser, verifier, page = started
    callback = browser.submit(page, "password", username=user.username, password=user.password)
    assert isinstance(callback, str) and "code" in query(callback), getattr(callback, "text", callback)
    return query(callback)["code"], verifier


def redeem(srv, code, verifier):
    answer = exchange(srv, code, verifier)
    assert answer.status_code == 200 and "id_token" in answer.json(), answer.text
    return answer.json()


def login(srv, user=ALICE, scope="openid"):
    """A complete login; returns the token response."""
    return redeem(srv, *submit_password(start_login(srv, scope), user))


def wrong_passwords(srv, count, user=DAVE):
    """A new login answered with `count` wrong passwords: (browser, last answer)."""
    browser, _, page = start_login(srv)
    answer = None
    for _ in range(count):
        answer = browser.submit(page, "password", username=user.username, password="wrong-password")
        if isinstance(answer, str):
            break
        assert answer.status_code == 422, answer.text
        page = answer.text
    return browser, answer


def client_credentials(srv, client=("reports", REPORTS_SECRET), scope="reports.read"):
    return token_request(srv, auth=client, grant_type="client_credentials", scope=scope)


def wait_for(condition, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def log_count(srv, text):
    return srv.log.read_text(errors="replace").count(text)


def test_a_reload_without_changes_says_so_and_finds_the_server_by_its_configuration(make_reloadable):
    srv = make_reloadable()
    # No --server: the configuration's issuer names the server.
    first, lines = reloaded(run_reload(srv, via_config=True))
    assert lines[1:] == ["nothing changed"], lines
    second, lines = reloaded(run_reload(srv))
    assert second > first and lines[1:] == ["nothing changed"], lines


def test_changed_added_and_removed_flows_are_live_at_once_with_their_diff(make_reloadable):
    srv = make_reloadable()
    before = flow_version(srv.flows / "password.yaml")
    after = set_password_attempts(srv, 4)
    assert after != before
    _, lines = reloaded(run_reload(srv))
    assert lines[1] == f"~ flow password {before} -> {after}", lines
    assert any(line.startswith("    ~ state password:") and '"attempts":4' in line for line in lines[2:]), lines
    # New logins run the new version: a fourth try after three wrong passwords.
    browser, answer = wrong_passwords(srv, 3)
    assert not isinstance(answer, str), f"denied after three tries: {answer}"
    callback = browser.submit(answer.text, "password", username="dave", password=DAVE.password)
    assert isinstance(callback, str) and "code" in query(callback), getattr(callback, "text", callback)

    # A new flow claiming demo-web takes over its logins: one try only.
    (srv.flows / "strict.yaml").write_text(STRICT_FLOW)
    _, lines = reloaded(run_reload(srv))
    assert lines[1:] == ["+ flow strict"], lines
    _, answer = wrong_passwords(srv, 1)
    assert isinstance(answer, str) and query(answer)["error"] == "access_denied", answer
    login(srv)

    (srv.flows / "strict.yaml").unlink()
    _, lines = reloaded(run_reload(srv))
    assert lines[1:] == ["- flow strict"], lines
    browser, answer = wrong_passwords(srv, 1)
    assert not isinstance(answer, str), f"the removed flow still runs: {answer}"
    login(srv)


def test_an_application_added_by_reload_gets_tokens_at_once_and_a_removed_one_stops(make_reloadable):
    srv = make_reloadable()
    answer = client_credentials(srv)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", answer.text

    write_config(srv, REPORTS_APP)
    _, lines = reloaded(run_reload(srv))
    assert lines[1:] == ["applications: + reports"], lines
    answer = client_credentials(srv)
    assert answer.status_code == 200 and answer.json()["scope"] == "reports.read", answer.text

    # A new secret is the only one that works after the reload.
    write_config(srv, REPORTS_APP.replace(REPORTS_SECRET, REPORTS_SECRET + "-rotated"))
    _, lines = reloaded(run_reload(srv))
    assert lines[1:] == ["applications: ~ reports"], lines
    assert client_credentials(srv).status_code == 401
    rotated = client_credentials(srv, client=("reports", REPORTS_SECRET + "-rotated"))
    assert rotated.status_code == 200, rotated.text

    write_config(srv)
    _, lines = reloaded(run_reload(srv))
    assert lines[1:] == ["applications: - reports"], lines
    answer = client_credentials(srv, client=("reports", REPORTS_SECRET + "-rotated"))
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", answer.text
    login(srv)


def test_process_settings_keep_their_running_values_until_a_restart(make_reloadable):
    srv = make_reloadable()
    text = srv.original_config.replace("memory_kib = 1024", "memory_kib = 2048")
    assert text != srv.original_config
    srv.config.write_text(text + "\n[tokens]\naccess_token_seconds = 600\n")
    _, lines = reloaded(run_reload(srv))
    restart = [line for line in lines if line.startswith("needs a restart to take effect: ")]
    assert len(restart) == 1, lines
    assert set(restart[0].split(": ", 1)[1].split(", ")) == {"tokens", "password"}, restart
    answer = client_credentials(srv, client=("demo-web", WEB_SECRET), scope="api.read")
    assert answer.status_code == 200 and answer.json()["expires_in"] == 300, answer.text
    login(srv)


def test_a_refused_reload_changes_nothing_of_the_configuration_or_the_flows(make_reloadable):
    srv = make_reloadable()
    original = flow_version(srv.flows / "password.yaml")
    # A valid new application with a broken flow: neither goes live.
    write_config(srv, REPORTS_APP)
    (srv.flows / "password.yaml").write_text(PASSWORD_FLOW.replace("attempts: 3", "attempts: [", 1))
    result = run_reload(srv)
    refused(result, "password.yaml")
    assert result.stdout == ""
    assert client_credentials(srv).status_code == 401, "the application of a refused reload is live"
    login(srv)

    # A valid flow change with a broken configuration: neither goes live.
    changed = set_password_attempts(srv, 5)
    write_config(srv, REPORTS_APP + '\n[applications.broken]\nclient_secret = "0123456789abcdefgh"\n'
                      'redirect_uris = ["relative/path"]\n')
    refused(run_reload(srv), "applications.broken.redirect_uris")
    assert client_credentials(srv).status_code == 401
    _, answer = wrong_passwords(srv, 3)
    assert isinstance(answer, str) and query(answer)["error"] == "access_denied", \
        "the flow change of a refused reload is live"

    # A configuration that drops an application a flow names is refused too.
    config = re.sub(r"^\[applications\.crm\]\n(?:[^\[\n].*\n)*", "", srv.original_config, flags=re.M)
    srv.config.write_text(config + REPORTS_APP)
    refused(run_reload(srv), "crm")
    login(srv)

    # Fixed: both go live together, and the flow changes from the version that ran all along.
    write_config(srv, REPORTS_APP)
    _, lines = reloaded(run_reload(srv))
    assert f"~ flow password {original} -> {changed}" in lines and "applications: + reports" in lines, lines
    assert client_credentials(srv).status_code == 200


def test_the_cli_needs_a_reachable_server_and_valid_credentials(make_reloadable):
    srv = make_reloadable()
    result = run_reload(srv, password=None)
    assert result.returncode == 2 and "IDFLOW_ADMIN_PASSWORD" in result.stderr, result.stderr

    result = run_reload(srv, password="not-the-admin-password")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the server refused the credentials (401"), result.stderr
    # A user whose roles give no privilege is not admitted at all.
    result = run_reload(srv, user="alice", password=ALICE.password)
    assert result.returncode == 2 and "(401" in result.stderr, result.stderr
    reloaded(run_reload(srv))

    srv.stop()
    result = run_reload(srv)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: cannot reach the server at {srv.issuer}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_reloading_needs_the_config_reload_privilege_or_an_administrators_token(make_reloadable):
    srv = make_reloadable()
    srv.stop()
    srv.cli("role", "add", "auditors", "--privilege", "reports:read")
    srv.cli("role", "add", "operators", "--privilege", "config:reload")
    srv.cli("user", "add", "ivan", "--role", "auditors", "--password-stdin", stdin="ivan-password-123\n")
    srv.cli("user", "add", "olga", "--role", "operators", "--password-stdin", stdin="olga-password-123\n")
    srv.start()

    result = run_reload(srv, user="ivan", password="ivan-password-123")
    assert result.returncode == 2, result.stderr
    assert "(403" in result.stderr and "config:reload" in result.stderr, result.stderr
    reloaded(run_reload(srv, user="olga", password="olga-password-123"))

    # An access token an ordinary application got for the administrator does not open the admin
    # API: it must carry the `admin` scope, which only a client allowed it can ask for.
    token = login(srv, User("admin", ADMIN_PASSWORD))["access_token"]
    result = run_reload(srv, password=None, token=token)
    assert result.returncode == 2 and "admin` scope" in result.stderr, result.stderr
    config = srv.config.read_text()
    allowed = config.replace('scopes = ["api.read"]', 'scopes = ["api.read", "admin"]', 1)
    assert allowed != config
    srv.config.write_text(allowed)
    reloaded(run_reload(srv))
    token = login(srv, User("admin", ADMIN_PASSWORD), scope="openid admin")["access_token"]
    reloaded(run_reload(srv, password=None, token=token))
    client = client_credentials(srv, client=("demo-web", WEB_SECRET), scope="api.read")
    result = run_reload(srv, password=None, token=client.json()["access_token"])
    assert result.returncode == 2 and "(401" in result.stderr, result.stderr


def test_every_reload_through_the_api_is_audited(make_reloadable):
    srv = make_reloadable()
    set_password_attempts(srv, 4)
    generation, _ = reloaded(run_reload(srv))
    (srv.flows / "broken.flow").write_text('flow broken "unfinished" {\n')
    refused(run_reload(srv), "broken.flow")
    (srv.flows / "broken.flow").unlink()
    run_reload(srv, password="not-the-admin-password")

    srv.stop()
    admin = json.loads(srv.cli("user", "show", "admin").stdout)["id"]
    events = srv.audit("config.reload")
    assert len(events) == 2, events
    rejected, accepted = events  # newest first
    assert accepted["detail"] == {"generation": generation, "flows_changed": 1}, accepted
    assert rejected["detail"]["refused"].startswith("the flows have errors"), rejected
    assert all(e["actor"] == admin and e["ip"] == "127.0.0.1" for e in events), events


def test_sighup_reloads_and_a_broken_configuration_does_not_stop_the_server(make_reloadable):
    srv = make_reloadable()
    write_config(srv, REPORTS_APP)
    srv.process.send_signal(signal.SIGHUP)
    wait_for(lambda: client_credentials(srv).status_code == 200, "the new application after SIGHUP")

    srv.config.write_text(srv.original_config + REPORTS_APP + "\n[applications.unclosed\n")
    srv.process.send_signal(signal.SIGHUP)
    wait_for(lambda: log_count(srv, "reload refused") == 1, "the refusal in the log")
    assert srv.process.poll() is None, "SIGHUP with a broken configuration stopped the server"
    assert client_credentials(srv).status_code == 200
    login(srv)

    write_config(srv)
    srv.process.send_signal(signal.SIGHUP)
    wait_for(lambda: client_credentials(srv).status_code == 401, "the removed application after SIGHUP")
    login(srv)


def test_watch_reloads_after_a_file_changes(make_reloadable):
    srv = make_reloadable(watch=True)
    time.sleep(1)  # the watcher has taken its first look at the files
    reloads = log_count(srv, "configuration reloaded")
    set_password_attempts(srv, 1)
    wait_for(lambda: log_count(srv, "configuration reloaded") == reloads + 1, "a reload after the edit")
    _, answer = wrong_passwords(srv, 1)
    assert isinstance(answer, str) and query(answer)["error"] == "access_denied", answer

    # A broken save is refused and the running flow stays; the fix is picked up.
    (srv.flows / "password.yaml").write_text("flow: password\nsteps: [\n")
    wait_for(lambda: log_count(srv, "reload refused") == 1, "the refusal of the broken file")
    login(srv)
    set_password_attempts(srv, 3)
    wait_for(lambda: log_count(srv, "configuration reloaded") == reloads + 2, "a reload after the fix")
    _, answer = wrong_passwords(srv, 1)
    assert not isinstance(answer, str), f"still one try after the fix: {answer}"


def test_twenty_reloads_half_of_them_broken_under_login_load_break_no_login(make_reloadable):
    """The acceptance test: a bounded load of logins on loopback, logins in flight across each
    reload, 20 reloads alternating a valid flow change and a broken file."""
    srv = make_reloadable()
    broken_flow = ("broken.flow", 'flow broken "unfinished" {\n')
    breakages = [
        ("password.yaml", lambda: (srv.flows / "password.yaml").write_text(
            (srv.flows / "password.yaml").read_text().replace("attempts: ", "attempts: [", 1))),
        ("broken.flow", lambda: (srv.flows / broken_flow[0]).write_text(broken_flow[1])),
        ("applications.broken.redirect_uris", lambda: write_config(
            srv, '\n[applications.broken]\nclient_secret = "0123456789abcdefgh"\n'
                 'redirect_uris = ["relative/path"]\n')),
        ("F073", lambda: (srv.flows / "password.yaml").write_text(
            PASSWORD_FLOW.replace("attempts: 3", "attempts: 101", 1))),
        ("crm", lambda: srv.config.write_text(re.sub(
            r"^\[applications\.crm\]\n(?:[^\[\n].*\n)*", "", srv.original_config, flags=re.M))),
    ]

    stop = threading.Event()
    completed, failures = [], []

    def load():
        while not stop.is_set():
            try:
                login(srv)
                completed.append(time.time())
            except Exception as error:  # every failure counts, whatever it is
                failures.append(repr(error))

    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    live = flow_version(srv.flows / "password.yaml")
    generation = None
    in_flight = 0
    try:
        for i in range(20):
            # Logins in flight across the reload: one at its login page, one holding a code.
            at_page = start_login(srv)
            with_code = submit_password(start_login(srv))
            if i % 2 == 0:
                (srv.flows / broken_flow[0]).unlink(missing_ok=True)
                write_config(srv)
                version = set_password_attempts(srv, 4 + i // 2)
                result = run_reload(srv)
                now, lines = reloaded(result)
                assert generation is None or now == generation + 1, (generation, lines)
                assert lines[1] == f"~ flow password {live} -> {version}", lines
                assert all(line.startswith("    ~ ") for line in lines[2:]), lines
                generation, live = now, version
            else:
                expected, breakage = breakages[(i // 2) % len(breakages)]
                breakage()
                refused(run_reload(srv), expected)
            redeem(srv, *submit_password(at_page))
            redeem(srv, *with_code)
            in_flight += 2
            time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        (srv.flows / broken_flow[0]).unlink(missing_ok=True)
        write_config(srv)
        set_password_attempts(srv, 3)

    assert not failures, f"{len(failures)} failed logins, e.g. {failures[:3]}"
    assert len(completed) >= 20, f"only {len(completed)} logins ran during the reloads"
    assert in_flight == 40
    reloaded(run_reload(srv))
    login(srv)
