"""``segdash serve`` as a lab would run it: real served processes probed over HTTP.

Each attack is a raw request to a running ``segdash serve`` on a loopback port: a page from
another origin, a DNS-rebinding ``Host``, a session id the client chose, a visitor who has
not logged in. The server and a legitimate client are checked to work afterwards.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from .browser.conftest import serving


def request(url: str, path: str = "/", headers: dict[str, str] | None = None,
            method: str = "GET", body: str | None = None) -> tuple[int, dict[str, str], str]:
    """One HTTP request, redirects not followed: ``(status, headers, body)`` (headers
    sent more than once, as Set-Cookie, are joined by ", ")."""
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace") if response.status != 101 else ""
        got: dict[str, str] = {}
        for k, v in response.getheaders():
            got[k.lower()] = f"{got[k.lower()]}, {v}" if k.lower() in got else v
        return response.status, got, text
    finally:
        conn.close()


def page_token(body: str) -> str:
    """The session token Bokeh puts in the page it serves (what the browser sends back)."""
    return re.search(r'"token":"([^"]+)"', body).group(1)


def session_id(token: str) -> str:
    payload = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))[
        "session_id"]


def websocket(url: str, token: str, host: str, origin: str) -> int:
    """Status of a websocket handshake on the app's ``/ws`` (101: accepted)."""
    status, _, _ = request(url, "/ws", {
        "Host": host, "Origin": origin, "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Protocol": f"bokeh, {token}"})
    return status


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    with serving(tmp_path_factory.mktemp("serving") / "serve.log") as url:
        yield url


def host_of(url: str) -> str:
    return urlparse(url).netloc


def test_the_page_and_its_websocket_are_served_to_this_machine(server):
    status, _, body = request(server)
    assert status == 200 and "<title>segdash</title>" in body
    assert websocket(server, page_token(body), host_of(server), server.rstrip("/")) == 101


def test_a_page_from_another_origin_cannot_open_the_websocket(server):
    _, _, body = request(server)
    port = urlparse(server).port
    assert websocket(server, page_token(body), host_of(server),
                     f"http://evil.example:{port}") == 403


def test_a_dns_rebinding_host_is_refused_for_the_page_and_the_websocket(server):
    # evil.example resolves to 127.0.0.1: the browser sends that name as Host and Origin.
    port = urlparse(server).port
    evil = f"evil.example:{port}"
    status, _, body = request(server, "/", {"Host": evil})
    assert status == 403 and "segdash" not in body
    _, _, good = request(server)
    assert websocket(server, page_token(good), evil, f"http://{evil}") == 403
    assert request(server, "/static/js/bokeh.min.js", {"Host": evil}, "HEAD")[0] == 403
    assert request(server)[0] == 200  # the server is still serving its own users


def test_a_session_id_chosen_by_the_client_is_refused(server):
    status, _, _ = request(server, "/?bokeh-session-id=chosen-by-the-attacker-0123456789")
    assert status == 403
    # Ids are made and signed by the server: each page gets its own, never the one asked for.
    _, _, body = request(server)
    first = session_id(page_token(body))
    assert first != "chosen-by-the-attacker-0123456789" and "." in first  # id.signature
    status, _, body = request(server, f"/?bokeh-session-id={first}x")
    assert status == 403


def test_with_basic_auth_a_logged_out_visitor_gets_the_login_page(tmp_path):
    args = ("--basic-auth", "lab-password-1", "--cookie-secret", "cookie-secret-for-tests")
    with serving(tmp_path / "serve.log", args=args) as url:
        status, headers, _ = request(url)
        assert status == 302 and re.match(r"\.?/login\b", headers["location"])
        status, _, body = request(url, "/login?next=%2F")
        assert status == 200 and 'type="password"' in body and "<title>segdash" not in body
        assert '"token"' not in body  # no session for them
        # A wrong password stays outside; the right one gets a cookie and the dashboard.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, headers, _ = request(url, "/login", form, "POST",
                                     body="username=ana&password=wrong")
        assert "set-cookie" not in headers or "user=" not in headers["set-cookie"]
        status, headers, _ = request(url, "/login", form, "POST",
                                     body="username=ana&password=lab-password-1")
        assert status == 302 and "user=" in headers["set-cookie"]
        cookies = "; ".join(c.split(";")[0] for c in headers["set-cookie"].split(", ")
                            if "=" in c.split(";")[0])
        status, _, body = request(url, "/", {"Cookie": cookies})
        assert status == 200 and "<title>segdash</title>" in body


def test_serve_help_lists_panels_options_and_segdashs():
    out = subprocess.run([sys.executable, "-m", "segdash.cli", "serve", "--help"], check=True,
                         capture_output=True, text=True).stdout
    for option in ("--basic-auth", "--cookie-secret", "--oauth-provider", "--num-procs",
                   "--prefix", "--admin", "--unused-session-lifetime", "--session-ids",
                   "--session-memory-gb", "--job-time-limit", "--num-threads",
                   "--max-upload-gb", "--upload-dir"):
        assert option in out, option


def test_a_websocket_limit_below_an_upload_chunk_is_refused_at_start():
    done = subprocess.run([sys.executable, "-m", "segdash.cli", "serve",
                           "--websocket-max-message-size", "5000000", "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--websocket-max-message-size must be at least 11000000 bytes" in done.stderr


def test_max_upload_gb_must_be_positive():
    done = subprocess.run([sys.executable, "-m", "segdash.cli", "serve", "--max-upload-gb",
                           "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "must be more than 0" in done.stderr


def test_the_app_file_is_shipped_in_the_package_and_prints_its_path():
    from segdash.ui.serve import APP_FILE

    out = subprocess.run([sys.executable, "-m", "segdash.ui.panel_app"], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == APP_FILE and out.endswith("segdash/ui/panel_app.py")


def test_panel_serve_serves_the_app_file(tmp_path):
    """The file works under ``panel serve`` itself, options after ``--args``."""
    from segdash.ui.serve import APP_FILE

    from .browser.conftest import free_port

    port = free_port()
    log = open(tmp_path / "panel.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", APP_FILE, "--port", str(port),
         "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
         "--args", "--session-memory-gb", "2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        import time

        deadline = time.monotonic() + 60
        while True:
            try:
                if request(url, "/static/js/bokeh.min.js", method="HEAD")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, \
                (tmp_path / "panel.log").read_text()
            time.sleep(0.3)
        status, _, body = request(url, "/panel_app")
        assert status == 200 and "<title>segdash</title>" in body
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
