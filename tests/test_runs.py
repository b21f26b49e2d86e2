from __future__ import annotations

import numpy as np
import pytest

from prunesearch.evaluators import Result
from prunesearch.pareto import hypervolume, hypervolume_history, pareto_indices
from prunesearch.runs.journal import CandidateJournal, read_journal
from prunesearch.spaces import Arch


def test_pareto_indices_match_brute_force():
    rng = np.random.default_rng(0)
    acc = rng.random(60).round(2).tolist()
    macs = rng.integers(1, 30, 60).tolist()
    front = set(pareto_indices(acc, macs))
    for i in range(60):
        dominated = any((acc[j] >= acc[i] and macs[j] <= macs[i])
                        and (acc[j] > acc[i] or macs[j] < macs[i]) for j in range(60))
        duplicate_kept_elsewhere = any(acc[j] == acc[i] and macs[j] == macs[i] and j in front
                                       for j in range(60) if j != i)
        assert (i in front) == (not dominated and not duplicate_kept_elsewhere)


def test_hypervolume_of_known_points():
    assert hypervolume([0.5], [50], 100) == pytest.approx(0.25)
    # two points: union of rectangles [0.5,1]x[0.5,1] and [0.2,1]x[0.8,1]
    assert hypervolume([0.5, 0.8], [50, 80], 100) == pytest.approx(0.25 + 0.3 * 0.2)
    assert hypervolume([0.9], [150], 100) == 0.0  # beyond the reference point


def _result(i: int, ok: bool = True) -> Result:
    return Result(Arch((("width:a", i),)), 100 + i, 10 + i, 0.5 if ok else None, 0.1,
                  "ok" if ok else "failed", "" if ok else "RuntimeError: boom")


def test_journal_appends_and_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "candidates.csv"
    journal = CandidateJournal(path, dense_macs=200)
    journal.append(_result(1), "random")
    journal.append(_result(2, ok=False), "random")
    with path.open("a") as f:
        f.write('2,random,"{""width:a"":3}",10')  # a SIGKILL mid-write
    back = CandidateJournal(path, dense_macs=200)
    assert [c.id for c in back.candidates] == [0, 1]
    assert back.candidates[1].result.status == "failed"
    assert back.candidates[1].result.error == "RuntimeError: boom"
    back.append(_result(3), "tpe")
    assert [c.result.arch["width:a"] for c in read_journal(path)] == [1, 2, 3]


def test_hypervolume_history_follows_the_journal_order():
    history = hypervolume_history([0.5, None, 0.8, 0.4], [50, 10, 80, 60], 100)
    assert history == pytest.approx([0.25, 0.25, 0.25 + 0.3 * 0.2, 0.31])
    assert all(b >= a for a, b in zip(history, history[1:], strict=False))


def test_journal_keeps_predicted_latency_and_reads_journals_from_before_it(tmp_path):
    arch = Arch((("width:a", 3),))
    path = tmp_path / "candidates.csv"
    journal = CandidateJournal(path, dense_macs=100)
    journal.append(Result(arch, 50, 5, 0.5, 0.1, latency_us=123.456), "tpe")
    journal.append(Result(Arch((("width:a", 2),)), 40, 4, 0.4, 0.1), "tpe")
    assert [c.result.latency_us for c in read_journal(path)] == [123.456, None]
    # a journal written before the latency column: the same rows, no latency
    old = path.read_text().splitlines()
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in old) + "\n")
    assert "latency_us" not in path.read_text()
    rows = read_journal(path)
    assert [(c.result.macs, c.result.latency_us) for c in rows] == [(50, None), (40, None)]


def test_a_journal_written_before_scores_were_named_reads_under_the_new_names(tmp_path):
    path = tmp_path / "candidates.csv"
    arch = Arch((("width:a", 4),))
    quoted = '"' + arch.to_json().replace('"', '""') + '"'
    path.write_text("id,strategy,arch,macs,params,macs_ratio,val_acc,stage,seconds,status,"
                    f"error,latency_us\n0,random,{quoted},100,10,0.5,0.8125,search,1.0,ok,,\n")
    (cand,) = read_journal(path)
    assert cand.result.val_score == 0.8125 and cand.result.arch == arch
    journal = CandidateJournal(path, dense_macs=200)  # appending keeps the old header
    journal.append(Result(arch, 50, 5, 0.5, 1.0), "random")
    assert [c.result.val_score for c in read_journal(path)] == [0.8125, 0.5]
