"""The CLI as a user runs it: subprocesses, exit codes, the run-directory contract, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = Path(__file__).parent / "configs" / "tiny.toml"
CONTRACT = ["config.toml", "candidates.csv", "pareto.csv", "pareto.json", "summary.json",
            "pareto.png", "pareto.svg", "log.txt", "hv_history.csv", "hv_history.png",
            "finetune.csv"]


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunesearch", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "candidates.csv").open() as f:
        return list(csv.DictReader(f))


def test_run_writes_the_contract_and_show_plot_work(tmp_path, cli_env):
    res = cli("run", str(TINY), "--out", str(tmp_path), "--quiet", env=cli_env)
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "tiny"
    for name in CONTRACT:
        assert (run_dir / name).stat().st_size > 0, name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_evals"] == len(_rows(run_dir)) == 12
    assert summary["hypervolume"]["reference_point"] == [1.0, 1.0]
    assert 0 < summary["hypervolume"]["value"] < 1
    front = json.loads((run_dir / "pareto.json").read_text())["front"]
    assert front and all(r["macs"] <= summary["dense"]["macs"] for r in front)

    shown = cli("show", str(run_dir), env=cli_env)
    assert shown.returncode == 0 and "Pareto front" in shown.stdout
    out = tmp_path / "cmp.png"
    plotted = cli("plot", str(run_dir), str(run_dir), "-o", str(out), env=cli_env)
    assert plotted.returncode == 0, plotted.stderr
    assert out.stat().st_size > 0 and out.with_suffix(".svg").exists()

    again = cli("run", str(TINY), "--out", str(tmp_path), "--quiet", env=cli_env)
    assert again.returncode == 2 and "--resume" in again.stderr


def test_same_seed_gives_the_same_candidates(tmp_path, cli_env):
    for name in ("a", "b"):
        res = cli("run", str(TINY), "--out", str(tmp_path), "--quiet", "--set", f"name={name}",
                  "--set", "search.strategy=tpe", env=cli_env)
        assert res.returncode == 0, res.stderr
    keep = ("arch", "macs", "val_score")
    a, b = ([{k: r[k] for k in keep} for r in _rows(tmp_path / n)] for n in ("a", "b"))
    assert a == b


def test_space_command_prints_dimensions(cli_env):
    res = cli("space", "resnet20", env=cli_env)
    assert res.returncode == 0, res.stderr
    assert "depth:stages.0" in res.stdout and "FLOPs (MACs)" in res.stdout


def test_space_command_reads_a_configs_density_dimensions(cli_env):
    res = cli("space", str(TINY.with_name("tiny_masks.toml")), env=cli_env)
    assert res.returncode == 0, res.stderr
    assert "density:stem.0" in res.stdout and "density:fc" in res.stdout


@pytest.mark.parametrize("strategy", ["random", "emo"])
def test_sigkill_mid_search_then_resume_keeps_every_candidate_once(tmp_path, cli_env, strategy):
    args = ["run", str(TINY), "--out", str(tmp_path), "--quiet", "--set", "search.budget=40",
            "--set", "search.batch_size=1", "--set", f"search.strategy={strategy}",
            "--set", "search.emo.pop_size=8"]
    run_dir = tmp_path / "tiny"
    proc = subprocess.Popen([sys.executable, "-m", "prunesearch", *args], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if (run_dir / "candidates.csv").exists() and len(_rows(run_dir)) >= 13:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(_rows(run_dir))
    assert 13 <= killed_at < 40, "the run must be killed mid-search"
    assert not (run_dir / "summary.json").exists()

    res = cli(*args, "--resume", env=cli_env)
    assert res.returncode == 0, res.stderr
    rows = _rows(run_dir)
    assert len(rows) == 40
    assert [int(r["id"]) for r in rows] == list(range(40))
    assert len({r["arch"] for r in rows}) == 40
    assert json.loads((run_dir / "summary.json").read_text())["n_evals"] == 40
    if strategy == "emo":  # resumed from its generation checkpoint: as if never killed
        whole = cli(*args, "--set", "name=whole", env=cli_env)
        assert whole.returncode == 0, whole.stderr
        assert [r["arch"] for r in _rows(tmp_path / "whole")] == [r["arch"] for r in rows]
        front = json.loads((run_dir / "pareto.json").read_text())["front"]
        whole_front = json.loads((tmp_path / "whole" / "pareto.json").read_text())["front"]
        assert [r["arch"] for r in front] == [r["arch"] for r in whole_front]


def test_train_command_trains_then_reuses_the_cached_checkpoint(cli_env):
    first = cli("train", str(TINY), env=cli_env)
    assert first.returncode == 0, first.stderr
    second = cli("train", str(TINY), env=cli_env)
    assert second.returncode == 0 and "loaded from cache" in " ".join(second.stdout.split())


USER_MODEL = '''
import torch
from torch import nn


class TwoBranch(nn.Module):
    """Not a zoo model: two concatenated branches, a residual add, no depth_stages()."""

    def __init__(self, num_classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mix(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(x.mean((2, 3)))


def build(num_classes):
    return TwoBranch(num_classes)
'''


def test_a_user_model_is_searched_like_a_zoo_model(tmp_path, cli_env):
    (tmp_path / "mynets.py").write_text(USER_MODEL)
    env = {**cli_env, "PYTHONPATH": str(tmp_path)}
    res = cli("run", str(TINY), "--out", str(tmp_path), "--quiet",
              "--set", "model.name=mynets:build", "--set", "model.width_mult=1.0", env=env)
    assert res.returncode == 0, res.stderr
    rows = _rows(tmp_path / "tiny")
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    dims = set(json.loads(rows[0]["arch"]))
    assert {"width:a.0", "width:b.0"} <= dims and len(dims) == 3  # + the residual group
    shown = cli("space", "mynets:build", "--input-shape", "1,8,8", "--num-classes", "4", env=env)
    assert shown.returncode == 0 and "width:b.0" in shown.stdout
