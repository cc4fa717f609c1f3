"""Landing files: names, atomic writes with checksums, removal of stale parts, the manifest."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakeloop.conf import ConfError
from lakeloop.reports import manifest_name

__all__ = ["WrittenFile", "part_name", "partition_dir", "write_atomic", "remove_stale", "write_manifest",
           "manifest_path", "resolve_landing"]

_TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    bytes: int
    sha256: str


def partition_dir(landing: str | os.PathLike[str], source: str, date: str) -> Path:
    return Path(landing) / source / f"dt={date}"


def manifest_path(landing: str | os.PathLike[str], date: str) -> Path:
    return Path(landing) / manifest_name(date)


def part_name(part: int, fmt: str, gz: bool) -> str:
    return f"part-{part:05d}.{fmt}" + (".gz" if gz else "")


class _Digest:
    """A write-only file object that counts and hashes what passes through it."""

    def __init__(self, raw) -> None:
        self.raw, self.size, self.sha = raw, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


def write_atomic(path: Path, chunks: Iterable[bytes], gz: bool = False) -> WrittenFile:
    """Write ``chunks`` to a hidden temporary name beside ``path`` and rename it into place.

    Readers never see a partial file: the temporary name starts with ``.`` and ends in ``.tmp``,
    not in the data suffix.  Gzip output carries no name or time, so equal input gives equal bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as raw:
            digest = _Digest(raw)
            if gz:
                with gzip.GzipFile(filename="", mode="wb", fileobj=digest, compresslevel=1, mtime=0) as out:
                    for chunk in chunks:
                        out.write(chunk)
            else:
                for chunk in chunks:
                    digest.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return WrittenFile(path=path, bytes=digest.size, sha256=digest.sha.hexdigest())


def remove_stale(directory: Path, keep: Iterable[str]) -> list[Path]:
    """Delete parts in ``directory`` that are not in ``keep`` (left by a run with more parts), and
    temporary files of interrupted runs.  Returns what was removed."""
    if not directory.is_dir():
        return []
    keep = set(keep)
    removed = []
    for p in sorted(directory.iterdir()):
        stale_part = p.name.startswith("part-") and p.name not in keep
        stale_tmp = p.name.startswith(".part-") and p.name.endswith(_TMP_SUFFIX)
        if p.is_file() and (stale_part or stale_tmp):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_manifest(landing: str | os.PathLike[str], date: str, manifest: dict[str, Any]) -> Path:
    """Write the manifest of ``date`` (sorted keys, so equal content gives equal bytes)."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    return write_atomic(manifest_path(landing, date), [text.encode("utf-8")]).path


def resolve_landing(landing: str | os.PathLike[str]) -> str:
    """The landing root as an absolute local path (``file://`` accepted; other schemes are refused)."""
    text = os.fspath(landing)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise ConfError(f"landing {text!r}: datagen writes to a filesystem path (local or shared mount)")
    return str(Path(text).expanduser().resolve())
