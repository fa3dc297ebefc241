"""The package's one version, looked up only when something asks for it.

The lookup reads the installed package's metadata (`importlib.metadata` and its imports cost ~0.1 s), so
`--help`, a warm-server `dotocr ocr` and the tray's start do not pay for it; `--version` and `/health` do.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from typing import Any


@functools.cache
def package_version() -> str:
    """What pyproject.toml says, as installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dotocr")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


class VersionAction(argparse.Action):
    """`--version`: prints "PROG VERSION" and exits, looking the version up only then."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str = "show the version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {package_version()}")  # to stdout, as argparse's own version action does
        parser.exit()
