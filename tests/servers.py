"""Helpers for tests that start servers: a free port, waiting for an HTTP answer, MLflow's server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, what: str, seconds: float = 120) -> None:
    """Waits until `url` answers 200, or fails the test naming `what`."""
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            assert time.time() < deadline, f"{what} did not answer at {url}"
            time.sleep(0.5)


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """`mlflow server` on 127.0.0.1:port with its store and artifacts in `folder`; returns once
    it answers."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'srv.db'}",
         "--artifacts-destination", str(folder / "srv-artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_http(f"http://127.0.0.1:{port}/health", "the MLflow server")
    return server


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stops a server started in its own session, with its children."""
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
