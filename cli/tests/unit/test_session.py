"""The saved login: where it lives, who may read it, and that it is replaced whole."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from fog_client import ApiError, Tokens
from fogctl.session import Session, SessionError, credentials_path, delete, login_and_save

URL = "http://gateway.test"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "config" / "fog"
    monkeypatch.setenv("FOG_CONFIG_DIR", str(directory))
    return directory


def test_the_file_lives_in_fog_config_dir_or_under_home(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials_path() == config_dir / "credentials.json"
    monkeypatch.delenv("FOG_CONFIG_DIR")
    monkeypatch.setenv("HOME", "/home/someone")
    assert credentials_path() == Path("/home/someone/.config/fog/credentials.json")


def test_saved_sessions_are_private_and_load_back(config_dir: Path) -> None:
    assert Session.load() is None
    Session(URL, "alice@example.org", "a1", "r1").save()
    path = config_dir / "credentials.json"
    assert (mode(config_dir), mode(path)) == (0o700, 0o600)
    assert json.loads(path.read_text()) == {
        "gateway_url": URL, "email": "alice@example.org", "access_token": "a1", "refresh_token": "r1"
    }  # fmt: skip
    assert Session.load() == Session(URL, "alice@example.org", "a1", "r1")
    assert "r1" not in repr(Session.load())


def test_keeping_new_tokens_replaces_the_file_and_narrows_a_loose_one(config_dir: Path) -> None:
    saved = Session(URL, "alice@example.org", "a1", "r1")
    saved.save()
    saved.path.chmod(0o644)
    saved.keep(Tokens(access_token="a2", refresh_token="r2", expires_in=600))
    loaded = Session.load()
    assert loaded is not None
    assert (loaded.access_token, loaded.refresh_token) == ("a2", "r2")
    assert mode(saved.path) == 0o600
    assert [p.name for p in config_dir.iterdir()] == ["credentials.json"]  # no temporary left behind


def test_an_unusable_file_is_reported_and_delete_forgets_it(config_dir: Path) -> None:
    config_dir.mkdir(parents=True)
    (config_dir / "credentials.json").write_text('{"email": "alice@example.org"}')
    with pytest.raises(SessionError, match="not a usable credentials file"):
        Session.load()
    assert delete() is True
    assert delete() is False


def test_login_and_save_logs_in_from_synchronous_code(tmp_path: Path) -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content) != {"email": "admin@example.org", "password": "pw"}:
            return httpx.Response(401, json={"title": "invalid credentials", "code": "invalid_credentials"})
        return httpx.Response(200, json={"access_token": "a1", "refresh_token": "r1", "expires_in": 600})

    elsewhere = tmp_path / "stack-config"
    saved = login_and_save(URL, "admin@example.org", "pw", elsewhere, transport=httpx.MockTransport(gateway))
    assert saved == Session.load(elsewhere / "credentials.json")
    assert (saved.gateway_url, saved.refresh_token) == (URL, "r1")
    with pytest.raises(ApiError, match="invalid_credentials"):
        login_and_save(URL, "admin@example.org", "wrong", tmp_path / "other", transport=httpx.MockTransport(gateway))
    assert not (tmp_path / "other").exists()
