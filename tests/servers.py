"""Helpers for tests that start servers: a free port, waiting for an HTTP answer, MLflow's server."""

from __future__ import annotations

import contextlib
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


class HangingProxy:
    """A TCP server on loopback that accepts connections and, while `hang` is set, never
    answers them (a hung host, not a refused port); otherwise it forwards them to `target`."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.hang = threading.Event()
        self.hang.set()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self.held: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.hang.is_set():
                self.held.append(client)  # read nothing, answer nothing
                continue
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        import threading

        upstream = socket.create_connection(("127.0.0.1", self.target_port))

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        self.server.close()
        for s in self.held:
            s.close()
