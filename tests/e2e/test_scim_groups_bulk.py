"""SCIM 2.0 Groups and Bulk: groups are idflow roles (the id and displayName are the role
name, members are the users holding it); Bulk runs Users and Groups operations in one request
with bulkId references, per-operation versions, failOnErrors and size limits. Callers are the
`hr-sync` client (client_credentials with the `scim` scope) unless a test says otherwise.

Roles that give privileges (the built-in `admin`, `provisioning` with `scim`, `auditors` with
`reports:read`) are read through SCIM but never changed by it; roles without privileges
(`staff`, and every group SCIM makes) are SCIM's to manage, and so are the users holding only
such roles."""

import collections
import json

import pytest
import requests

from conftest import ALICE, DAVE, User
from test_scim import CONFIG, PROVISIONER, SCIM_TYPE, Scim, basic, client_token

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
ACTOR = "client:hr-sync"

# erin holds a role without privileges; ivan one with a privilege other than `scim`.
ERIN = User("erin", "erin-password-123", "erin@example.com", roles=["staff"])
IVAN = User("ivan", "ivan-password-123", "ivan@example.com", roles=["auditors"])


@pytest.fixture
def server(make_server):
    # make_server creates the users' roles without privileges; two of them then get some.
    # (No test user is given `admin`: that would create the role before start-up does, without
    # its `*`; the bootstrap `admin` user holds the built-in one.)
    srv = make_server(users=[ALICE, DAVE, ERIN, IVAN, PROVISIONER], extra_config=CONFIG)
    srv.stop()
    srv.cli("role", "add", "provisioning", "--privilege", "scim")
    srv.cli("role", "add", "auditors", "--privilege", "reports:read")
    return srv.start()


class Client(Scim):
    """A SCIM client; by default the `hr-sync` client with a fresh `scim` token."""

    def __init__(self, server, authorization=None):
        super().__init__(server, authorization or client_token(server, "hr-sync", "scim"))
        self.server = server

    def user_id(self, name):
        found = self.call("GET", "/Users", filter=f'userName eq "{name}"').json().get("Resources", [])
        assert len(found) == 1, (name, found)
        return found[0]["id"]

    def user(self, user_id):
        answer = self.call("GET", f"/Users/{user_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def group(self, name):
        answer = self.call("GET", f"/Groups/{name}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def create_group(self, name, *member_ids):
        answer = self.call("POST", "/Groups", group_body(name, *member_ids))
        assert answer.status_code == 201, answer.text
        return answer.json()

    def patch_group(self, name, *operations, headers=None):
        return self.call("PATCH", f"/Groups/{name}", patch_body(*operations), headers=headers)

    def bulk(self, operations, **extra):
        return self.call("POST", "/Bulk", {"schemas": [BULK_REQUEST], **extra, "Operations": operations})

    def bulk_results(self, operations, **extra):
        answer = self.bulk(operations, **extra)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["schemas"] == [BULK_RESPONSE], body
        results = body["Operations"]
        assert all(isinstance(r["status"], str) for r in results), results
        return results


def group_body(name, *member_ids):
    return {"schemas": [GROUP], "displayName": name, "members": [{"value": i} for i in member_ids]}


def patch_body(*operations):
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def add_members(*ids):
    return {"op": "add", "path": "members", "value": [{"value": i} for i in ids]}


def replace_members(*ids):
    return {"op": "replace", "path": "members", "value": [{"value": i} for i in ids]}


def remove_member(user_id):
    return {"op": "remove", "path": f'members[value eq "{user_id}"]'}


def rename(display_name):
    return {"op": "replace", "path": "displayName", "value": display_name}


def members(group):
    """The ids of a group's members (`members` may be left out when there are none)."""
    return {m["value"] for m in group.get("members") or []}


def group_names(user):
    """The roles a User resource lists in `groups` (each with the role as its display)."""
    groups = user.get("groups") or []
    assert all(g.get("display") == g["value"] for g in groups), groups
    return {g["value"] for g in groups}


def created_id(result):
    """The id at the end of a bulk operation's `location`."""
    return result["location"].rstrip("/").rsplit("/", 1)[1]


def stored(server):
    """What the store holds, read with the CLI (the server is stopped for it and started
    again): {role: privileges} and {username: roles}."""
    server.stop()
    try:
        roles = {}
        for line in server.cli("role", "list").stdout.splitlines():
            name, privileges = line.split("\t")[:2]
            roles[name] = [p for p in privileges.strip("[]").split(",") if p]
        users = {}
        for line in server.cli("user", "list").stdout.splitlines():
            fields = line.split("\t")
            users[fields[0]] = [r for r in fields[3].strip("[]").split(",") if r]
    finally:
        server.start()
    return roles, users


# Discovery.


def test_discovery_lists_groups_and_bulk_support(server):
    scim = Client(server)
    config = scim.call("GET", "/ServiceProviderConfig").json()
    bulk = config["bulk"]
    assert (bulk["supported"], bulk["maxOperations"], bulk["maxPayloadSize"]) == (True, 1000, 1048576), bulk
    types = {t["id"]: t for t in scim.call("GET", "/ResourceTypes").json()["Resources"]}
    assert {"User", "Group"} <= set(types)
    assert (types["Group"]["endpoint"], types["Group"]["schema"]) == ("/Groups", GROUP)
    assert scim.call("GET", "/ResourceTypes/Group").json()["schema"] == GROUP
    schemas = {s["id"]: s for s in scim.call("GET", "/Schemas").json()["Resources"]}
    assert {USER, GROUP} <= set(schemas)
    attributes = {a["name"] for a in schemas[GROUP]["attributes"]}
    assert {"displayName", "members"} <= attributes
    assert scim.call("GET", f"/Schemas/{GROUP}").status_code == 200


# Groups.


def test_roles_made_outside_scim_are_groups_with_their_members(server):
    scim = Client(server)
    erin = scim.user_id("erin")
    answer = scim.call("GET", "/Groups/staff")
    assert answer.status_code == 200, answer.text
    staff = answer.json()
    assert staff["schemas"] == [GROUP]
    assert staff["id"] == staff["displayName"] == "staff"
    [member] = staff["members"]
    # No `display`: scim2-tester reads a member's display as something the client set.
    assert (member["value"], member["type"]) == (erin, "User") and "display" not in member
    assert member["$ref"].endswith(f"/scim/v2/Users/{erin}"), member
    meta = staff["meta"]
    assert meta["resourceType"] == "Group"
    assert meta["location"] == server.url("/scim/v2/Groups/staff")
    assert meta["version"] and answer.headers["ETag"] == meta["version"]
    # The built-in role lists the bootstrap administrator; a privileged role its holder.
    assert scim.user_id("admin") in members(scim.group("admin"))
    assert members(scim.group("provisioning")) == {scim.user_id("hr-bot")}
    assert group_names(scim.user(erin)) == {"staff"}
    assert scim.call("GET", "/Groups/nobody").status_code == 404


def test_the_group_list_is_the_role_list_with_filter_paging_and_attributes(server):
    roles, _ = stored(server)
    scim = Client(server)
    listed = scim.call("GET", "/Groups").json()
    names = {g["displayName"] for g in listed["Resources"]}
    assert names == set(roles) and listed["totalResults"] == len(roles), (names, roles)
    assert {"admin", "staff", "provisioning", "auditors"} <= names
    assert all(g["id"] == g["displayName"] for g in listed["Resources"])
    one = scim.call("GET", "/Groups", filter='displayName eq "staff"').json()
    assert one["totalResults"] == 1 and [g["id"] for g in one["Resources"]] == ["staff"]
    assert members(one["Resources"][0]) == {scim.user_id("erin")}
    nothing = scim.call("GET", "/Groups", filter='displayName eq "nobody"').json()
    assert nothing["totalResults"] == 0 and not nothing.get("Resources")
    # Pages follow one order: together they list every group once.
    seen = []
    for start in range(1, len(roles) + 1, 2):
        page = scim.call("GET", "/Groups", startIndex=str(start), count="2").json()
        assert page["totalResults"] == len(roles) and page["startIndex"] == start
        assert len(page["Resources"]) == min(2, len(roles) - start + 1)
        seen += [g["id"] for g in page["Resources"]]
    assert sorted(seen) == sorted(roles), seen
    only = scim.call("GET", "/Groups", filter='displayName eq "staff"', attributes="displayName").json()
    assert set(only["Resources"][0]) == {"id", "schemas", "displayName"}, only
    without = scim.call("GET", "/Groups", filter='displayName eq "staff"', excludedAttributes="members").json()
    assert "members" not in without["Resources"][0] and without["Resources"][0]["displayName"] == "staff"
    bad = scim.call("GET", "/Groups", filter='displayName eq')
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"


def test_post_makes_a_role_without_privileges_and_grants_it_to_the_members(server):
    scim = Client(server)
    alice, dave = scim.user_id("alice"), scim.user_id("dave")
    answer = scim.call("POST", "/Groups", group_body("engineering", alice, dave))
    assert answer.status_code == 201, answer.text
    group = answer.json()
    assert group["schemas"] == [GROUP] and group["id"] == group["displayName"] == "engineering"
    assert members(group) == {alice, dave}
    assert group["meta"]["resourceType"] == "Group"
    assert answer.headers["Location"] == group["meta"]["location"] == server.url("/scim/v2/Groups/engineering")
    assert answer.headers["ETag"] == group["meta"]["version"]
    assert group_names(scim.user(alice)) == group_names(scim.user(dave)) == {"engineering"}
    again = scim.group("engineering")
    assert members(again) == {alice, dave} and again["meta"]["version"] == group["meta"]["version"]
    empty = scim.create_group("empty-crew")
    assert members(empty) == set() and empty.get("members") in (None, [])
    roles, users = stored(server)
    assert roles["engineering"] == [] and roles["empty-crew"] == []
    assert users["alice"] == ["engineering"] and users["dave"] == ["engineering"]


def test_post_refuses_a_taken_or_missing_display_name(server):
    scim = Client(server)
    alice = scim.user_id("alice")
    for taken in ("staff", "admin"):
        answer = scim.call("POST", "/Groups", group_body(taken, alice))
        assert answer.status_code == 409 and answer.json()["scimType"] == "uniqueness", (taken, answer.text)
    assert group_names(scim.user(alice)) == set(), "a refused create granted nothing"
    assert members(scim.group("staff")) == {scim.user_id("erin")}
    missing = scim.call("POST", "/Groups", {"schemas": [GROUP], "members": [{"value": alice}]})
    assert missing.status_code == 400 and missing.json()["scimType"] == "invalidValue", missing.text


def test_a_member_that_is_not_a_user_id_is_refused_and_nothing_changes(server):
    scim = Client(server)
    alice, erin = scim.user_id("alice"), scim.user_id("erin")
    for value in ("no-such-user", "alice"):  # a username is not an id
        answer = scim.call("POST", "/Groups", group_body("ghosts", value))
        assert answer.status_code == 400 and answer.json()["scimType"] == "invalidValue", (value, answer.text)
    assert scim.call("GET", "/Groups/ghosts").status_code == 404, "the refused group was not made"
    patched = scim.patch_group("staff", add_members(alice, "no-such-user"))
    assert patched.status_code == 400 and patched.json()["scimType"] == "invalidValue", patched.text
    replaced = scim.call("PUT", "/Groups/staff", group_body("staff", "no-such-user"))
    assert replaced.status_code == 400 and replaced.json()["scimType"] == "invalidValue", replaced.text
    assert members(scim.group("staff")) == {erin}
    assert group_names(scim.user(alice)) == set()


def test_the_display_name_is_the_role_name_and_cannot_change(server):
    scim = Client(server)
    alice, dave = scim.user_id("alice"), scim.user_id("dave")
    scim.create_group("designers", alice)
    renamed = scim.call("PUT", "/Groups/designers", group_body("artists", alice))
    assert renamed.status_code == 400 and renamed.json()["scimType"] == "mutability", renamed.text
    for operation in (rename("artists"), {"op": "replace", "value": {"displayName": "artists"}}):
        answer = scim.patch_group("designers", operation)
        assert answer.status_code == 400 and answer.json()["scimType"] == "mutability", (operation, answer.text)
    assert scim.call("GET", "/Groups/artists").status_code == 404
    assert group_names(scim.user(alice)) == {"designers"}
    same = scim.call("PUT", "/Groups/designers", group_body("designers", dave))
    assert same.status_code == 200, same.text
    assert same.json()["displayName"] == "designers" and members(same.json()) == {dave}


def test_patch_adds_removes_and_replaces_members_and_users_show_their_groups(server):
    scim = Client(server)
    alice, dave, erin = (scim.user_id(n) for n in ("alice", "dave", "erin"))
    before = scim.create_group("support")["meta"]["version"]
    added = scim.patch_group("support", add_members(alice, dave))
    assert added.status_code == 200, added.text
    assert added.headers["ETag"] == scim.group("support")["meta"]["version"] != before
    assert members(scim.group("support")) == {alice, dave}
    assert group_names(scim.user(alice)) == group_names(scim.user(dave)) == {"support"}
    removed = scim.patch_group("support", remove_member(alice))
    assert removed.status_code == 200, removed.text
    assert members(scim.group("support")) == {dave}
    assert group_names(scim.user(alice)) == set()
    replaced = scim.patch_group("support", replace_members(erin))
    assert replaced.status_code == 200, replaced.text
    assert members(scim.group("support")) == {erin}
    assert group_names(scim.user(dave)) == set()
    assert group_names(scim.user(erin)) == {"staff", "support"}
    emptied = scim.patch_group("support", replace_members())
    assert emptied.status_code == 200, emptied.text
    assert scim.group("support").get("members") in (None, [])
    assert group_names(scim.user(erin)) == {"staff"}


def test_put_replaces_the_member_list(server):
    scim = Client(server)
    alice, dave, erin = (scim.user_id(n) for n in ("alice", "dave", "erin"))
    scim.create_group("on-site", alice, dave)
    answer = scim.call("PUT", "/Groups/on-site", group_body("on-site", dave, erin))
    assert answer.status_code == 200, answer.text
    assert members(answer.json()) == members(scim.group("on-site")) == {dave, erin}
    assert group_names(scim.user(alice)) == set()
    assert group_names(scim.user(dave)) == {"on-site"}
    assert group_names(scim.user(erin)) == {"staff", "on-site"}
    # A role made outside SCIM is replaced the same way.
    assert scim.call("PUT", "/Groups/staff", group_body("staff", alice)).status_code == 200
    assert group_names(scim.user(erin)) == {"on-site"} and group_names(scim.user(alice)) == {"staff"}


def test_delete_removes_the_role_and_its_memberships(server):
    scim = Client(server)
    alice, erin = scim.user_id("alice"), scim.user_id("erin")
    scim.create_group("contractors", alice, erin)
    for name in ("contractors", "staff"):
        answer = scim.call("DELETE", f"/Groups/{name}")
        assert answer.status_code == 204, (name, answer.text)
        assert scim.call("GET", f"/Groups/{name}").status_code == 404
    assert group_names(scim.user(alice)) == group_names(scim.user(erin)) == set()
    assert scim.call("DELETE", "/Groups/staff").status_code == 404
    assert scim.patch_group("staff", add_members(alice)).status_code == 404
    assert scim.call("PUT", "/Groups/staff", group_body("staff", alice)).status_code == 404
    roles, users = stored(server)
    assert "contractors" not in roles and "staff" not in roles
    assert users["alice"] == [] and users["erin"] == []


@pytest.mark.parametrize("role,holder", [("admin", "admin"), ("provisioning", "hr-bot"), ("auditors", "ivan")])
def test_a_role_holding_privileges_is_read_but_not_changed(server, role, holder):
    scim = Client(server)
    alice, holder_id = scim.user_id("alice"), scim.user_id(holder)
    group = scim.group(role)
    assert holder_id in members(group)
    for method, body in [
        ("PATCH", patch_body(add_members(alice))),
        ("PATCH", patch_body(remove_member(holder_id))),
        ("PUT", group_body(role, alice)),
        ("PUT", group_body(role)),
        ("DELETE", None),
    ]:
        answer = scim.call(method, f"/Groups/{role}", body)
        assert answer.status_code == 403, (method, body, answer.text)
    after = scim.group(role)
    assert members(after) == members(group) and after["meta"]["version"] == group["meta"]["version"]
    assert group_names(scim.user(alice)) == set()
    assert role in group_names(scim.user(holder_id))


def test_a_user_whose_roles_give_no_privilege_is_still_scims_to_change(server):
    scim = Client(server)
    erin = scim.user_id("erin")
    patched = scim.call("PATCH", f"/Users/{erin}", patch_body(rename("Erin E.")))
    assert patched.status_code == 200, patched.text
    assert patched.json()["displayName"] == "Erin E." and group_names(patched.json()) == {"staff"}
    replaced = scim.call("PUT", f"/Users/{erin}", {"schemas": [USER], "userName": "erin", "displayName": "Erin"})
    assert replaced.status_code == 200, replaced.text
    assert group_names(replaced.json()) == {"staff"}, "groups are read-only: a PUT keeps the roles"
    # A group SCIM made does not take its members out of SCIM's reach either.
    alice = scim.user_id("alice")
    scim.create_group("readers", alice)
    assert scim.call("PATCH", f"/Users/{alice}", patch_body(rename("Alice L."))).status_code == 200
    # A role with any privilege does (`reports:read` here, `scim` for hr-bot).
    for name in ("ivan", "hr-bot"):
        user_id = scim.user_id(name)
        before = scim.user(user_id)
        assert scim.call("PATCH", f"/Users/{user_id}", patch_body(rename("taken over"))).status_code == 403
        assert scim.call("PUT", f"/Users/{user_id}", {"userName": name, "displayName": "taken over"}).status_code == 403
        assert scim.user(user_id)["meta"]["version"] == before["meta"]["version"]


def test_a_stale_version_is_refused_on_group_changes(server):
    scim = Client(server)
    alice, dave = scim.user_id("alice"), scim.user_id("dave")
    stale = scim.create_group("reviewers", alice)["meta"]["version"]
    changed = scim.patch_group("reviewers", add_members(dave), headers={"If-Match": stale})
    assert changed.status_code == 200, changed.text
    current = changed.headers["ETag"]
    assert current != stale
    for method, body in [
        ("PUT", group_body("reviewers")),
        ("PATCH", patch_body(remove_member(alice))),
        ("DELETE", None),
    ]:
        answer = scim.call(method, "/Groups/reviewers", body, headers={"If-Match": stale})
        assert answer.status_code == 412, (method, answer.text)
    assert members(scim.group("reviewers")) == {alice, dave}
    assert scim.call("DELETE", "/Groups/reviewers", headers={"If-Match": current}).status_code == 204


def test_groups_and_bulk_need_credentials(server):
    intruders = group_body("intruders")
    bulk = {"schemas": [BULK_REQUEST], "Operations": [
        {"method": "POST", "bulkId": "x", "path": "/Users", "data": {"schemas": [USER], "userName": "intruder"}}]}
    for method, path, body in [("GET", "/Groups", None), ("GET", "/Groups/staff", None),
                               ("POST", "/Groups", intruders), ("POST", "/Bulk", bulk)]:
        anonymous = requests.request(method, server.url(f"/scim/v2{path}"), json=body,
                                     headers={"Content-Type": SCIM_TYPE}, timeout=10)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert "Bearer" in anonymous.headers["WWW-Authenticate"] and anonymous.json()["status"] == "401"
    wrong = Scim(server, basic("hr-bot", "not the password")).call("POST", "/Bulk", bulk)
    assert wrong.status_code == 401
    reporting = Scim(server, client_token(server, "reporting", "reports"))
    assert reporting.call("GET", "/Groups").status_code == 403
    assert reporting.call("POST", "/Bulk", bulk).status_code == 403
    scim = Client(server)
    assert scim.call("GET", "/Groups/intruders").status_code == 404
    assert scim.names(filter='userName eq "intruder"') == []
    # HTTP Basic as a user with the `scim` privilege reads groups too.
    assert Scim(server).call("GET", "/Groups").status_code == 200


# Bulk.


def test_bulk_creates_users_and_groups_that_refer_to_them_by_bulk_id(server):
    scim = Client(server)
    results = scim.bulk_results([
        {"method": "POST", "bulkId": "u1", "path": "/Users", "data": {"schemas": [USER], "userName": "kim"}},
        {"method": "POST", "bulkId": "u2", "path": "/Users", "data": {"schemas": [USER], "userName": "lee"}},
        {"method": "POST", "bulkId": "g1", "path": "/Groups",
         "data": {"schemas": [GROUP], "displayName": "night-shift", "members": [{"value": "bulkId:u1"}]}},
        {"method": "PATCH", "path": "/Groups/bulkId:g1", "data": patch_body(add_members("bulkId:u2"))},
        {"method": "PATCH", "path": "/Users/bulkId:u1", "data": patch_body(rename("Kim K."))},
    ])
    assert [(r["method"], r.get("bulkId"), r["status"]) for r in results] == [
        ("POST", "u1", "201"), ("POST", "u2", "201"), ("POST", "g1", "201"), ("PATCH", None, "200"), ("PATCH", None, "200"),
    ], results
    kim, lee = created_id(results[0]), created_id(results[1])
    assert results[0]["location"] == results[4]["location"] == server.url(f"/scim/v2/Users/{kim}")
    assert results[1]["location"] == server.url(f"/scim/v2/Users/{lee}")
    assert results[2]["location"] == results[3]["location"] == server.url("/scim/v2/Groups/night-shift")
    assert all(r.get("version") for r in results), results
    group = scim.group("night-shift")
    assert members(group) == {kim, lee} and group["meta"]["version"] == results[3]["version"]
    kim_now = scim.user(kim)
    assert (kim_now["userName"], kim_now["displayName"]) == ("kim", "Kim K.")
    assert kim_now["meta"]["version"] == results[4]["version"]
    assert group_names(kim_now) == group_names(scim.user(lee)) == {"night-shift"}


def test_bulk_replaces_patches_and_deletes_existing_resources(server):
    scim = Client(server)
    alice, dave, erin = (scim.user_id(n) for n in ("alice", "dave", "erin"))
    scim.create_group("temps", dave)
    results = scim.bulk_results([
        {"method": "PUT", "path": "/Groups/staff", "data": group_body("staff", alice)},
        {"method": "PATCH", "path": f"/Users/{alice}", "data": patch_body(rename("Alice L."))},
        {"method": "DELETE", "path": "/Groups/temps"},
        {"method": "DELETE", "path": f"/Users/{dave}"},
        {"method": "PUT", "path": f"/Users/{erin}", "data": {"schemas": [USER], "userName": "erin", "displayName": "Erin"}},
    ])
    assert [(r["method"], r["status"]) for r in results] == [
        ("PUT", "200"), ("PATCH", "200"), ("DELETE", "204"), ("DELETE", "204"), ("PUT", "200")], results
    assert results[0]["location"] == server.url("/scim/v2/Groups/staff")
    assert results[1]["location"] == server.url(f"/scim/v2/Users/{alice}")
    assert members(scim.group("staff")) == {alice}
    alice_now = scim.user(alice)
    assert alice_now["displayName"] == "Alice L." and group_names(alice_now) == {"staff"}
    erin_now = scim.user(erin)
    assert erin_now["displayName"] == "Erin" and group_names(erin_now) == set()
    assert scim.call("GET", "/Groups/temps").status_code == 404
    assert scim.call("GET", f"/Users/{dave}").status_code == 404


def test_a_bulk_operations_version_acts_as_if_match(server):
    scim = Client(server)
    alice, dave = scim.user_id("alice"), scim.user_id("dave")
    stale_user = scim.user(alice)["meta"]["version"]
    assert scim.call("PATCH", f"/Users/{alice}", patch_body(rename("Alice Now"))).status_code == 200
    stale_group = scim.create_group("on-call")["meta"]["version"]
    changed = scim.patch_group("on-call", add_members(dave))
    assert changed.status_code == 200, changed.text
    current_group = changed.headers["ETag"]
    results = scim.bulk_results([
        {"method": "PATCH", "path": f"/Users/{alice}", "version": stale_user, "data": patch_body(rename("Old"))},
        {"method": "PUT", "path": "/Groups/on-call", "version": stale_group, "data": group_body("on-call")},
        {"method": "DELETE", "path": "/Groups/on-call", "version": stale_group},
        {"method": "PATCH", "path": "/Groups/on-call", "version": current_group, "data": patch_body(add_members(alice))},
    ])
    assert [r["status"] for r in results] == ["412", "412", "412", "200"], results
    assert members(scim.group("on-call")) == {alice, dave}
    assert scim.user(alice)["displayName"] == "Alice Now"


def test_an_unknown_bulk_id_fails_its_operation_and_the_rest_run(server):
    scim = Client(server)
    results = scim.bulk_results([
        {"method": "POST", "bulkId": "g1", "path": "/Groups",
         "data": {"schemas": [GROUP], "displayName": "ghost-crew", "members": [{"value": "bulkId:nobody"}]}},
        {"method": "PATCH", "path": "/Users/bulkId:nobody", "data": patch_body(rename("x"))},
        {"method": "POST", "bulkId": "u1", "path": "/Users", "data": {"schemas": [USER], "userName": "after"}},
    ])
    assert [r["status"] for r in results] == ["409", "409", "201"], results
    for failed in results[:2]:
        assert failed["response"]["scimType"] == "invalidValue" and failed["response"]["status"] == "409", failed
    assert scim.call("GET", "/Groups/ghost-crew").status_code == 404
    assert scim.names(filter='userName eq "after"') == ["after"]


def test_fail_on_errors_stops_after_the_first_error(server):
    scim = Client(server)

    def hires(prefix):
        return [{"method": "POST", "bulkId": f"{prefix}{n}", "path": "/Users",
                 "data": {"schemas": [USER], "userName": name}}
                for n, name in enumerate([f"{prefix}-first", "alice", f"{prefix}-third"])]

    stopped = scim.bulk_results(hires("stop"), failOnErrors=1)
    assert [r["status"] for r in stopped] == ["201", "409"], stopped
    assert stopped[1]["response"]["scimType"] == "uniqueness" and stopped[1]["response"]["status"] == "409"
    assert scim.names(filter='userName eq "stop-first"') == ["stop-first"]
    assert scim.names(filter='userName eq "stop-third"') == [], "nothing after the error ran"
    # Without failOnErrors every operation runs.
    carried_on = scim.bulk_results(hires("go"))
    assert [r["status"] for r in carried_on] == ["201", "409", "201"], carried_on
    assert scim.names(filter='userName eq "go-third"') == ["go-third"]


def test_an_operation_with_an_unknown_method_or_path_fails_alone(server):
    scim = Client(server)
    results = scim.bulk_results([
        {"method": "COPY", "path": "/Users", "data": {"schemas": [USER], "userName": "copied"}},
        {"method": "POST", "bulkId": "w1", "path": "/Widgets", "data": {"name": "w"}},
        {"method": "POST", "bulkId": "u1", "path": "/Users", "data": {"schemas": [USER], "userName": "still-made"}},
    ])
    assert [r["status"] for r in results] == ["400", "400", "201"], results
    assert scim.names(filter='userName eq "copied"') == []
    assert scim.names(filter='userName eq "still-made"') == ["still-made"]


def test_a_bulk_request_needs_its_schema_and_operations(server):
    scim = Client(server)
    create = [{"method": "POST", "bulkId": "u1", "path": "/Users", "data": {"schemas": [USER], "userName": "nope"}}]
    for body in [
        {"Operations": create},
        {"schemas": [PATCH_OP], "Operations": create},
        {"schemas": [BULK_REQUEST]},
    ]:
        answer = scim.call("POST", "/Bulk", body)
        assert answer.status_code == 400 and answer.json()["scimType"] == "invalidSyntax", (body, answer.text)
    garbage = requests.post(server.url("/scim/v2/Bulk"), data="{not json", headers=scim.headers, timeout=10)
    assert garbage.status_code == 400 and garbage.json()["scimType"] == "invalidSyntax"
    assert scim.names(filter='userName eq "nope"') == []


def test_bulk_takes_1000_operations_and_refuses_1001(server):
    scim = Client(server)
    too_many = [{"method": "POST", "bulkId": f"m{n}", "path": "/Users",
                 "data": {"schemas": [USER], "userName": f"many-{n}"}} for n in range(1001)]
    answer = scim.bulk(too_many)
    assert answer.status_code == 413, answer.text[:500]
    assert answer.json()["status"] == "413" and answer.json()["schemas"] == [ERROR]
    assert scim.names(filter='userName eq "many-0"') == [], "none of a refused request ran"
    thousand = [{"method": "DELETE", "path": f"/Users/missing-{n}"} for n in range(1000)]
    results = scim.bulk_results(thousand)
    assert len(results) == 1000 and {r["status"] for r in results} == {"404"}


def test_bulk_refuses_a_body_over_one_mebibyte(server):
    scim = Client(server)
    body = {"schemas": [BULK_REQUEST], "Operations": [
        {"method": "POST", "bulkId": "big", "path": "/Users",
         "data": {"schemas": [USER], "userName": "huge", "title": "x" * (1024 * 1024)}}]}
    answer = requests.post(server.url("/scim/v2/Bulk"), data=json.dumps(body), headers=scim.headers, timeout=30)
    assert answer.status_code == 413, answer.text[:500]
    assert scim.names(filter='userName eq "huge"') == []


def test_bulk_applies_the_same_authorization_as_single_requests(server):
    scim = Client(server)
    alice, erin, bot = (scim.user_id(n) for n in ("alice", "erin", "hr-bot"))
    results = scim.bulk_results([
        {"method": "PATCH", "path": "/Groups/admin", "data": patch_body(add_members(alice))},
        {"method": "DELETE", "path": "/Groups/provisioning"},
        {"method": "DELETE", "path": f"/Users/{bot}"},
        {"method": "PATCH", "path": f"/Users/{erin}", "data": patch_body(rename("Erin E."))},
    ])
    assert [r["status"] for r in results] == ["403", "403", "403", "200"], results
    assert group_names(scim.user(alice)) == set()
    assert members(scim.group("provisioning")) == {bot}
    assert scim.user(erin)["displayName"] == "Erin E."


def test_bulk_operations_are_audited_like_single_requests(server):
    def by_client():
        return [e for e in server.audit() if e["actor"] == ACTOR]

    scim = Client(server)
    alice = scim.user_id("alice")
    solo = scim.create("solo")["id"]
    scim.create_group("solo-crew", solo)
    assert scim.patch_group("solo-crew", add_members(alice)).status_code == 200
    assert scim.call("PUT", "/Groups/solo-crew", group_body("solo-crew", solo)).status_code == 200
    assert scim.call("DELETE", "/Groups/solo-crew").status_code == 204
    assert scim.call("DELETE", f"/Users/{solo}").status_code == 204
    single = [e["event"] for e in by_client()]
    assert "scim.user.create" in single and "scim.user.delete" in single
    assert any("group" in event for event in single), f"group changes are audited: {single}"

    scim = Client(server)  # the audit restarted the server
    results = scim.bulk_results([
        {"method": "POST", "bulkId": "u1", "path": "/Users", "data": {"schemas": [USER], "userName": "duo"}},
        {"method": "POST", "bulkId": "g1", "path": "/Groups",
         "data": {"schemas": [GROUP], "displayName": "duo-crew", "members": [{"value": "bulkId:u1"}]}},
        {"method": "PATCH", "path": "/Groups/duo-crew", "data": patch_body(add_members(alice))},
        {"method": "PUT", "path": "/Groups/duo-crew", "data": group_body("duo-crew", "bulkId:u1")},
        {"method": "DELETE", "path": "/Groups/duo-crew"},
        {"method": "DELETE", "path": "/Users/bulkId:u1"},
    ])
    assert [r["status"] for r in results] == ["201", "201", "200", "200", "204", "204"], results
    duo = created_id(results[0])
    entries = by_client()
    bulk = entries[:len(entries) - len(single)]  # newest first: what the bulk request added
    missing = collections.Counter(single) - collections.Counter(e["event"] for e in bulk)
    assert not missing, f"audited for single requests but not in bulk: {missing}"
    assert [e["subject"] for e in bulk if e["event"] == "scim.user.create"] == [duo]
