"""The command line: argparse, logging set-up, one stderr line and an exit code per error."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import __version__
from .core.config import Config, closest, config_path, load_config
from .core.errors import ConfigError, EumirrorError
from .engine.heap import keep_buffers_mapped
from .logchoices import FORMATS, LEVELS
from .tuning import enabled

if TYPE_CHECKING:
    from .storage.statcheck import StatCheck

# Options every command takes, before or after its name; `name` and `catalog refresh` accept
# --config and ignore it, so a wrapper can pass it to any command.
SHARED = ("config", "log_level", "log_format")
_INVALID_CHOICE = re.compile(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)")


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """'; did you mean X?' when `word` is close to one of `choices`, else ''."""
    close = closest(word, choices)
    return f"; did you mean {close}?" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse with suggestions: an unknown command or option names the closest known one."""

    def error(self, message: str) -> NoReturn:
        if m := _INVALID_CHOICE.search(message):
            choices = [c.strip(" '") for c in m.group(2).split(",")]
            message = f"unknown command {m.group(1)!r}" + did_you_mean(m.group(1), choices)
        super().error(message)

    def unknown_options(self, extras: Sequence[str]) -> NoReturn:
        """What argparse calls 'unrecognized arguments', in this (sub)command's own usage."""
        known = [o for action in self._actions for o in action.option_strings]
        hints = "".join(did_you_mean(x.split("=", 1)[0], known) for x in extras if x[:1] == "-")
        self.error(f"unrecognized arguments: {' '.join(extras)}{hints}")


def shared_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config, --log-level and --log-format; at the top their dest is `top_<name>`."""
    prefix = "top_" if top else ""
    parser.add_argument(
        "--config",
        metavar="PATH",
        dest=f"{prefix}config",
        help="configuration file (default: $EUMIRROR_CONFIG, else /etc/eumirror/eumirror.toml)",
    )
    parser.add_argument(
        "--log-level",
        dest=f"{prefix}log_level",
        type=str.lower,
        choices=LEVELS,
        help="debug, info (default), warning or error; any case",
    )
    parser.add_argument(
        "--log-format",
        dest=f"{prefix}log_format",
        type=str.lower,
        choices=FORMATS,
        help="console, json or journal (default: $EUMIRROR_LOG_FORMAT, else console on a "
        "terminal and json elsewhere)",
    )


def build_parser() -> tuple[Parser, dict[str, Parser]]:
    """The parser, and each (sub)command's own parser by its path ('sync', 'catalog refresh')."""
    parser = Parser(prog="eumirror", description="Mirror Eucalyptus eustore catalogs, verified.")
    parser.add_argument("--version", action="version", version=f"eumirror {__version__}")
    shared_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, Parser] = {}

    def command(name: str, help: str, under: argparse._SubParsersAction[Parser] = sub) -> Parser:
        made = under.add_parser(name, help=help)
        shared_options(made, top=False)
        commands[f"{made.prog.removeprefix('eumirror ')}"] = made
        return made

    sync = command("sync", "sync the mirror (daemon or once)")
    sync.add_argument("--once", action="store_true", help="one sync, then exit")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    sync.add_argument(
        "--allow-shrink", action="store_true", help="publish even if the catalog shrinks a lot"
    )
    sync.add_argument(
        "--metrics-file", metavar="PATH", help="write Prometheus metrics here (textfile collector)"
    )
    sync.add_argument(
        "--upstream",
        metavar="NAME",
        action="append",
        default=[],
        help="with --once: sync only this upstream (repeatable)",
    )
    command("verify", "re-hash every published tarball")
    status = command("status", "summary of each upstream")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    command("serve", "serve the mirror ([serve]), no syncing")
    history = command("history", "list an upstream's kept generations")
    history.add_argument("upstream", metavar="UPSTREAM")
    history.add_argument("--json", action="store_true", help="print a JSON array")
    rollback = command("rollback", "publish an older generation and pin the upstream to it")
    rollback.add_argument("upstream", metavar="UPSTREAM")
    rollback.add_argument(
        "--to", type=int, metavar="N", help="generation (default: the one before the live one)"
    )
    unpin = command("unpin", "let syncs publish an upstream's catalog again")
    unpin.add_argument("upstream", metavar="UPSTREAM")
    name = command("name", "print the eustore name of files")
    name.add_argument("files", nargs="+", metavar="FILE")
    catalog = sub.add_parser("catalog", help="publisher tools")
    commands["catalog"] = catalog
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    refresh = command("refresh", "recompute image names from the tarballs", catalog_sub)
    refresh.add_argument("catalog_file", metavar="CATALOG")
    refresh.add_argument("--dir", metavar="DIR", help="where the tarballs are (default: beside)")
    refresh.add_argument("--in-place", action="store_true", help="write the catalog back")
    return parser, commands


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an error is reported in the usage of the (sub)command it belongs to (exit 2)."""
    parser, commands = build_parser()
    args, extras = parser.parse_known_args(argv)
    path = " ".join(p for p in (args.command, getattr(args, "catalog_command", None)) if p)
    own = commands.get(path, parser)
    if extras:
        own.unknown_options(extras)
    for key in SHARED:
        if getattr(args, key, None) is None:
            setattr(args, key, getattr(args, f"top_{key}"))
    if args.command == "sync" and args.upstream and not (args.once or args.dry_run):
        own.error("--upstream needs --once: the daemon always syncs every upstream")
    return args


@dataclass
class Early:
    """What `sync --once` reads and starts before importing structlog, asyncio and the engine:
    its configuration (or the error reading it, reported once logging is set up) and the check
    of the published files in child processes (`storage.statcheck`). The sooner the children
    start, the more of their work overlaps the imports."""

    config: Config | None = None
    only: tuple[str, ...] = ()
    """The --upstream names, checked against the configuration."""
    error: EumirrorError | None = None
    check: StatCheck | None = None

    @classmethod
    def start(cls, args: argparse.Namespace) -> Early:
        if args.command != "sync" or not (args.once or args.dry_run):
            return cls()
        try:
            config = load_config(config_path(args.config))
            only = selected(config, args.upstream)
        except EumirrorError as exc:
            return cls(error=exc)
        if config.s3 is not None or not enabled("stat-check"):
            return cls(config, only)
        from .storage.fs import start_stat_check

        names = only or [u.name for u in config.upstreams]
        return cls(config, only, check=start_stat_check(config.root, names))

    def close(self) -> None:
        if self.check is not None:
            self.check.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keep_buffers_mapped()
    early = Early()
    try:
        early = Early.start(args)
        return logged(args, early)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        early.close()


def logged(args: argparse.Namespace, early: Early) -> int:
    """The command, with logging set up and an expected error as one line and its exit code."""
    from .log import configure, log

    try:
        configure(args.log_level or "info", fmt=args.log_format)
    except EumirrorError as exc:  # a bad $EUMIRROR_LOG_FORMAT: no log to write it to yet
        print(f"eumirror: {exc.line()}", file=sys.stderr)
        return int(exc.exit_code)
    try:
        return int(dispatch(args, early))
    except EumirrorError as exc:
        log.error("failed", error=exc.line(), exit_code=int(exc.exit_code))
        print(f"eumirror: {exc.line()}", file=sys.stderr)
        return int(exc.exit_code)


def run() -> NoReturn:
    """The console script: `main`, then exit at once. The work is done and flushed by then;
    tearing the interpreter down (freeing a 100k-image run's objects one by one, joining idle
    threads) would add 0.15 s to every `sync --once` of a large mirror, a tenth of a no-op's."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors and --help
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # what Python does with sys.exit("message")
            print(exc.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
            stream.flush()
    os._exit(code)


def selected(config: Config, names: Sequence[str]) -> tuple[str, ...]:
    """The --upstream names, each checked against the configuration (usage error if unknown)."""
    known = [u.name for u in config.upstreams]
    for name in names:
        if name not in known:
            close = closest(name, known)
            raise ConfigError(
                f"--upstream {name!r}: no such upstream in {config.path}",
                hint=(f"did you mean {close!r}? " if close else "")
                + f"configured: {', '.join(known)}",
            )
    return tuple(dict.fromkeys(names))


def dispatch(args: argparse.Namespace, early: Early) -> int:
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
    if early.error is not None:
        raise early.error
    # `serve` serves what is under the root: it needs no upstream to mirror.
    config = early.config or load_config(
        config_path(args.config), need_upstreams=args.command != "serve"
    )
    if args.command == "verify":
        from .commands.verify import verify_mirror

        return verify_mirror(config)
    if args.command in ("history", "rollback", "unpin"):
        from .commands import history

        upstream = selected(config, [args.upstream])[0]
        if args.command == "history":
            return history.show_history(config, upstream, as_json=args.json)
        if args.command == "rollback":
            return history.rollback(config, upstream, args.to)
        return history.unpin(config, upstream)
    if args.command == "status":
        from .commands.report import show_status

        return show_status(config, as_json=args.json)
    import asyncio

    if args.command == "serve":
        from .service.serve import run_serve

        return asyncio.run(run_serve(config))
    if args.once or args.dry_run:  # its configuration and --upstream were read by `Early`
        from .commands.once import sync_once

        return run_until_signal(
            lambda: sync_once(
                config,
                dry_run=args.dry_run,
                allow_shrink=args.allow_shrink,
                metrics_file=Path(args.metrics_file) if args.metrics_file else None,
                only=early.only,
                stat_check=early.check,
            )
        )
    from .service.daemon import run_daemon

    return asyncio.run(run_daemon(config, config_path(args.config)))


def run_until_signal(make: Callable[[], Awaitable[int]]) -> int:
    """Run a coroutine; SIGTERM/SIGINT cancel it (it cleans up) and exit 128 + the signal."""
    import asyncio

    from .log import log

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
