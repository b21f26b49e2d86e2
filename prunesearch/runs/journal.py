"""candidates.csv: every evaluated candidate, appended as it arrives and never rewritten.

A SIGKILL can leave a half-written last line; `read_journal` drops it (the candidate is then
evaluated again on resume, which is the only way to get its numbers), and `CandidateJournal`
truncates the file to its last complete line before appending.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunesearch.errors import UserError
from prunesearch.evaluators import Result
from prunesearch.fileio import append_row, open_journal, read_rows
from prunesearch.spaces import Arch

COLUMNS = ["id", "strategy", "arch", "macs", "params", "macs_ratio", "val_acc", "stage",
           "seconds", "status", "error"]


@dataclass(frozen=True)
class Candidate:
    id: int
    strategy: str
    stage: str
    result: Result


def read_journal(path: Path) -> list[Candidate]:
    rows = read_rows(path)
    out = []
    for row in rows:
        try:
            acc = float(row["val_acc"]) if row["val_acc"] else None
            result = Result(Arch.from_json(row["arch"]), int(row["macs"]), int(row["params"]),
                            acc, float(row["seconds"]), row["status"], row["error"])
            out.append(Candidate(int(row["id"]), row["strategy"], row["stage"], result))
        except (KeyError, ValueError, TypeError) as err:
            raise UserError(f"{path} has a malformed row ({row}): {err}. The run's journal was "
                            f"edited or corrupted; restore it or start a new run.") from None
    return out


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
               "" if result.val_acc is None else f"{result.val_acc:.6f}", stage,
               f"{result.seconds:.4f}", result.status, result.error]
        append_row(self.path, row)
        self.candidates.append(cand)
        return cand
