"""Helpers for the threat-named tests: one download through a real Fetcher, a fixed resolver."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp.abc import ResolveResult

from eumirror.core.config import Limits
from eumirror.core.errors import FetchError
from eumirror.core.policy import Trust
from eumirror.engine.download import PartialFile, SpaceBudget
from eumirror.net.fetch import Fetcher, Validators

LIMITS = Limits(retries=0, connect_timeout=5.0, low_speed_time=10.0)


class FixedAnswers:
    """A resolver answering every name from a table (addresses a test chose, all loopback or
    documentation ranges); names not in it do not resolve."""

    def __init__(self, table: Mapping[str, tuple[str, ...]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in self.table[host]
        ]

    async def close(self) -> None:
        return None


async def download(
    url: str,
    trust: Trust,
    folder: Path,
    *,
    environ: Mapping[str, str] | None = None,
    resolver: FixedAnswers | None = None,
) -> tuple[int, str]:
    """Download `url` for an upstream with `trust`: (bytes received, "") or (0, the error)."""
    partial = PartialFile(folder / "attack.part", SpaceBudget(1 << 40, 0), exists=False)
    await partial.open()
    async with Fetcher(
        LIMITS,
        environ=environ if environ is not None else {},
        resolver=resolver,  # type: ignore[arg-type]
    ) as fetcher:
        try:
            await fetcher.download(url, partial, Validators(), trust=trust)
        except FetchError as exc:
            return 0, exc.line()
        finally:
            await partial.drain()
            partial.discard()
    return partial.offset, ""
