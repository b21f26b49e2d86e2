"""The run directory (a user-facing contract: docs/architecture.md lists its files) and
reading one back."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prunesearch.errors import UserError
from prunesearch.fileio import renamed_fields, write_atomic, write_json
from prunesearch.front import FrontPoint, front_of, points_by_id
from prunesearch.metrics import Metric, metric_from_json
from prunesearch.objective import CostAxis
from prunesearch.pareto import (
    HV_REFERENCE,
    hv_objectives,
    hypervolume,
    hypervolume_history,
    pareto_indices,
)
from prunesearch.runs.journal import Candidate, CandidateJournal, read_journal
from prunesearch.runs.plots import PlotSeries, plot_fronts, plot_hv_histories

CONFIG, CANDIDATES, SUMMARY = "config.toml", "candidates.csv", "summary.json"
PARETO_CSV, PARETO_JSON, PLOT, LOG = "pareto.csv", "pareto.json", "pareto.png", "log.txt"
HV_CSV, HV_PLOT, LOCK = "hv_history.csv", "hv_history.png", ".lock"


class RunDir:
    """Creates or resumes `out/<name>`; writes every file of the contract. While open it holds
    an exclusive lock on the folder (`.lock`, released by the kernel if the process dies), so
    a second process cannot run, resume or fine-tune the same run at the same time."""

    def __init__(self, path: Path, created: bool = False) -> None:
        self.path = path
        self.created = created  # this call made the run (a failed start is undone)
        self._lock: IO[str] | None = None

    @classmethod
    def open(cls, out: Path, name: str, config_toml: str, resume: bool,
             changed_since: Callable[[Path], list[str]]) -> RunDir:
        """`out/<name>`, created (or resumed: `changed_since(path)` names the config keys
        that differ from the run's saved config and may not) with `config_toml` saved."""
        if out.exists() and not out.is_dir():
            raise UserError(f"--out '{out}' is a file; pass the folder that holds run "
                            f"directories (it is created if missing).")
        path = out / name
        if path.exists() and not path.is_dir():
            raise UserError(f"'{path}' is a file, not a run directory; choose another name "
                            f"with --set name=NEW or another --out DIR.")
        saved_cfg = path / CONFIG
        if saved_cfg.exists() and not resume:
            raise UserError(f"Run directory '{path}' already exists. Pass --resume to continue "
                            f"it, or choose another name with --set name=NEW or --out DIR.")
        if resume and not saved_cfg.exists():
            raise UserError(f"Nothing to resume: '{path}' has no {CONFIG}. Run without --resume "
                            f"to start it.")
        changed = changed_since(path) if resume else []
        if changed:
            raise UserError(f"--resume of '{path}' with a different config ({', '.join(changed)} "
                            f"changed); only the search budget and time limit may change. Use "
                            f"the same config, or start a new run with another name.")
        run = cls(path, created=not resume)
        path.mkdir(parents=True, exist_ok=True)
        run.lock()
        try:
            write_atomic(saved_cfg, config_toml)
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def existing(cls, path: Path) -> RunDir:
        """A finished run's folder, locked (for `prunesearch finetune`)."""
        run = cls(path)
        run.lock()
        return run

    def lock(self) -> None:
        handle = (self.path / LOCK).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"Run directory '{self.path}' is in use by another prunesearch "
                            f"process (pid {holder}). Wait for it to finish (or stop it), then "
                            f"run again with --resume.") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def discard(self) -> None:
        """Undo a failed start: remove what this run wrote, and the folder if it is empty
        (anything else found there is left alone)."""
        self.close()
        for name in (CONFIG, LOG, LOCK):
            (self.path / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach_log(self) -> logging.Handler:
        handler = logging.FileHandler(self.path / LOG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("prunesearch").addHandler(handler)
        logging.getLogger("prunesearch").setLevel(logging.INFO)
        return handler

    def journal(self, dense_macs: int) -> CandidateJournal:
        return CandidateJournal(self.path / CANDIDATES, dense_macs)

    def write_results(self, candidates: list[Candidate], dense: dict[str, Any],
                      summary: dict[str, Any], title: str, finetuned: list[dict[str, Any]],
                      main_variant: str | None, axis: CostAxis
                      ) -> tuple[dict[str, Any], list[FrontPoint]]:
        """pareto.csv/json, summary.json and the plot, from the journal's candidates and the
        fine-tuned models (`main_variant`: the run config's fine-tuning, shown in pareto.*).
        The front and hypervolume are on `axis` (MACs unless the run searched another cost);
        `dense` holds the full network's cost on it."""
        metric = metric_from_json(summary.get("metric"))
        score_meaning = (f"scores are {metric.to_json()['score']} (higher is better; "
                         f"{metric.name} = {'1 / score' if metric.lower_is_better else 'score'})")
        ok = [c for c in candidates if c.result.ok]
        test = {r["id"]: r["test_score"] for r in finetuned if r["variant"] == main_variant}
        front = front_of(candidates, axis, dense["macs"], test)
        rows = [p.row() for p in front]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "arch": json.dumps(r["arch"], separators=(",", ":"))}
                         for r in rows)
        write_atomic(self.path / PARETO_CSV, buf.getvalue())
        write_json(self.path / PARETO_JSON, {
            "score": f"{score_meaning}; val_score: proxy (weight sharing, adaptive BN) on the "
                     f"validation subset; test_score: after fine-tuning ({main_variant}), on the "
                     f"test set",
            "cost_ratio": f"{axis.label} / the dense model's",
            "front": rows})
        hv = hypervolume([p.val_score for p in front], [p.cost_ratio for p in front], 1.0)
        costs = {c.id: axis.of(c.result) for c in candidates}
        summary = {
            **summary,
            "objective": axis.name,
            "dense": dense,
            "n_evals": len(candidates),
            "n_failed": len(candidates) - len(ok),
            "front_size": len(rows),
            "hypervolume": {"value": hv, "reference_point": list(HV_REFERENCE),
                            "objectives": hv_objectives(axis.label), "score": "val_score (proxy)",
                            "computed_with": "pymoo.indicators.hv.HV"},
            "finetune": _finetune_summary(finetuned, main_variant, costs, axis.dense),
            "macs_convention": "multiply-accumulates for one example as counted by "
                               "torch_pruning.utils.count_ops_and_params (conv/linear MACs plus "
                               "the element-wise ops of norms, activations and pooling)"
                               + ("; SPARSE MACs: a masked layer counts only its kept "
                                  "(non-zero) weights" if summary.get("sparse_macs") else ""),
        }
        write_json(self.path / SUMMARY, summary)
        view = RunView.load(self.path)
        history = view.hv_history()
        write_atomic(self.path / HV_CSV, "evaluations,hypervolume\n" + "".join(
            f"{i + 1},{hv:.6f}\n" for i, hv in enumerate(history)))
        plot_hv_histories([(summary["strategy"], history)], self.path / HV_PLOT, axis.label)
        plot_fronts([view.series()], self.path / PLOT, title)
        return summary, front


def _finetune_summary(rows: list[dict[str, Any]], main_variant: str | None,
                      costs: dict[int, float], dense_cost: float) -> dict[str, Any]:
    """Per fine-tuning variant: its points, the final front on test accuracy (against the
    run's cost axis, `costs` by candidate id) and its HV."""
    variants: dict[str, Any] = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        points = sorted((r for r in rows if r["variant"] == name), key=lambda r: costs[r["id"]])
        acc = [r["test_score"] for r in points]
        cost = [costs[r["id"]] / dense_cost for r in points]
        final = pareto_indices(acc, cost)
        variants[name] = {
            "points": points,
            "final_front": [{**{k: points[i][k] for k in ("id", "macs", "params", "macs_ratio",
                                                           "proxy_val_score", "test_score")},
                             "cost_ratio": round(cost[i], 6)} for i in final],
            "hypervolume": {"value": hypervolume([acc[i] for i in final],
                                                 [cost[i] for i in final], 1.0),
                            "reference_point": list(HV_REFERENCE), "score": "test_score"},
            "seconds": sum(r["seconds"] for r in points),
        }
    return {"main_variant": main_variant, "variants": variants}


@dataclass(frozen=True)
class RunView:
    """A finished (or running) run read back from its directory, for show/plot."""

    path: Path
    summary: dict[str, Any]
    candidates: list[Candidate]
    front: list[FrontPoint]

    @property
    def metric(self) -> Metric:
        """What the run's scores measure (runs from before metrics were named: accuracy)."""
        return metric_from_json(self.summary.get("metric"))

    @property
    def final_points(self) -> list[dict[str, Any]]:
        """Fine-tuned points of the run config's variant (test accuracy)."""
        ft = self.summary.get("finetune") or {}
        return (ft.get("variants") or {}).get(ft.get("main_variant"), {}).get("points", [])

    @classmethod
    def load(cls, path: Path) -> RunView:
        if not (path / CANDIDATES).exists() or not (path / SUMMARY).exists():
            raise UserError(f"'{path}' is not a finished run directory (it needs {CANDIDATES} "
                            f"and {SUMMARY}); pass a directory made by `prunesearch run`.")
        try:
            summary = renamed_fields(json.loads((path / SUMMARY).read_text()))
            front = renamed_fields(json.loads((path / PARETO_JSON).read_text())["front"])
            axis = CostAxis.read_back(summary)
            for row in front:  # runs from before cost axes have no cost_ratio
                row.setdefault("cost_ratio", axis.ratio(row))
            points = [FrontPoint.from_row(row) for row in front]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(f"Cannot read the results of '{path}': {err}. Re-run the job with "
                            f"--resume to rewrite them.") from None
        return cls(path, summary, read_journal(path / CANDIDATES), points)

    def axis(self, name: str | None = None) -> CostAxis:
        """The run's cost axis (the one it searched on), or the one called `name`."""
        try:
            return CostAxis.read_back(self.summary, name)
        except ValueError as err:
            raise UserError(f"Run '{self.path}': {err}. Runs record predicted latency when "
                            f"searched with search.objective = 'latency' or search.max_latency; "
                            f"use MACs instead (export --max-flops, plot --x macs), or search "
                            f"again with a latency objective.") from None

    def candidate_points(self, ids: list[int]) -> list[FrontPoint]:
        """Successful candidates by id (on the front or not), as points like the front's."""
        return points_by_id(self.candidates, ids, self.axis(), self.summary["dense"]["macs"],
                            f"'{self.path}'")

    def hv_history(self) -> list[float]:
        """Proxy hypervolume after each evaluation, in journal order, on the run's axis."""
        axis = self.axis()
        return hypervolume_history([c.result.val_score for c in self.candidates],
                                   [axis.ratio(c.result) for c in self.candidates], 1.0)

    def series(self, axis_name: str | None = None) -> PlotSeries:
        """What the plot draws, against the run's cost axis or the one called `axis_name`."""
        axis = self.axis(axis_name)
        ok = [c.result for c in self.candidates if c.result.ok]
        cost, acc = [axis.of(r) for r in ok], [r.val_score for r in ok]
        front = pareto_indices(acc, cost)
        by_id = {c.id: c.result for c in self.candidates}
        final = sorted((axis.of(by_id[r["id"]]), r["test_score"]) for r in self.final_points)
        dense = self.summary["dense"]
        return PlotSeries(self.path.name, axis.name, cost, acc, [cost[i] for i in front],
                          [acc[i] for i in front], axis.dense, dense.get("val_score"),
                          [c for c, _ in final], [a for _, a in final], dense.get("test_score"),
                          bool(self.summary.get("sparse_macs")), self.metric)
