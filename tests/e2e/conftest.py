"""End-to-end harness: starts the real `idflow` binary on a free loopback port with its own
data directory, and drives the login pages like a browser would (cookies, forms, redirects).

The binary comes from IDFLOW_BIN (scripts/test sets it). Each server gets a configuration made
from the quickstart one, with a cheap argon2id cost so that tests spend their time on protocol
behaviour rather than hashing.
"""

import html.parser
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = str(pathlib.Path(os.environ.get("IDFLOW_BIN", REPO / "target" / "debug" / "idflow")).resolve())
ADMIN_PASSWORD = "admin-password-for-tests"
WEB_SECRET = "demo-web-secret-change-me"
WEB_REDIRECT = "http://localhost:8000/callback"
SPA_REDIRECT = "http://localhost:8000/spa/callback"
USER_PASSWORD = "alice-password-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config(directory, extra=""):
    """The quickstart configuration with absolute flow paths and a cheap password hash."""
    text = (REPO / "examples" / "quickstart" / "idflow.toml").read_text()
    text = text.replace('flows = "../../flows"', f'flows = "{REPO / "flows"}"')
    text = text.replace("memory_kib = 19456", "memory_kib = 1024").replace(
        "iterations = 2", "iterations = 1"
    )
    path = pathlib.Path(directory) / "idflow.toml"
    path.write_text(text + extra)
    return path


class Server:
    """One idflow process with its own data directory."""

    def __init__(self, directory, extra_config="", scheme="http", ca=None):
        self.directory = pathlib.Path(directory)
        self.config = test_config(self.directory, extra_config)
        self.data = self.directory / "data"
        self.port = free_port()
        self.issuer = f"{scheme}://localhost:{self.port}"
        # What requests verifies the server's certificate against (https only).
        self.ca = ca
        self.process = None
        self.log = self.directory / "server.log"

    def cli(self, *args, stdin=None, check=True):
        """Runs an idflow command against this server's data directory (server stopped)."""
        result = subprocess.run(
            [BIN, *args, "--config", str(self.config), "--data-dir", str(self.data)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"idflow {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self):
        env = dict(os.environ, IDFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD)
        self.process = subprocess.Popen(
            [
                BIN, "serve",
                "--config", str(self.config),
                "--data-dir", str(self.data),
                "--listen", f"127.0.0.1:{self.port}",
                "--issuer", self.issuer,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"idflow exited: {self.log.read_text()}")
            try:
                ready = requests.get(f"{self.issuer}/readyz", timeout=1, verify=self.ca or True)
                if ready.status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"idflow did not become ready: {self.log.read_text()}")

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def url(self, path):
        return f"{self.issuer}{path}"


@pytest.fixture
def server():
    directory = tempfile.mkdtemp(prefix="idflow-e2e-")
    srv = Server(directory)
    # Users are data in the store; the CLI writes them before the server opens it.
    srv.cli("user", "add", "alice", "--email", "alice@example.com",
            "--display-name", "Alice Liddell", "--password-stdin", stdin=USER_PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(directory, ignore_errors=True)


class Forms(html.parser.HTMLParser):
    """Collects the forms of a page: action, and the inputs' names and values."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "fields": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""


def forms(page):
    parser = Forms()
    parser.feed(page)
    return parser.forms


def option_form(page, option):
    for form in forms(page):
        if form["fields"].get("option") == option:
            return form
    raise AssertionError(f"no form for option {option!r} in page:\n{page}")


class Browser:
    """A person at a browser: follows redirects on this server, stops at the application's."""

    def __init__(self, server):
        self.server = server
        self.session = requests.Session()

    def go(self, url, method="GET", data=None, stop_prefix="http://localhost:8000"):
        """Requests `url`, following redirects until one leaves for the application (returned
        as the final Location) or a page is shown (returned as a response)."""
        for _ in range(10):
            response = self.session.request(method, url, data=data, allow_redirects=False, timeout=30)
            if response.status_code in (302, 303, 307):
                location = urllib.parse.urljoin(url, response.headers["Location"])
                if location.startswith(stop_prefix):
                    return location
                url, method, data = location, "GET", None
                continue
            return response
        raise AssertionError("redirect loop")

    def submit(self, page, option, **fields):
        form = option_form(page, option)
        data = dict(form["fields"])
        data.update(fields)
        return self.go(self.server.url(form["action"]), "POST", data)

    def login(self, authorize_url, username="alice", password=USER_PASSWORD):
        """Runs the password login that `authorize_url` starts; returns the redirect to the app."""
        page = self.go(authorize_url)
        assert not isinstance(page, str), f"expected a login page, got a redirect to {page}"
        assert page.status_code == 200, page.text
        return self.submit(page.text, "password", username=username, password=password)


def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
