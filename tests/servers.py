"""Helpers for tests that start servers: a free port, waiting for an HTTP answer, MLflow's server."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Ports for the servers tests start: above Ray's worker ports (10002-19999 by default) and below
# the kernel's ephemeral range, from which every socket bound to port 0 is given one (Ray's gRPC
# servers and clients included). A port drawn from the ephemeral range can be taken by such a
# socket between the draw and the server's start: a CI run's cluster fixture found a Ray gRPC
# server on the port its MLflow server was to have.
_FIRST, _FALLBACK_LAST = 20000, 32767


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_LAST + 1


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now, outside the ranges from which ports
    are handed out on their own (Ray's workers', the kernel's ephemeral ones)."""
    draw = random.SystemRandom()  # not the random module's state, which a test may have seeded
    last = max(_FIRST + 100, _ephemeral_low() - 1)
    for _ in range(200):
        port = draw.randint(_FIRST, last)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_FIRST}-{last}")


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


# a test's MLflow server runs without its job runner (a runner and six huey consumers, each
# importing MLflow at start-up, for GenAI jobs, which no study uses)
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_mlflow_server(folder: Path, port: int, backend: str | None = None, artifacts: str | None = None,
                        env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`mlflow server` on 127.0.0.1:port with its artifacts in `folder` (or at `artifacts`, an
    S3 URI with `env` saying how to reach it) and its store there too (SQLite) or at `backend`;
    returns once it answers."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         backend or f"sqlite:///{folder / 'srv.db'}",
         "--artifacts-destination", artifacts or str(folder / "srv-artifacts"), "--host", "127.0.0.1", "--port",
         str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **MLFLOW_SERVER_ENV, **(env or {})})
    wait_for_http(f"http://127.0.0.1:{port}/health", "the MLflow server")
    return server


def stop_server(server: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """Stops a server started in its own session, with its children: SIGTERM, then SIGKILL if
    it is still there after `grace_s` (a loaded machine, or a server that waits for its clients'
    open connections to close)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
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


class PostgresServer:
    """A throwaway PostgreSQL server (Debian's package) on 127.0.0.1: its own data folder,
    trust authentication, no fsync; `url(db)` gives SQLAlchemy URLs. As root it runs as the
    package's `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="rra-pg-"))  # not under pytest's 0700 root folder
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.folder, "postgres")
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def create(self, db: str) -> str:
        """Creates database `db`; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", db)
        return self.url(db)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)"
    return Path(initdb).resolve().parent


class S3Server:
    """A local S3-compatible server (moto's server mode) on 127.0.0.1, in its own session, and
    the environment that points AWS clients at it (test credentials; never the user's ~/.aws)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="rra-s3-"))
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_SHARED_CREDENTIALS_FILE": str(self.folder / "credentials"),
                    "AWS_CONFIG_FILE": str(self.folder / "config"), "AWS_EC2_METADATA_DISABLED": "true"}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **self.env})
        wait_for_http(f"{self.endpoint}/moto-api/", "the S3 server (moto)")

    def client(self) -> object:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def bucket(self, name: str) -> str:
        """Creates bucket `name`; returns it."""
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def uri(self, bucket: str, path: str) -> str:
        """pyarrow's URI form for an S3-compatible store: the endpoint in the query."""
        return f"s3://{bucket}/{path}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def stop(self) -> None:
        try:
            stop_server(self.process)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
