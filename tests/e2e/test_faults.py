"""Fault tests (issue 11, part 3): `kill -9` at random points during SCIM writes and during
logins, then a restart on the same data: nothing acknowledged is lost, nothing half made; a full
disk and a read-only data directory give clear errors, no hang, no crash and no corruption.

What "acknowledged" means here: the client received a 2xx answer (for a login, the redirect to
the application with its code). A request that was sent and got no answer is "in flight": it
may or may not have happened, but wholly or not at all.

The kill points are random but seeded: a failure names IDFLOW_FAULT_SEED, and running with it
set again replays the same delays (the interleaving of the client threads is the scheduler's).
IDFLOW_FAULT_ROUNDS sets how many kills each kill test makes (more for a longer soak). With
IDFLOW_TEST_POSTGRES set the kill tests also run on PostgreSQL.

Mounts (tmpfs for the full disk, an ext4 image on a loop device for a file system the kernel
turns read-only under the running server) need root; the tests skip, saying why, when the
kernel refuses them, and unmount everything they mounted however they end.
"""

import base64
import hashlib
import json
import os
import pathlib
import random
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import (
    ADMIN_PASSWORD, BIN, USER_PASSWORD, WEB_REDIRECT, WEB_SECRET, Browser, Server, User, query,
)

SEED = int(os.environ.get("IDFLOW_FAULT_SEED") or secrets.randbelow(2**32))
ROUNDS = int(os.environ.get("IDFLOW_FAULT_ROUNDS") or 0)
POSTGRES = os.environ.get("IDFLOW_TEST_POSTGRES")

SCIM_TYPE = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
HR_SECRET = "hr-sync-secret-for-tests-0123456789"

# A SCIM client, and an outbound target that is never reachable: every user created queues a
# `user.created` event in the batch that creates it, and the event stays in the outbox
# (retried with backoff), so the outbox shows which creations committed.
CONFIG = f"""
[applications.hr-sync]
client_secret = "{HR_SECRET}"
grant_types = ["client_credentials"]
scopes = ["scim"]

[provisioning_targets.sink]
type = "scim2"
url = "http://127.0.0.1:9/scim/v2"
auth = "bearer"
token = "never-used-by-anyone"
on = ["user.created"]
max_attempts = 100
timeout_seconds = 1
"""

BACKENDS = ["embedded", pytest.param("postgres", marks=pytest.mark.skipif(
    not POSTGRES, reason="no PostgreSQL (IDFLOW_TEST_POSTGRES; scripts/postgres starts one)"))]


def rounds(default):
    return ROUNDS or default


def seeded(what):
    """A failure message prefix that says how to replay this run."""
    return f"[IDFLOW_FAULT_SEED={SEED}, {what}]"


# Mounts, servers and their teardown.


def run(*args, check=True):
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def refused(result):
    """Whether a failed mount was the kernel saying no to us (no privilege), not a bug here."""
    text = result.stderr.lower()
    return any(why in text for why in ("permission denied", "not permitted", "must be superuser",
                                       "only root"))


class Lab:
    """The servers, mounts and loop devices one test made; `close` undoes them in order
    (servers first, so nothing holds a mount), whatever state the test left them in."""

    def __init__(self):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="idflow-faults-"))
        self.servers, self.mounts, self.loops = [], [], []

    def server(self, name, extra="", backend="embedded"):
        directory = self.root / name
        directory.mkdir()
        srv = Server(directory, extra + (postgres_config() if backend == "postgres" else ""))
        self.servers.append(srv)
        return srv

    def tmpfs(self, path, size):
        path.mkdir(parents=True, exist_ok=True)
        result = run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path), check=False)
        if result.returncode != 0:
            if refused(result):
                pytest.skip(f"cannot mount a tmpfs here (not privileged): {result.stderr.strip()}")
            raise AssertionError(f"mount tmpfs failed: {result.stderr}")
        self.mounts.append(path)

    def ext4(self, path, size_mb):
        """An ext4 file system on a loop device, mounted with errors=remount-ro so that an error
        makes the kernel turn it read-only under whoever has files open on it."""
        if not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
            pytest.skip("mkfs.ext4 or losetup is not installed")
        image = self.root / f"{path.name}.img"
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        run("mkfs.ext4", "-q", "-F", str(image))
        attached = run("losetup", "-f", "--show", str(image), check=False)
        if attached.returncode != 0:
            pytest.skip(f"no loop device available: {attached.stderr.strip()}")
        device = attached.stdout.strip()
        self.loops.append(device)
        path.mkdir(parents=True, exist_ok=True)
        mounted = run("mount", "-t", "ext4", "-o", "errors=remount-ro", device, str(path), check=False)
        if mounted.returncode != 0:
            if refused(mounted):
                pytest.skip(f"cannot mount ext4 here: {mounted.stderr.strip()}")
            raise AssertionError(f"mount ext4 failed: {mounted.stderr}")
        self.mounts.append(path)
        trigger = pathlib.Path("/sys/fs/ext4") / pathlib.Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"the kernel has no {trigger} to turn the file system read-only")
        return device, trigger

    def unmount(self, path):
        if path in self.mounts:
            result = run("umount", str(path), check=False)
            if result.returncode != 0:
                run("umount", "-l", str(path), check=False)
            self.mounts.remove(path)

    def close(self):
        for srv in self.servers:
            if srv.process and srv.process.poll() is None:
                srv.process.kill()
                srv.process.wait(timeout=10)
            srv.process = None
        for path in reversed(list(self.mounts)):
            self.unmount(path)
        for device in self.loops:
            run("losetup", "-d", device, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def lab():
    made = Lab()
    try:
        yield made
    finally:
        made.close()


def postgres_config():
    return '\n[store]\nkind = "postgres"\nurl_env = "IDFLOW_DATABASE_URL"\nconnections = 8\n'


@pytest.fixture
def backend(request, monkeypatch):
    """`embedded`, or `postgres` with a fresh database named in IDFLOW_DATABASE_URL (which the
    server and the CLI read)."""
    if request.param == "postgres":
        name = f"idflow_test_{secrets.token_hex(8)}"
        run("psql", POSTGRES, "-qc", f"CREATE DATABASE {name}")
        parts = urllib.parse.urlsplit(POSTGRES)
        monkeypatch.setenv("IDFLOW_DATABASE_URL", urllib.parse.urlunsplit(parts._replace(path=f"/{name}")))
        yield "postgres"
        run("psql", POSTGRES, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)
    else:
        yield "embedded"


def log_since(srv, offset):
    return srv.log.read_bytes()[offset:].decode(errors="replace") if srv.log.exists() else ""


def log_size(srv):
    return srv.log.stat().st_size if srv.log.exists() else 0


def assert_clean_log(text, what):
    """No panic and no error in a stretch of the server's log (coloured: escapes are dropped
    first, or `\\bERROR\\b` would never match the escape-wrapped level)."""
    lines = (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines())
    bad = [line for line in lines if "panicked" in line or re.search(r"\bERROR\b", line)]
    assert not bad, f"{what}: the server logged errors:\n" + "\n".join(bad[:20])


def restart(srv):
    """Starts the server on the same data after a kill: it must open the store by itself and
    answer /readyz (Server.start fails on an exit or after 30 s)."""
    offset = log_size(srv)
    srv.start()
    return offset


def progress(count, at_least, what, timeout=20):
    """Waits until the clients have had `at_least` answers, so that every kill lands in the
    middle of work rather than before it starts."""
    deadline = time.time() + timeout
    while count() < at_least:
        assert time.time() < deadline, f"{what}: the clients got nothing done in {timeout} s"
        time.sleep(0.005)


def kill(srv):
    srv.process.kill()
    srv.process.wait(timeout=10)
    srv.process = None


# SCIM.


class Scim:
    """A SCIM client with a client_credentials token; one requests session per thread."""

    def __init__(self, srv):
        self.srv = srv
        answer = requests.post(srv.url("/token"), data={"grant_type": "client_credentials", "scope": "scim"},
                               auth=("hr-sync", HR_SECRET), timeout=10)
        assert answer.status_code == 200, answer.text
        self.headers = {"Authorization": "Bearer " + answer.json()["access_token"], "Content-Type": SCIM_TYPE}
        self.local = threading.local()

    def call(self, method, path, body=None, timeout=10, **params):
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session.request(method, self.srv.url("/scim/v2" + path), json=body,
                                          params=params or None, headers=self.headers, timeout=timeout)

    def ok(self, method, path, body=None, **params):
        answer = self.call(method, path, body, **params)
        assert answer.status_code < 300, (method, path, answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def everyone(self):
        """Every user, through the paged listing: id -> resource."""
        found, start = {}, 1
        while True:
            page = self.ok("GET", "/Users", startIndex=str(start), count="200")
            for resource in page["Resources"]:
                found[resource["id"]] = resource
            start += len(page["Resources"])
            if not page["Resources"] or start > page["totalResults"]:
                return found

    def named(self, user_name):
        return self.ok("GET", "/Users", filter=f'userName eq "{user_name}"')["Resources"]


def admin(srv, path, **params):
    answer = requests.get(srv.url("/admin/v1" + path), params=params, auth=("admin", ADMIN_PASSWORD), timeout=30)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.json()


def admin_users(srv):
    found, offset = {}, 0
    while True:
        page = admin(srv, "/users", limit="1000", offset=str(offset))
        for user in page["users"]:
            found[user["id"]] = user
        offset += len(page["users"])
        if not page["users"] or offset >= page["total"]:
            return found


def user_body(name, rng):
    """A user with every kind of attribute SCIM keeps: mapped ones (userName, displayName, the
    primary email, active), nested and multi-valued ones, an extension, and a title of random
    length so that records span from a few bytes to a few pages."""
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": name,
        "displayName": f"{name} display",
        "name": {"givenName": name.title(), "familyName": "Faulty"},
        "emails": [{"value": f"{name}@fault.example", "type": "work", "primary": True}],
        "title": "t" * rng.choice([1, 40, 900, 5000]),
        "active": rng.random() < 0.8,
        ENTERPRISE: {"employeeNumber": str(rng.randrange(10**6))},
    }


def attributes(body):
    return {k: v for k, v in body.items() if k not in ("schemas", "password")}


class Sent:
    """One user as the clients know it: what was sent, what was acknowledged, what is in flight.

    `versions` are the attribute sets the stored user may have: one after an acknowledged
    change, two while a change is in flight (before or after). `deleted` is True after an
    acknowledged delete, None while one is in flight."""

    def __init__(self, name, body):
        self.name, self.body = name, body
        self.id = None
        self.created = "in flight"   # or "acked"
        self.versions = [attributes(body)]
        self.deleted = False
        self.busy = False            # a patch or delete owns it


class ScimLedger:
    def __init__(self, preexisting):
        self.lock = threading.Lock()
        self.preexisting = preexisting   # userNames there before the test's clients
        self.users = {}              # userName -> Sent
        self.unexpected = []         # answers no client should ever get
        self.bulks = {"acked": 0, "in flight": 0}
        self.checks = set()          # ids of users the checks themselves made (and deleted)

    def add(self, name, body):
        with self.lock:
            self.users[name] = sent = Sent(name, body)
            return sent

    def acked_count(self):
        with self.lock:
            return sum(s.created == "acked" for s in self.users.values())

    def acked(self, resource):
        """A user created outside the client threads, with its answer."""
        sent = self.add(resource["userName"], resource)
        sent.id, sent.created, sent.versions = resource["id"], "acked", [attributes(resource)]
        return sent

    def pick(self, rng, owner):
        """An acknowledged, live user of creator `owner` that nobody else is changing."""
        with self.lock:
            live = [s for s in self.users.values() if s.created == "acked" and s.deleted is False
                    and not s.busy and s.name.split("-")[1] == owner]
            if not live:
                return None
            chosen = rng.choice(live)
            chosen.busy = True
            return chosen

    def note(self, what):
        with self.lock:
            self.unexpected.append(what)


def scim_clients(scim, ledger, prefix, stop, seed, cap):
    """The client threads of one round: three creators, a patcher, a deleter, a Bulk sender.
    Each stops at its first failed request (the kill) or when `stop` is set."""

    def creator(t):
        rng = random.Random(seed * 100 + t)
        for i in range(cap):
            if stop.is_set():
                return
            name = f"{prefix}-c{t}-{i}"
            sent = ledger.add(name, user_body(name, rng))
            try:
                answer = scim.call("POST", "/Users", sent.body)
            except requests.RequestException:
                return
            if answer.status_code != 201:
                ledger.note(("POST", name, answer.status_code, answer.text[:300]))
                return
            with ledger.lock:
                sent.id, sent.created = answer.json()["id"], "acked"

    def patcher():
        rng = random.Random(seed * 100 + 10)
        n = 0
        while not stop.is_set():
            sent = ledger.pick(rng, "c0")
            if sent is None:
                time.sleep(0.005)
                continue
            n += 1
            new = dict(sent.versions[-1], displayName=f"{sent.name} patched {n}",
                       title="p" * rng.choice([3, 2000]))
            with ledger.lock:
                sent.versions = [sent.versions[-1], new]
            body = {"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "displayName", "value": new["displayName"]},
                {"op": "replace", "path": "title", "value": new["title"]}]}
            try:
                answer = scim.call("PATCH", f"/Users/{sent.id}", body)
            except requests.RequestException:
                return
            if answer.status_code != 200:
                ledger.note(("PATCH", sent.name, answer.status_code, answer.text[:300]))
                return
            with ledger.lock:
                sent.versions, sent.busy = [new], False

    def deleter():
        rng = random.Random(seed * 100 + 11)
        while not stop.is_set():
            sent = ledger.pick(rng, "c1")
            if sent is None:
                time.sleep(0.005)
                continue
            with ledger.lock:
                sent.deleted = None
            try:
                answer = scim.call("DELETE", f"/Users/{sent.id}")
            except requests.RequestException:
                return
            if answer.status_code != 204:
                ledger.note(("DELETE", sent.name, answer.status_code, answer.text[:300]))
                return
            with ledger.lock:
                sent.deleted = True

    def bulker():
        rng = random.Random(seed * 100 + 12)
        for i in range(cap // 3):
            if stop.is_set():
                return
            names = [f"{prefix}-b-{i}-{k}" for k in range(3)]
            sents = [ledger.add(n, user_body(n, rng)) for n in names]
            # The first user is renamed (displayName) by a PATCH that names it by bulkId.
            renamed = dict(sents[0].versions[0], displayName=f"{names[0]} bulk-patched")
            operations = [{"method": "POST", "bulkId": f"u{k}", "path": "/Users", "data": s.body}
                          for k, s in enumerate(sents)]
            operations.append({"method": "PATCH", "path": "/Users/bulkId:u0", "data": {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "path": "displayName", "value": renamed["displayName"]}]}})
            # Until the PATCH is acknowledged the first user may also be as created.
            sents[0].versions = [attributes(sents[0].body), renamed]
            try:
                answer = scim.call("POST", "/Bulk", {"schemas": [BULK_REQUEST], "Operations": operations})
            except requests.RequestException:
                with ledger.lock:
                    ledger.bulks["in flight"] += 1
                return
            results = answer.json().get("Operations", []) if answer.status_code == 200 else []
            statuses = [r.get("status") for r in results]
            if statuses != ["201", "201", "201", "200"]:
                ledger.note(("Bulk", names, answer.status_code, answer.text[:500]))
                return
            with ledger.lock:
                ledger.bulks["acked"] += 1
                for sent, result in zip(sents, results):
                    sent.id, sent.created = result["location"].rsplit("/", 1)[1], "acked"
                sents[0].versions = [renamed]

    threads = [threading.Thread(target=creator, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=f) for f in (patcher, deleter, bulker)]
    return threads


def matches(resource, version):
    return all(resource.get(k) == v for k, v in version.items())


def check_scim(srv, scim, ledger, since, prefix, what):
    """What a restarted server holds against what the clients were told (see the module
    docstring), through SCIM (by id, by userName filter, the listing), the admin API's user
    list and audit log; and that the name index holds no name for a user that is not there."""
    everyone = scim.everyone()
    listed = admin_users(srv)
    assert set(listed) == set(everyone), f"{what}: the admin list and SCIM disagree: " \
        f"{sorted(set(listed) ^ set(everyone))}"
    by_name = {r["userName"]: r for r in everyone.values()}
    known = {s.name for s in ledger.users.values()}
    strangers = [n for n in by_name if n not in known and n not in ledger.preexisting]
    assert not strangers, f"{what}: users nobody created: {strangers}"
    mine = []
    for sent in ledger.users.values():
        found = by_name.get(sent.name)
        this_round = sent.name.startswith(prefix)
        gone = sent.deleted is True or (sent.deleted is None and found is None)
        if sent.created == "acked" and not gone:
            assert found is not None, f"{what}: acknowledged user {sent.name} ({sent.id}) is lost"
        if sent.created == "acked" and sent.deleted is True:
            assert found is None, f"{what}: {sent.name} was deleted (acknowledged) but is back"
        if found is not None:
            if sent.id is not None:
                assert found["id"] == sent.id, f"{what}: {sent.name} has id {found['id']}, was told {sent.id}"
            assert any(matches(found, v) for v in sent.versions), \
                f"{what}: {sent.name} ({sent.created}) holds {found}, expected one of {sent.versions}"
            view = listed[found["id"]]
            assert (view["username"], view["email"], view["name"], view["disabled"]) == (
                sent.name, sent.body["emails"][0]["value"], found["displayName"], not found["active"]), \
                f"{what}: the admin view of {sent.name} disagrees with SCIM: {view}"
        if this_round:
            mine.append((sent, found))

    def through_index(item):
        """One of this round's users through the name index and by id; whether its name is free."""
        sent, found = item
        filtered = scim.named(sent.name)
        assert [r["id"] for r in filtered] == ([found["id"]] if found else []), \
            f"{what}: {sent.name}: the userName filter ({filtered}) disagrees with the listing ({found})"
        if found is not None:
            by_id = scim.call("GET", f"/Users/{found['id']}")
            assert by_id.status_code == 200 and by_id.json() == found, \
                f"{what}: {sent.name} is listed as {found} but GET by id answers {by_id.status_code} {by_id.text}"
            return None
        if sent.id is not None:
            by_id = scim.call("GET", f"/Users/{sent.id}")
            assert by_id.status_code == 404, f"{what}: {sent.name} is not listed but GET by id answers {by_id.status_code}"
        return sent

    with ThreadPoolExecutor(4) as pool:
        free_again = [sent for sent in pool.map(through_index, mine) if sent is not None]
    # Every creation of this round that committed has its audit entry (same batch), and no
    # audit entry speaks of a user that never came to be.
    entries = admin(srv, "/audit", event="scim.user.create", since=str(since), limit="1000")["entries"]
    assert len(entries) < 1000, f"{what}: too many creations in one round to check the audit log"
    created = {e["subject"] for e in entries}
    ids = {s.id for s in ledger.users.values() if s.id} | ledger.checks
    present = {r["id"] for r in everyone.values()}
    for sent in ledger.users.values():
        found = by_name.get(sent.name)
        if found is not None and sent.name.startswith(prefix):
            assert found["id"] in created, f"{what}: {sent.name} exists without its scim.user.create entry"
    orphans = [s for s in created if s not in present and s not in ids]
    assert not orphans, f"{what}: audit entries for users that do not exist: {orphans}"
    # A name no user holds is free: nothing half-made keeps it (or the email) in an index.
    def create_again(sent):
        again = scim.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": sent.name,
                                             "emails": [{"value": sent.body["emails"][0]["value"]}]})
        assert again.status_code == 201, f"{what}: {sent.name} is not listed but cannot be created again: {again.text}"
        assert scim.call("DELETE", f"/Users/{again.json()['id']}").status_code == 204
        return again.json()["id"]

    with ThreadPoolExecutor(4) as pool:
        ledger.checks.update(pool.map(create_again, free_again))
    return len(free_again)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_kill_9_during_scim_writes_loses_nothing_acknowledged_and_makes_nothing_by_halves(backend, lab):
    """Six clients create, patch, delete and Bulk-create users; the server is killed at a
    random point and restarted, several times. Every acknowledged creation is there with
    exactly its attributes (or its acknowledged patch), every acknowledged delete is gone,
    and what was in flight is whole or absent: listing, id, userName filter, admin list and
    audit log agree, a name no user holds can be taken again, and (at the end, through the
    CLI) every user has its outbox event and no event names a user that never existed."""
    srv = lab.server("scim", CONFIG, backend)
    srv.start()
    scim = Scim(srv)
    ledger = ScimLedger({r["userName"] for r in scim.everyone().values()})
    rng = random.Random(SEED)
    total_rounds = rounds(5 if backend == "embedded" else 3)
    freed = 0
    for r in range(total_rounds):
        delay = rng.uniform(0, 0.8)
        what = seeded(f"{backend}, round {r + 1} of {total_rounds}, kill {delay:.3f} s after 5 answers")
        since = int(time.time()) - 1
        stop = threading.Event()
        threads = scim_clients(scim, ledger, f"r{r}", stop, SEED + r, cap=60)
        acked_before = ledger.acked_count()
        for t in threads:
            t.start()
        progress(lambda: ledger.acked_count() - acked_before, 5, what)
        time.sleep(delay)
        kill(srv)
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), f"{what}: a client thread hung after the kill"
        assert not ledger.unexpected, f"{what}: answers no client should get: {ledger.unexpected}"
        offset = restart(srv)
        scim = Scim(srv)
        freed += check_scim(srv, scim, ledger, since, f"r{r}-", what)
        # New writes work on the recovered store.
        fresh = scim.call("POST", "/Users", user_body(f"r{r}-after", rng))
        assert fresh.status_code == 201, f"{what}: a write after the restart failed: {fresh.text}"
        ledger.acked(fresh.json())
        assert_clean_log(log_since(srv, offset), what)
    acked = [s for s in ledger.users.values() if s.created == "acked"]
    in_flight = [s for s in ledger.users.values() if s.created == "in flight"]
    summary = (f"{len(acked)} acknowledged creations, {len(in_flight)} in flight at a kill, "
               f"{sum(s.deleted is True for s in acked)} acknowledged deletes, {freed} names found free, "
               f"bulks {ledger.bulks}")
    print(f"seed {SEED}: {summary}")

    # The CLI reads the same data (the server stopped): the users, and the outbox, which holds
    # a `user.created` event for every user created (a deleted one's may have been settled),
    # never one for a user that never existed.
    srv.stop()
    listed = dict(line.split("\t")[1::-1] for line in srv.cli("user", "list").stdout.splitlines())
    for sent in acked:
        if sent.deleted is False:
            assert listed.get(sent.id) == sent.name, seeded(f"`idflow user list` lacks {sent.name} ({sent.id})")
        elif sent.deleted is True:
            assert sent.id not in listed, seeded(f"`idflow user list` shows deleted {sent.name}")
    events = set()
    for kind in ("queue", "dead"):
        for line in srv.cli("provisioning", kind, "--limit", "100000").stdout.splitlines():
            event = json.loads(line)
            if event["event"] == "user.created":
                events.add(event["user"])
    names = {s.name for s in ledger.users.values()}
    for uid, name in listed.items():
        if name in names:
            assert uid in events, seeded(f"{name} ({uid}) exists without its outbox event")
    ids = {s.id for s in ledger.users.values() if s.id} | ledger.checks
    orphans = [u for u in events if u not in listed and u not in ids]
    assert not orphans, seeded(f"outbox events for users that never existed: {orphans}")


# Logins.


def challenge(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_url(srv, verifier, **extra):
    params = {"response_type": "code", "client_id": "demo-web", "redirect_uri": WEB_REDIRECT,
              "scope": "openid", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
              "code_challenge": challenge(verifier), "code_challenge_method": "S256", **extra}
    return srv.url("/authorize?" + urllib.parse.urlencode(params))


def token(srv, session=None, **data):
    return (session or requests).post(srv.url("/token"), auth=("demo-web", WEB_SECRET), data=data, timeout=10)


def redeem(srv, code, verifier, session=None):
    return token(srv, session, grant_type="authorization_code", code=code, redirect_uri=WEB_REDIRECT,
                 code_verifier=verifier)


def refresh(srv, refresh_token, session=None):
    return token(srv, session, grant_type="refresh_token", refresh_token=refresh_token)


class Family:
    """One login's tokens as the client saw them. Refresh tokens are `live` (received, not yet
    used), `in flight` (sent to be rotated, no answer) or `spent` (rotated, the answer
    received)."""

    def __init__(self, code, verifier, cookies):
        self.code, self.verifier, self.cookies = code, verifier, cookies
        self.code_state = "acked"     # -> "in flight" -> "spent"
        self.tokens = {}              # refresh token -> state
        self.access = None


class LoginLedger:
    def __init__(self):
        self.lock = threading.Lock()
        self.families = []
        self.unexpected = []
        self.logins_in_flight = 0


def login_clients(srv, ledger, users, stop, seed):
    def client(t):
        rng = random.Random(seed * 100 + t)
        user = users[t]
        session = requests.Session()
        while not stop.is_set():
            browser = Browser(srv)
            verifier = secrets.token_urlsafe(48)
            try:
                page = browser.go(authorize_url(srv, verifier))
                callback = browser.submit(page.text, "password", username=user.username, password=user.password)
            except requests.RequestException:
                with ledger.lock:
                    ledger.logins_in_flight += 1
                return
            if not isinstance(callback, str) or "code" not in query(callback):
                ledger.unexpected.append(("login", getattr(callback, "status_code", callback)))
                return
            family = Family(query(callback)["code"], verifier, browser.session.cookies.copy())
            with ledger.lock:
                ledger.families.append(family)
            # Some codes are kept for after the restart: acknowledged and never redeemed.
            if rng.random() < 0.25:
                continue
            family.code_state = "in flight"
            try:
                answer = redeem(srv, family.code, verifier, session)
            except requests.RequestException:
                return
            if answer.status_code != 200:
                ledger.unexpected.append(("code", answer.status_code, answer.text[:300]))
                return
            family.code_state = "spent"
            current = answer.json()["refresh_token"]
            family.access = answer.json()["access_token"]
            family.tokens[current] = "live"
            for _ in range(rng.randrange(4)):
                if stop.is_set():
                    return
                family.tokens[current] = "in flight"
                try:
                    answer = refresh(srv, current, session)
                except requests.RequestException:
                    return
                if answer.status_code != 200:
                    ledger.unexpected.append(("refresh", answer.status_code, answer.text[:300]))
                    return
                family.tokens[current] = "spent"
                current = answer.json()["refresh_token"]
                family.access = answer.json()["access_token"]
                family.tokens[current] = "live"

    return [threading.Thread(target=client, args=(t,)) for t in range(len(users))]


def check_logins(srv, ledger, what):
    """After the restart: every acknowledged session still signs its browser in; every
    acknowledged code not yet redeemed redeems once; every live refresh token rotates once; a
    spent code or refresh token stays spent; the last access token is still good."""
    counts = {"sessions": 0, "codes kept": 0, "codes spent": 0, "codes in flight": 0, "live": 0, "spent": 0,
              "in flight": 0}
    for family in ledger.families:
        browser = Browser(srv)
        browser.session.cookies.update(family.cookies)
        verifier = secrets.token_urlsafe(48)
        again = browser.go(authorize_url(srv, verifier, prompt="none"))
        assert isinstance(again, str) and "code" in query(again), \
            f"{what}: an acknowledged session no longer signs its browser in: {again}"
        counts["sessions"] += 1
        if family.access:
            info = requests.get(srv.url("/userinfo"), headers={"Authorization": f"Bearer {family.access}"}, timeout=10)
            assert info.status_code == 200, f"{what}: an acknowledged access token stopped working: {info.text}"
    # Live tokens first: a reuse (of a spent token or code) revokes the whole family.
    for family in ledger.families:
        for refresh_token in [t for t, state in family.tokens.items() if state == "live"]:
            first = refresh(srv, refresh_token)
            assert first.status_code == 200, \
                f"{what}: an acknowledged refresh token does not work after the restart: {first.text}"
            second = refresh(srv, refresh_token)
            assert second.status_code == 400 and second.json()["error"] == "invalid_grant", \
                f"{what}: a refresh token worked twice: {second.text}"
            counts["live"] += 1
        for refresh_token, state in family.tokens.items():
            if state == "spent":
                reused = refresh(srv, refresh_token)
                assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", \
                    f"{what}: a refresh token rotated before the kill was accepted again: {reused.text}"
                counts["spent"] += 1
            elif state == "in flight":
                # Rotated or not, wholly: it works once, or it is spent.
                answer = refresh(srv, refresh_token)
                assert answer.status_code in (200, 400), f"{what}: an in-flight refresh token: {answer.text}"
                if answer.status_code == 400:
                    assert answer.json()["error"] == "invalid_grant", answer.text
                else:
                    assert refresh(srv, refresh_token).status_code == 400, f"{what}: it worked twice"
                counts["in flight"] += 1
        if family.code_state == "acked":
            first = redeem(srv, family.code, family.verifier)
            assert first.status_code == 200, f"{what}: an acknowledged, unredeemed code was lost: {first.text}"
            assert refresh(srv, first.json()["refresh_token"]).status_code == 200
            second = redeem(srv, family.code, family.verifier)
            assert second.status_code == 400 and second.json()["error"] == "invalid_grant", second.text
            counts["codes kept"] += 1
        elif family.code_state == "in flight":
            answer = redeem(srv, family.code, family.verifier)
            assert answer.status_code in (200, 400), f"{what}: a code in flight at the kill: {answer.text}"
            counts["codes in flight"] += 1
        elif family.code_state == "spent":
            reused = redeem(srv, family.code, family.verifier)
            assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", \
                f"{what}: a code redeemed before the kill was accepted again: {reused.text}"
            counts["codes spent"] += 1
    return counts


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_kill_9_during_logins_keeps_every_acknowledged_session_code_and_token(backend, lab):
    """Four clients sign in (login page, code, token, refreshes) while the server is killed at
    a random point and restarted. Every session cookie received still signs its browser in,
    every code received and not redeemed redeems once, every refresh token received rotates
    once; what was spent stays spent; what was in flight works once or is spent."""
    srv = lab.server("logins", "", backend)
    users = [User(f"user{t}", f"password-of-user-{t}") for t in range(4)]
    for u in users:
        srv.cli("user", "add", u.username, "--password-stdin", stdin=u.password + "\n")
    srv.start()
    rng = random.Random(SEED + 1)
    total_rounds = rounds(3 if backend == "embedded" else 2)
    totals = {}
    for r in range(total_rounds):
        delay = rng.uniform(0, 0.6)
        what = seeded(f"{backend}, login round {r + 1} of {total_rounds}, kill {delay:.3f} s after 4 logins")
        ledger = LoginLedger()
        stop = threading.Event()
        threads = login_clients(srv, ledger, users, stop, SEED + 1000 + r)
        for t in threads:
            t.start()
        progress(lambda: len(ledger.families), 4, what)
        time.sleep(delay)
        kill(srv)
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), f"{what}: a client thread hung after the kill"
        assert not ledger.unexpected, f"{what}: answers no client should get: {ledger.unexpected}"
        offset = restart(srv)
        counts = check_logins(srv, ledger, what)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        # A new login works on the recovered store.
        browser, verifier = Browser(srv), secrets.token_urlsafe(48)
        done = browser.login(authorize_url(srv, verifier), username="user0", password="password-of-user-0")
        assert isinstance(done, str) and redeem(srv, query(done)["code"], verifier).status_code == 200, what
        assert_clean_log(log_since(srv, offset), what)
    print(f"seed {SEED}: {totals}")


# A full disk.


def fill(directory):
    """Writes a filler file until the file system is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as error:
                assert error.errno == 28, error
    finally:
        os.close(fd)
    return filler


def assert_scim_error(answer, what):
    assert 500 <= answer.status_code < 600, f"{what}: expected a 5xx, got {answer.status_code}: {answer.text}"
    assert answer.headers["Content-Type"] == SCIM_TYPE, (what, answer.headers)
    body = answer.json()
    assert body["schemas"] == [ERROR_SCHEMA] and body["status"] == str(answer.status_code), (what, body)


def assert_oauth_error(answer, what):
    assert 500 <= answer.status_code < 600, f"{what}: expected a 5xx, got {answer.status_code}: {answer.text}"
    assert answer.headers["Content-Type"].startswith("application/json"), (what, answer.headers)
    assert answer.json()["error"] == "server_error", (what, answer.text)


def sign_in(srv, username="alice", password=USER_PASSWORD):
    """A password login and code exchange; the token response."""
    browser, verifier = Browser(srv), secrets.token_urlsafe(48)
    done = browser.login(authorize_url(srv, verifier), username=username, password=password)
    assert isinstance(done, str), done
    answer = redeem(srv, query(done)["code"], verifier)
    assert answer.status_code == 200, answer.text
    return answer.json()


def start_with_users(srv, seed):
    """Adds alice, starts `srv`, creates five users through SCIM and signs alice in: what the
    disk tests write before they break the disk. Returns the SCIM client, the random source,
    the acknowledged users (name -> (id, attributes)), alice's tokens and the log's size."""
    srv.cli("user", "add", "alice", "--email", "alice@example.com", "--password-stdin", stdin=USER_PASSWORD + "\n")
    srv.start()
    scim = Scim(srv)
    rng = random.Random(seed)
    acked = {}
    for i in range(5):
        body = user_body(f"before-{i}", rng)
        acked[body["userName"]] = (scim.ok("POST", "/Users", body)["id"], attributes(body))
    return scim, rng, acked, sign_in(srv), log_size(srv)


def test_a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers_when_space_returns(lab):
    """The data directory on a small tmpfs, filled: writes that do not fit answer a SCIM or
    OAuth error at once (alone and many at a time), the log says the disk is full, reads and
    a restart on the full disk work, and once space returns writes resume without a restart;
    nothing acknowledged is lost and the file reads back whole."""
    srv = lab.server("full", CONFIG)
    lab.tmpfs(srv.data, "8m")
    scim, rng, acked, tokens, offset = start_with_users(srv, SEED + 2)

    filler = fill(srv.data)
    # Creations go on while the store file has room inside it; then they must fail, quickly,
    # with a SCIM error, and the server must stay up.
    failure = None
    for i in range(300):
        body = user_body(f"during-{i}", rng)
        body["title"] = "x" * 8000
        started = time.time()
        answer = scim.call("POST", "/Users", body, timeout=20)
        assert time.time() - started < 10, f"a write on a full disk took {time.time() - started:.1f} s"
        if answer.status_code == 201:
            acked[body["userName"]] = (answer.json()["id"], attributes(body))
            continue
        failure = answer
        break
    assert failure is not None, "300 users of 8 KB fit on a full 8 MB disk: the filler did not fill it"
    assert_scim_error(failure, "SCIM create on a full disk")
    # Many writers at once on the full disk (group commit, and the store reopening itself
    # after each failure, under concurrency): every request is answered, quickly.
    def writer(t):
        answers = []
        for i in range(10):
            body = user_body(f"crowd-{t}-{i}", random.Random(SEED + t * 100 + i))
            body["title"] = "y" * 6000
            started = time.time()
            answer = scim.call("POST", "/Users", body, timeout=20)
            answers.append((body, answer, time.time() - started))
        return answers

    with ThreadPoolExecutor(4) as pool:
        crowd = [a for answers in pool.map(writer, range(4)) for a in answers]
    slowest = max(took for _, _, took in crowd)
    assert slowest < 10, f"a write on a full disk took {slowest:.1f} s"
    for body, answer, _ in crowd:
        if answer.status_code == 201:
            acked[body["userName"]] = (answer.json()["id"], attributes(body))
        else:
            assert_scim_error(answer, f"create {body['userName']} on a full disk")
    assert any(answer.status_code != 201 for _, answer, _ in crowd), "40 creations of 6 KB fitted on a full disk"
    # Small writes may still fit in the store file's free pages; refreshes go on until one
    # needs more, and that one must answer an OAuth error. A failed refresh spends nothing.
    current = tokens["refresh_token"]
    for i in range(500):
        answer = refresh(srv, current)
        if answer.status_code == 200:
            current = answer.json()["refresh_token"]
            continue
        assert_oauth_error(answer, f"refresh #{i} on a full disk")
        break
    else:
        raise AssertionError("500 refreshes on a full disk all succeeded")
    assert srv.process.poll() is None, "the server died on a full disk"
    log = log_since(srv, offset)
    assert "panicked" not in log, log
    assert re.search(r"no space left on device|disk is full", log, re.I), \
        f"the log does not say the disk is full:\n{log[-3000:]}"
    # Reads still work: every acknowledged user, by id and in the listing.
    everyone = scim.everyone()
    for name, (uid, version) in acked.items():
        assert uid in everyone and matches(scim.ok("GET", f"/Users/{uid}"), version), name
    # A server killed while the disk is full comes back up on it (no crash loop), with
    # everything acknowledged, and still refuses what does not fit.
    kill(srv)
    srv.start()
    scim = Scim(srv)
    everyone = scim.everyone()
    for name, (uid, version) in acked.items():
        assert uid in everyone and matches(everyone[uid], version), f"{name} is lost after a restart on a full disk"
    for i in range(300):
        body = user_body(f"restarted-{i}", rng)
        body["title"] = "z" * 8000
        answer = scim.call("POST", "/Users", body, timeout=20)
        if answer.status_code != 201:
            assert_scim_error(answer, "a create after a restart on a full disk")
            break
        acked[body["userName"]] = (answer.json()["id"], attributes(body))
    else:
        raise AssertionError("300 users of 8 KB fit on the full disk after the restart")
    filler.unlink()
    again = scim.call("POST", "/Users", user_body("after-space", rng))
    assert again.status_code == 201, f"writes did not resume when space returned: {again.text}"
    acked["after-space"] = (again.json()["id"], None)
    # The refresh that failed did not spend the token: it works now there is room.
    rotated = refresh(srv, current)
    assert rotated.status_code == 200, f"the refresh token did not survive the full disk: {rotated.text}"
    assert srv.process.poll() is None

    # Nothing acknowledged is lost and the file reads back whole after a restart.
    kill(srv)
    srv.start()
    scim = Scim(srv)
    everyone = scim.everyone()
    for name, (uid, version) in acked.items():
        assert uid in everyone, f"{name}, acknowledged while the disk was full, is lost"
        if version:
            assert matches(scim.ok("GET", f"/Users/{uid}"), version), name
    assert refresh(srv, rotated.json()["refresh_token"]).status_code == 200
    assert scim.call("POST", "/Users", user_body("after-restart", rng)).status_code == 201


# A read-only data directory.


def test_serve_on_a_read_only_data_directory_fails_at_once_naming_it(lab):
    """`serve` on a read-only data directory, empty or with a store, exits non-zero at once
    with an error naming the directory and the problem, and no panic."""
    srv = lab.server("readonly", CONFIG)
    lab.tmpfs(srv.data, "16m")
    env = dict(os.environ, IDFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD)
    for state in ("empty", "with a store"):
        if state == "with a store":
            run("mount", "-o", "remount,rw", str(srv.data))
            srv.start()
            srv.stop()
        run("mount", "-o", "remount,ro", str(srv.data))
        started = time.time()
        result = subprocess.run([BIN, "serve", "--config", str(srv.config), "--data-dir", str(srv.data),
                                 "--listen", f"127.0.0.1:{srv.port}"],
                                capture_output=True, text=True, timeout=30, env=env)
        took = time.time() - started
        assert result.returncode != 0, f"serve ran on a read-only data directory ({state})"
        assert took < 10, f"serve took {took:.1f} s to give up ({state})"
        assert str(srv.data) in result.stderr and re.search(r"read-only", result.stderr, re.I), \
            f"({state}) the error does not name the directory and the problem: {result.stderr}"
        assert "panicked" not in result.stderr and "RUST_BACKTRACE" not in result.stderr, result.stderr


def test_a_data_directory_turned_read_only_under_the_server_refuses_writes_clearly(lab):
    """The kernel turns the data directory's file system read-only under the running server:
    writes answer SCIM and OAuth errors that the log explains, reads go on; after e2fsck and
    a remount, every acknowledged write is there and the server starts (the SAML certificate
    written at first start included) and takes writes."""
    srv = lab.server("emergency", CONFIG)
    device, trigger = lab.ext4(srv.data, 32)
    scim, rng, acked, tokens, offset = start_with_users(srv, SEED + 3)

    # The kernel turns the file system read-only after an error (errors=remount-ro), as it
    # does for a failing disk; `mount -o remount,ro` would refuse while the store is open.
    trigger.write_text("1\n")
    for i in range(3):
        started = time.time()
        answer = scim.call("POST", "/Users", user_body(f"refused-{i}", rng), timeout=20)
        assert time.time() - started < 10, "a write on a read-only file system hung"
        assert_scim_error(answer, f"SCIM create #{i} on a read-only file system")
    assert_oauth_error(refresh(srv, tokens["refresh_token"]), "a refresh on a read-only file system")
    assert srv.process.poll() is None, "the server died when its file system turned read-only"
    everyone = scim.everyone()
    for name, (uid, version) in acked.items():
        assert uid in everyone and matches(scim.ok("GET", f"/Users/{uid}"), version), name
    log = log_since(srv, offset)
    assert "panicked" not in log, log
    assert re.search(r"read-only file system", log, re.I), f"the log does not say why:\n{log[-3000:]}"

    # The data survives: stopped, checked and mounted again, the store holds every
    # acknowledged user and takes writes.
    srv.stop()
    lab.unmount(srv.data)
    fsck = run("e2fsck", "-fy", device, check=False)
    assert fsck.returncode in (0, 1), f"e2fsck: {fsck.stdout}{fsck.stderr}"
    run("mount", "-t", "ext4", "-o", "errors=remount-ro", device, str(srv.data))
    lab.mounts.append(srv.data)
    srv.start()
    scim = Scim(srv)
    everyone = scim.everyone()
    for name, (uid, version) in acked.items():
        assert uid in everyone and matches(scim.ok("GET", f"/Users/{uid}"), version), name
    assert refresh(srv, tokens["refresh_token"]).status_code == 200
    assert scim.call("POST", "/Users", user_body("after", rng)).status_code == 201
