"""Starting the server: the embedded default, the first admin password, configuration errors,
overrides from the environment, the CLI on the data directory, and key rotation."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import requests

from conftest import BIN, REPO, USER_PASSWORD, WEB_REDIRECT, Browser, Server, free_port, query


def start_bare(cwd, env_extra=None, args=()):
    """`idflow serve` in `cwd` with no configuration file; returns (process, port)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDFLOW_")}
    env.update({"IDFLOW_LISTEN": f"127.0.0.1:{port}", "IDFLOW_ISSUER": f"http://localhost:{port}"})
    env.update(env_extra or {})
    process = subprocess.Popen([BIN, "serve", *args], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if requests.get(f"http://localhost:{port}/readyz", timeout=1).status_code == 200:
                return process, port
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("not ready")


def stop(process):
    process.terminate()
    _, err = process.communicate(timeout=10)
    return err


def test_the_embedded_default_runs_with_no_configuration_and_prints_the_admin_password_once():
    cwd = tempfile.mkdtemp(prefix="idflow-bare-")
    process, port = start_bare(cwd)
    err = stop(process)
    match = re.search(r"created the user `admin` with the password\s+(\S+)", err)
    assert match, err
    password = match.group(1)
    assert (pathlib.Path(cwd) / "idflow-data" / "idflow.redb").is_file()

    process, port = start_bare(cwd)
    try:
        # The admin logs in to the quickstart's demo client with the printed password.
        server = type("S", (), {"url": lambda self, p: f"http://localhost:{port}{p}"})()
        url = f"http://localhost:{port}/authorize?client_id=demo-web&response_type=code&scope=openid%20roles&redirect_uri={WEB_REDIRECT}"
        callback = Browser(server).login(url, username="admin", password=password)
        assert "code" in query(callback)
        code = query(callback)["code"]
        tokens = requests.post(f"http://localhost:{port}/token", auth=("demo-web", "demo-web-secret-change-me"),
                               data={"grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT},
                               timeout=10).json()
        info = requests.get(f"http://localhost:{port}/userinfo", timeout=10,
                            headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
        assert info["roles"] == ["admin"]
    finally:
        err = stop(process)
    assert "password" not in err, "the password is printed only when the admin user is created"


def test_the_admin_password_can_come_from_the_environment():
    cwd = tempfile.mkdtemp(prefix="idflow-bare-")
    process, port = start_bare(cwd, {"IDFLOW_ADMIN_PASSWORD": "from-the-environment"})
    try:
        server = type("S", (), {"url": lambda self, p: f"http://localhost:{port}{p}"})()
        url = f"http://localhost:{port}/authorize?client_id=demo-web&response_type=code&scope=openid&redirect_uri={WEB_REDIRECT}"
        assert "code" in query(Browser(server).login(url, username="admin", password="from-the-environment"))
    finally:
        err = stop(process)
    assert "created the user" not in err


def run_serve_expecting_failure(config_text):
    directory = tempfile.mkdtemp(prefix="idflow-bad-")
    config = pathlib.Path(directory) / "idflow.toml"
    config.write_text(config_text)
    result = subprocess.run([BIN, "serve", "--config", str(config), "--data-dir", str(pathlib.Path(directory) / "d")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_a_bad_configuration_names_the_key_and_line():
    err = run_serve_expecting_failure('[server]\nlisten = "127.0.0.1:1"\nissuer = "http://x"\nlisen = "typo"\n')
    assert "lisen" in err and "idflow.toml:4: " in err, err
    err = run_serve_expecting_failure('[server]\n\nlisten = "nonsense"\n')
    assert "idflow.toml:3: server.listen" in err, err
    err = run_serve_expecting_failure('[applications.web]\nclient_secret = "0123456789abcdefgh"\nredirect_uris = ["relative/path"]\n')
    assert "idflow.toml:3: applications.web.redirect_uris" in err, err


def test_flows_with_errors_stop_the_start_with_their_diagnostics():
    directory = tempfile.mkdtemp(prefix="idflow-badflow-")
    flows = pathlib.Path(directory) / "flows"
    flows.mkdir()
    (flows / "broken.yaml").write_text("flow: broken\ndefault: true\nsteps:\n- id: a\n  authenticate: [pasword]\n")
    result = subprocess.run([BIN, "serve", "--data-dir", str(pathlib.Path(directory) / "d"), "--flows", str(flows),
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30,
                            cwd=directory)
    assert result.returncode == 2
    assert "broken.yaml" in result.stderr and "pasword" in result.stderr, result.stderr


def test_user_and_role_commands_work_on_the_data_directory():
    directory = tempfile.mkdtemp(prefix="idflow-cli-")
    server = Server(directory)
    server.cli("role", "add", "auditor", "--privilege", "audit:read", "--description", "Reads the audit log")
    added = server.cli("user", "add", "bob", "--email", "bob@example.com", "--role", "auditor")
    generated = re.search(r"password: (\S+)", added.stdout).group(1)
    assert "bob" in server.cli("user", "list").stdout
    assert "auditor" in server.cli("role", "list").stdout
    assert server.cli("user", "grant", "bob", "nosuchrole", check=False).returncode == 1
    server.cli("user", "set-password", "bob", "--password-stdin", stdin="a-new-password\n")
    server.start()
    try:
        url = server.url(f"/authorize?client_id=demo-web&response_type=code&scope=openid&redirect_uri={WEB_REDIRECT}")
        old = Browser(server).login(url, username="bob", password=generated)
        assert not isinstance(old, str) and old.status_code == 422, "the old password no longer works"
        assert "code" in query(Browser(server).login(url, username="bob@example.com", password="a-new-password"))
        busy = server.cli("user", "list", check=False)
        assert busy.returncode != 0 and "in use" in busy.stderr, "the running server holds the store"
    finally:
        server.stop()
    server.cli("user", "revoke", "bob", "auditor")
    assert '"auditor"' not in server.cli("user", "show", "bob").stdout
    # The audit log has the logins (one failed attempt, one success) and the admin actions.
    events = [json.loads(line) for line in server.cli("audit", "--limit", "100").stdout.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "user.revoke", names
    for expected in ("login.success", "login.failed_attempt", "user.set_password", "user.create", "role.put"):
        assert expected in names, (expected, names)
    success = next(e for e in events if e["event"] == "login.success")
    assert success["ip"] == "127.0.0.1" and success["detail"]["flow"] == "password"


def test_key_rotation_keeps_old_keys_published():
    directory = tempfile.mkdtemp(prefix="idflow-keys-")
    server = Server(directory)
    server.start()
    before = {k["kid"] for k in requests.get(server.url("/jwks"), timeout=10).json()["keys"]}
    server.stop()
    rotated = server.cli("keys", "rotate").stdout
    assert "RS256" in rotated and "ES256" in rotated
    server.start()
    try:
        after = {k["kid"] for k in requests.get(server.url("/jwks"), timeout=10).json()["keys"]}
        assert before < after and len(after) == 4, "old keys stay until their tokens expire"
    finally:
        server.stop()
    assert server.cli("keys", "list").stdout.count("active") == 2


def test_a_login_in_flight_finishes_on_its_flow_version_after_a_restart(tmp_path):
    flows = tmp_path / "flows"
    shutil.copytree(REPO / "flows", flows)
    server = Server(tmp_path)
    server.config.write_text(server.config.read_text().replace(f'flows = "{REPO / "flows"}"', f'flows = "{flows}"'))
    server.cli("user", "add", "alice", "--password-stdin", stdin=USER_PASSWORD + "\n")
    server.start()
    try:
        url = server.url(f"/authorize?client_id=demo-web&response_type=code&scope=openid&redirect_uri={WEB_REDIRECT}")
        browser = Browser(server)
        page = browser.go(url).text
        server.stop()
        # The default flow changes while the login is in flight: a new version.
        (flows / "password.flow").unlink()
        text = (flows / "password.yaml").read_text()
        (flows / "password.yaml").write_text(text.replace("attempts: 3", "attempts: 4"))
        server.start()
        callback = browser.submit(page, "password", username="alice", password=USER_PASSWORD)
        assert isinstance(callback, str) and "code" in query(callback), getattr(callback, "text", callback)
        # New logins run the new version: four tries before denial.
        page = browser.go(server.url(f"/authorize?client_id=demo-web&response_type=code&scope=openid&prompt=login&redirect_uri={WEB_REDIRECT}")).text
        for _ in range(3):
            page = browser.submit(page, "password", username="alice", password="wrong-password")
            assert page.status_code == 422
            page = page.text
    finally:
        server.stop()


def test_a_hash_made_under_older_parameters_is_upgraded_at_login(tmp_path):
    server = Server(tmp_path)
    older = tmp_path / "older.toml"
    older.write_text(server.config.read_text().replace("memory_kib = 1024", "memory_kib = 2048"))
    subprocess.run([BIN, "user", "add", "carol", "--password-stdin", "--config", str(older),
                    "--data-dir", str(server.data)], input=USER_PASSWORD + "\n", text=True, check=True,
                   capture_output=True, timeout=60)
    assert "m=2048" in server.cli("user", "show", "carol").stdout
    server.start()
    try:
        url = server.url(f"/authorize?client_id=demo-web&response_type=code&scope=openid&redirect_uri={WEB_REDIRECT}")
        assert "code" in query(Browser(server).login(url, username="carol"))
        time.sleep(0.5)  # the rehash runs after the login's answer
    finally:
        server.stop()
    shown = server.cli("user", "show", "carol").stdout
    assert "argon2id v=19 m=1024,t=1,p=1" in shown, shown
    assert "$" not in shown.split('"password_hash"')[1].split("\n")[0], "no salt or hash is printed"


def test_a_syntax_error_does_not_echo_the_line_that_may_hold_a_secret():
    err = run_serve_expecting_failure('[applications.web]\nclient_secret = "s3cret-value-0123456789 \n')
    assert "idflow.toml:2: " in err, err
    assert "s3cret-value" not in err, err
