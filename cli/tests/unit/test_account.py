"""``fogctl login|whoami|logout`` against a scripted gateway (httpx.MockTransport)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from scripted_gateway import script_gateway
from typer.testing import CliRunner

from fogctl.__main__ import app
from fogctl.session import Session

URL = "http://gateway.test"
EMAIL, PASSWORD = "alice@example.org", "correct horse battery staple"


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": f"urn:fog:problem:{code}", "title": code.replace("_", " "), "status": status, "detail": code}
    return httpx.Response(status, json={**body, "code": code}, headers={"Content-Type": "application/problem+json"})


class Gateway:
    """One account; access token ``a<n>`` and refresh token ``r<n>`` are valid while ``n == current``."""

    def __init__(self) -> None:
        self.current = 0
        self.down = False
        self.calls: list[str] = []

    def pair(self) -> httpx.Response:
        self.current += 1
        body = {"access_token": f"a{self.current}", "refresh_token": f"r{self.current}", "expires_in": 600}
        return httpx.Response(200, json=body)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("All connection attempts failed", request=request)
        self.calls.append(request.url.path)
        body = json.loads(request.content) if request.content else {}
        match request.url.path:
            case "/v1/auth/login":
                good = body == {"email": EMAIL, "password": PASSWORD}
                return self.pair() if good else problem(401, "invalid_credentials")
            case "/v1/auth/refresh":
                return self.pair() if body["refresh_token"] == f"r{self.current}" else problem(401, "invalid_grant")
            case "/v1/auth/logout":
                self.current += 1  # the session's tokens stop working
                return httpx.Response(204)
            case "/v1/me" if request.headers.get("Authorization") == f"Bearer a{self.current}":
                me = {"kind": "user", "user_id": "u-1", "node_id": None, "roles": ["admin", "user"],
                      "session_id": "s-1", "api_key_id": None}  # fmt: skip
                return httpx.Response(200, json=me)
        return problem(401, "invalid_token")


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    fake = Gateway()
    script_gateway(monkeypatch, fake, URL)
    return fake


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("FOG_URL", URL)
    return tmp_path / "fog" / "credentials.json"


runner = CliRunner()


def login(*args: str, password: str = PASSWORD) -> tuple[int, str, str]:
    result = runner.invoke(app, ["login", "--email", EMAIL, "--password-stdin", *args], input=f"{password}\n")
    return result.exit_code, result.stdout, result.stderr


def test_login_saves_a_private_session_and_says_who_you_are(gateway: Gateway, credentials: Path) -> None:
    code, out, err = login()
    assert code == 0, err
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert Session.load() == Session(URL, EMAIL, "a1", "r1")
    assert f"Logged in to {URL} as {EMAIL}" in err
    assert "user_id     u-1" in out
    assert "roles       admin, user" in out
    assert PASSWORD not in out + err


def test_login_prompts_without_echoing_the_password(gateway: Gateway, credentials: Path) -> None:
    result = runner.invoke(app, ["login", "--url", URL], input=f"{EMAIL}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output
    assert PASSWORD not in result.output
    assert credentials.exists()


def test_a_refused_login_exits_non_zero_and_writes_nothing(gateway: Gateway, credentials: Path) -> None:
    code, out, err = login(password="hunter2")
    assert code == 1
    assert f"{URL} refused: 401 invalid credentials" in err
    assert "[invalid_credentials]" in err
    assert "hunter2" not in out + err
    assert not credentials.exists()
    assert not credentials.parent.exists()


def test_an_unreachable_gateway_exits_non_zero(gateway: Gateway, credentials: Path) -> None:
    gateway.down = True
    code, _, err = login()
    assert code == 1
    assert f"cannot reach the gateway at {URL}: All connection attempts failed" in err
    assert not credentials.exists()


def test_whoami_shows_the_saved_session(gateway: Gateway, credentials: Path) -> None:
    assert login()[0] == 0
    result = runner.invoke(app, ["whoami"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"gateway     {URL}" in lines
    assert "kind        user" in lines
    assert "session_id  s-1" in lines
    assert not any(line.startswith("node_id") for line in lines)  # absent ids are not shown

    as_json = runner.invoke(app, ["whoami", "--json"])
    assert as_json.exit_code == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    assert shown["kind"] == "user"
    assert (shown["user_id"], shown["roles"], shown["email"]) == ("u-1", ["admin", "user"], EMAIL)


def test_whoami_refreshes_an_expired_access_token_and_saves_the_new_pair(gateway: Gateway, credentials: Path) -> None:
    assert login()[0] == 0
    Session(URL, EMAIL, "a0-expired", "r1").save()  # the refresh token is still the live one
    result = runner.invoke(app, ["whoami"])
    assert result.exit_code == 0, result.stderr
    assert gateway.calls[-3:] == ["/v1/me", "/v1/auth/refresh", "/v1/me"]
    assert Session.load() == Session(URL, EMAIL, "a2", "r2")
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_whoami_with_an_ended_session_says_to_log_in(gateway: Gateway, credentials: Path) -> None:
    Session(URL, EMAIL, "a0", "r0").save()
    gateway.current = 5
    result = runner.invoke(app, ["whoami"])
    assert result.exit_code == 1
    assert "invalid_grant" in result.stderr
    assert "run `fogctl login`" in result.stderr


def test_whoami_and_logout_when_not_logged_in(gateway: Gateway, credentials: Path) -> None:
    for command in ("whoami", "logout"):
        result = runner.invoke(app, [command])
        assert result.exit_code == 1
        assert "not logged in" in result.stderr
    assert gateway.calls == []


def test_logout_ends_the_session_and_deletes_the_file(gateway: Gateway, credentials: Path) -> None:
    assert login()[0] == 0
    result = runner.invoke(app, ["logout"])
    assert result.exit_code == 0, result.stderr
    assert gateway.calls[-1] == "/v1/auth/logout"
    assert not credentials.exists()


def test_logout_keeps_the_file_when_the_gateway_is_unreachable(gateway: Gateway, credentials: Path) -> None:
    assert login()[0] == 0
    gateway.down = True
    result = runner.invoke(app, ["logout"])
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.stderr
    assert credentials.exists()


def test_logout_forgets_an_unusable_file(gateway: Gateway, credentials: Path) -> None:
    credentials.parent.mkdir()
    credentials.write_text("not json")
    result = runner.invoke(app, ["logout"])
    assert result.exit_code == 0, result.stderr
    assert not credentials.exists()
    assert gateway.calls == []
