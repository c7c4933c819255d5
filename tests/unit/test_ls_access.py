"""check_access: one line naming the setting to fix, against a tiny fake Label Studio on
loopback (a legacy token goes as "Token x", a personal access token is first exchanged at
/api/token/refresh/ for an access token sent as "Bearer")."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from backend.config import load_settings
from backend.labelstudio.client import check_access
from takemeter.stack import free_port

GOOD_LEGACY = "good-legacy-token"


def pat(expires_in: float) -> str:
    return jwt.encode(
        {"token_type": "refresh", "exp": int(time.time() + expires_in), "user_id": "1"},
        "k" * 32,
        algorithm="HS256",
    )


class FakeLabelStudio(BaseHTTPRequestHandler):
    html = False  # answer like some other web server

    def answer(self, status: int, body: object) -> None:
        data = b"<html>hello</html>" if self.html else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if self.html else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # the PAT exchange: only unexpired PATs are sent here
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(401, {"detail": "Token is blacklisted", "code": "token_not_valid"})

    def do_GET(self) -> None:
        if self.headers.get("Authorization") == f"Token {GOOD_LEGACY}":
            self.answer(200, {"id": 1, "email": "a@example.com", "username": "a"})
        else:
            self.answer(401, {"detail": "Invalid token."})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_ls() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    FakeLabelStudio.html = False


def check(url: str, key: str):
    return check_access(load_settings({"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": key}))


def test_a_working_token_is_no_problem(fake_ls):
    assert check(fake_ls, GOOD_LEGACY) is None


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("wrong-token", "Invalid token."),
        (pat(3600), "Token is blacklisted"),
        (pat(-60), "API key has expired"),
    ],
)
def test_a_refused_token_names_the_api_key(fake_ls, key, why):
    problem = check(fake_ls, key)
    assert problem.setting == "LABEL_STUDIO_API_KEY"
    assert "LABEL_STUDIO_API_KEY" in problem.message and "rejected" in problem.message
    assert why in problem.message and "\n" not in problem.message


def test_an_unreachable_or_foreign_url_names_the_url(fake_ls):
    problem = check(f"http://127.0.0.1:{free_port()}", GOOD_LEGACY)
    assert problem.setting == "LABEL_STUDIO_URL" and "cannot reach" in problem.message
    FakeLabelStudio.html = True
    for key in (GOOD_LEGACY, pat(3600)):
        problem = check(fake_ls, key)
        assert problem.setting == "LABEL_STUDIO_URL", problem
        assert "did not answer like Label Studio" in problem.message
