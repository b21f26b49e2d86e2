"""finetune.csv: one row per trained network (fine-tuned front points and the networks that
training strategies train themselves), appended and never rewritten, with the weights in
finetuned/<variant>/<id>.pt. A killed stage resumes with the next network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from prunesearch.fileio import append_row, cell, open_journal, parse_rows, save_state

FINETUNE_CSV, WEIGHTS_DIR = "finetune.csv", "finetuned"
COLUMNS = ["id", "variant", "init", "kd", "epochs", "macs", "params", "macs_ratio",
           "proxy_val_score", "val_score", "test_score", "seconds", "weights"]


def read_finetuned(run_dir: Path) -> list[dict[str, Any]]:
    return parse_rows(run_dir / FINETUNE_CSV, _trained)


def _trained(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {c: cell(row, c, str) for c in COLUMNS}
    for key in ("id", "epochs", "macs", "params"):
        typed[key] = cell(row, key, int)
    for key in ("macs_ratio", "proxy_val_score", "val_score", "test_score", "seconds"):
        typed[key] = cell(row, key, float)
    typed["kd"] = cell(row, "kd", _bool)
    typed["weights"] = cell(row, "weights", _inside_run)
    return typed


def _inside_run(text: str) -> str:
    path = Path(text)
    if path.is_absolute() or ".." in path.parts or path.parts[:1] != (WEIGHTS_DIR,):
        raise ValueError(f"expected a path under {WEIGHTS_DIR}/ in the run directory")
    return text


def _bool(text: str) -> bool:
    if text not in ("True", "False"):
        raise ValueError("expected True or False")
    return text == "True"


def save_trained(run_dir: Path, model: nn.Module, point: dict[str, Any], variant: str,
                 init: str, kd: bool, epochs: int, val_score: float, test_score: float,
                 seconds: float) -> dict[str, Any]:
    """Save a trained model's weights and append its row to finetune.csv (`point` is its
    candidate row: id, macs, params, macs_ratio, val_score as the proxy)."""
    journal = run_dir / FINETUNE_CSV
    open_journal(journal, COLUMNS)
    weights = Path(WEIGHTS_DIR) / variant / f"{point['id']}.pt"
    save_state(run_dir / weights, model)
    row = {"id": point["id"], "variant": variant, "init": init, "kd": kd, "epochs": epochs,
           "macs": point["macs"], "params": point["params"], "macs_ratio": point["macs_ratio"],
           "proxy_val_score": point["val_score"], "val_score": val_score, "test_score": test_score,
           "seconds": seconds, "weights": str(weights)}
    append_row(journal, [row[c] for c in COLUMNS])
    return row


class TrainedArchive:
    """A run folder's finetune.csv as the store a training strategy keeps its finished
    networks in (labels only: those strategies do not distil)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def count(self, variant: str) -> int:
        return sum(r["variant"] == variant for r in read_finetuned(self.run_dir))

    def save(self, model: nn.Module, point: dict[str, Any], variant: str, init: str,
             epochs: int, val_score: float, test_score: float, seconds: float) -> None:
        save_trained(self.run_dir, model, point, variant, init, False, epochs, val_score,
                     test_score, seconds)
