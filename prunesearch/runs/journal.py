"""candidates.csv: every evaluated candidate, appended as it arrives and never rewritten.

A SIGKILL can leave a half-written last line; `read_journal` drops it (the candidate is then
evaluated again on resume, which is the only way to get its numbers), and `CandidateJournal`
truncates the file to its last complete line before appending.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunesearch.evaluators import Result
from prunesearch.fileio import append_row, cell, open_journal, parse_rows
from prunesearch.spaces import Arch

COLUMNS = ["id", "strategy", "arch", "macs", "params", "macs_ratio", "val_score", "stage",
           "seconds", "status", "error", "latency_us"]


@dataclass(frozen=True)
class Candidate:
    id: int
    strategy: str
    stage: str
    result: Result


def read_journal(path: Path) -> list[Candidate]:
    return parse_rows(path, _candidate)


def _candidate(row: dict[str, str]) -> Candidate:
    acc = cell(row, "val_score", lambda v: float(v) if v else None)
    latency = (cell(row, "latency_us", lambda v: float(v) if v else None)
               if row.get("latency_us") is not None else None)  # journals from before latency
    result = Result(cell(row, "arch", Arch.from_json), cell(row, "macs", int),
                    cell(row, "params", int), acc, cell(row, "seconds", float),
                    cell(row, "status", str), cell(row, "error", str), latency_us=latency)
    return Candidate(cell(row, "id", int), cell(row, "strategy", str), cell(row, "stage", str),
                     result)


class CandidateJournal:
    """Appends candidates to candidates.csv, one flushed and fsynced line each."""

    def __init__(self, path: Path, dense_macs: int) -> None:
        self.path = path
        self.dense_macs = dense_macs
        self.candidates = read_journal(path)
        open_journal(path, COLUMNS)

    def append(self, result: Result, strategy: str, stage: str = "search") -> Candidate:
        cand = Candidate(len(self.candidates), strategy, stage, result)
        row = [cand.id, strategy, result.arch.to_json(), result.macs, result.params,
               f"{result.macs / self.dense_macs:.6f}",
               "" if result.val_score is None else f"{result.val_score:.6f}", stage,
               f"{result.seconds:.4f}", result.status, result.error,
               "" if result.latency_us is None else f"{result.latency_us:.3f}"]
        append_row(self.path, row)
        self.candidates.append(cand)
        return cand
