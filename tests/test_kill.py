"""SIGKILL at 20 random moments (seeded) across searches (random sampler, emo, tas),
fine-tuning and export; after each kill the job is resumed, and in the end nothing is lost,
nothing repeated, and no export folder holds a mix of two exports or stale files."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import prunesearch

TINY = Path(__file__).parent / "configs" / "tiny.toml"
pytestmark = pytest.mark.slow
RNG = random.Random(17)
KILL_WINDOW_S = (2.5, 9.0)  # torch's import takes ~2 s: kills land in the job itself


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunesearch", *args]


def kill_at_random_moments(args: list[str], run_dir: Path | None, kills: int) -> int:
    """Start `args` (with --resume once the run folder exists) and SIGKILL it after a random
    delay, `kills` times; returns how many runs were really killed (not finished first)."""
    killed = 0
    for _ in range(kills):
        resume = run_dir is not None and (run_dir / "config.toml").exists()
        proc = subprocess.Popen(command(*args, *(["--resume"] if resume else [])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=RNG.uniform(*KILL_WINDOW_S))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed += 1
    return killed


def finish(args: list[str], run_dir: Path) -> None:
    resume = ["--resume"] if (run_dir / "config.toml").exists() else []
    done = subprocess.run(command(*args, *resume), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("strategy", "extra"), [
    ("random", ["--set", "search.budget=60"]),
    ("emo", ["--set", "search.budget=60", "--set", "search.emo.pop_size=8"]),
    ("tas", ["--set", "search.tas.epochs=6"]),
])
def test_search_killed_4_times_loses_and_repeats_nothing(tmp_path, strategy, extra):
    args = ["run", str(TINY), "--out", str(tmp_path), "--quiet", "--set", "search.batch_size=1",
            "--set", f"search.strategy={strategy}", "--set", "finetune.enabled=false", *extra]
    run_dir = tmp_path / "tiny"
    assert kill_at_random_moments(args, run_dir, 4) >= 1
    finish(args, run_dir)
    found = rows(run_dir / "candidates.csv")
    assert [int(r["id"]) for r in found] == list(range(len(found)))
    assert len({r["arch"] for r in found}) == len(found)  # no architecture evaluated twice
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_evals"] == len(found)
    if strategy != "tas":
        assert len(found) == 60
    else:  # one searched architecture per target, each searched once
        assert 1 <= len(found) <= 3


def test_finetuning_and_export_killed_8_times_keep_every_model_once(tmp_path):
    args = ["run", str(TINY), "--out", str(tmp_path), "--quiet", "--set", "finetune.top_k=5",
            "--set", "finetune.epochs=40"]
    run_dir = tmp_path / "tiny"  # the search takes seconds; most kills land in fine-tuning
    assert kill_at_random_moments(args, run_dir, 4) >= 1
    finish(args, run_dir)
    trained = rows(run_dir / "finetune.csv")
    ids = [r["id"] for r in trained]
    assert len(ids) == len(set(ids)) == 5  # every chosen point once, none lost
    for r in trained:
        assert (run_dir / r["weights"]).stat().st_size > 0

    folder = tmp_path / "exported"
    for attempt in range(4):
        formats = "pt,ts,onnx" if attempt % 2 == 0 else "pt"
        kill_at_random_moments(["export", str(run_dir), "--id", ids[attempt], "--format",
                                formats, "-o", str(folder), "--quiet"], None, 1)
        if folder.exists():  # either a whole earlier export or a whole new one, never a mix
            meta = json.loads((folder / "meta.json").read_text())
            names = {p.name for p in folder.iterdir()}
            assert names - {"model.ts", "model.onnx"} == {"arch.json", "meta.json", "model.pt"}
            assert set(meta["checks"]) == {n.split(".")[1] for n in names if n.startswith("model")}
            prunesearch.load(folder)
    final = subprocess.run(command("export", str(run_dir), "--id", ids[0], "--format", "pt",
                                   "-o", str(folder), "--quiet"), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "meta.json", "model.pt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
