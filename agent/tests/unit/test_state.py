"""The node's state file: where it lives, who may read it, and that it is replaced whole."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import pytest

from fog_agent.run import default_work_root, remove_empty
from fog_agent.state import NodeState, StateError, default_state_dir, state_path

URL = "http://gateway.test"
CREDENTIAL = "fogn_not_for_logs"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state" / "fog-agent"
    monkeypatch.setenv("FOG_AGENT_STATE_DIR", str(directory))
    return directory


def test_the_state_lives_in_fog_agent_state_dir_or_under_home(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert state_path() == state_dir / "node.json"
    assert state_path(Path("/elsewhere")) == Path("/elsewhere/node.json")
    monkeypatch.delenv("FOG_AGENT_STATE_DIR")
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_state_dir() == Path("/home/someone/.local/state/fog-agent")


def test_saved_state_is_private_and_loads_back(state_dir: Path) -> None:
    assert NodeState.load() is None
    NodeState(URL, "n1", "edge-1", CREDENTIAL).save()
    path = state_dir / "node.json"
    assert (mode(state_dir), mode(path)) == (0o700, 0o600)
    assert json.loads(path.read_text()) == {
        "gateway_url": URL, "node_id": "n1", "name": "edge-1", "credential": CREDENTIAL
    }  # fmt: skip
    loaded = NodeState.load()
    assert loaded == NodeState(URL, "n1", "edge-1", CREDENTIAL)
    assert loaded.networks is None, "a state saved before nodes named their networks"
    assert CREDENTIAL not in repr(loaded)


def test_the_networks_declared_at_join_are_kept(state_dir: Path) -> None:
    NodeState(URL, "n1", "edge-1", CREDENTIAL, networks=("host", "none")).save()
    assert json.loads((state_dir / "node.json").read_text())["networks"] == ["host", "none"]
    loaded = NodeState.load()
    assert loaded is not None
    assert loaded.networks == ("host", "none")


def test_saving_again_replaces_the_file_whole_and_narrows_a_loose_one(state_dir: Path) -> None:
    NodeState(URL, "n1", "edge-1", CREDENTIAL).save()
    path = state_dir / "node.json"
    path.chmod(0o644)
    before = path.stat().st_ino
    NodeState(URL, "n2", "edge-1", "fogn_second").save()
    assert path.stat().st_ino != before  # a new file renamed over the old one, not the old one rewritten
    assert mode(path) == 0o600
    assert NodeState.load() == NodeState(URL, "n2", "edge-1", "fogn_second")
    assert [p.name for p in state_dir.iterdir()] == ["node.json"]  # no temporary left behind


def test_a_failed_write_keeps_the_old_state_and_leaves_no_temporary(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    NodeState(URL, "n1", "edge-1", CREDENTIAL).save()

    def full_disk(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        NodeState(URL, "n2", "edge-2", "fogn_second").save()
    assert NodeState.load() == NodeState(URL, "n1", "edge-1", CREDENTIAL)
    assert [p.name for p in state_dir.iterdir()] == ["node.json"]


def test_a_planted_symlink_at_the_temporary_name_is_not_written_through(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir.mkdir(parents=True)
    target = tmp_path / "somewhere-else"
    target.write_text("untouched")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "guessed")
    (state_dir / ".node.json.guessed").symlink_to(target)
    with pytest.raises(FileExistsError):
        NodeState(URL, "n1", "edge-1", CREDENTIAL).save()
    assert target.read_text() == "untouched"
    assert not (state_dir / "node.json").exists()


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"gateway_url": "http://g"}', json.dumps({"gateway_url": URL, "node_id": "n1", "name": "x",
                                                                   "credential": ""}),
     json.dumps({"gateway_url": URL, "node_id": "n1", "name": "x", "credential": "c", "networks": "host"})],
)  # fmt: skip
def test_an_unusable_state_file_is_reported(state_dir: Path, content: str) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "node.json").write_text(content)
    with pytest.raises(StateError, match="not a usable state file"):
        NodeState.load()


def test_jobs_work_beside_the_state_unless_they_run_as_users_of_their_own(state_dir: Path) -> None:
    # The state directory is its owner's alone (the credential is there): a job's own user could not pass through
    # it to its directory, and whatever opens that directory by its path (`python3 script.py`) would fail.
    assert default_work_root(state_dir, "n-1", euid=1000) == state_dir / "work"
    assert default_work_root(state_dir, "n-1", euid=0) == Path("/var/lib/fog-agent/n-1/work")


def test_an_agent_leaving_removes_the_work_directories_it_made_while_empty(tmp_path: Path) -> None:
    root = tmp_path / "fog-agent"
    (root / "n-1" / "work").mkdir(parents=True)
    (root / "n-2" / "work" / "job-a").mkdir(parents=True)
    remove_empty(root / "n-1" / "work", up_to=root)
    assert list(root.iterdir()) == [root / "n-2"]  # the node's directory too; the root stays (other nodes')
    remove_empty(root / "n-2" / "work", up_to=root)
    assert (root / "n-2" / "work" / "job-a").is_dir(), "what is not empty stays"
    remove_empty(tmp_path / "elsewhere", up_to=root)  # not beneath it: nothing is touched
    assert root.is_dir()
