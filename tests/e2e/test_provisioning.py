"""Outbound provisioning: one idflow instance (the source) sends its users to another (the
target) over SCIM 2.0, authenticating with a client_credentials token from the target.

Changes are made at the source through its own SCIM endpoint (as an HR system would) and
its CLI; the target is read through its SCIM endpoint. Covered: create, update, disable,
role assignment and removal as group membership, delete; a target that is down (retried with
backoff, then delivered); a refusal that becomes a dead letter, listed and retried from the
CLI; and `kill -9` of the source while 200 changes are queued, after which every change
arrives once (no loss, no duplicate users)."""

import os
import subprocess
import time

import pytest
import requests

from conftest import ADMIN_PASSWORD, BIN, Server

SCIM_TYPE = "application/scim+json"
SECRET = "provisioner-secret-for-tests-0123456789"
HR_SECRET = "hr-sync-secret-for-tests-0123456789"

TARGET_CONFIG = f"""
[applications.upstream-idflow]
client_secret = "{SECRET}"
grant_types = ["client_credentials"]
scopes = ["scim"]
"""


def source_config(target, extra=""):
    return f"""
[applications.hr-sync]
client_secret = "{HR_SECRET}"
grant_types = ["client_credentials"]
scopes = ["scim"]

[provisioning_targets.downstream]
type = "scim2"
url = "{target.url('/scim/v2')}"
auth = "client_credentials"
token_url = "{target.url('/token')}"
client_id = "upstream-idflow"
client_secret = "{SECRET}"
{extra}
"""


class Scim:
    """A SCIM client with a client_credentials token of the given server."""

    def __init__(self, server, client, secret):
        self.server = server
        answer = requests.post(server.url("/token"), data={"grant_type": "client_credentials", "scope": "scim"},
                               auth=(client, secret), timeout=10)
        assert answer.status_code == 200, answer.text
        self.headers = {"Authorization": "Bearer " + answer.json()["access_token"], "Content-Type": SCIM_TYPE}

    def call(self, method, path, body=None, **params):
        return requests.request(method, self.server.url("/scim/v2" + path), json=body, params=params,
                                headers=self.headers, timeout=30)

    def ok(self, method, path, body=None, **params):
        answer = self.call(method, path, body, **params)
        assert answer.status_code < 300, (method, path, answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def users(self, **params):
        return self.ok("GET", "/Users", count=1000, **params)["Resources"]


def offline(server, *args, check=True):
    """Runs the CLI on a server's data (which needs the server stopped), and starts the
    server again if it was running."""
    running = server.process is not None
    if running:
        server.stop()
    try:
        return server.cli(*args, check=check)
    finally:
        if running:
            server.start()


def eventually(check, timeout=30, what="the change to arrive"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@pytest.fixture
def pair(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "source").mkdir()
    target = Server(tmp_path / "target", TARGET_CONFIG)
    target.start()
    source = Server(tmp_path / "source", source_config(target))
    source.start()
    yield source, target
    source.stop()
    target.stop()


def remote(target_scim, local_id):
    """The target's copy of a source user, found by the externalId it carries."""
    found = target_scim.users(filter=f'externalId eq "{local_id}"')
    return found[0] if len(found) == 1 else None


def test_created_updated_grouped_disabled_and_deleted_users_reach_the_target(pair):
    source, target = pair
    here = Scim(source, "hr-sync", HR_SECRET)
    there = Scim(target, "upstream-idflow", SECRET)
    ann = here.ok("POST", "/Users", {"userName": "ann", "displayName": "Ann Example", "title": "Engineer",
                                    "emails": [{"value": "ann@example.com", "primary": True}]})
    copy = eventually(lambda: remote(there, ann["id"]), what="ann at the target")
    assert copy["userName"] == "ann" and copy["displayName"] == "Ann Example"
    assert copy["title"] == "Engineer", "attributes the HR system set travel on"
    assert copy["emails"][0]["value"] == "ann@example.com"
    assert copy["id"] != ann["id"], "the target assigns its own id"
    assert "password" not in copy

    here.ok("PATCH", f"/Users/{ann['id']}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                             "Operations": [{"op": "replace", "path": "displayName", "value": "Ann Renamed"}]})
    eventually(lambda: (remote(there, ann["id"]) or {}).get("displayName") == "Ann Renamed", what="the rename")

    # A role assigned here is a group membership there; the group is created when missing.
    here.ok("POST", "/Groups", {"displayName": "engineering", "members": [{"value": ann["id"]}]})
    group = eventually(lambda: next(iter(there.ok("GET", "/Groups", filter='displayName eq "engineering"')["Resources"]), None),
                       what="the group at the target")
    eventually(lambda: [m["value"] for m in there.ok("GET", f"/Groups/{group['id']}").get("members", [])] == [copy["id"]],
               what="the membership")
    # Taken away here, it is taken away there.
    here.ok("PATCH", "/Groups/engineering", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                             "Operations": [{"op": "remove", "path": f'members[value eq "{ann["id"]}"]'}]})
    eventually(lambda: not there.ok("GET", f"/Groups/{group['id']}").get("members"), what="the membership removed")

    here.ok("PATCH", f"/Users/{ann['id']}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                             "Operations": [{"op": "replace", "path": "active", "value": False}]})
    eventually(lambda: (remote(there, ann["id"]) or {}).get("active") is False, what="the deactivation")

    assert here.call("DELETE", f"/Users/{ann['id']}").status_code == 204
    eventually(lambda: there.call("GET", f"/Users/{copy['id']}").status_code == 404, what="the deletion")

    # The worker records the deletion just after the target answered it.
    deliveries = eventually(lambda: [e for e in source.audit("provisioning.delivered")
                                     if e["subject"] == ann["id"] and e["detail"]["deleted"]],
                            what="the deletion recorded")
    assert all(e["detail"]["target"] == "downstream" for e in deliveries)
    assert offline(source, "provisioning", "queue").stdout == "", "nothing is left waiting"


def test_privileged_roles_are_not_sent_and_the_cli_is_a_trigger(pair):
    source, target = pair
    there = Scim(target, "upstream-idflow", SECRET)
    source.stop()
    source.cli("role", "add", "auditors", "--privilege", "reports:read")
    source.cli("role", "add", "staff")
    source.cli("user", "add", "carl", "--role", "auditors", "--role", "staff", "--password-stdin",
               stdin="carl-password-123456\n")
    source.start()
    copy = eventually(lambda: (there.users(filter='userName eq "carl"') or [None])[0], what="carl at the target")
    # Carl's delivery is recorded once every membership is made.
    eventually(lambda: [e for e in source.audit("provisioning.delivered") if e["subject"] == copy["externalId"]],
               what="carl's delivery recorded")
    groups = {g["value"] for g in remote(there, copy["externalId"]).get("groups", [])}
    assert groups == {"staff"}, "a role that grants privileges here is not handed out there"
    source.stop()
    source.cli("user", "disable", "carl")
    source.start()
    eventually(lambda: (remote(there, copy["externalId"]) or {}).get("active") is False, what="the CLI's disable")


def test_a_target_that_is_down_is_retried_until_it_answers(pair):
    source, target = pair
    here = Scim(source, "hr-sync", HR_SECRET)
    target.stop()
    bea = here.ok("POST", "/Users", {"userName": "bea"})
    time.sleep(3)
    source.stop()
    [queued] = [line for line in source.cli("provisioning", "queue").stdout.splitlines()]
    assert '"attempts":' in queued and '"attempts":0' not in queued, queued
    assert "downstream" in queued and bea["id"] in queued
    source.start()
    target.start()
    there = Scim(target, "upstream-idflow", SECRET)
    eventually(lambda: remote(there, bea["id"]), timeout=60, what="bea after the target came back")


def test_a_refused_change_is_a_dead_letter_until_retried(pair):
    source, target = pair
    here = Scim(source, "hr-sync", HR_SECRET)
    there = Scim(target, "upstream-idflow", SECRET)
    # Someone at the target already has the name, and was not provisioned from here.
    squatter = there.ok("POST", "/Users", {"userName": "dora"})
    dora = here.ok("POST", "/Users", {"userName": "dora"})
    eventually(lambda: any(e["subject"] == dora["id"] for e in source.audit("provisioning.failed")),
               what="the refusal to be recorded")
    dead = offline(source, "provisioning", "dead").stdout
    assert dora["id"] in dead and "not provisioned from here" in dead, dead
    assert offline(source, "provisioning", "queue").stdout == ""
    assert there.users(filter='userName eq "dora"')[0]["id"] == squatter["id"], "the other account is untouched"
    # The cause is fixed at the target; the dead letter goes back in the outbox.
    there.ok("DELETE", f"/Users/{squatter['id']}")
    source.stop()
    assert "1 dead letter(s)" in source.cli("provisioning", "retry", "all").stdout
    assert source.cli("provisioning", "dead").stdout == ""
    assert source.cli("provisioning", "retry", "nonsense", check=False).returncode != 0
    source.start()
    eventually(lambda: remote(there, dora["id"]), what="dora after the retry")


def test_a_group_made_at_the_target_by_someone_else_is_not_joined(pair):
    source, target = pair
    here = Scim(source, "hr-sync", HR_SECRET)
    there = Scim(target, "upstream-idflow", SECRET)
    # The target's own `finance` group, which may mean more there than the role here.
    theirs = there.ok("POST", "/Groups", {"displayName": "finance"})
    eve = here.ok("POST", "/Users", {"userName": "eve"})
    here.ok("POST", "/Groups", {"displayName": "finance", "members": [{"value": eve["id"]}]})
    failures = eventually(lambda: [e for e in source.audit("provisioning.failed") if e["subject"] == eve["id"]],
                          what="the refusal")
    assert "not created from here" in failures[0]["detail"]["error"]
    assert not there.ok("GET", f"/Groups/{theirs['id']}").get("members"), "nobody was added to their group"


def test_kill_9_with_200_changes_queued_loses_and_duplicates_nothing(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "source").mkdir()
    target = Server(tmp_path / "target", TARGET_CONFIG).start()
    source = Server(tmp_path / "source", source_config(target))
    try:
        _kill_9_with_200_changes(source, target)
    finally:
        source.stop()
        target.stop()


def _kill_9_with_200_changes(source, target):
    """The source aborts (as kill -9 does) right after a delivery reached the target and
    before it was recorded: the window in which a crash could duplicate a user. The 200
    changes are made while no worker runs, so they are all queued at the crash."""
    there = Scim(target, "upstream-idflow", SECRET)
    source.cli("role", "add", "staff")
    for i in range(150):
        roles = ["--role", "staff"] if i % 3 == 0 else []
        source.cli("user", "add", f"bulk{i:03}", "--display-name", f"Bulk {i}", *roles, "--password-stdin",
                   stdin="bulk-password-123456\n")
    for i in range(50):
        source.cli("user", "disable", f"bulk{i:03}")
    queued = source.cli("provisioning", "queue", "--limit", "1000").stdout.splitlines()
    assert len(queued) >= 200, len(queued)
    # The first run crashes after its 40th delivery, the second after 40 more.
    for _ in range(2):
        source.process = None
        env_start(source, IDFLOW_TEST_CRASH_AFTER_DELIVERIES="40")
        source.process.wait(timeout=60)
        assert source.process.returncode != 0, "the fault hook aborted the process"
        source.process = None
    source.start()
    copies = eventually(lambda: (lambda c: c if len(c) >= 150 else None)(
        [u for u in there.users() if u["userName"].startswith("bulk")]), timeout=120, what="all 150 users")
    assert len(copies) == 150
    assert len({u["externalId"] for u in copies}) == 150, "each source user has one copy"
    assert sorted(u["userName"] for u in copies) == [f"bulk{i:03}" for i in range(150)]
    eventually(lambda: sorted(u["userName"] for u in there.users() if u["userName"].startswith("bulk")
                              and u["active"] is False) == [f"bulk{i:03}" for i in range(50)],
               what="every disable")
    staff = there.ok("GET", "/Groups", filter='displayName eq "staff"')["Resources"]
    assert len(staff) == 1, "the group was made once"
    eventually(lambda: len(there.ok("GET", f"/Groups/{staff[0]['id']}").get("members", [])) == 50,
               what="every membership")
    source.stop()
    assert source.cli("provisioning", "queue").stdout == ""
    assert source.cli("provisioning", "dead").stdout == ""


def env_start(server, **env):
    """Starts a server with extra environment variables, without waiting for it."""
    server.process = subprocess.Popen(
        [BIN, "serve", "--config", str(server.config),
         "--data-dir", str(server.data), "--listen", f"127.0.0.1:{server.port}", "--issuer", server.issuer],
        env=dict(os.environ, IDFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD, **env), stdout=subprocess.DEVNULL, stderr=open(server.log, "ab"))


def test_a_broken_target_configuration_is_refused_at_start(tmp_path):
    (tmp_path / "bad").mkdir()
    server = Server(tmp_path / "bad", """
[provisioning_targets.downstream]
type = "scim2"
url = "http://downstream.example/scim/v2"
auth = "bearer"
token = "t"
""")
    result = server.cli("user", "list", check=False)
    assert result.returncode != 0
    assert "provisioning_targets.downstream.url" in result.stderr and "https" in result.stderr
