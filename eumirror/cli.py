"""The command line: argparse, logging set-up, one stderr line and an exit code per error."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from . import __version__
from .core.config import config_path, load_config
from .core.errors import EumirrorError
from .engine.heap import keep_buffers_mapped
from .log import LEVELS, configure, log


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=LEVELS, default="info", help="default: info")
    with_config = argparse.ArgumentParser(add_help=False, parents=[common])
    with_config.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $EUMIRROR_CONFIG, else /etc/eumirror/eumirror.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="eumirror", description="Mirror Eucalyptus eustore catalogs, verified."
    )
    parser.add_argument("--version", action="version", version=f"eumirror {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = sub.add_parser("sync", parents=[with_config], help="sync the mirror (daemon or once)")
    sync.add_argument("--once", action="store_true", help="one sync of every upstream, then exit")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    sync.add_argument(
        "--allow-shrink", action="store_true", help="publish even if the catalog shrinks a lot"
    )
    sync.add_argument(
        "--metrics-file", metavar="PATH", help="write Prometheus metrics here (textfile collector)"
    )
    sub.add_parser("verify", parents=[with_config], help="re-hash every published tarball")
    sub.add_parser("status", parents=[with_config], help="summary of each upstream")
    sub.add_parser("serve", parents=[with_config], help="serve the mirror ([serve]), no syncing")
    name = sub.add_parser("name", parents=[common], help="print the eustore name of files")
    name.add_argument("files", nargs="+", metavar="FILE")
    catalog = sub.add_parser("catalog", help="publisher tools")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    refresh = catalog_sub.add_parser(
        "refresh", parents=[common], help="recompute image names from the tarballs"
    )
    refresh.add_argument("catalog_file", metavar="CATALOG")
    refresh.add_argument("--dir", metavar="DIR", help="where the tarballs are (default: beside)")
    refresh.add_argument("--in-place", action="store_true", help="write the catalog back")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_buffers_mapped()
    configure(args.log_level)
    try:
        return int(dispatch(args))
    except EumirrorError as exc:
        log.error("failed", error=exc.line(), exit_code=int(exc.exit_code))
        print(f"eumirror: {exc.line()}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "name":
        from .commands.publisher import print_names

        return print_names([Path(f) for f in args.files])
    if args.command == "catalog":
        from .commands.publisher import refresh_catalog

        return refresh_catalog(
            Path(args.catalog_file),
            Path(args.dir) if args.dir else None,
            in_place=args.in_place,
        )
    config = load_config(config_path(args.config))
    if args.command == "verify":
        from .commands.verify import verify_mirror

        return verify_mirror(config)
    if args.command == "status":
        from .commands.report import show_status

        return show_status(config)
    if args.command == "serve":
        from .service.serve import run_serve

        return asyncio.run(run_serve(config))
    if args.once or args.dry_run:
        from .commands.once import sync_once

        return run_until_signal(
            lambda: sync_once(
                config,
                dry_run=args.dry_run,
                allow_shrink=args.allow_shrink,
                metrics_file=Path(args.metrics_file) if args.metrics_file else None,
            )
        )
    from .service.daemon import run_daemon

    return asyncio.run(run_daemon(config, config_path(args.config)))


def run_until_signal(make: Callable[[], Awaitable[int]]) -> int:
    """Run a coroutine; SIGTERM/SIGINT cancel it (it cleans up) and exit 128 + the signal."""

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(make())
        caught: list[int] = []

        def stop(signum: int) -> None:
            if not caught:
                log.warning("stopping", signal=signal.Signals(signum).name)
            caught.append(signum)
            task.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await task
        except asyncio.CancelledError:
            if caught:
                return 128 + caught[0]
            raise
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    return asyncio.run(guarded())


def human_failures(lines: list[str]) -> None:
    """The plain lines at the end of a run: what failed, where, and what to do."""
    for line in lines:
        print(f"eumirror: {line}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
