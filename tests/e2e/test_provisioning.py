"""Outbound provisioning: one idflow instance (the source) sends its users to another (the
target) over SCIM 2.0, authenticating with a client_credentials token from the target.

Changes are made at the source through its own SCIM endpoint (as an HR system would) and
its CLI; the target is read through its SCIM endpoint. Covered: create, update, disable,
role assignment and removal as group membership, delete; a target that is down (retried with
backoff, then delivered); a refusal that becomes a dead letter, listed and retried from the
CLI; and `kill -9` of the source while 200 changes are queued, after which every change
arrives once (no loss, no duplicate users)."""

import signal
import time

import pytest
import requests

from conftest import Server

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

    deliveries = [e for e in source.audit("provisioning.delivered") if e["subject"] == ann["id"]]
    assert deliveries and all(e["detail"]["target"] == "downstream" for e in deliveries)
    assert any(e["detail"]["deleted"] for e in deliveries)
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
    groups = eventually(lambda: {g["value"] for g in (remote(there, copy["externalId"]) or {}).get("groups", [])},
                        what="carl's groups")
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


def test_kill_9_with_200_changes_queued_loses_and_duplicates_nothing(pair):
    source, target = pair
    here = Scim(source, "hr-sync", HR_SECRET)
    there = Scim(target, "upstream-idflow", SECRET)
    operations = [{"method": "POST", "bulkId": f"u{i}", "path": "/Users",
                   "data": {"userName": f"bulk{i:03}", "displayName": f"Bulk {i}"}} for i in range(150)]
    operations += [{"method": "PATCH", "path": f"/Users/bulkId:u{i}",
                    "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                             "Operations": [{"op": "replace", "path": "displayName", "value": f"Bulk {i} renamed"}]}}
                   for i in range(50)]
    answer = here.ok("POST", "/Bulk", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                                       "Operations": operations})
    assert [op["status"] for op in answer["Operations"]] == ["201"] * 150 + ["200"] * 50
    source.stop(signal.SIGKILL)
    queued = source.cli("provisioning", "queue", "--limit", "1000").stdout.splitlines()
    assert len(queued) >= 20, f"the kill came with changes still queued ({len(queued)})"
    source.start()
    ids = {op["bulkId"]: op["location"].rsplit("/", 1)[1] for op in answer["Operations"] if op["method"] == "POST"}

    def arrived():
        copies = [u for u in there.users() if u["userName"].startswith("bulk")]
        return copies if len(copies) >= 150 else None

    copies = eventually(arrived, timeout=120, what="all 150 users at the target")
    assert len(copies) == 150, "no user arrives twice"
    by_external = {u["externalId"]: u for u in copies}
    assert set(by_external) == set(ids.values()), "every copy is of one source user, each once"
    # Every update arrived (the copies show the latest state).
    eventually(lambda: all(
        (remote(there, ids[f"u{i}"]) or {}).get("displayName") == (f"Bulk {i} renamed" if i < 50 else f"Bulk {i}")
        for i in range(0, 150, 7)), what="the renames")
    copies = [u for u in there.users() if u["userName"].startswith("bulk")]
    assert sorted(u["displayName"] for u in copies) == sorted(
        [f"Bulk {i} renamed" for i in range(50)] + [f"Bulk {i}" for i in range(50, 150)])
    source.stop()
    assert source.cli("provisioning", "queue").stdout == "" and source.cli("provisioning", "dead").stdout == ""


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
