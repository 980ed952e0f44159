"""Attack: a compromised catalog of one upstream borrows the trust another upstream was given.

Each upstream's requests may reach private addresses only through its own catalog host and its
own allow_hosts; another upstream's never count, in the same run and on the same Fetcher.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Upstream, human_lines, run_cli, tarball
from faultserver import FaultServer, ThreadedFaultServer
from trustkit import LIMITS

from eumirror.core.errors import FetchError
from eumirror.core.policy import Trust
from eumirror.engine.download import PartialFile, SpaceBudget
from eumirror.net.fetch import Fetcher, Validators

BODY = tarball(11, 30_000)


async def test_a_request_carries_only_its_own_upstreams_trust(tmp_path: Path) -> None:
    """On one Fetcher, A (which trusts localhost) downloads, then B's request for the same url,
    over the same pooled connections, is refused."""
    a = Trust(hosts=frozenset({"127.0.0.1", "localhost"}))
    b = Trust(hosts=frozenset({"127.0.0.2"}))
    async with FaultServer() as srv:
        srv.put("/img.tgz", BODY)
        url = f"http://localhost:{srv.port}/img.tgz"
        async with Fetcher(LIMITS, environ={}) as fetcher:
            for trust, name in ((a, "a"), (b, "b")):
                partial = PartialFile(tmp_path / name, SpaceBudget(1 << 40, 0), exists=False)
                await partial.open()
                try:
                    await fetcher.download(url, partial, Validators(), trust=trust)
                    outcome = f"{partial.offset} bytes"
                except FetchError as exc:
                    outcome = exc.line()
                finally:
                    await partial.drain()
                    partial.discard()
                if trust is a:
                    assert outcome == f"{len(BODY)} bytes"
                else:
                    assert outcome.startswith("localhost resolves to a non-public address")
        assert srv.requests("/img.tgz") == 1


def test_a_sync_of_two_upstreams_keeps_their_trust_apart(tmp_path: Path) -> None:
    """`sync --once`: upstream a lists localhost in allow_hosts; upstream b's catalog (served on
    127.0.0.2) points an image at localhost, which is refused for b."""
    a_folder, b_folder = Upstream(tmp_path / "a"), Upstream(tmp_path / "b")
    with (
        ThreadedFaultServer(a_folder.folder.parent) as a_srv,
        ThreadedFaultServer(b_folder.folder, host="127.0.0.2") as b_srv,
    ):
        a_folder.add("img.tgz", tarball(1))
        a_folder.write()
        b_folder.add("steal.tgz", tarball(2), url=f"http://localhost:{a_srv.server.port}/a/x.tgz")
        b_folder.write()
        (a_folder.folder / "x.tgz").write_bytes(tarball(2))
        root = tmp_path / "root"
        config = tmp_path / "c.toml"
        config.write_text(
            f"[mirror]\nroot = {json.dumps(str(root))}\n[limits]\nretries = 0\n"
            f'[[upstream]]\nname = "a"\ncatalog = "{a_srv.url}/a/catalog"\n'
            'allow_hosts = ["localhost"]\n'
            f'[[upstream]]\nname = "b"\ncatalog = "{b_srv.url}/catalog"\n'
        )

        done = run_cli("sync", "--once", "--config", str(config))

        assert done.returncode == 1, done.stderr
        assert a_srv.requests("/a/x.tgz") == 0
        assert a_srv.requests("/a/img.tgz") == 1
    lines = human_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("eumirror: b: image #0"), lines
    assert "localhost resolves to a non-public address" in lines[0]
