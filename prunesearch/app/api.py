"""The Python API: a search over the user's own network and datasets, in a notebook or a
script, and the same object for a finished run. The CLI's commands are the same functions:

    run = prunesearch.search(model, train=train_ds, val=val_ds, test=test_ds,
                             config={"search": {"strategy": "tpe", "budget": 100}},
                             out="runs/mine")
    run.front; run.finetune(ids=[3]); net = run.build(run.front[0])
    run.export(run.front[0], "exports/a", formats=["pt", "onnx"])
    run = prunesearch.open_run("runs/mine", model=model, train=train_ds, val=val_ds,
                               test=test_ds)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from prunesearch.app.config import config_from_dict, load_config
from prunesearch.app.export import export_run, export_spec, slim_model
from prunesearch.app.finetune import finetune_run
from prunesearch.app.prepare import Given, Prepared, prepare
from prunesearch.app.run import run_job
from prunesearch.config import RunConfig, read_config_tree
from prunesearch.data.given import GIVEN_DATA, given_splits
from prunesearch.errors import UserError
from prunesearch.fileio import save_state, write_json
from prunesearch.front import FrontPoint
from prunesearch.runs.export import GIVEN_MODEL
from prunesearch.runs.rundir import RunView

DENSE_WEIGHTS = "dense.pt"  # a given network's dense weights, kept in its run folder
GIVEN_FILE = "given.json"  # what open_run checks the given data against

DataArg = Dataset | str | None


def _config_tree(config: Mapping[str, Any] | str | Path | None) -> tuple[dict[str, Any], str]:
    if config is None:
        return {}, "(Python API)"
    if isinstance(config, str | Path):
        return read_config_tree(config)
    if not isinstance(config, Mapping):
        raise UserError(f"config must be a dict of sections (like the TOML file), a TOML "
                        f"path or None; got {type(config).__name__}.")
    return json.loads(json.dumps(config)), "(Python API config)"


def _name_inputs(tree: dict[str, Any], model: nn.Module | str, train: DataArg, val: DataArg,
                 test: DataArg) -> None:
    """Write into the config tree what names the network and the data, or marks them as
    given in Python; refuse a mix that means nothing."""
    if isinstance(model, str):
        tree.setdefault("model", {})["name"] = model
    elif isinstance(model, nn.Module):
        tree.setdefault("model", {})["name"] = GIVEN_MODEL
    else:
        raise UserError(f"model must be an nn.Module, a zoo name or 'package.module:factory'; "
                        f"got {type(model).__name__}.")
    if isinstance(train, str) or train is None:
        if val is not None or test is not None:
            raise UserError("val= and test= go with a train Dataset; a dataset name (train="
                            "'fashion-mnist') brings its own validation and test splits.")
        if train is not None:
            tree.setdefault("data", {})["dataset"] = train
        return
    if test is None:
        raise UserError("Pass test= with a train Dataset: fine-tuned points are scored on it, "
                        "and the search never reads it.")
    if isinstance(val, str) or isinstance(test, str):
        raise UserError("val= and test= must be Datasets when train= is one.")
    tree.setdefault("data", {})["dataset"] = GIVEN_DATA


def _given(cfg: RunConfig, model: nn.Module | str | None, train: DataArg, val: DataArg,
           test: DataArg, trained: bool) -> Given | None:
    """What the run takes as objects rather than names (None: everything has a name)."""
    network = model if cfg.model.name == GIVEN_MODEL else None
    data = None
    if cfg.data.dataset == GIVEN_DATA:
        data = given_splits(train, val, test, cfg.seed, cfg.data.val_size)  # type: ignore[arg-type]
    return None if network is None and data is None else Given(network, data, trained)


class Run:
    """A run folder and what made it: `front` (FrontPoint: id, arch, macs, macs_ratio,
    params, latency_us, cost_ratio, val_score, test_score), `summary`, `config`; `finetune`,
    `build` and `export` work on it as the CLI's commands do."""

    def __init__(self, path: Path, given: Given | None = None, device: str = "auto",
                 progress: bool = True) -> None:
        self.path = path
        self._given, self._device, self._progress = given, device, progress
        self._prep: Prepared | None = None
        self._read()

    def _read(self) -> None:
        view = RunView.load(self.path)
        self.front: list[FrontPoint] = view.front
        self.summary: dict[str, Any] = view.summary
        self.config: RunConfig = load_config(self.path / "config.toml", run_dir=self.path)

    def __repr__(self) -> str:
        return f"Run('{self.path}', {len(self.front)} front points)"

    def _point(self, point: FrontPoint | int) -> FrontPoint:
        if isinstance(point, FrontPoint):
            return point
        found = [p for p in self.front if p.id == point]
        return found[0] if found else RunView.load(self.path).candidate_points([point])[0]

    def finetune(self, ids: Sequence[int] | None = None, **options: Any) -> Run:
        """Fine-tune front points (these candidate ids, or the config's targets), with
        `finetune.*` options overridden (e.g. epochs=3, kd=True); the front's test scores
        update. Same as `prunesearch finetune`."""
        overrides = [f"finetune.{k}={json.dumps(v)}" for k, v in options.items()]
        if ids is not None:
            overrides.append(f"finetune.ids={json.dumps([int(i) for i in ids])}")
        finetune_run(self.path, overrides, device=self._device, progress=self._progress,
                     given=self._given)
        self._prep = None
        self._read()
        return self

    def build(self, point: FrontPoint | int) -> nn.Module:
        """The point as a physically smaller nn.Module on the CPU (eval mode): its fine-tuned
        weights when the run's fine-tuning trained it, else the sliced weights the search
        scored, BatchNorm recalibrated."""
        point = self._point(point)
        if self._prep is None:
            self._prep = prepare(self.config, torch.device("cpu"), self._progress,
                                 latency_table=False, given=self._given)
        spec = export_spec(self.config, self._prep, point, self._given)
        model, _ = slim_model(self.path, self.config, self._prep, point, spec, self._given)
        return model.eval()

    def export(self, point: FrontPoint | int, out: str | Path,
               formats: Sequence[str] = ("pt", "ts", "onnx")) -> Path:
        """Write the point as files (`prunesearch export`): model.pt + arch.json, model.ts,
        model.onnx (checked with onnxruntime), meta.json with costs, test score and latency.
        Load it back with prunesearch.load(out) (a given network: load(out, model=net))."""
        return export_run(self.path, self._point(point).id, None, list(formats), Path(out),
                          progress=self._progress, given=self._given)


def search(model: nn.Module | str, train: DataArg = None, val: DataArg = None,
           test: DataArg = None, *, config: Mapping[str, Any] | str | Path | None = None,
           out: str | Path | None = None, trained: bool = True, resume: bool = False,
           device: str = "auto", progress: bool = True) -> Run:
    """Search `model` (an nn.Module, a zoo name or 'package.module:factory') on `train`
    (Datasets of (input, label) pairs, with `test` and optionally `val`, else held out of
    train; or a dataset name) with `config` (a dict of sections like the TOML file, or a TOML
    path), fine-tune the chosen front points, and return the run. `out`: the run folder
    (default runs/<name>). `trained`: the module's weights are the dense model as they are;
    False trains it first with model.train."""
    tree, source = _config_tree(config)
    _name_inputs(tree, model, train, val, test)
    if out is not None:
        tree["name"] = Path(out).name
    cfg = config_from_dict(tree, source)
    given = _given(cfg, model, train, val, test, trained)
    parent = Path(out).parent if out is not None else Path("runs")

    def keep_dense_weights(run_dir: Path, prep: Prepared) -> None:
        """The given network's dense weights and the given data's fingerprint, so the run
        can be reopened (open_run) with the same architecture and data."""
        if given is None:
            return
        if given.model is not None:
            dense = prep.dense_model if prep.dense_model is not None else prep.model
            save_state(run_dir / DENSE_WEIGHTS, dense)
        write_json(run_dir / GIVEN_FILE, {"data_fingerprint": prep.data.fingerprint()})

    outcome = run_job(cfg, parent, resume=resume, device=device, progress=progress,
                      given=given, on_start=keep_dense_weights)
    if given is not None and given.model is not None:
        given = Given(_with_dense_weights(given.model, outcome.run_dir), given.data)
    return Run(outcome.run_dir, given, device, progress)


def _with_dense_weights(model: nn.Module, run_dir: Path) -> nn.Module:
    """A copy of `model` holding the dense weights the run searched (saved in its folder)."""
    path = run_dir / DENSE_WEIGHTS
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        dense = copy.deepcopy(model).cpu()
        dense.load_state_dict(state)
    except (OSError, RuntimeError) as err:
        raise UserError(f"'{path}' does not hold weights of the network passed as model= "
                        f"({str(err).splitlines()[0]}); pass the same architecture the run "
                        f"was searched with.") from None
    return dense


def _recorded_fingerprint(path: Path) -> str | None:
    try:
        return json.loads((path / GIVEN_FILE).read_text()).get("data_fingerprint")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"'{path / GIVEN_FILE}' is missing or unreadable: the folder was "
                        f"edited; search again to remake it.") from None


def open_run(path: str | Path, model: nn.Module | None = None, train: Dataset | None = None,
             val: Dataset | None = None, test: Dataset | None = None, *,
             device: str = "auto", progress: bool = True) -> Run:
    """A finished run as a Run. A run made from a network or datasets handed over in Python
    needs them again (the folder keeps the dense weights, never code): the same architecture
    as `model` and the same datasets."""
    path = Path(path)
    RunView.load(path)  # a finished run folder, or a clear error
    cfg = load_config(path / "config.toml", run_dir=path)
    needs_model, needs_data = cfg.model.name == GIVEN_MODEL, cfg.data.dataset == GIVEN_DATA
    if (needs_model and model is None) or (needs_data and (train is None or test is None)):
        raise UserError(f"'{path}' was searched over a network or datasets handed to "
                        f"prunesearch.search() in Python; reopen it with the same ones: "
                        f"open_run(path, model=..., train=..., val=..., test=...).")
    given = _given(cfg, model, train, val, test, trained=True)
    if given is not None:
        if given.data is not None and given.data.fingerprint() != _recorded_fingerprint(path):
            raise UserError(f"The datasets passed to open_run differ from those '{path}' was "
                            f"searched on (their fingerprints do not match); pass the same "
                            f"train, val and test datasets.")
        if given.model is not None:
            given = Given(_with_dense_weights(given.model, path), given.data)
    return Run(path, given, device, progress)
