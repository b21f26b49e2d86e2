"""Downloading files from a list of mirrors with checksum verification.

A file appears under its final name only once its checksum matched (written to a `.part` file,
then renamed), so an interrupted or corrupt download never looks like a good file, and several
processes may download into the same directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from prunesearch.errors import DataError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class ChecksumError(Exception):
    """A downloaded file did not have the expected checksum."""


def _checksum_algorithm(checksum: str) -> str:
    """md5 (32 hex digits) or sha256 (64), told apart by length."""
    algorithms = {32: "md5", 64: "sha256"}
    if len(checksum) not in algorithms:
        raise ValueError(f"checksum {checksum!r} is neither an md5 nor a sha256 hex digest")
    return algorithms[len(checksum)]


def download_file(url: str, dest: Path, checksum: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download `url` to `dest` if its md5 or sha256 hex digest equals `checksum`. Raises
    ChecksumError on a mismatch, OSError (urllib's errors included) when the download fails;
    in both cases nothing is left behind."""
    digest = hashlib.new(_checksum_algorithm(checksum))
    fd, part_name = tempfile.mkstemp(prefix=f"{dest.name}.", suffix=".part", dir=dest.parent)
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != checksum.lower():
            raise ChecksumError(f"checksum {digest.hexdigest()}, expected {checksum}")
        os.replace(part, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def fetch_files(
    checksums: Mapping[str, str],
    dest_dir: Path,
    mirrors: Sequence[str],
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> dict[str, Path]:
    """Make every file named in `checksums` (file name -> md5 or sha256) present in `dest_dir`,
    downloading the missing ones from the first mirror (a base URL) that serves them with the
    right checksum. Files already in `dest_dir` are trusted: only verified files get there."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the download directory {dest_dir} ({exc.strerror or exc}). Set "
            f"$XDG_CACHE_HOME to a writable directory, or download the files yourself and "
            f"pass their directory as data_dir."
        ) from exc
    paths = {}
    for name, checksum in checksums.items():
        paths[name] = dest_dir / name
        if not paths[name].exists():
            _download_from_mirrors(name, checksum, paths[name], mirrors, timeout)
    return paths


def _download_from_mirrors(
    name: str, checksum: str, dest: Path, mirrors: Sequence[str], timeout: float
) -> None:
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        log.info("downloading %s", url)
        try:
            download_file(url, dest, checksum, timeout)
            return
        except (OSError, http.client.HTTPException, ValueError, ChecksumError) as exc:
            failures.append(f"{url}: {exc}")
    tried = "; ".join(failures) or "no mirror is configured"
    raise DataError(
        f"could not download {name} ({tried}). Check the network connection, or download the "
        f"file yourself (checksum {checksum}) into {dest.parent}, or pass a directory that "
        f"holds the dataset as data_dir."
    )
