"""Crash-safe file writes: whole files atomically (temp file in the same folder, fsync, replace),
journals append-only. Every file prunesearch writes whole goes through `write_atomic`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from prunesearch.errors import UserError

T = TypeVar("T")


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


def cell(row: dict[str, str], column: str, convert: Callable[[str], T]) -> T:
    """`convert(row[column])`; a missing column or bad value raises ValueError naming it."""
    if row.get(column) is None:
        raise ValueError(f"column '{column}' is missing")
    try:
        return convert(row[column])
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"column '{column}' holds {row[column]!r} ({err})") from None


# Fields renamed since earlier versions wrote run folders and caches (accuracy became the score
# of the run's metric): read under their new names.
RENAMED = {"val_acc": "val_score", "test_acc": "test_score", "proxy_val_acc": "proxy_val_score"}


def renamed_fields(obj: Any) -> Any:
    """`obj` (JSON-like) with every dict key in RENAMED under its new name."""
    if isinstance(obj, dict):
        return {RENAMED.get(k, k): renamed_fields(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [renamed_fields(v) for v in obj]
    return obj


def parse_rows(path: Path, parse: Callable[[dict[str, str]], T]) -> list[T]:
    """The complete rows of a CSV journal, each through `parse` (which reads them with `cell`;
    columns in RENAMED under their new names); a row that does not parse is a UserError naming
    the file, line and column."""
    out = []
    for line, row in enumerate(read_rows(path), start=2):  # line 1 is the header
        try:
            out.append(parse({RENAMED.get(k, k): v for k, v in row.items()}))
        except ValueError as err:
            raise UserError(f"{path}, line {line}: {err}. The file was edited or corrupted; "
                            f"restore it from a backup, delete that line (its work is redone "
                            f"on --resume), or start a new run.") from None
    return out


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


def load_error_reason(err: BaseException) -> str:
    """Why a `torch.load` failed, in one line: torch's weights_only refusal is a page long, and
    its 'Unpickler error' line is the cause."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
    reason = next((line for line in lines if "Unpickler error" in line), lines[0])
    return f"{type(err).__name__}: {reason}"


def save_state(path: Path, model: nn.Module) -> None:
    """Save a model's state_dict (on the CPU) atomically."""
    write_torch(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """`$PRUNESEARCH_CACHE/checkpoints`, or ~/.cache/prunesearch/checkpoints."""
    root = os.environ.get("PRUNESEARCH_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "prunesearch") / "checkpoints"
