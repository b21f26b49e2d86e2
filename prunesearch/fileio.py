"""Crash-safe file writes: whole files atomically (temp file in the same folder, fsync, replace),
journals append-only. Every file prunesearch writes whole goes through `write_atomic`."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write `path` so a reader (or a crash) sees either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are for sharing
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def append_row(path: Path, row: list[Any]) -> None:
    """Append one CSV row and fsync it: a crash loses at most the line being written."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    with path.open("a") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def complete_lines(path: Path) -> str:
    """The file's text up to its last newline: a torn last line (SIGKILL) is left out."""
    text = path.read_text() if path.exists() else ""
    return text[: text.rfind("\n") + 1]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a CSV journal (none if the file is absent or holds no row)."""
    text = complete_lines(path)
    return list(csv.DictReader(io.StringIO(text))) if text else []


def open_journal(path: Path, columns: list[str]) -> str:
    """Make `path` a CSV journal with a header and only complete lines; returns its text."""
    text = complete_lines(path) or ",".join(columns) + "\n"
    if not path.exists() or path.read_text() != text:
        write_atomic(path, text)  # a crash leaves the old journal, never an empty one
    return text


def write_torch(path: Path, obj: Any) -> None:
    """`torch.save` of `obj` (tensors, numbers, strings, lists, dicts), written atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def save_state(path: Path, model: nn.Module) -> None:
    """Save a model's state_dict (on the CPU) atomically."""
    write_torch(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
