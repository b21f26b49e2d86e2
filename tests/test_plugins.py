"""A strategy defined only in this file (its module and its options model, nothing else
touched) runs through `prunesearch run` with its own `[search.<name>]` section, in this process
and, named in a config's `plugins`, in a fresh one. Being registered when the test suite is
collected, it also goes through every strategy contract test in test_search.py."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from prunesearch.cli import main
from prunesearch.options import Options
from prunesearch.spaces import Arch
from prunesearch.strategies import AskTellStrategy, SearchContext, register_strategy

TINY = Path(__file__).parent / "configs" / "tiny.toml"


class EveryOtherOptions(Options):
    step: int = Field(2, ge=1, description="take every step-th arch of the uniform sweep")
    narrow_first: bool = False


@register_strategy("every-other-test", options=EveryOtherOptions)
class EveryOtherStrategy(AskTellStrategy):
    """Every `step`-th arch of the uniform sweep, widest (or narrowest) first."""

    options: EveryOtherOptions

    def start(self, ctx: SearchContext) -> None:
        sweep = ctx.space.uniform_sweep()
        self._queue = (sweep[::-1] if self.options.narrow_first else sweep)[::self.options.step]

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        asked, self._queue = self._queue[:n], self._queue[n:]
        return asked


def _run(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["prunesearch", "run", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "candidates.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_strategy_defined_in_a_test_file_runs_with_its_own_section(tmp_path, monkeypatch):
    code = _run(monkeypatch, str(TINY), "--out", str(tmp_path), "--quiet",
                "--set", "search.strategy=every-other-test",
                "--set", "search.every-other-test.step=3", "--set", "finetune.enabled=false")
    assert code == 0
    rows = _rows(tmp_path / "tiny")
    assert rows and {r["strategy"] for r in rows} == {"every-other-test"}
    assert len(rows) == 3  # 7 width ratios, every third: 1.0, 0.625, 0.25
    assert float(rows[0]["macs_ratio"]) == 1.0 and float(rows[-1]["macs_ratio"]) < 0.2
    saved = (tmp_path / "tiny" / "config.toml").read_text()
    assert "[search.every-other-test]\nstep = 3" in saved


def test_its_options_are_validated_by_its_own_model(tmp_path, monkeypatch, capsys):
    code = _run(monkeypatch, str(TINY), "--out", str(tmp_path), "--quiet",
                "--set", "search.strategy=every-other-test",
                "--set", "search.every-other-test.step=0")
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "search.every-other-test.step" in err and "Traceback" not in err
    assert not (tmp_path / "tiny").exists()  # nothing half-written
    code = _run(monkeypatch, str(TINY), "--out", str(tmp_path), "--quiet",
                "--set", "search.every-other-test.stepp=2")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "unknown key 'search.every-other-test.stepp'" in err


def test_a_config_names_the_plugin_module_for_a_fresh_process(tmp_path, cli_env):
    config = tmp_path / "plugin.toml"
    config.write_text('plugins = ["test_plugins"]\n' + TINY.read_text().replace(
        'strategy = "random"', 'strategy = "every-other-test"') + "\n[finetune]\nenabled = false\n")
    env = {**cli_env, "PYTHONPATH": str(Path(__file__).parent)}
    res = subprocess.run([sys.executable, "-m", "prunesearch", "run", str(config), "--out",
                          str(tmp_path / "out"), "--quiet"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(_rows(tmp_path / "out" / "tiny")) == 4  # every second of 7 ratios
    missing = tmp_path / "missing.toml"
    missing.write_text('plugins = ["no_such_plugin_module"]\n')
    res = subprocess.run([sys.executable, "-m", "prunesearch", "run", str(missing)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no_such_plugin_module" in res.stderr
    assert "Traceback" not in res.stderr
