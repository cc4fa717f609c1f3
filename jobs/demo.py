"""Demo: generate sample data and run the daily pipeline's steps locally, one session for all."""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("demo", argv)


if __name__ == "__main__":
    sys.exit(main())
