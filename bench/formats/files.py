"""Writing run results: atomic files, strict JSON and the long-form metrics table (the one atomic writer)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CURRENT_UMASK = os.umask(0o022)
os.umask(CURRENT_UMASK)  # reading the umask means setting it: put it back at once


def atomic_write_bytes(path: Path, data: bytes, sync_folder: bool = False) -> None:
    """Write ``data`` to ``path`` atomically: a reader (or a SIGKILL) sees the old file or the new one.

    Through a flushed, fsync'ed temporary file in the same folder, renamed over ``path``. With
    ``sync_folder`` the folder is synced too, so that the rename itself survives a power loss (checkpoints;
    a run's metrics, rewritten at every probe, skip it: it costs a disk round trip each time).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the mode an ordinary write would
        # (0666 less the umask), so that collaborators on a shared cluster can read the results.
        os.chmod(temporary, 0o666 & ~CURRENT_UMASK)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not sync_folder:
        return
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_write_bytes``)."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def strict(value: Any) -> Any:
    """JSON-safe copy: NaN and ±inf become ``None`` (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict(item) for item in value]
    return value


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(strict(summary), indent=2, allow_nan=False) + "\n")


def write_metrics(path: Path, rows: list[tuple[int, str, float]]) -> None:
    """``metrics.csv`` in long form: one ``step,metric,value`` row per measurement (NaN as ``nan``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "metric", "value"])
    writer.writerows((step, metric, repr(float(value))) for step, metric, value in rows)
    atomic_write_text(path, buffer.getvalue())
