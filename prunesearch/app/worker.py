"""`prunesearch worker`: read back what `prunesearch run --storage URL` published in its
shared study (app.run.share_search: config, the weights every process scores on, the mode,
done) and evaluate the run's candidates until the run says it is done.

A worker never trains: the run produces the dense model (and supernet) once and publishes its
checkpoint's path and SHA-256; a worker on another machine finds it there (a shared cache
folder) or stops with a clear error. The config read from the storage is data: it may name the
user's own code (a `module:factory` model or dataset, plugins), which a worker imports only
with --trust-code.
"""

from __future__ import annotations

import random
import time
import tomllib
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from prunesearch.app.config import config_from_dict
from prunesearch.app.prepare import (
    Prepared,
    load_run_data,
    prepared_over,
    resolve_device,
    space_of,
)
from prunesearch.config import RunConfig
from prunesearch.errors import UserError
from prunesearch.fileio import file_sha256
from prunesearch.models import build_model
from prunesearch.scaleout.tables import (
    HEARTBEAT_S,
    MODES,
    PUBLISHED,
    RUN_BEAT,
    RUN_BEAT_S,
    SharedStudy,
    StudyMissing,
)
from prunesearch.scaleout.worker import CandidateWorker
from prunesearch.strategies import create_strategy
from prunesearch.training.dense import load_weights


def _names_code(tree: dict[str, Any]) -> list[str]:
    """The user code a config would import: plugins and module:factory/fn specs."""
    model, data, task = tree.get("model", {}), tree.get("data", {}), tree.get("task", {})
    specs = [model.get("name", ""), data.get("dataset", ""), task.get("loss", ""),
             task.get("metric", "")]
    return [*tree.get("plugins", []), *(s for s in specs if isinstance(s, str) and ":" in s)]


def _published(url: str, name: str, wait_s: float) -> tuple[SharedStudy, dict[str, Any]]:
    """The run's study and what it published, waiting up to `wait_s` for the run to create
    and publish it (it trains the dense model first)."""
    deadline = time.monotonic() + wait_s
    shared: SharedStudy | None = None
    while True:
        missing: StudyMissing | None = None
        try:
            # opened once: each opening holds pooled connections, and a server refuses
            # clients past max_connections (100 by default) long before a run publishes
            shared = shared or SharedStudy(url, name, create=False)
            attrs = {k: shared.attr(k) for k in PUBLISHED}
            if all(v is not None for v in attrs.values()):
                return shared, attrs
        except StudyMissing as err:
            missing = err
        if time.monotonic() > deadline:
            raise missing or UserError(
                f"Study '{name}' holds no published run after {wait_s:.0f} s; start "
                f"`prunesearch run CONFIG --storage URL` (the study is named after the run), "
                f"check --study, or wait longer with --wait.")
        time.sleep(1.0)


def _config(shared: SharedStudy, text: Any, trust_code: bool) -> RunConfig:
    source = f"(study '{shared.name}')"
    try:
        tree = tomllib.loads(text)
    except (TypeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"The config stored with study '{shared.name}' cannot be read ({err}); "
                        f"the storage was edited. Start the run again under a new name.") from None
    if (code := _names_code(tree)) and not trust_code:
        raise UserError(f"The run's config names code this worker would import "
                        f"({', '.join(map(str, code))}); a study's config comes from the "
                        f"storage, so a worker runs such code only with --trust-code. Pass it "
                        f"if you trust everyone who can write to that database.")
    return config_from_dict(tree, source)


def _prepare(cfg: RunConfig, weights: Any, order: Any, dev: torch.device) -> Prepared:
    """The run's data, space and evaluator over the weights it published, read from disk and
    checked by hash (the weights are never trained here), keeping the run's channel order
    (ranked on its dense weights, which a supernet stage trained further)."""
    if not isinstance(weights, dict) or not {"path", "sha256", "data"} <= weights.keys():
        raise UserError("The weights entry of the shared study is malformed; the storage was "
                        "edited. Start the run again under a new name.")
    path = Path(str(weights["path"]))
    fix = (f"Workers read the run's weights from '{path}': share that folder with this "
           f"machine at the same path (PRUNESEARCH_CACHE), or run the worker beside the run.")
    if not path.is_file():
        raise UserError(f"The run's weights '{path}' are not on this machine. {fix}")
    if file_sha256(path) != weights["sha256"]:
        raise UserError(f"'{path}' is not the file the run published (its SHA-256 differs: "
                        f"retrained or edited since). {fix}")
    data = load_run_data(cfg, dev)
    if data.fingerprint() != weights["data"]:
        raise UserError(f"This machine's dataset '{cfg.data.dataset}' differs from the run's "
                        f"(its fingerprint does not match); give workers the same data files "
                        f"(data.data_dir) as the run.")
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, cfg.model.width_mult)
    load_weights(model, path, fix)  # every weight and buffer: the initial draw does not matter
    model.to(dev).eval()
    space = space_of(cfg.space, model, data.train_x[:1])
    try:
        space.fix_channel_order(order)
    except ValueError as err:
        raise UserError(f"The channel order stored with study '{cfg.name}' does not fit the "
                        f"run's space ({err}); the storage was edited. Start the run again "
                        f"under a new name.") from None
    return prepared_over(cfg, data, model, {}, None, space, dev, {}, latency_table=True)


class RunWatch:
    """Tells a run that is gone (killed, or its machine lost) from one that is slow: its
    heartbeat count unchanged for `wait_s` seconds of this machine's clock."""

    def __init__(self, study_name: str, wait_s: float) -> None:
        self.study_name, self.wait_s = study_name, wait_s
        self.beat: Any = None
        self.since = time.monotonic()

    def check(self, beat: Any) -> None:
        now = time.monotonic()
        if beat != self.beat:
            self.beat, self.since = beat, now
        elif now - self.since > self.wait_s:
            raise UserError(f"The run that owns study '{self.study_name}' has given no sign of "
                            f"life for {self.wait_s:.0f} s (its heartbeat stopped: it was "
                            f"killed, or its machine is gone), so this worker stops. Resume the "
                            f"run (`prunesearch run CONFIG --storage URL --resume`) and start "
                            f"the workers again; --wait sets how long a worker waits.")


def run_worker(url: str, study_name: str, device: str = "auto", trust_code: bool = False,
               wait_s: float = 600.0, batch: int = 1, progress: bool = True) -> int:
    """Evaluate the study's candidates, `batch` at a time, until its run is done; how many
    this worker evaluated. `progress`: a live line on stderr (this worker's count, the
    study's claimed budget)."""
    dev = resolve_device(device)
    shared, attrs = _published(url, study_name, wait_s)
    cfg = _config(shared, attrs["config"], trust_code)
    mode = attrs["mode"]
    if mode not in MODES:
        raise UserError(f"The shared study's mode '{mode}' is not one of {MODES}; the storage "
                        f"was edited. Start the run again under a new name.")
    prep = _prepare(cfg, attrs["weights"], attrs["order"], dev)
    sampler = None
    if mode == "sample":  # each worker its own sampler; seeds differ or they would agree
        strategy = create_strategy(cfg.search.strategy, cfg.search.options_of(cfg.search.strategy))
        sampler = strategy.make_sampler(random.SystemRandom().randrange(2**31))  # type: ignore[attr-defined]
    worker = CandidateWorker(shared, prep.space, prep.evaluator,
                             prep.cost_axis(cfg.search.objective), mode, sampler, prep.gate,
                             batch)
    shared.waker.listen()
    bar = Progress(TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress)
    task = bar.add_task(f"worker on study '{study_name}' ({mode} mode, {dev})")
    watch = RunWatch(study_name, wait_s)
    looked = -RUN_BEAT_S  # the run's attributes are read on their own interval, and when idle
    with bar:
        while True:
            if time.monotonic() - looked >= RUN_BEAT_S:
                attrs, looked = shared.attrs(), time.monotonic()
                if attrs.get("done"):
                    worker.flush()
                    break
                watch.check(attrs.get(RUN_BEAT))
            if worker.step():
                shared.waker.worked()
            else:
                shared.waker.wait(HEARTBEAT_S)
                looked = -RUN_BEAT_S
            worker.landed.clear()  # the run records them; the sampler has learned them
            if progress:
                claimed = "" if worker.slots is None else "; study {}/{} claimed".format(
                    *worker.slots)
                bar.update(task, description=f"worker on study '{study_name}': evaluated "
                                             f"{worker.evaluated}{claimed}")
    shared.close()
    return worker.evaluated
