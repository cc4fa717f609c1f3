"""serving: the serving store's versions (no Spark).

    ./spark-submit.sh serving status
    ./spark-submit.sh serving rollback [--to VERSION]
    ./spark-submit.sh serving gc [--grace-seconds S]

``status`` lists the kept versions, ``rollback`` switches ``current`` back to the previous complete version
atomically, ``gc`` removes old versions and loads left ``loading`` by a killed run; see docs/serving.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("serving", argv)


if __name__ == "__main__":
    sys.exit(main())
