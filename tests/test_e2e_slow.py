"""Real data, real training, real search: the smoke job on Fashion-MNIST (run with -m slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_smoke_job_on_fashion_mnist(tmp_path, cli_env):
    if not FMNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make install does it)")
    res = subprocess.run([sys.executable, "-m", "prunesearch", "run",
                          str(ROOT / "configs" / "smoke.toml"), "--out", str(tmp_path), "--quiet"],
                         env=cli_env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["n_evals"] == 24 and summary["n_failed"] == 0
    # one short epoch on 3000 images: far above chance (10%) on the held-out test set
    assert summary["dense"]["test_score"] > 0.5
    front = json.loads((tmp_path / "smoke" / "pareto.json").read_text())["front"]
    assert len(front) >= 2
    assert max(r["val_score"] for r in front) > 0.2
    assert min(r["macs_ratio"] for r in front) < 0.5
