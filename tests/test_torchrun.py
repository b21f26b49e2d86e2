"""`torchrun --nproc-per-node 2 -m prunesearch train` (gloo on CPU) trains the same dense model
as one process: each process takes half of every batch and DDP averages the gradients."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import torch

TESTS = Path(__file__).parent
TINY = TESTS / "configs" / "tiny.toml"


def _train(n_procs: int, cache: Path, env: dict[str, str]) -> tuple[dict[str, torch.Tensor], float]:
    torchrun = [shutil.which("torchrun") or "torchrun"]
    res = subprocess.run([*torchrun, "--nproc-per-node", str(n_procs), "-m", "prunesearch",
                          "train", str(TINY), "--set", "model.name=plain_nets:no_batchnorm",
                          "--set", "model.width_mult=1.0", "--set", "data.dataset=digits",
                          "--set", "model.train.epochs=3"],
                         env={**env, "PYTHONPATH": str(TESTS), "PRUNESEARCH_CACHE": str(cache),
                              "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    reported = re.findall(r"val acc ([0-9.]+)", res.stdout)
    assert len(reported) == 1  # only the first process reports (and writes the checkpoint)
    (checkpoint,) = (cache / "checkpoints").glob("*.pt")
    return torch.load(checkpoint, weights_only=True)["state_dict"], float(reported[0])


def test_two_processes_train_the_weights_one_process_trains(tmp_path, cli_env):
    (one, acc_one), (two, acc_two) = (_train(1, tmp_path / "one", cli_env),
                                      _train(2, tmp_path / "two", cli_env))
    assert acc_one > 0.3  # it learned (10 classes): the comparison is not of untrained nets
    assert acc_two == acc_one and one.keys() == two.keys()
    for key in one:  # a model without BatchNorm: equal up to float summation order
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=0), key
