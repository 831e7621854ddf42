"""SCIM 2.0 in: the third-party compliance checker scim2-tester (its `scim2 ... test` CLI)
against idflow, with HTTP Basic as the admin and with a client_credentials token carrying the
`scim` scope; then the behaviours the checker does not exercise (filters, sorting, pagination,
ETags, uniqueness, authentication and authorization failures, passwords, deletion)."""

import base64
import pathlib
import subprocess

import pytest
import requests

from conftest import ALICE, BOB, Browser, RelyingParty, User

SCIM2 = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "bin" / "scim2"
CLIENT_SECRET = "hr-sync-secret-for-tests-0123456789"
CONFIG = f"""
[applications.hr-sync]
client_secret = "{CLIENT_SECRET}"
grant_types = ["client_credentials"]
scopes = ["scim"]

[applications.reporting]
client_secret = "{CLIENT_SECRET}"
grant_types = ["client_credentials"]
scopes = ["reports"]
"""


def basic(name, password):
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


PROVISIONER_AUTH = basic("hr-bot", "hr-bot-password-123")
SCIM_TYPE = "application/scim+json"


def client_token(server, client, scope):
    answer = requests.post(server.url("/token"), data={"grant_type": "client_credentials", "scope": scope},
                           auth=(client, CLIENT_SECRET), timeout=10)
    assert answer.status_code == 200, answer.text
    return "Bearer " + answer.json()["access_token"]


PROVISIONER = User("hr-bot", "hr-bot-password-123", roles=["provisioning"])


@pytest.fixture
def server(make_server):
    srv = make_server(users=[ALICE, BOB, PROVISIONER], extra_config=CONFIG)
    # The role exists (make_server made it); now it gets the privilege.
    srv.stop()
    srv.cli("role", "add", "provisioning", "--privilege", "scim")
    # make_server made `admin` as a plain role; here it is what the built-in one is.
    srv.cli("role", "add", "admin", "--privilege", "*")
    return srv.start()


class Scim:
    def __init__(self, server, authorization=None):
        self.base = server.url("/scim/v2")
        self.headers = {"Authorization": authorization or PROVISIONER_AUTH, "Content-Type": SCIM_TYPE}

    def call(self, method, path, body=None, headers=None, **params):
        answer = requests.request(method, self.base + path, json=body, params=params or None,
                                  headers={**self.headers, **(headers or {})}, timeout=30)
        if answer.status_code != 204:
            assert answer.headers["Content-Type"] == SCIM_TYPE, (answer.status_code, answer.headers)
        return answer

    def create(self, user_name, **attributes):
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, **attributes}
        answer = self.call("POST", "/Users", body)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def names(self, **params):
        answer = self.call("GET", "/Users", **params)
        assert answer.status_code == 200, answer.text
        return [u["userName"] for u in answer.json()["Resources"]]


def run_checker(server, authorization):
    result = subprocess.run([str(SCIM2), "--url", server.url("/scim/v2"), "-h", f"Authorization: {authorization}", "test"],
                            capture_output=True, text=True, timeout=600)
    statuses = ("SUCCESS", "ERROR", "CRITICAL", "WARNING", "SKIPPED")
    lines = [line for line in result.stdout.splitlines() if line.startswith(statuses)]
    bad = [line for line in lines if not line.startswith("SUCCESS")]
    return result.returncode, lines, bad, result.stdout + result.stderr


@pytest.mark.skipif(not SCIM2.exists(), reason="scim2-cli is not installed (scripts/setup --e2e)")
@pytest.mark.parametrize("how", ["basic", "bearer"])
def test_scim2_tester_passes_with_nothing_but_success(server, how):
    authorization = PROVISIONER_AUTH if how == "basic" else client_token(server, "hr-sync", "scim")
    code, lines, bad, output = run_checker(server, authorization)
    assert code == 0 and not bad, (bad, output[-2000:])
    assert len(lines) > 100, "the checker ran its full suite"


def test_filters_sorting_and_pagination(server):
    scim = Scim(server)
    for name, given, number, active in [("carol", "Carol", "3", True), ("dave", "Dave", "4", False), ("erin", "Erin", "5", True)]:
        scim.create(name, name={"givenName": given}, active=active,
                    emails=[{"value": f"{name}@work.example", "type": "work", "primary": True}],
                    **{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": number}})
    assert scim.names(filter='userName eq "CAROL"') == ["carol"]
    # Lookups answered through the name index still obey the filter exactly.
    assert scim.names(filter=f'userName eq "{ALICE.email}"') == [], "an email is not a userName"
    assert scim.names(filter='emails.value eq "carol@work.example"') == ["carol"]
    assert scim.names(filter='emails eq "DAVE@work.example" and active eq true') == []
    carol_id = scim.call("GET", "/Users", filter='userName eq "carol"').json()["Resources"][0]["id"]
    assert scim.names(filter=f'id eq "{carol_id}"') == ["carol"]
    assert scim.names(filter=f'id eq "{carol_id.lower()}x"') == []
    assert scim.names(filter='userName sw "c" or userName ew "RIN"', sortBy="userName") == ["carol", "erin"]
    assert scim.names(filter='emails[type eq "work" and value co "dave"]') == ["dave"]
    assert scim.names(filter="active eq false") == ["dave"]
    assert scim.names(filter='not (name.givenName pr) and userName ne "admin"', sortBy="userName") == ["alice", "bob", "hr-bot"]
    enterprise = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber ge "4"'
    assert scim.names(filter=enterprise, sortBy="userName", sortOrder="descending") == ["erin", "dave"]
    everyone = scim.names(sortBy="userName")
    assert everyone == sorted(everyone, key=str.lower) and len(everyone) == 7
    page = scim.call("GET", "/Users", sortBy="userName", startIndex="2", count="2").json()
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (7, 2, 2)
    assert [u["userName"] for u in page["Resources"]] == everyone[1:3]
    # Pages without a sort follow one stable order: together they list everyone once.
    seen = []
    for start in (1, 4, 7):
        chunk = scim.call("GET", "/Users", startIndex=str(start), count="3").json()
        assert chunk["totalResults"] == 7 and chunk["startIndex"] == start
        seen += [u["id"] for u in chunk["Resources"]]
    assert len(seen) == 7 == len(set(seen)), seen
    only = scim.call("GET", "/Users", filter='userName eq "carol"', attributes="userName").json()["Resources"][0]
    assert set(only) == {"id", "schemas", "userName"}, only
    search = scim.call("POST", "/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                            "filter": 'userName eq "erin"', "excludedAttributes": ["emails"]}).json()
    assert search["totalResults"] == 1 and "emails" not in search["Resources"][0]
    for bad in ['userName eq', 'userName zz "x"', '(userName eq "x"']:
        answer = scim.call("GET", "/Users", filter=bad)
        assert answer.status_code == 400 and answer.json()["scimType"] == "invalidFilter", (bad, answer.text)


def test_etags_uniqueness_and_patch_paths(server):
    scim = Scim(server)
    carol = scim.create("carol", emails=[{"value": "carol@home.example", "type": "home"},
                                        {"value": "carol@work.example", "type": "work", "primary": True}])
    path = f"/Users/{carol['id']}"
    stale = carol["meta"]["version"]
    patched = scim.call("PATCH", path, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "carol@new.example"},
        {"op": "remove", "path": 'emails[type eq "home"]'},
        {"op": "add", "path": "name.familyName", "value": "Ng"},
    ]}, headers={"If-Match": stale})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["emails"] == [{"value": "carol@new.example", "type": "work", "primary": True}]
    assert body["name"] == {"familyName": "Ng"} and patched.headers["ETag"] == body["meta"]["version"] != stale
    conflict = scim.call("PUT", path, {"userName": "carol"}, headers={"If-Match": stale})
    assert conflict.status_code == 412, conflict.text
    gone = scim.call("DELETE", path, headers={"If-Match": stale})
    assert gone.status_code == 412
    no_target = scim.call("PATCH", path, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": 'emails[type eq "fax"].value', "value": "x"}]})
    assert no_target.status_code == 400 and no_target.json()["scimType"] == "noTarget"
    read_only = scim.call("PATCH", path, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": "id", "value": "mine"}]})
    assert read_only.status_code == 400 and read_only.json()["scimType"] == "mutability"
    taken = scim.call("POST", "/Users", {"userName": "ALICE"})
    assert taken.status_code == 409 and taken.json()["scimType"] == "uniqueness"
    taken_mail = scim.call("POST", "/Users", {"userName": "zed", "emails": [{"value": "carol@new.example"}]})
    assert taken_mail.status_code == 409
    assert scim.call("GET", path, headers={"If-None-Match": patched.headers["ETag"]}).status_code == 304


def test_authentication_authorization_and_bad_bodies(server):
    anonymous = requests.get(server.url("/scim/v2/Users"), timeout=10)
    assert anonymous.status_code == 401 and "Bearer" in anonymous.headers["WWW-Authenticate"]
    assert anonymous.json()["status"] == "401"
    for authorization, status in [
        (basic("hr-bot", "wrong"), 401),
        (basic("alice", ALICE.password), 401),            # no scim privilege: the same 401
        ("Bearer not-a-token", 401),
        (client_token(server, "reporting", "reports"), 403),  # no scim scope
    ]:
        answer = Scim(server, authorization).call("GET", "/Users")
        assert answer.status_code == status, (authorization[:12], answer.text)
    scim = Scim(server)
    # Users whose roles give privileges are not SCIM's to change: neither a client with the
    # scope nor a user with only the `scim` privilege may reset such an account.
    bot = scim.call("GET", "/Users", filter='userName eq "hr-bot"').json()["Resources"][0]
    patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
             "Operations": [{"op": "replace", "path": "password", "value": "taken over, 12345"}]}
    for caller in (scim, Scim(server, client_token(server, "hr-sync", "scim"))):
        assert caller.call("PATCH", f"/Users/{bot['id']}", patch).status_code == 403
        assert caller.call("PUT", f"/Users/{bot['id']}", {"userName": "hr-bot"}).status_code == 403
        assert caller.call("DELETE", f"/Users/{bot['id']}").status_code == 403
    alice = scim.call("GET", "/Users", filter='userName eq "alice"').json()["Resources"][0]
    assert scim.call("PATCH", f"/Users/{alice['id']}", patch).status_code == 200
    assert scim.call("POST", "/Users", None).status_code == 400
    garbage = requests.post(server.url("/scim/v2/Users"), data="{not json", headers=scim.headers, timeout=10)
    assert garbage.status_code == 400 and garbage.json()["scimType"] == "invalidSyntax"
    as_text = requests.post(server.url("/scim/v2/Users"), data='{"userName": "t"}',
                            headers={**scim.headers, "Content-Type": "text/plain"}, timeout=10)
    assert as_text.status_code == 400, "a cross-site text/plain post is not a SCIM body"
    # Two spellings of one attribute: refused, never stored for a later reader to find.
    twice = scim.call("POST", "/Users", {"userName": "mallory", "USERNAME": "admin", "ID": "x"})
    assert twice.status_code == 400 and twice.json()["scimType"] == "invalidSyntax", twice.text
    assert scim.call("POST", "/Users", {"userName": "Admin"}).status_code == 409
    # A PUT that omits `active` leaves a disabled user disabled.
    gina = scim.create("gina", active=False)
    assert scim.call("PUT", f"/Users/{gina['id']}", {"userName": "gina"}).json()["active"] is False
    # Users holding a role that gives privileges (bob, an admin) are the administrators' to
    # manage, not SCIM's.
    bob = scim.call("GET", "/Users", filter='userName eq "bob"').json()["Resources"][0]
    assert scim.call("DELETE", f"/Users/{bob['id']}").status_code == 403
    assert scim.call("POST", "/Users", {"displayName": "no name"}).json()["scimType"] == "invalidValue"
    assert scim.call("GET", "/Users/nobody").status_code == 404
    assert scim.call("GET", "/Nothing").status_code == 404
    assert scim.call("DELETE", "/Schemas").status_code == 405
    wrong_method = scim.call("GET", "/Users/.search")
    assert wrong_method.status_code == 405 and wrong_method.headers["Content-Type"] == SCIM_TYPE
    sideways = scim.call("POST", "/Users/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                                     "sortBy": "userName", "sortOrder": "sideways"})
    assert sideways.status_code == 400 and sideways.json()["scimType"] == "invalidValue"


def test_basic_credentials_are_throttled_like_the_login_page(server):
    wrong = Scim(server, basic("hr-bot", "not the password"))
    statuses = [wrong.call("GET", "/Users").status_code for _ in range(12)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    # The right password from that address is refused too while the limit holds.
    assert Scim(server).call("GET", "/Users").status_code == 429


def test_a_password_set_through_scim_signs_in_and_a_deleted_user_is_gone(server):
    scim = Scim(server)
    user = scim.create("frank", password="frank's long passphrase")
    assert "password" not in user
    rp = RelyingParty(server, "demo-web")  # the password flow
    claims = rp.finish(Browser(server).login(rp.authorize_url(), username="frank", password="frank's long passphrase"))
    assert claims["sub"] == user["id"]
    weak = scim.call("POST", "/Users", {"userName": "weak", "password": "x"})
    assert weak.status_code == 400 and weak.json()["scimType"] == "invalidValue"
    assert scim.call("DELETE", f"/Users/{user['id']}").status_code == 204
    assert scim.call("GET", f"/Users/{user['id']}").status_code == 404
    server.stop()
    events = [e["event"] for e in server.audit()]
    assert "scim.user.create" in events and "scim.user.delete" in events
    assert "frank" not in server.cli("user", "list").stdout
