"""``fogctl dev up`` probes each service's ``/healthz`` as Kubernetes would, and stops the one that
fails it (a background loop of it ended) for its supervisor to start again."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fogctl.devstack import DevStack, Process, StackState, says_it_is_failing


def _serving(status: int) -> ThreadingHTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@pytest.fixture
def services() -> Iterator[tuple[str, str]]:
    """A service whose ``/healthz`` fails, and one whose ``/healthz`` is fine."""
    failing, fine = _serving(503), _serving(200)
    yield _url(failing), _url(fine)
    for server in (failing, fine):
        server.shutdown()
        server.server_close()


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_the_service_failing_its_liveness_probe_is_stopped_and_only_it(
    tmp_path: Path, services: tuple[str, str]
) -> None:
    failing_url, fine_url = services
    stack = DevStack(tmp_path)
    stack.children = {"scheduler": _sleeper(), "auth": _sleeper()}
    stack.state = StackState(
        supervisor_pid=0, data_dir=str(tmp_path), nats_url="", database_dsn_redacted="", gateway_url="",
        processes=[
            Process("scheduler", stack.children["scheduler"].pid, failing_url, log=""),
            Process("auth", stack.children["auth"].pid, fine_url, log=""),
        ],
    )  # fmt: skip
    try:
        assert stack.stop_the_failing(timeout=5) == ["scheduler"]
        assert stack.children["scheduler"].poll() is not None, "stopped, for the supervisor to start again"
        assert stack.children["auth"].poll() is None
    finally:
        for child in stack.children.values():
            child.kill()
            child.wait()


def test_a_service_that_does_not_answer_is_not_called_failing(services: tuple[str, str]) -> None:
    failing_url, fine_url = services
    assert says_it_is_failing(failing_url)
    assert not says_it_is_failing(fine_url)
    assert not says_it_is_failing("http://127.0.0.1:9"), "not answering: maybe starting; its process is watched"
