"""The folder a file-reading dataset (arrays, imagefolder) is pointed at."""

from __future__ import annotations

from pathlib import Path

from prunesearch.errors import DataError


def required_folder(data_dir: Path | None, dataset: str, layout: str) -> Path:
    """`data_dir`, which must be an existing folder; a DataError naming the fix otherwise."""
    if data_dir is None:
        raise DataError(f"dataset '{dataset}' reads the folder data.data_dir, which is not set; "
                        f"set it (--set data.data_dir=PATH) to a folder holding {layout}.")
    if not data_dir.is_dir():
        raise DataError(f"data.data_dir '{data_dir}' is not a folder; dataset '{dataset}' "
                        f"reads a folder holding {layout}.")
    return data_dir
