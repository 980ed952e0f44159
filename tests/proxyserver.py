"""A small recording HTTP forward proxy for the trust tests.

It records every request line it is asked to forward (and the Proxy-Authorization it came
with) and relays plain-http requests, but only to loopback addresses: whatever a test gets
wrong, nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit


@dataclass
class Seen:
    target: str
    proxy_authorization: str | None


@dataclass
class RecordingProxy:
    host: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        self.seen.append(Seen(target, headers.get("Proxy-Authorization")))
        parts = urlsplit(target)
        try:
            loopback = ipaddress.ip_address(socket.gethostbyname(parts.hostname or "")).is_loopback
        except (OSError, ValueError):
            loopback = False
        if method != "GET" or parts.scheme != "http" or not loopback:
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        upstream_r, upstream_w = await asyncio.open_connection(parts.hostname, parts.port or 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        kept = [
            line
            for line in lines[1:]
            if line and not line.lower().startswith(("proxy-", "connection:"))
        ]
        request = [f"GET {path} HTTP/1.1", *kept, "Connection: close", "", ""]
        upstream_w.write("\r\n".join(request).encode("latin-1"))
        await upstream_w.drain()
        with contextlib.suppress(ConnectionError):
            while chunk := await upstream_r.read(65536):
                writer.write(chunk)
                await writer.drain()
        upstream_w.close()
        writer.close()
