"""How a candidate is written as an Optuna trial, the same in every study a run keeps (its
own journal file, a shared RDB study, random/tpe's asked trials): two minimized values
(1 - val_score, cost ratio on the run's axis) with their names, and the costs and arch as user
attributes the dashboard shows."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from prunesearch.evaluators import Result
from prunesearch.objective import CostAxis

DIRECTIONS = ["minimize", "minimize"]


def name_metrics(study: optuna.Study, axis: CostAxis) -> None:
    """The objectives' names the dashboard shows (optuna calls the API experimental: it is
    what we want on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["1 - val_score", f"{axis.name} ratio"])


def minimized(result: Result, axis: CostAxis) -> tuple[float, float]:
    """(1 - val_score, cost ratio on the run's axis): both minimized, as in the run's
    hypervolume; a failed result gets the worst accuracy."""
    return 1.0 - (result.val_score or 0.0), axis.ratio(result)


def trial_values(result: Result, axis: CostAxis) -> list[float] | None:
    """A candidate's two minimized values; None for a failed one (a FAIL trial has none)."""
    return list(minimized(result, axis)) if result.ok else None


def trial_attrs(result: Result) -> dict[str, Any]:
    """What the dashboard shows of a candidate beside its objectives."""
    attrs: dict[str, Any] = {"macs": result.macs, "params": result.params,
                             "arch": result.arch.to_json(), "seconds": result.seconds}
    if result.latency_us is not None:
        attrs["latency_us"] = result.latency_us
    if not result.ok:
        attrs["error"] = result.error
    return attrs
