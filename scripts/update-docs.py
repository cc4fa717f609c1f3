"""Regenerate the key table in docs/configuration.md from lakeloop.conf.SPEC."""

from pathlib import Path

from lakeloop.conf import describe

BEGIN, END = "<!-- keys:begin -->", "<!-- keys:end -->"
doc = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
text = doc.read_text()
head, rest = text.split(BEGIN, 1)
tail = rest.split(END, 1)[1]
doc.write_text(f"{head}{BEGIN}\n{describe()}{END}{tail}")
print(f"updated {doc}")
