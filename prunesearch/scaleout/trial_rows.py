"""Finished candidates written into Optuna's own RDB tables in a handful of statements.

optuna's storage API writes a trial one parameter and one attribute at a time (a statement,
often two, each): about 40 round trips for a resnet20 candidate, which a worker across a
20 ms link pays on every candidate. A shared study's trials are only ever written finished
(scaleout/tables.py), so one INSERT per table does it: the trials, then their parameters,
values and user attributes, each as one executemany. The rows are what optuna writes
(its own SQLAlchemy tables and value encodings), so optuna, the dashboard and `load_study`
read them like any trial; tests/test_workers.py reads them back through optuna.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from optuna.distributions import IntDistribution, distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import TrialState

TRIALS = models.TrialModel.__table__
PARAMS = models.TrialParamModel.__table__
VALUES = models.TrialValueModel.__table__
USER_ATTRS = models.TrialUserAttributeModel.__table__


@dataclass(frozen=True)
class FinishedTrial:
    """One candidate's trial: its genes by dimension name (integer parameters over each
    dimension's choices, as random/tpe suggest them), values (None: failed), user attributes
    and when its evaluation started."""

    genes: dict[str, tuple[int, int]]  # name -> (gene, number of choices)
    values: list[float] | None
    attrs: dict[str, Any]
    started: datetime


def insert_trials(conn: sa.Connection, study_id: int, first_number: int,
                  trials: list[FinishedTrial]) -> list[int]:
    """Insert `trials` numbered from `first_number`; their trial ids, in order."""
    now = datetime.now()
    rows = [{"number": first_number + i, "study_id": study_id,
             "state": TrialState.COMPLETE if t.values is not None else TrialState.FAIL,
             "datetime_start": t.started, "datetime_complete": now}
            for i, t in enumerate(trials)]
    ids = [int(i) for i in conn.execute(
        sa.insert(TRIALS).returning(TRIALS.c.trial_id, sort_by_parameter_order=True),
        rows).scalars()]
    params = [{"trial_id": tid, "param_name": name, "param_value": float(gene),
               "distribution_json": distribution_to_json(IntDistribution(0, n - 1))}
              for tid, t in zip(ids, trials, strict=True)
              for name, (gene, n) in t.genes.items()]
    values = [{"trial_id": tid, "objective": k, "value": stored, "value_type": kind}
              for tid, t in zip(ids, trials, strict=True) for k, v in enumerate(t.values or [])
              for stored, kind in [models.TrialValueModel.value_to_stored_repr(v)]]
    attrs = [{"trial_id": tid, "key": key, "value_json": json.dumps(value)}
             for tid, t in zip(ids, trials, strict=True) for key, value in t.attrs.items()]
    for table, table_rows in ((PARAMS, params), (VALUES, values), (USER_ATTRS, attrs)):
        if table_rows:  # one INSERT of many rows: one round trip (executemany pipelines)
            conn.execute(sa.insert(table).values(table_rows))
    return ids
