"""`mlflow models serve` on loopback, for as long as a `with` block needs it.

The server runs from this Python's environment (`--env-manager local`); it starts `uvicorn` by
name, so this environment's `bin` goes first on its PATH (without it, it exits 127).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

__all__ = ["ServerFailed", "model_server", "poster"]

BIN = Path(sys.executable).parent
# Loading MLflow and the model takes 5 to 20 s here; a loaded machine, longer.
START_SECONDS = 120.0


class ServerFailed(RuntimeError):
    """`mlflow models serve` exited, did not start in time, or answered with an error."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    return False


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, cwd: Path) -> Iterator[int]:
    """Serve `model_uri` on a free loopback port (yielded) with one worker; stop it after.

    `cwd` is the folder a relative `tracking_uri` is relative to."""
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
               "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(port):
            if server.poll() is not None:
                raise ServerFailed(f"mlflow models serve exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"mlflow models serve did not answer in {START_SECONDS} s")
            time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def poster(port: int, rows: pd.DataFrame) -> Callable[[], bytes]:
    """One ready POST of `rows` to /invocations, as a client sends them (JSON
    `dataframe_split`), over one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    headers = {"Content-Type": "application/json"}

    def post() -> bytes:
        connection.request("POST", "/invocations", body, headers)
        answer = connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise ServerFailed(f"/invocations answered {answer.status}: {data[:200]!r}")
        return data

    return post
