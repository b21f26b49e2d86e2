"""Every run is an Optuna study optuna-dashboard can open: one trial per candidate, named
objectives, costs and arch as user attributes; read back over the dashboard's own HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from console import console_script

from prunesearch.app.config import load_config
from prunesearch.app.run import run_job
from prunesearch.runs.journal import read_journal
from prunesearch.scaleout.study import STUDY_FILE, StudyRecorder, run_storage

TINY = Path(__file__).parent / "configs" / "tiny.toml"
STRATEGIES = {
    "tpe": [],
    "emo": ["search.emo.pop_size=4"],
    "tas": ["search.tas.targets=[0.5]", "search.tas.epochs=1", "search.tas.max_train_images=128"],
}


def _run(tmp: Path, strategy: str) -> Path:
    cfg = load_config(TINY, [f"search.strategy={strategy}", "finetune.enabled=false",
                             *STRATEGIES[strategy]])
    return run_job(cfg, tmp / "runs", progress=False).run_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_optuna_dashboard_shows_the_run(strategy, tmp_path):
    run = _run(tmp_path, strategy)
    candidates = read_journal(run / "candidates.csv")
    port = _free_port()
    server = subprocess.Popen([console_script("optuna-dashboard"), str(run / STUDY_FILE),
                               "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == [strategy]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}?after=0")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert detail["objective_names"] == ["1 - val_score", "macs ratio"]  # set_metric_names
    trials = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trials) == sum(c.result.ok for c in candidates)
    by_arch = {c.result.arch.to_json(): c.result for c in candidates}
    for trial in trials:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        result = by_arch[attrs["arch"]]
        assert int(attrs["macs"]) == result.macs
        assert float(trial["values"][0]) == pytest.approx(1 - result.val_score)


def test_the_study_catches_up_with_the_journal_after_a_kill(tmp_path):
    """A kill between the journal's line and the study's trial: the next start adds it."""
    run = _run(tmp_path, "emo")
    results = [c.result for c in read_journal(run / "candidates.csv")]
    optuna.delete_study(study_name="emo", storage=run_storage(run))
    import torch

    from prunesearch.app.prepare import prepare

    cfg = load_config(run / "config.toml")
    prep = prepare(cfg, torch.device("cpu"), progress=False)
    StudyRecorder(run, "emo", prep.space, prep.cost_axis("macs"), results[:3])
    again = StudyRecorder(run, "emo", prep.space, prep.cost_axis("macs"), results)
    assert len(again.study.trials) == len(results)
    assert [t.user_attrs["arch"] for t in again.study.trials] == [r.arch.to_json()
                                                                   for r in results]
