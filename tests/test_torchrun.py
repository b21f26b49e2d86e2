"""`torchrun --nproc-per-node 2 -m prunesearch train` (gloo on CPU) trains the same dense model
and supernet as one process: each process takes half of every batch and the gradients are
averaged over the processes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import torch

TESTS = Path(__file__).parent
TINY = TESTS / "configs" / "tiny.toml"


def _train(n_procs: int, cache: Path, env: dict[str, str]) -> tuple[list[dict], list[str]]:
    """The weights trained (dense, then supernet) and the reported val accuracies."""
    torchrun = [shutil.which("torchrun") or "torchrun"]
    res = subprocess.run([*torchrun, "--nproc-per-node", str(n_procs), "-m", "prunesearch",
                          "train", str(TINY), "--set", "model.name=plain_nets:no_batchnorm",
                          "--set", "model.width_mult=1.0", "--set", "data.dataset=digits",
                          "--set", "model.train.epochs=3", "--set", "supernet.epochs=1"],
                         env={**env, "PYTHONPATH": str(TESTS), "PRUNESEARCH_CACHE": str(cache),
                              "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    reported = re.findall(r"val acc ([0-9.]+)", res.stdout)
    assert len(reported) == 2  # only the first process reports (and writes the checkpoints)
    checkpoints = sorted((cache / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2 and checkpoints[1].name.startswith("supernet-")
    return [torch.load(f, weights_only=True)["state_dict"] for f in checkpoints], reported


def test_two_processes_train_the_weights_one_process_trains(tmp_path, cli_env):
    (one, acc_one), (two, acc_two) = (_train(1, tmp_path / "one", cli_env),
                                      _train(2, tmp_path / "two", cli_env))
    assert float(acc_one[0]) > 0.3  # it learned (10 classes): not a comparison of untrained nets
    assert acc_two == acc_one
    for stage, (mine, theirs) in enumerate(zip(one, two, strict=True)):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():  # no BatchNorm: equal up to float summation order
            assert torch.allclose(value, theirs[key], atol=1e-5, rtol=0), (stage, key)
