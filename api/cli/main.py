"""The `blueprint` command line. Each command group lives in its own module with `register()`.

A command module imports at its top only what its parser needs; each handler imports the rest
(geopandas, SQLAlchemy, the spatial modules). Building the parser then takes ~0.1 s instead of
~1.9 s, so `--help`, `db url` and a usage error answer at once (tests/layers/test_cli.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from api.cli import catalogue_cmd, conflicts_cmd, db_cmd, demo_cmd, layers_cmd, serve_cmd, site_cmd, tiles_cmd
from layers.errors import BlueprintError

COMMAND_GROUPS = (db_cmd, catalogue_cmd, layers_cmd, demo_cmd, conflicts_cmd, site_cmd, tiles_cmd, serve_cmd)


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other CLI error (`--help` still shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="blueprint",
        description="One Blueprint 一张蓝图: multi-plan integration on PostGIS",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BlueprintError as exc:
        print(f"blueprint: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blueprint: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    except Exception as exc:  # one line for the user; the trace only on request
        if os.environ.get("BLUEPRINT_DEBUG"):
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"blueprint: internal error: {type(exc).__name__}: {first} "
              "(set BLUEPRINT_DEBUG=1 for the trace)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
