"""A one-node Ceph cluster (monitor, memstore OSD, radosgw) entirely under one folder on 127.0.0.1.

The S3 tests need a real object store, not a mock: this boots Debian's Ceph packages with auth off,
pool size 1 and every data, log, socket and pid file under DIR, and stops the daemons by PID. The
daemons daemonize themselves (so they are nobody's zombie) and write their pid files under DIR/run.

    python3 tests/rgwcluster.py start DIR   # prints and writes DIR/rgw.json
    python3 tests/rgwcluster.py stop DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool")
UID = "eumirror"
ACCESS_KEY = "EUMIRRORTESTACCESSKEY"
SECRET_KEY = "eumirror-test-secret-key-not-a-real-one"
MEMSTORE_BYTES = 4 << 30
NAMES = ("mon", "osd", "rgw")


class ClusterError(RuntimeError):
    """The cluster could not be started (the message says which step and shows its log)."""


@dataclass(frozen=True)
class Cluster:
    """What a test needs to reach the cluster; also the content of DIR/rgw.json."""

    dir: str
    endpoint: str
    access_key: str
    secret_key: str
    pids: dict[str, int]
    boot_seconds: float

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the daemon binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ceph_conf(root: Path, fsid: str, mon_v2: int, mon_v1: int, rgw_port: int) -> str:
    """The one config every daemon and client reads: all paths under ROOT, auth off, size 1."""
    return f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = {root}/keyring
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
log to stderr = false
err to stderr = true
mon cluster log file = {root}/log/cluster.log
crash dir = {root}/crash
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mon max pg per osd = 1000
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush update on start = false
osd crush chooseleaf type = 0

[mon]
mon data = {root}/mon/$id

[osd]
osd data = {root}/osd/$id
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}

[client.rgw]
# radosgw's own defaults ask for cephx and a secure mon connection, which auth none cannot give.
auth client required = none
ms mon client mode = crc
rgw data = {root}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw enable usage log = false
"""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def install_packages() -> None:
    """apt-get install the Ceph packages when they are missing and we may (root, apt-get)."""
    if not missing_tools():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterError(
            f"Ceph tools missing ({', '.join(missing_tools())}); as root: apt-get install -y"
            f" --no-install-recommends {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(apt, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(apt, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterError(f"apt-get install failed:\n{done.stdout[-2000:]}{done.stderr}")


def poll(what: str, ready: Callable[[], bool], deadline: float, log: Path | None = None) -> None:
    """Call READY until it is true or the deadline passes (then raise with the log's tail)."""
    pause = 0.05
    while not ready():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}{log_tail(log)}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {log} (tail)\n" + "\n".join(text)


class Runner:
    """Runs Ceph commands against the cluster under ROOT, failing loudly with their output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "ceph.conf"

    def run(self, *argv: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [*argv, "-c", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def ceph(self, *argv: str, timeout: float = 30) -> str:
        return self.run("ceph", "--connect-timeout", "10", *argv, timeout=timeout)

    def ok(self, *argv: str) -> bool:
        try:
            self.ceph(*argv, timeout=15)
        except (ClusterError, subprocess.TimeoutExpired):
            return False
        return True

    def daemon(self, name: str, argv: list[str], deadline: float) -> int:
        """Start a self-daemonizing Ceph daemon; return the PID from its pid file."""
        pidfile = self.root / "run" / f"{name}.pid"
        pidfile.unlink(missing_ok=True)
        log = self.root / "log" / f"{name}.log"
        with open(self.root / "log" / f"{name}.stderr", "ab") as err:
            done = subprocess.run(
                [*argv, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        if done.returncode != 0:
            raise ClusterError(f"{argv[0]} exited {done.returncode}{log_tail(log)}")

        def has_pid() -> bool:
            return pidfile.exists() and pidfile.read_text().strip().isdigit()

        poll(f"{name} pid file", has_pid, deadline, log)
        return int(pidfile.read_text())


def start(folder: Path | str, *, timeout: float = 180) -> Cluster:
    """Boot monitor, OSD and radosgw under FOLDER, create the S3 user, write FOLDER/rgw.json."""
    began = time.monotonic()
    deadline = began + timeout
    install_packages()
    root = Path(folder).resolve()
    if (root / "rgw.json").exists():
        raise ClusterError(f"{root}/rgw.json exists: stop that cluster first")
    for sub in ("run", "log", "mon", "osd", "rgw", "crash"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    mon_v2, mon_v1, rgw_port = free_port(), free_port(), free_port()
    cephrun = Runner(root)
    cephrun.conf.write_text(ceph_conf(root, fsid, mon_v2, mon_v1, rgw_port))
    pids: dict[str, int] = {}
    try:
        keyring = str(root / "keyring")
        cephrun.run("ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.")
        monmap = str(root / "monmap")
        addrs = f"[v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]"
        cephrun.run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", addrs, monmap)
        cephrun.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring)
        pids["mon"] = cephrun.daemon("mon.a", ["ceph-mon", "-i", "a"], deadline)
        poll("the monitor", lambda: cephrun.ok("-s"), deadline, root / "log" / "mon.a.log")

        osd_uuid = str(uuid.uuid4())
        osd_id = cephrun.ceph("osd", "new", osd_uuid).strip()
        (root / "osd" / osd_id).mkdir(exist_ok=True)
        cephrun.run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid, timeout=120)
        cephrun.ceph("osd", "crush", "add-bucket", "node0", "host")
        cephrun.ceph("osd", "crush", "move", "node0", "root=default")
        cephrun.ceph("osd", "crush", "add", f"osd.{osd_id}", "1.0", "host=node0")
        pids["osd"] = cephrun.daemon(f"osd.{osd_id}", ["ceph-osd", "-i", osd_id], deadline)

        def osd_up() -> bool:
            try:
                stat = json.loads(cephrun.ceph("osd", "stat", "--format", "json", timeout=15))
            except (ClusterError, subprocess.TimeoutExpired, ValueError):
                return False
            return bool(stat.get("num_up_osds") == 1 and stat.get("num_in_osds") == 1)

        poll("the OSD to be up and in", osd_up, deadline, root / "log" / f"osd.{osd_id}.log")
        pids["rgw"] = start_radosgw(cephrun, rgw_port, deadline)
        cephrun.run(
            "radosgw-admin", "user", "create", "--uid", UID, "--display-name", "eumirror tests",
            "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
        )  # fmt: skip
    except BaseException:
        kill_all(list(pids.values()), grace=5)
        raise
    cluster = Cluster(
        dir=str(root),
        endpoint=f"http://127.0.0.1:{rgw_port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        pids=pids,
        boot_seconds=round(time.monotonic() - began, 2),
    )
    save(cluster)
    return cluster


def start_radosgw(cephrun: Runner, port: int, deadline: float) -> int:
    """Start radosgw and wait until its HTTP frontend answers (any HTTP status will do)."""
    pid = cephrun.daemon("client.rgw", ["radosgw", "-n", "client.rgw"], deadline)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            if not alive(pid):
                raise ClusterError(
                    f"radosgw (pid {pid}) died{log_tail(cephrun.root / 'log' / 'client.rgw.log')}"
                ) from None
            return False

    poll("radosgw to answer HTTP", answers, deadline, cephrun.root / "log" / "client.rgw.log")
    return pid


def save(cluster: Cluster) -> None:
    path = Path(cluster.dir) / "rgw.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cluster), indent=2) + "\n")
    tmp.replace(path)


def load(folder: Path | str) -> Cluster:
    data = json.loads((Path(folder) / "rgw.json").read_text())
    return Cluster(**data)


def alive(pid: int) -> bool:
    """True while PID runs; reaps it when it is our own child (a zombie counts as gone)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_all(pids: list[int], *, grace: float = 20) -> None:
    """SIGTERM every PID, SIGKILL what still runs after GRACE seconds, wait until all are gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise ClusterError(f"pids {pids} survived SIGKILL")
        time.sleep(0.05)


def stop_rgw(folder: Path | str) -> Cluster:
    """Stop only radosgw (by PID); the monitor and the OSD, and so the data, stay up."""
    cluster = load(folder)
    kill_all([cluster.pids["rgw"]], grace=10)
    return cluster


def restart_rgw(folder: Path | str, *, timeout: float = 60) -> Cluster:
    """Stop radosgw if it runs, start it again on the same port; returns the cluster (new pid)."""
    cluster = stop_rgw(folder)
    pid = start_radosgw(Runner(Path(cluster.dir)), cluster.port, time.monotonic() + timeout)
    restarted = Cluster(**{**asdict(cluster), "pids": {**cluster.pids, "rgw": pid}})
    save(restarted)
    return restarted


def stop(folder: Path | str, *, grace: float = 20) -> None:
    """Stop radosgw, then the OSD, then the monitor, by PID; remove rgw.json."""
    cluster = load(folder)
    for name in ("rgw", "osd", "mon"):
        if name in cluster.pids:
            kill_all([cluster.pids[name]], grace=grace)
    (Path(cluster.dir) / "rgw.json").unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["start", "stop", "stop-rgw", "restart-rgw"])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            print(json.dumps(asdict(start(args.dir)), indent=2))
        elif args.action == "stop":
            stop(args.dir)
        elif args.action == "stop-rgw":
            stop_rgw(args.dir)
        else:
            print(json.dumps(asdict(restart_rgw(args.dir)), indent=2))
    except ClusterError as e:
        print(f"rgwcluster: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
