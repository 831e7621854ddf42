"""The admin console at /console/ in a real browser: headless Chromium (Playwright) runs the
page's own script, which signs the administrator in as the public client `idflow-console`
(authorization code with PKCE, scope `openid admin`) on the normal login page and then works
over the admin API. An administrator creates a role and a user and assigns the role; a flow is
drawn as an SVG with the coverage its scenarios give; the page is usable from the keyboard;
a user without privileges sees an error and no data; the page is served with a strict Content
Security Policy. Every test leaves a full-page screenshot in target/console-screenshots/."""

import html.parser
import re

import requests

from conftest import ADMIN_PASSWORD, ALICE, REPO

API = "/admin/v1"
ADMIN = ("admin", ADMIN_PASSWORD)
SHOTS = REPO / "target" / "console-screenshots"
# Pages that fetch and render: more than a click, less than a flow's scenarios run.
SLOW = 20_000


def expect(target):
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(target)


def screenshot(page, name):
    """A full-page screenshot for the CI artifacts."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def api(server, method, path, **kw):
    """The admin API as the built-in administrator (HTTP Basic)."""
    answer = requests.request(method, server.url(API + path), auth=ADMIN, timeout=30, **kw)
    assert answer.ok, f"{method} {path}: {answer.status_code} {answer.text}"
    return answer.json()


def user_by_name(server, username):
    [user] = [u for u in api(server, "GET", "/users", params={"q": username})["users"]
              if u["username"] == username]
    return user


def page_problems(web):
    """What the browser complained about: script errors and Content Security Policy reports."""
    return [line for line in web.log
            if line.startswith("page error") or "Content Security Policy" in line
            or line.startswith("console error") and "status of 40" not in line]


def sign_in_to_console(server, web, username="admin", password=ADMIN_PASSWORD, shot=None):
    """Opens /console/, which sends the browser to the login page of the default `password`
    flow; signs in there and comes back to the console, which swaps the code for a token."""
    page = web.page
    page.goto(server.url("/console/"))
    expect(page.locator("#password-username")).to_be_visible()
    assert not page.url.startswith(server.url("/console/")), f"no login page: {page.url}"
    if shot:
        screenshot(page, shot)
    page.fill("#password-username", username)
    page.fill("#password-password", password)
    page.click("#option-password button[type=submit]")
    expect(page).to_have_url(server.url("/console/#/users"), timeout=SLOW)
    return page


def heading(page):
    return page.locator("main h1")


def test_an_admin_signs_in_creates_a_user_and_assigns_a_role(make_server, web_browser):
    server = make_server(users=[ALICE])
    web = web_browser(server)
    page = sign_in_to_console(server, web, shot="login-page")

    # Signed in: the Users section lists the administrator.
    expect(heading(page)).to_have_text("Users", timeout=SLOW)
    users = page.get_by_role("table")
    expect(users.get_by_role("link", name="admin", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("link", name="Users", exact=True)).to_have_attribute("aria-current", "page")

    # A role, through the Roles section's form.
    page.get_by_role("link", name="Roles", exact=True).click()
    expect(heading(page)).to_have_text("Roles")
    page.get_by_label("Name", exact=True).fill("helpdesk")
    page.get_by_label("Description", exact=True).fill("Answers the phone")
    page.get_by_label("Privileges (comma separated)").fill("users:read")
    page.get_by_role("button", name="Save role").click()
    expect(page.get_by_role("status")).to_have_text("Saved role helpdesk")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="helpdesk", exact=True))
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell", name="users:read", exact=True)).to_be_visible()

    # A user, through the "New user" form; the user's page opens.
    page.get_by_role("link", name="Users", exact=True).click()
    expect(heading(page)).to_have_text("Users")
    new_user = page.get_by_role("form", name="New user")
    new_user.get_by_label("Username", exact=True).fill("dana")
    new_user.get_by_label("Email", exact=True).fill("dana@example.com")
    new_user.get_by_label("Password", exact=True).fill("dana-password-123")
    new_user.get_by_role("button", name="Create user").click()
    expect(heading(page)).to_have_text("dana", timeout=SLOW)
    dana = user_by_name(server, "dana")
    expect(page).to_have_url(server.url(f"/console/#/users/{dana['id']}"))
    assert dana["email"] == "dana@example.com" and dana["roles"] == [], dana
    held = page.get_by_role("table", name="Roles held")
    expect(held.get_by_role("cell")).to_have_count(0)

    # The role, with the "Assign role" form.
    assign = page.get_by_role("form", name="Assign a role")
    assign.get_by_role("combobox", name="Role", exact=True).select_option("helpdesk")
    assign.get_by_role("button", name="Assign role").click()
    expect(page.get_by_role("status")).to_have_text("dana now has the role helpdesk")
    expect(held.get_by_role("cell", name="helpdesk", exact=True)).to_be_visible()
    expect(held.get_by_role("button", name="Remove the role helpdesk")).to_be_visible()
    screenshot(page, "test_an_admin_signs_in_creates_a_user_and_assigns_a_role")

    # The admin API agrees, and the audit log names the administrator as the one who did it.
    assert api(server, "GET", f"/users/{dana['id']}")["roles"] == ["helpdesk"]
    admin_id = user_by_name(server, "admin")["id"]
    grants = [e for e in api(server, "GET", "/audit", params={"event": "user.grant"})["entries"]
              if e["subject"] == dana["id"]]
    assert [(e["actor"], e["detail"]["role"]) for e in grants] == [(admin_id, "helpdesk")], grants
    made = [e for e in api(server, "GET", "/audit", params={"event": "user.create"})["entries"]
            if e["subject"] == dana["id"]]
    assert [e["actor"] for e in made] == [admin_id], made
    assert not page_problems(web), web.log


def test_the_flow_graph_is_drawn_with_its_coverage(make_server, web_browser):
    server = make_server(users=[ALICE])
    web = web_browser(server)
    page = sign_in_to_console(server, web)
    expect(heading(page)).to_have_text("Users", timeout=SLOW)

    page.get_by_role("link", name="Flows", exact=True).click()
    expect(heading(page)).to_have_text("Flows")
    page.locator('main a[href="#/flows/password"]').click()
    expect(heading(page)).to_have_text("Flow password", timeout=SLOW)

    detail = api(server, "GET", "/flows/password")
    report = api(server, "GET", "/flows/password/test")
    states = detail["ir"]["states"]
    transitions = [(source, label) for source, state in states.items()
                   for label in (state.get("transitions") or {})]

    # The picture: an inline SVG image named by its title, one box per state.
    picture = page.locator("main figure svg")
    expect(picture).to_have_count(1)
    expect(picture).to_have_attribute("role", "img")
    expect(picture.locator(":scope > title")).to_have_text("flow password")
    expect(page.get_by_role("img", name="flow password")).to_be_visible()
    expect(picture.locator("g.state")).to_have_count(len(states))
    for state in states:
        expect(picture.locator("g.state > title").filter(has_text=re.compile(rf"^{re.escape(state)}[ :(]"))) \
            .to_have_count(1)
    # Uncovered transitions are dashed; the scenarios of password.test.yaml cover some of them.
    missing = report["coverage"]["missing_transitions"]
    expect(picture.locator("g.edge path[stroke-dasharray]")).to_have_count(len(missing))

    # The transitions table says the same in words, with a Covered column.
    table = page.get_by_role("table", name="Every transition, for reading without the picture")
    expect(table.get_by_role("columnheader")).to_have_text(["From", "On", "To", "Covered"])
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(len(transitions))
    covered = rows.locator("td:nth-child(4)").all_text_contents()
    # The compiler's fail-closed `error` edges are not required of scenarios, and say so.
    exempt = sum(1 for t in transitions if t[1] == "error")
    assert covered.count("not required (fails closed)") == exempt, covered
    assert covered.count("no") == len(missing) and covered.count("yes") == len(transitions) - len(missing) - exempt, \
        (covered, missing)

    # The scenarios of flows/password.test.yaml ran against the live flow, and passed.
    scenarios = len(re.findall(r"^  - name:", (REPO / "flows" / "password.test.yaml").read_text(), re.M))
    assert report["passed"] >= scenarios > 0 and report["failed"] == 0, report
    expect(page.locator("main")).to_contain_text(
        f"Scenarios: {report['passed']} passed, {report['failed']} failed; "
        f"coverage {report['coverage']['states'][0]}/{report['coverage']['states'][1]} states, "
        f"{report['coverage']['transitions'][0]}/{report['coverage']['transitions'][1]} transitions.")
    expect(page.get_by_role("table", name="Scenario results").locator("tbody tr")).to_have_count(report["passed"])
    screenshot(page, "test_the_flow_graph_is_drawn_with_its_coverage")
    assert not page_problems(web), web.log


def focused(page):
    """The focused element: tag, text, href and id."""
    return page.evaluate("""() => {
        const e = document.activeElement;
        return { tag: e.tagName.toLowerCase(), text: (e.textContent || "").trim(),
                 href: e.getAttribute("href"), id: e.id };
    }""")


def leave_the_page_by_tab(page):
    """Tabs past the page's last control, out to the browser's own controls (the address bar
    of a headed browser; the body keeps the focus in Chromium); the next Tab comes in at the
    start of the page, as for someone who just typed the address."""
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement === document.body"):
            return
    raise AssertionError(f"Tab never left the page; stuck at {focused(page)}")


def test_the_console_is_usable_from_the_keyboard(make_server, web_browser):
    server = make_server(users=[ALICE])
    web = web_browser(server)
    page = sign_in_to_console(server, web)
    expect(heading(page)).to_have_text("Users", timeout=SLOW)

    # Every input of the Users page's forms has a label.
    for name in ("Find users", "Username", "Email", "Password"):
        expect(page.get_by_label(name, exact=True)).to_have_count(1)
        expect(page.get_by_label(name, exact=True)).to_be_editable()
    unlabelled = page.evaluate("""() => [...document.querySelectorAll("main input, main select")]
        .filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label"))
        .map((e) => e.name)""")
    assert unlabelled == [], unlabelled
    # The status region is announced.
    expect(page.get_by_role("status")).to_have_attribute("aria-live", "polite")

    # Off to another section with the keyboard alone, then in from the start of the page (as
    # after typing the address): the skip link comes first, then the sections as links.
    page.get_by_role("link", name="Roles", exact=True).focus()
    page.keyboard.press("Enter")
    expect(heading(page)).to_have_text("Roles")
    leave_the_page_by_tab(page)
    page.keyboard.press("Tab")
    assert focused(page) == {"tag": "a", "text": "Skip to content", "href": "#main", "id": ""}, focused(page)
    screenshot(page, "test_the_console_is_usable_from_the_keyboard-skip-link")
    sections = ["Users", "Roles", "Applications", "Identity providers", "Flows", "Audit log"]
    for name in sections:
        page.keyboard.press("Tab")
        now = focused(page)
        assert now["tag"] == "a" and now["text"] == name and now["href"].startswith("#/"), now
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Sign out", focused(page)

    # The skip link moves the focus to the main region, and stays on the section.
    leave_the_page_by_tab(page)
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Skip to content", focused(page)
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(heading(page)).to_have_text("Roles")
    expect(page).to_have_url(server.url("/console/#/roles"))
    # From main, Tab goes on into the section's content: the role form's first field.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Name", exact=True)).to_be_focused()

    # A section opened from the keyboard: Tab to "Users" and press Enter.
    leave_the_page_by_tab(page)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(heading(page)).to_have_text("Users")
    expect(page.locator("main")).to_be_focused()
    expect(page.get_by_role("link", name="Users", exact=True)).to_have_attribute("aria-current", "page")
    screenshot(page, "test_the_console_is_usable_from_the_keyboard")
    assert not page_problems(web), web.log


def test_a_user_without_admin_privileges_gets_no_data(make_server, web_browser):
    server = make_server(users=[ALICE])
    web = web_browser(server)
    page = sign_in_to_console(server, web, ALICE.username, ALICE.password)

    # Alice's token carries the `admin` scope, but she holds no privilege: the admin API
    # answers 403 and the console says so instead of listing anyone.
    expect(heading(page)).to_have_text("Something went wrong", timeout=SLOW)
    expect(page.locator("main")).to_contain_text("this needs the `users:read` privilege")
    expect(page.locator("main table")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("admin")
    screenshot(page, "test_a_user_without_admin_privileges_gets_no_data")

    for section, privilege in (("Roles", "roles:read"), ("Audit log", "audit:read"), ("Flows", "config:read")):
        page.get_by_role("link", name=section, exact=True).click()
        expect(page.locator("main")).to_contain_text(f"this needs the `{privilege}` privilege")
        expect(heading(page)).to_have_text("Something went wrong")
        expect(page.locator("main table")).to_have_count(0)
    # Nothing was read or changed on her behalf.
    alice_id = user_by_name(server, "alice")["id"]
    changes = [e for e in api(server, "GET", "/audit", params={"limit": 1000})["entries"]
               if e["actor"] == alice_id and e["event"].split(".")[0] in ("user", "role", "session")]
    assert changes == [], changes
    assert not page_problems(web), web.log


class Scripts(html.parser.HTMLParser):
    """The page's script elements (attributes and content) and event handler attributes."""

    def __init__(self):
        super().__init__()
        self.scripts, self.handlers, self._inside = [], [], None

    def handle_starttag(self, tag, attrs):
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self._inside = {"attrs": dict(attrs), "text": ""}
            self.scripts.append(self._inside)

    def handle_endtag(self, tag):
        if tag == "script":
            self._inside = None

    def handle_data(self, data):
        if self._inside is not None:
            self._inside["text"] += data


def policy(answer):
    header = answer.headers.get("Content-Security-Policy", "")
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def test_the_console_page_sets_a_strict_content_security_policy(make_server):
    server = make_server(users=[ALICE])
    page = requests.get(server.url("/console/"), timeout=10, allow_redirects=False)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html"), page.headers
    directives = policy(page)
    assert directives.get("script-src") == ["'self'"], directives
    assert directives.get("frame-ancestors") == ["'none'"], directives
    assert directives.get("default-src") == ["'none'"], directives
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
    assert page.headers.get("X-Content-Type-Options") == "nosniff"

    # No inline script: the only script is the console's own file, and no event handler attributes.
    found = Scripts()
    found.feed(page.text)
    assert [s["attrs"].get("src") for s in found.scripts] == ["/console/app.js"], found.scripts
    assert all(not s["text"].strip() for s in found.scripts), found.scripts
    assert found.handlers == [], found.handlers

    # The script and the stylesheet are served from here, as what they are.
    script = requests.get(server.url("/console/app.js"), timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"], script.headers
    assert "idflow-console" in script.text
    style = requests.get(server.url("/console/console.css"), timeout=10)
    assert style.status_code == 200 and style.headers["Content-Type"].startswith("text/css"), style.headers

    # Without the slash: redirected to the page.
    bare = requests.get(server.url("/console"), timeout=10, allow_redirects=False)
    assert bare.status_code in (301, 308), bare.status_code
    assert bare.headers["Location"] in ("/console/", server.url("/console/")), bare.headers
    followed = requests.get(server.url("/console"), timeout=10)
    assert followed.url == server.url("/console/") and followed.status_code == 200
