"""``python -m lakeloop JOB [job args]``: run a job in this process (also the spark-submit primary file of an
installed package, where there is no ``jobs/`` folder)."""

from __future__ import annotations

import sys

from lakeloop import cli
from lakeloop.job import job_names


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in job_names():
        print("usage: python -m lakeloop JOB [job options]\njobs: " + " ".join(job_names()), file=sys.stderr)
        return 2
    return cli.main(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())
