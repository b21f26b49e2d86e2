"""Console scripts of the interpreter running the tests: a virtual environment's scripts sit
beside its python, whether or not the venv is activated (on PATH)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The path of console script `name` installed with this interpreter (else from PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script '{name}' is neither beside {sys.executable} "
                                f"nor on PATH; install the project's dev extra")
    return found
