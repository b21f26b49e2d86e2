"""Bad input of every kind exits 2 with a message naming the problem, never a traceback, and
changes nothing on disk: configs, data files, model specs, run folders, export folders.

Each case runs the real CLI entry (`prunesearch.cli.main`) in-process for speed; a case is a
function that prepares its inputs under a work folder and returns the command line."""

from __future__ import annotations

import csv
import fcntl
import gzip
import io
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from prunesearch.app.config import load_config
from prunesearch.app.run import run_job
from prunesearch.cli import main

TINY = Path(__file__).parent / "configs" / "tiny.toml"
Case = Callable[[Path, Path], list[str]]  # (work folder, finished run copy) -> argv


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (search + fine-tuning), copied by the cases that tamper with it."""
    out = tmp_path_factory.mktemp("finished")
    return run_job(load_config(TINY), out, progress=False).run_dir


def run_tiny(*args: str) -> Case:
    return lambda work, run: ["run", str(TINY), "--out", str(work / "runs"), "--quiet", *args]


def config_file(text: str | bytes, *args: str) -> Case:
    def case(work: Path, run: Path) -> list[str]:
        path = work / "job.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", str(path), "--out", str(work / "runs"), "--quiet", *args]
    return case


def fashion_files(write: Callable[[Path, str], None]) -> Case:
    def case(work: Path, run: Path) -> list[str]:
        data_dir = work / "fmnist"
        data_dir.mkdir()
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            write(data_dir, stem)
        return run_tiny("--set", "data.dataset=fashion-mnist",
                        "--set", f"data.data_dir='{data_dir}'", "--set", "data.download=false")(
                            work, run)
    return case


def garbage_idx(folder: Path, stem: str) -> None:
    (folder / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))


def truncated_gzip(folder: Path, stem: str) -> None:
    source = Path("/usr/share/datasets/fashion-mnist") / f"{stem}.gz"
    data = source.read_bytes() if source.exists() else gzip.compress(b"\x00" * 4096)
    (folder / f"{stem}.gz").write_bytes(data[: len(data) // 2])


def existing_run(tamper: Callable[[Path], None], *argv: str) -> Case:
    """A copy of the finished run, tampered with; argv's RUN stands for its folder."""
    def case(work: Path, run: Path) -> list[str]:
        copy = work / "runs" / "tiny"
        shutil.copytree(run, copy)
        tamper(copy)
        return [str(copy) if a == "RUN" else a for a in argv]
    return case


def unchanged(run: Path) -> None:
    pass


def edit_csv(name: str, line: int, column: str, value: str) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        path = run / name
        header, *rows = path.read_text().splitlines()
        cols = header.split(",")
        parsed = list(csv.reader(io.StringIO("\n".join(rows))))
        parsed[line - 2][cols.index(column)] = value
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(parsed)
        path.write_text(header + "\n" + buf.getvalue())
    return tamper


def write_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda run: (run / name).write_text(text)


def export_into(make: Callable[[Path], Path]) -> Case:
    def case(work: Path, run: Path) -> list[str]:
        return existing_run(unchanged, "export", "RUN", "--id", "0", "--format", "pt",
                            "-o", str(make(work)))(work, run)
    return case


def a_file(work: Path) -> Path:
    (work / "afile").write_text("mine")
    return work / "afile"


def a_foreign_folder(work: Path) -> Path:
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep me")
    return work / "mine"


def resume_changed(work: Path, run: Path) -> list[str]:
    shutil.copytree(run, work / "runs" / "tiny")
    return run_tiny("--resume", "--set", "seed=1")(work, run)


def already_exists(work: Path, run: Path) -> list[str]:
    shutil.copytree(run, work / "runs" / "tiny")
    return run_tiny()(work, run)


CASES: dict[str, tuple[Case, str]] = {
    # configs and overrides
    "missing config": (lambda w, r: ["run", str(w / "nope.toml")], "does not exist"),
    "config is a folder": (lambda w, r: ["run", str(w)], "does not exist"),
    "not utf-8": (config_file(b"name = \"caf\xe9\"\n"), "not UTF-8"),
    "toml syntax": (config_file("name = \n"), "not valid TOML"),
    "empty toml": (config_file(""), "sets nothing"),
    "comments only": (config_file("# nothing here\n"), "sets nothing"),
    "unknown key": (run_tiny("--set", "search.budgett=5"), "unknown key 'search.budgett'"),
    "unknown section": (config_file("name = 'x'\n[serch]\nbudget = 3\n"), "unknown key 'serch'"),
    "zero budget": (run_tiny("--set", "search.budget=0"), "search.budget"),
    "budget not a number": (run_tiny("--set", "search.budget=lots"), "search.budget"),
    "huge seed": (run_tiny("--set", "seed=99999999999999999999999"), "seed"),
    "negative seed": (run_tiny("--set", "seed=-1"), "seed"),
    "name escapes --out": (run_tiny("--set", "name='../escaped'"), "run name"),
    "absolute name": (run_tiny("--set", "name='/tmp/abs-run'"), "run name"),
    "empty name": (run_tiny("--set", "name=''"), "run name"),
    "unknown strategy": (run_tiny("--set", "search.strategy=evolutoin"), "available:"),
    "unknown model": (run_tiny("--set", "model.name=resnet2000"), "unknown model"),
    "schedule shorter than the dense epochs": (
        run_tiny("--set", "model.train.schedule_epochs=1"), "schedule_epochs (1) is shorter"),
    "schedule leaves no fine-tuning": (
        run_tiny("--set", "model.train.schedule_epochs=3", "--set", "supernet.epochs=1"),
        "leaves no epochs for fine-tuning"),
    "unknown dataset": (run_tiny("--set", "data.dataset=cifar"), "unknown dataset"),
    "val images too many": (run_tiny("--set", "evaluator.val_images=100000"),
                            "evaluator.val_images"),
    "width ratio above 1": (run_tiny("--set", "space.width_ratios=[0.5, 1.5]"), "width_ratios"),
    "finetune target above 1": (run_tiny("--set", "finetune.targets=[1.5]"), "targets"),
    "plugin not importable": (run_tiny("--set", "plugins=['no_such_plugin_mod']"),
                              "plugin module 'no_such_plugin_mod'"),
    "--set without =": (run_tiny("--set", "search.budget"), "--set expects key=value"),
    "--set unterminated quote": (run_tiny("--set", "name=\"unterminated"), "not valid TOML"),
    "--set into a value": (run_tiny("--set", "seed.x=1"), "is a value, not a section"),
    "--threads 0": (lambda w, r: ["--threads", "0", "run", str(TINY)], "--threads"),
    "bad device": (run_tiny("--device", "tpu"), "--device"),
    # shared studies
    "storage not a URL": (run_tiny("--storage", "not a url"), "cannot be parsed"),
    "storage another database": (run_tiny("--storage", "mysql://u:secret@h/db"),
                                 "give a postgresql:// or sqlite:/// URL"),
    "storage with a training strategy": (
        run_tiny("--storage", "sqlite:///s.db", "--set", "search.strategy=imp"),
        "trains its own networks"),
    "worker before its run": (lambda w, r: ["worker", "--storage", f"sqlite:///{w}/s.db",
                                            "--study", "tiny", "--wait", "0"],
                              "start the run first"),
    # model specs and checkpoints
    "factory module missing": (run_tiny("--set", "model.name='no_such_mod:factory'"),
                               "no_such_mod"),
    "factory not callable": (run_tiny("--set", "model.name='math:pi'"), "math:pi"),
    "language model on images": (run_tiny("--set", "model.name='prunesearch.models.hf:llama'"),
                                 "reads token sequences"),
    "vit on flat data": (run_tiny("--set", "model.name='vit_tiny'", "--set",
                                  "data.dataset='stdlib-bytes'"), "multiples of 4"),
    "hf vit on tokens": (run_tiny("--set", "model.name='prunesearch.models.hf:vit'", "--set",
                                  "data.dataset='stdlib-bytes'"), "square images"),
    "checkpoint missing": (run_tiny("--set", "model.checkpoint='/nonexistent.pt'"),
                           "does not exist"),
    "checkpoint not torch": (lambda w, r: (w / "ck.pt").write_text("not a checkpoint") and
                             run_tiny("--set", f"model.checkpoint='{w / 'ck.pt'}'")(w, r),
                             "ck.pt"),
    # data files
    "garbage idx files": (fashion_files(garbage_idx), "idx"),
    "truncated gzip": (fashion_files(truncated_gzip), "corrupt or truncated"),
    # run folders
    "--out is a file": (lambda w, r: (w / "out").write_text("x") and
                        ["run", str(TINY), "--out", str(w / "out"), "--quiet"], "is a file"),
    "run exists": (already_exists, "--resume"),
    "nothing to resume": (run_tiny("--resume"), "Nothing to resume"),
    "resume changed config": (resume_changed, "different config"),
    "show a non-run folder": (lambda w, r: ["show", str(w)], "not a finished run directory"),
    "journal bad number": (existing_run(edit_csv("candidates.csv", 3, "macs", "12x"), "show",
                                        "RUN"), "line 3: column 'macs'"),
    "journal bad arch": (existing_run(edit_csv("candidates.csv", 2, "arch", "{oops"), "show",
                                      "RUN"), "line 2: column 'arch'"),
    "summary not json": (existing_run(write_file("summary.json", "{"), "show", "RUN"),
                         "Cannot read the results"),
    "finetune.csv bad number": (existing_run(edit_csv("finetune.csv", 2, "test_score", "high"),
                                             "finetune", "RUN"), "line 2: column 'test_score'"),
    "finetune.csv weights escape": (existing_run(
        edit_csv("finetune.csv", 2, "weights", "../../../etc/passwd"), "finetune", "RUN"),
        "column 'weights'"),
    "finetune non-finetune key": (existing_run(unchanged, "finetune", "RUN", "--set", "seed=3"),
                                  "only accepts finetune"),
    "finetune targets below the front": (existing_run(
        unchanged, "finetune", "RUN", "--set", "finetune.targets=[0.0001]"),
        "below the smallest front point"),
    "run config tampered": (existing_run(write_file("config.toml", "[search]\nbudget = 'x'\n"),
                                         "finetune", "RUN"), "search.budget"),
    # exports
    "export --id and --max-flops": (existing_run(unchanged, "export", "RUN", "--id", "0",
                                                 "--max-flops", "0.5"), "exactly one"),
    "export unknown id": (existing_run(unchanged, "export", "RUN", "--id", "9999"),
                          "no successful candidate with id 9999"),
    "export ratio too small": (existing_run(unchanged, "export", "RUN", "--max-flops", "1e-6"),
                               "raise --max-flops"),
    "export bad format": (existing_run(unchanged, "export", "RUN", "--id", "0", "--format",
                                       "tflite"), "--format"),
    "export into a file": (export_into(a_file), "is a file"),
    "export into a foreign folder": (export_into(a_foreign_folder), "holds other files"),
}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_names_the_problem_and_changes_nothing(name, tmp_path, finished_run,
                                                                 monkeypatch, capsys):
    make, message = CASES[name]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = make(work, finished_run)
    before = snapshot(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prunesearch", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 2, err
    assert message in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before  # nothing written, inside --out or out of it
    assert not Path("/tmp/abs-run").exists() and not (tmp_path / "escaped").exists()


def test_a_second_process_cannot_open_a_run_in_use(tmp_path, finished_run, monkeypatch,
                                                   capsys):
    run = tmp_path / "tiny"
    shutil.copytree(finished_run, run)
    with (run / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `prunesearch run` holds it
        monkeypatch.setattr(sys, "argv", ["prunesearch", "finetune", str(run)])
        with pytest.raises(SystemExit) as exited:
            main()
    assert exited.value.code == 2
    assert "in use by another prunesearch process" in " ".join(capsys.readouterr().err.split())


def test_a_failed_start_leaves_nothing_that_blocks_a_rerun(tmp_path, monkeypatch):
    from prunesearch.errors import UserError

    argv = fashion_files(garbage_idx)(tmp_path, tmp_path)
    cfg = load_config(TINY, [a for a in argv if "=" in a])
    with pytest.raises(UserError):
        run_job(cfg, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / "tiny").exists()  # a plain re-run starts fresh


class _OpensAFile:
    """Unpickling this object opens (creates) `path`: what a tampered state file could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def _tampered(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state": _OpensAFile(marker)}, path)
    return path


def test_tampered_state_and_weights_files_never_run_code(tmp_path, finished_run):
    import torch

    import prunesearch
    from prunesearch.errors import UserError
    from prunesearch.strategies.base import SearchContext
    from prunesearch.training.dense import read_checkpoint
    from prunesearch.training.supernet import _read_partial

    marker = tmp_path / "code-ran"
    torch.load(_tampered(tmp_path / "probe.pt", marker), weights_only=False)
    assert marker.exists()  # the payload is real: plain unpickling runs it
    marker.unlink()

    with pytest.raises(UserError, match="cannot be read"):
        read_checkpoint(_tampered(tmp_path / "ck.pt", marker), "fix")
    with pytest.raises(UserError, match="resume file"):
        _read_partial(_tampered(tmp_path / "supernet.partial.pt", marker))
    ctx = SearchContext.__new__(SearchContext)
    ctx.state_dir = tmp_path
    _tampered(tmp_path / "tas_state.pt", marker)
    with pytest.raises(UserError, match="Resume state"):
        ctx.load_state("tas_state")
    export = tmp_path / "export"
    export_point(finished_run, export)
    _tampered(export / "model.pt", marker)
    with pytest.raises(UserError, match="Cannot load"):
        prunesearch.load(export)
    assert not marker.exists()


def export_point(run: Path, folder: Path) -> None:
    from prunesearch.app.export import export_run

    export_run(run, 0, None, ["pt"], folder, progress=False)


def test_load_runs_code_named_in_arch_json_only_when_trusted(tmp_path, finished_run,
                                                            monkeypatch):
    import prunesearch
    from prunesearch.errors import UserError

    folder = tmp_path / "export"
    export_point(finished_run, folder)
    assert prunesearch.load(folder).training is False  # a zoo model needs no trust

    marker = tmp_path / "code-ran"
    (tmp_path / "sent_to_you.py").write_text(
        f"def factory(**kwargs):\n    open({str(marker)!r}, 'w').close()\n    raise SystemExit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = json.loads((folder / "arch.json").read_text())
    (folder / "arch.json").write_text(json.dumps({**spec, "model": "sent_to_you:factory"}))
    with pytest.raises(UserError, match="trust_code=True"):
        prunesearch.load(folder)
    assert not marker.exists()
    with pytest.raises(SystemExit):  # trusted: the factory does run (so the check above counts)
        prunesearch.load(folder, trust_code=True)
    assert marker.exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda spec: {**spec, "format": 99}, "format 99"),
    (lambda spec: {k: v for k, v in spec.items() if k != "model"}, "['model']"),
    (lambda spec: {**spec, "num_classes": "ten"}, "['num_classes']"),
    (lambda spec: [spec], "format 'list'"),
])
def test_load_refuses_an_edited_arch_json(tmp_path, finished_run, edit, message):
    import prunesearch
    from prunesearch.errors import UserError

    folder = tmp_path / "export"
    export_point(finished_run, folder)
    spec = json.loads((folder / "arch.json").read_text())
    (folder / "arch.json").write_text(json.dumps(edit(spec)))
    with pytest.raises(UserError, match=re.escape(message)):
        prunesearch.load(folder)


def test_an_export_replaces_its_folder_whole_and_load_needs_meta(tmp_path, finished_run):
    import prunesearch
    from prunesearch.app.export import export_run
    from prunesearch.errors import UserError

    folder = tmp_path / "export"
    export_run(finished_run, 0, None, ["pt", "ts"], folder, progress=False)
    assert (folder / "model.ts").exists()
    export_run(finished_run, 1, None, ["pt"], folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "meta.json", "model.pt"]
    assert json.loads((folder / "meta.json").read_text())["id"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left
    (folder / "meta.json").unlink()  # as a killed export would leave it
    with pytest.raises(UserError, match="not a complete export"):
        prunesearch.load(folder)


def test_onnx_export_without_the_extra_says_which_extra_before_any_work(tmp_path, finished_run,
                                                                        monkeypatch):
    from prunesearch.app.export import export_run
    from prunesearch.errors import UserError

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(UserError, match=re.escape("pip install 'prunesearch[onnx]'")):
        export_run(finished_run, 0, None, ["pt", "onnx"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit", [
    lambda text: text.replace('plugins = []', 'plugins = ["carried"]'),
    lambda text: text.replace('name = "resnet20"', 'name = "carried:factory"'),
])
def test_a_run_folder_never_runs_code_it_carries(tmp_path, finished_run, monkeypatch, edit):
    from prunesearch.app.finetune import finetune_run
    from prunesearch.errors import UserError

    run = tmp_path / "sent"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "code-ran"
    (run / "carried.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    f"def factory(**kwargs):\n    raise SystemExit\n")
    config = run / "config.toml"
    config.write_text(edit(config.read_text()))
    monkeypatch.syspath_prepend(str(run))  # as `python -m prunesearch` run from inside it
    with pytest.raises(UserError, match="inside the run folder"):
        finetune_run(run, [], progress=False)
    assert not marker.exists()
