"""An nginx upstream on 127.0.0.1: its own config in a temporary folder, run in the foreground.

nginx serves a corpus folder as its document root (autoindex on, so rclone's http backend can
list it) with `sendfile on`; ETag and If-Modified-Since handling are nginx's defaults for static
files. `/catalog` is a symlink in the temporary folder, so the served catalog version can be
swapped atomically. The access log records one line per request for counting tarball requests,
and with each its connection's serial number and its start and end, for counting connections.
With `limit_rate` every response is capped at that rate (per request, so per connection at any
one time): a long fat pipe's per-flow cap, where one TCP connection is bound by latency and loss.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
{user}pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{ application/json json; application/x-gzip tgz; text/plain md5; }}
    default_type application/octet-stream;
    log_format bench '$request_method $uri $status $body_bytes_sent'
                     ' $connection $msec $request_time';
    access_log {tmp}/access.log bench;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
{extra}        location = /catalog {{
            alias {tmp}/catalog;
            default_type application/json;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or in /usr/sbin (not on a non-root user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class AccessLog:
    """Requests logged since a mark: (method, uri, status) tuples."""

    path: Path
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> list[tuple[str, str, int]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        rows = []
        for line in data.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                rows.append((parts[0], parts[1], int(parts[2])))
        return rows

    def connections_since_mark(self) -> tuple[int, int]:
        """(connections used, most open at once) since the mark.

        A connection's span runs from its first request's start ($msec - $request_time) to its
        last request's end ($msec); the peak is the most spans that overlap (an idle keep-alive
        connection between two requests counts as open, as it is).
        """
        if not self.path.exists():
            return 0, 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        spans: dict[str, tuple[float, float]] = {}
        for line in data.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) < 7:
                continue
            try:
                end, took = float(parts[5]), float(parts[6])
            except ValueError:
                continue
            start = end - took
            old = spans.get(parts[4])
            spans[parts[4]] = (
                (start, end) if old is None else (min(old[0], start), max(old[1], end))
            )
        return len(spans), peak_overlap(list(spans.values()))


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans open at one time.

    nginx's times have millisecond resolution, so spans that touch (one ends in the millisecond
    another starts) count as open together: an upper bound, never an undercount."""
    edges = sorted([(s, -1) for s, _ in spans] + [(e, 1) for _, e in spans])
    # at equal times starts (-1 in the sort key) come before ends
    peak = now = 0
    for _, step in edges:
        now -= step
        peak = max(peak, now)
    return peak


class Nginx:
    """nginx serving `root` on a free loopback port until stopped (by its pid)."""

    def __init__(self, binary: str, root: Path, *, limit_rate: str | None = None) -> None:
        self.binary = binary
        self.limit_rate = limit_rate
        self.root = root.resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix="eumirror-bench-nginx-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = AccessLog(self.tmp / "access.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_catalog(self, path: Path) -> None:
        """Point /catalog at `path`, atomically (a symlink swap)."""
        link = self.tmp / "catalog"
        new = self.tmp / "catalog.new"
        new.unlink(missing_ok=True)
        new.symlink_to(path.resolve())
        os.replace(new, link)

    def start(self) -> Nginx:
        for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.tmp / folder).mkdir(exist_ok=True)
        # As root, workers would drop to `nobody`, who may not read the corpus or this folder.
        user = "user root;\n" if os.geteuid() == 0 else ""
        last_error = ""
        for _ in range(5):
            self.port = free_port()
            conf = self.tmp / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(
                    user=user, tmp=self.tmp, port=self.port, root=self.root, extra=self._extra()
                )
            )
            argv = [self.binary, "-p", str(self.tmp), "-e", str(self.tmp / "error.log")]
            with open(self.tmp / "stderr.log", "ab") as stderr:
                self.proc = subprocess.Popen(
                    [*argv, "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            last_error = "\n".join(
                p.read_text(errors="replace").strip()
                for p in (self.tmp / "stderr.log", self.tmp / "error.log")
                if p.exists()
            ).strip()
            if "Address already in use" not in last_error:
                break
        raise RuntimeError(f"nginx did not start: {last_error or 'no output'}")

    def _extra(self) -> str:
        """Directives for the server block: the per-request rate cap, when one is set."""
        return f"        limit_rate {self.limit_rate};\n" if self.limit_rate else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: the master waits for its workers
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
