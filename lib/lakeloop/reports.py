"""Run reports and small state documents, read and written through the tables' filesystem layer.

Every job's JSON (and HTML) report, the pipeline's step markers and the landing manifests go through a
:class:`Documents` folder: a local path, a ``file://`` URI, HDFS or an object store alike, with the storage
options of ``delta.storage_options`` (the pyarrow filesystem that :func:`lakeloop.delta.log.locate` gives
the tables).  A write is atomic where the storage can rename (a temporary file moved into place); on an
object store a single PUT is atomic already.

>>> docs = Documents.reports(lake)  # doctest: +SKIP
>>> docs.write_json("curate/events/dt=2026-11-01.json", {"bronze_rows": 10})  # doctest: +SKIP
>>> docs.read_json("curate/events/dt=2026-11-01.json")["bronze_rows"]  # doctest: +SKIP
10
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakeloop.delta.log import TableLocation, locate

if TYPE_CHECKING:
    from lakeloop.lake import Lake

__all__ = ["Documents", "manifest_name"]

# storage whose rename is atomic: write a temporary file, then move it into place
_RENAMING = ("hdfs", "viewfs")


def manifest_name(date: str) -> str:
    """Where the manifest of a landing day lives under the landing root: ``_manifests/dt=<date>.json``."""
    return f"_manifests/dt={date}.json"


@dataclass(frozen=True)
class Documents:
    """A folder of small text documents (reports, markers) under ``root``.

    Parameters
    ----------
    root : str
        A local path, ``file://`` URI or any URI pyarrow opens (``hdfs://``, ``s3://``, ``gs://``...).
    storage_options : dict
        Options of the filesystem, as for the tables (``delta.storage_options``).
    """

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def reports(cls, lake: Lake, kind: str = "") -> Documents:
        """``<warehouse>/_reports[/<kind>]`` of ``lake``."""
        return cls(lake.path(f"_reports/{kind}".rstrip("/")), lake.storage_options)

    def sub(self, relative: str) -> Documents:
        return Documents(self.uri(relative), self.storage_options)

    @property
    def _loc(self) -> TableLocation:
        return locate(self.root, self.storage_options)

    def uri(self, relative: str = "") -> str:
        """The location of ``relative`` as given in ``root`` (a path stays a path, a URI a URI)."""
        return f"{self.root.rstrip('/')}/{relative.lstrip('/')}" if relative else self.root

    def location(self, relative: str) -> Path | str:
        """Where ``relative`` is: a :class:`~pathlib.Path` on the local filesystem, else its URI."""
        loc = self._loc
        return Path(loc.fs_join(relative)) if loc.is_local else self.uri(relative)

    def write_text(self, relative: str, text: str) -> Path | str:
        """Write ``text`` (UTF-8) to ``relative``, replacing it atomically; returns :meth:`location`."""
        loc = self._loc
        fs, target = loc.fs, loc.fs_join(relative)
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        data = text.encode("utf-8")
        if loc.is_local or loc.delta.split("://", 1)[0] in _RENAMING:
            parent, name = target.rsplit("/", 1)
            tmp = f"{parent}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, target)
        else:
            with fs.open_output_stream(target) as out:
                out.write(data)
        return self.location(relative)

    def read_text(self, relative: str) -> str | None:
        """The text of ``relative``; None when there is no such document."""
        loc = self._loc
        try:
            with loc.fs.open_input_stream(loc.fs_join(relative)) as src:
                return src.read().decode("utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:  # some filesystems report a missing path as a plain OSError
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return None
            raise

    def write_json(self, relative: str, payload: Any) -> Path | str:
        return self.write_text(relative, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, relative: str) -> Any:
        """The parsed document, or None when it is missing or not valid JSON."""
        text = self.read_text(relative)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def exists(self, relative: str) -> bool:
        from pyarrow import fs as pafs

        loc = self._loc
        return loc.fs.get_file_info(loc.fs_join(relative)).type == pafs.FileType.File

    def delete(self, relative: str) -> None:
        """Remove ``relative`` if it exists."""
        loc = self._loc
        if self.exists(relative):
            loc.fs.delete_file(loc.fs_join(relative))

    def list(self, relative: str = "", suffix: str = "") -> list[str]:
        """Documents directly under ``relative`` whose names end with ``suffix``, sorted, relative to root."""
        from pyarrow import fs as pafs

        loc = self._loc
        base = loc.fs_join(relative) if relative else loc.fs_path
        infos = loc.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                       and not i.base_name.startswith("."))
        return [f"{relative.rstrip('/')}/{n}" if relative else n for n in names]
