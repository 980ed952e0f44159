"""A real `eumirror serve` (or `sync` daemon) process for the serving tests: stderr read by a
thread, readiness from its `serve_listening` event, plain HTTP through http.client."""

from __future__ import annotations

import http.client
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from test_daemon import NOT_INHERITED, Daemon


class Process(Daemon):
    """`eumirror <command> --config F --log-level debug` with its JSON log collected (the
    daemon test's reader, for any command)."""

    def __init__(self, command: str, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        argv = [sys.executable, "-m", "eumirror", command, "--config", str(config)]
        self.proc = subprocess.Popen(
            [*argv, "--log-level", "debug"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._listen = ""

    def address(self, event: str = "serve_listening") -> tuple[str, int]:
        host, _, port = self.wait_event(event)["listen"].rpartition(":")
        return host.strip("[]"), int(port)

    def base(self, event: str = "serve_listening") -> str:
        host, port = self.address(event)
        return f"http://{host}:{port}"

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        event: str = "serve_listening",
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection; the path is sent exactly as given."""
        host, port = self.address(event)
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def serve_section(listen: str = "127.0.0.1:0", **keys: Any) -> str:
    lines = ["[serve]", f"listen = {json.dumps(listen)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"
