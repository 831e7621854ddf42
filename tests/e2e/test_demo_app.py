"""The quickstart's demo application signs in against a real idflow and shows the claims."""

import subprocess
import sys


from conftest import REPO, USER_PASSWORD, Browser, free_port


def test_the_demo_app_logs_in_and_shows_the_claims(tmp_path):
    from conftest import Server

    port = free_port()
    client = (f'\n[applications.demo-e2e]\nclient_secret = "demo-e2e-secret-0123"\n'
              f'redirect_uris = ["http://localhost:{port}/callback"]\n'
              f'post_logout_redirect_uris = ["http://localhost:{port}/"]\n')
    server = Server(tmp_path, client)
    server.cli("user", "add", "alice", "--email", "alice@example.com", "--password-stdin", stdin=USER_PASSWORD + "\n")
    server.start()
    demo = subprocess.Popen([sys.executable, str(REPO / "examples" / "quickstart" / "demo_app.py"),
                             "--issuer", server.issuer, "--client-id", "demo-e2e",
                             "--client-secret", "demo-e2e-secret-0123", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        demo.stdout.readline()  # "demo app on ..."
        browser = Browser(server)
        page = browser.go(f"http://localhost:{port}/login", stop_prefix="never")
        assert "password" in page.text
        home = browser.submit(page.text, "password", username="alice", password=USER_PASSWORD)
        # Browser.go stops at localhost:8000 only; follow the app's own redirects by hand.
        if isinstance(home, str):
            home = browser.session.get(home, timeout=10)
        assert "Signed in as alice" in home.text, home.text
        assert "alice@example.com" in home.text and "at_hash" in home.text
        out = browser.session.get(f"http://localhost:{port}/logout", timeout=10)
        assert "Not signed in" in out.text
    finally:
        demo.terminate()
        server.stop()
