"""The Python API: README's example runs as written (an in-memory network and TensorDatasets),
and a run made that way is reopened, fine-tuned, built and exported from Python."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunesearch
from prunesearch.errors import UserError

README = Path(__file__).parent.parent / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    found = re.search(r"<!-- api-example -->\n```python\n(.*?)```\n<!-- /api-example -->", text,
                      re.S)
    assert found, "README.md lost its marked Python API example"
    return found.group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """README's example, run as written in a fresh folder; its names afterwards."""
    folder = tmp_path_factory.mktemp("readme")
    here = Path.cwd()
    names: dict = {}
    try:
        os.chdir(folder)
        exec(compile(_readme_example(), str(README), "exec"), names)
    finally:
        os.chdir(here)
    return folder, names


def test_the_readme_example_searches_fine_tunes_builds_and_exports(example):
    folder, names = example
    run, net, model, x = names["run"], names["net"], names["model"], names["x"]
    assert isinstance(run, prunesearch.app.api.Run) and run.path == Path("runs/digits")
    costs = [p.cost_ratio for p in run.front]
    assert run.front and costs == sorted(costs)
    tuned = [p for p in run.front if p.test_score is not None]
    assert tuned and all(0.5 < p.test_score <= 1 for p in tuned)  # 10 classes: chance is 0.1
    assert run.summary["n_evals"] == 40
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in model.parameters())
    exported = folder / "exports" / "digits"
    assert {"model.pt", "model.onnx", "meta.json", "arch.json"} <= {
        f.name for f in exported.iterdir()}
    loaded = prunesearch.load(exported, model=model)
    with torch.no_grad():
        assert torch.allclose(loaded(x[:16]), net(x[:16]), atol=1e-5)
    meta = json.loads((exported / "meta.json").read_text())
    assert meta["id"] == run.front[0].id and meta["macs"] == run.front[0].macs


def test_a_run_over_given_objects_needs_them_again(example):
    folder, names = example
    with pytest.raises(UserError, match="open_run"):
        prunesearch.open_run(folder / "runs" / "digits")
    train, val, test = names["train"], names["val"], names["test"]
    other = torch.utils.data.TensorDataset(test.tensors[0][:100], test.tensors[1][:100])
    with pytest.raises(UserError, match="differ"):
        prunesearch.open_run(folder / "runs" / "digits", model=names["model"], train=train,
                             val=val, test=other)
    with pytest.raises(UserError, match="load"):
        prunesearch.load(folder / "exports" / "digits")  # which network was it cut from?


def test_the_cli_says_a_given_network_run_is_for_python(example, cli_env):
    folder, _ = example
    res = subprocess.run([sys.executable, "-m", "prunesearch", "export",
                          str(folder / "runs" / "digits"), "--id", "0", "-o",
                          str(folder / "cli-export")], env=cli_env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "open_run" in res.stderr and "Traceback" not in res.stderr
    assert not (folder / "cli-export").exists()


def test_a_reopened_run_fine_tunes_a_chosen_point(example):
    folder, names = example
    run = prunesearch.open_run(folder / "runs" / "digits", model=names["model"],
                               train=names["train"], val=names["val"], test=names["test"],
                               progress=False)
    smallest = run.front[0]
    run.finetune(ids=[smallest.id], epochs=1)
    assert run.front[0].id == smallest.id and run.front[0].test_score is not None
    tuned = run.build(smallest.id)  # now from its fine-tuned weights
    assert tuned(names["x"][:4]).shape == (4, 10)
