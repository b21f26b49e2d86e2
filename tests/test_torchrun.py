"""`torchrun --nproc-per-node 2 -m prunesearch train|finetune` (gloo on CPU) trains the same
dense model, supernet and fine-tuned points as one process: each process takes half of every
batch and the gradients are averaged over the processes. The model has no BatchNorm, so the
weights must agree up to float summation order."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
TINY = TESTS / "configs" / "tiny.toml"


PLAIN = ["--set", "model.name=plain_nets:no_batchnorm", "--set", "model.width_mult=1.0",
         "--set", "data.dataset=digits", "--set", "model.train.epochs=3"]


def _torchrun(n_procs: int, args: list[str], cache: Path, env: dict[str, str],
              succeeds: bool = True) -> subprocess.CompletedProcess:
    # `python -m torch.distributed.run` is torchrun, found whatever PATH holds
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                          str(n_procs), "-m", "prunesearch", *args],
                         env={**env, "PYTHONPATH": str(TESTS), "PRUNESEARCH_CACHE": str(cache),
                              "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert (res.returncode == 0) == succeeds, res.stderr[-3000:]
    return res


def _train(n_procs: int, cache: Path, env: dict[str, str]) -> tuple[list[dict], list[str]]:
    """The weights trained (dense, then supernet) and the reported val accuracies."""
    res = _torchrun(n_procs, ["train", str(TINY), *PLAIN, "--set", "supernet.epochs=1"], cache,
                    env)
    reported = re.findall(r"val accuracy ([0-9.]+)", res.stdout)
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


def test_two_processes_fine_tune_the_points_one_process_fine_tunes(tmp_path, cli_env):
    cache = tmp_path / "cache"
    run = subprocess.run([sys.executable, "-m", "prunesearch", "run", str(TINY), *PLAIN,
                          "--set", "finetune.enabled=false", "--out", str(tmp_path / "runs"),
                          "--quiet"], env={**cli_env, "PYTHONPATH": str(TESTS),
                                           "PRUNESEARCH_CACHE": str(cache)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    tuned = {}
    for n in (1, 2):
        folder = shutil.copytree(tmp_path / "runs" / "tiny", tmp_path / f"tiny{n}")
        _torchrun(n, ["finetune", str(folder), "--set", "finetune.top_k=2", "--set",
                      "finetune.epochs=2", "--quiet"], cache, cli_env)
        with (folder / "finetune.csv").open() as f:
            rows = list(csv.DictReader(f))
        weights = sorted((folder / "finetuned").rglob("*.pt"))
        assert len(rows) == 2 and len(weights) == 2  # each point written once
        tuned[n] = (rows, [torch.load(w, weights_only=True) for w in weights])
    (rows1, weights1), (rows2, weights2) = tuned[1], tuned[2]
    assert [r["test_score"] for r in rows1] == [r["test_score"] for r in rows2]
    for mine, theirs in zip(weights1, weights2, strict=True):
        state1, state2 = (w.get("state_dict", w) for w in (mine, theirs))
        for key, value in state1.items():
            assert torch.allclose(value, state2[key], atol=1e-5, rtol=0), key


def test_a_user_error_in_the_process_group_exits_2_without_a_traceback(tmp_path, cli_env):
    # raised after the processes joined their group: they leave through distributed.leave
    res = _torchrun(2, ["train", str(TINY), *PLAIN, "--set", "model.train.batch_size=33"],
                    tmp_path, cli_env, succeeds=False)
    err = " ".join(res.stderr.split())
    assert "does not split evenly among the 2 torchrun processes" in err
    codes = re.findall(r"exitcode : (-?\d+)", err)  # torchrun's report of each failed process
    assert "2" in codes and "-6" not in codes, codes  # the second may be torchrun's SIGTERM
    frames = re.findall(r'File "([^"]+)", line \d+', err)
    assert [f for f in frames if "torch/distributed" not in f and "runpy" not in f] == []


def test_run_under_torchrun_is_refused_with_the_commands_that_do_run_there(monkeypatch,
                                                                           capsys):
    from prunesearch.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    monkeypatch.setattr(sys, "argv", ["prunesearch", "run", str(TINY)])
    with pytest.raises(SystemExit) as exited:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 2 and "prunesearch train CONFIG" in err and "worker" in err
