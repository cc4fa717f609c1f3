"""The documentation stays true: every conf key and every job is documented."""

from __future__ import annotations

from pathlib import Path

from lakeloop.conf import SPEC, describe
from lakeloop.submit import list_jobs

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- keys:begin -->", "<!-- keys:end -->"


def test_configuration_doc_lists_every_key():
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"
    assert table == describe(), "docs/configuration.md is stale: regenerate with `python -m lakeloop.conf`"
    for key in SPEC:
        assert f"`{key}`" in table


def test_readme_documents_every_job():
    readme = (ROOT / "README.md").read_text()
    missing = [job for job in list_jobs() if f"| `{job}` |" not in readme]
    assert not missing, f"jobs missing from the README's job table: {missing}"
