"""Two `idflow serve` nodes on one PostgreSQL database (`[store] kind = "postgres"`), as behind a
load balancer: one issuer, one data directory's key files, one database. Any node continues any
login; a code or a refresh token works once whichever node sees it; a node killed in the middle
of a login leaves nothing the other needs. Needs the database that `IDFLOW_TEST_POSTGRES` names
(`scripts/postgres` starts one; scripts/test does)."""

import base64
import hashlib
import os
import signal
import subprocess
import tempfile
import time
import urllib.parse
import shutil
import pathlib

import pytest
import requests

import conftest
from conftest import (
    ADMIN_PASSWORD, BIN, USER_PASSWORD, WEB_REDIRECT, WEB_SECRET, Browser, free_port, option_form,
    query,
)

ADMIN_URL = os.environ.get("IDFLOW_TEST_POSTGRES")
if not ADMIN_URL:
    if os.environ.get("IDFLOW_TEST_POSTGRES_REQUIRED"):
        raise RuntimeError("IDFLOW_TEST_POSTGRES is not set: run scripts/postgres")
    pytest.skip("no PostgreSQL (IDFLOW_TEST_POSTGRES)", allow_module_level=True)


VERIFIER = "dBjftJeZ4CK1-zG0i0EXwLU2S8lJmLuoA6HLYyG84vA"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


def fresh_database():
    """A new database for one test, and its URL."""
    import secrets
    name = f"idflow_test_{secrets.token_hex(8)}"
    subprocess.run(["psql", ADMIN_URL, "-qc", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True, timeout=60)
    parts = urllib.parse.urlsplit(ADMIN_URL)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


class Node:
    """One `idflow serve` process of a cluster: its own port, the cluster's issuer, config,
    data directory (key files) and database."""

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.port = free_port()
        self.base = f"http://localhost:{self.port}"
        self.process = None
        self.log = cluster.directory / f"{name}.log"

    def start(self):
        env = dict(os.environ, IDFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD,
                   IDFLOW_DATABASE_URL=self.cluster.database)
        self.process = subprocess.Popen(
            [BIN, "serve", "--config", str(self.cluster.config), "--data-dir", str(self.cluster.data),
             "--listen", f"127.0.0.1:{self.port}", "--issuer", self.cluster.issuer],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()}")
            try:
                if requests.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not become ready: {self.log.read_text()}")

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def url(self, path):
        return f"{self.base}{path}"


class Cluster:
    def __init__(self, extra=""):
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix="idflow-nodes-"))
        self.database = fresh_database()
        extra += '\n[store]\nkind = "postgres"\nurl_env = "IDFLOW_DATABASE_URL"\nconnections = 4\n'
        self.config = conftest.test_config(self.directory, extra)
        self.data = self.directory / "data"
        # The issuer the load balancer would serve; each node is reached at its own port.
        self.issuer = f"http://localhost:{free_port()}"
        self.a, self.b = Node(self, "a"), Node(self, "b")

    def cli(self, *args, stdin=None):
        env = dict(os.environ, IDFLOW_DATABASE_URL=self.database)
        result = subprocess.run([BIN, *args, "--config", str(self.config), "--data-dir", str(self.data)],
                                input=stdin, capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        return result

    def close(self):
        for node in (self.a, self.b):
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def cluster(request):
    made = Cluster(getattr(request, "param", ""))
    made.cli("user", "add", "alice", "--email", "alice@example.com", "--password-stdin",
             stdin=USER_PASSWORD + "\n")
    made.a.start()
    made.b.start()
    yield made
    made.close()


def authorize_url(cluster, node, **extra):
    params = {"response_type": "code", "client_id": "demo-web", "redirect_uri": WEB_REDIRECT,
              "scope": "openid offline_access", "state": "s1", "nonce": "n1",
              "code_challenge": CHALLENGE,
              "code_challenge_method": "S256", **extra}
    return node.url("/authorize?" + urllib.parse.urlencode(params))




def password_page(browser, cluster, node):
    page = browser.go(authorize_url(cluster, node))
    assert not isinstance(page, str) and page.status_code == 200, page
    return page.text


def finish_at(browser, node, page):
    """Submits the password form of `page` to `node` (the form's own action, another host)."""
    form = option_form(page, "password")
    data = dict(form["fields"], username="alice", password=USER_PASSWORD)
    return browser.go(node.url(form["action"]), "POST", data)


def redeem(node, code):
    return requests.post(node.url("/token"), auth=("demo-web", WEB_SECRET), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT,
        "code_verifier": VERIFIER})


def refresh(node, token):
    return requests.post(node.url("/token"), auth=("demo-web", WEB_SECRET), timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token})


def test_a_login_begun_on_one_node_completes_on_the_other_and_its_code_works_once(cluster):
    browser = Browser(cluster.a)
    page = password_page(browser, cluster, cluster.a)
    done = finish_at(browser, cluster.b, page)
    assert isinstance(done, str) and done.startswith(WEB_REDIRECT), f"B did not finish A's login: {done}"
    params = query(done)
    assert params["iss"] == cluster.issuer and params["state"] == "s1"

    token = redeem(cluster.a, params["code"])
    assert token.status_code == 200, token.text
    again = redeem(cluster.b, params["code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    # The reuse revoked what the first redemption issued, on every node.
    introspected = requests.post(cluster.b.url("/introspect"), auth=("demo-web", WEB_SECRET), timeout=10,
                                 data={"token": token.json()["access_token"]}).json()
    assert introspected == {"active": False}, introspected


def test_a_refresh_token_from_one_node_works_on_the_other_exactly_once(cluster):
    browser = Browser(cluster.a)
    done = finish_at(browser, cluster.a, password_page(browser, cluster, cluster.a))
    first = redeem(cluster.a, query(done)["code"]).json()
    assert "refresh_token" in first, first

    rotated = refresh(cluster.b, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    reused = refresh(cluster.a, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", reused.text
    # A reuse revokes the family: the token B just issued dies too.
    after = refresh(cluster.b, rotated.json()["refresh_token"])
    assert after.status_code == 400, after.text


def test_many_refreshes_of_one_token_at_once_across_nodes_succeed_once(cluster):
    browser = Browser(cluster.a)
    done = finish_at(browser, cluster.a, password_page(browser, cluster, cluster.a))
    token = redeem(cluster.a, query(done)["code"]).json()["refresh_token"]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: refresh((cluster.a, cluster.b)[i % 2], token), range(8)))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 7, [a.text for a in answers]


def test_a_node_killed_in_the_middle_of_a_login_leaves_the_other_to_finish_it(cluster):
    browser = Browser(cluster.a)
    page = password_page(browser, cluster, cluster.a)
    cluster.a.stop(signal.SIGKILL)
    done = finish_at(browser, cluster.b, page)
    assert isinstance(done, str) and done.startswith(WEB_REDIRECT), done
    assert redeem(cluster.b, query(done)["code"]).status_code == 200
    # And A, restarted, serves the sign-in B made: its single sign-on session is shared.
    cluster.a.start()
    again = browser.go(authorize_url(cluster, cluster.a, state="s2"))
    assert isinstance(again, str) and query(again)["state"] == "s2", f"A asked again: {again}"


def flow_version(node, flow):
    answer = requests.get(node.url(f"/admin/v1/flows/{flow}"), auth=("admin", ADMIN_PASSWORD), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["version"]


def test_a_reload_on_one_node_reaches_the_other(cluster):
    # The nodes read one copy of the flows, as nodes deployed from one repository do.
    flows = cluster.directory / "flows"
    shutil.copytree(conftest.REPO / "flows", flows)
    config = cluster.config.read_text()
    cluster.config.write_text(config.replace(f'flows = "{conftest.REPO / "flows"}"', f'flows = "{flows}"'))
    for node in (cluster.a, cluster.b):
        node.stop()
        node.start()
    before = flow_version(cluster.b, "password")
    assert flow_version(cluster.a, "password") == before

    source = flows / "password.flow"
    source.write_text(source.read_text().replace("attempts 3", "attempts 4", 1))
    (flows / "password.yaml").write_text(
        (flows / "password.yaml").read_text().replace("attempts: 3", "attempts: 4", 1))
    reloaded = requests.post(cluster.a.url("/admin/v1/reload"), auth=("admin", ADMIN_PASSWORD), json={},
                             timeout=30)
    assert reloaded.status_code == 200, reloaded.text
    after = flow_version(cluster.a, "password")
    assert after != before
    deadline = time.time() + 10
    while flow_version(cluster.b, "password") != after:
        assert time.time() < deadline, "node B never heard of A's reload"
        time.sleep(0.1)
    # B audits why it reloaded.
    entries = requests.get(cluster.b.url("/admin/v1/audit"), params={"event": "config.reload"},
                           auth=("admin", ADMIN_PASSWORD), timeout=10).json()["entries"]
    assert any(e["detail"].get("by") == "another node" for e in entries), entries


@pytest.mark.parametrize("cluster", ["\n[throttle]\nuser_ip_failures = 3\n"], indirect=True)
def test_failed_attempts_count_across_nodes(cluster):
    # Two wrong passwords on A and one on B reach the limit of three: the fourth attempt is
    # refused on either node, even with the right password.
    for node, wrong in ((cluster.a, "wrong-1"), (cluster.a, "wrong-2"), (cluster.b, "wrong-3")):
        browser = Browser(node)
        page = password_page(browser, cluster, node)
        form = option_form(page, "password")
        answer = browser.go(node.url(form["action"]), "POST",
                            dict(form["fields"], username="alice", password=wrong))
        assert not isinstance(answer, str) and answer.status_code == 422, answer
    for node in (cluster.a, cluster.b):
        browser = Browser(node)
        refused = finish_at(browser, node, password_page(browser, cluster, node))
        assert not isinstance(refused, str) and refused.status_code == 429, \
            f"node {node.name} let a fourth attempt through: {refused}"


def test_secrets_are_stored_only_as_hashes_in_postgresql(cluster):
    from test_security import assert_stored_only_hashed, leave_secrets
    hashed, totp_key = leave_secrets(cluster.a)
    # Every table whole (what a database dump or a backup holds), and the key files.
    tables = subprocess.run(["psql", cluster.database, "-qX", "-c", "COPY idflow_kv TO STDOUT",
                             "-c", "COPY idflow_log TO STDOUT"],
                            check=True, capture_output=True, timeout=60).stdout
    files = b"".join(p.read_bytes() for p in sorted(cluster.data.rglob("*")) if p.is_file())
    assert_stored_only_hashed(tables + files, hashed, totp_key)
