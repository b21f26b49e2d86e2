"""The `prunesearch` command line (typer + rich). Exit codes: 0 ok, 2 bad input, 1 internal."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prunesearch.errors import UserError
from prunesearch.metrics import metric_from_json

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
out_console = Console()
err_console = Console(stderr=True)


@app.callback()
def options(
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads for torch (default: one per core). On a machine shared with "
                    "other busy processes, 1 keeps a job from fighting them for cores.")] = None,
) -> None:
    """Search-based network pruning: find the accuracy-vs-FLOPs Pareto front of a PyTorch
    network.

    Example: prunesearch --threads 1 run configs/smoke.toml
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

ConfigArg = Annotated[str | None, typer.Argument(
    help="TOML job config; omit it to run the embedded default job.", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key by dotted path, e.g. --set search.budget=50.")]


@app.command()
def run(
    config: ConfigArg = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="Folder that holds run directories.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue a killed or finished run.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    storage: Annotated[str | None, typer.Option(
        help="Share the search with `prunesearch worker` processes through this Optuna RDB "
             "(search.storage): postgresql://user@host:5432/db, or sqlite:///file.db.")]
    = None,
) -> None:
    """Run a search job: dense model, search space, strategy, Pareto front.

    Example: prunesearch run configs/smoke.toml --set search.strategy=random
    """
    from prunesearch.app.config import load_config
    from prunesearch.app.run import run_job
    from prunesearch.training import distributed

    if distributed.launched():
        raise UserError("`prunesearch run` does not run under torchrun (each process would run "
                        "the whole job); train the dense model and supernet with `torchrun ... "
                        "-m prunesearch train CONFIG`, share the search with `prunesearch "
                        "worker` processes (--storage), and fine-tune with `torchrun ... -m "
                        "prunesearch finetune RUN_DIR`.")
    cfg = load_config(config, (set_ or []) + ([f"search.storage={json.dumps(storage)}"]
                                              if storage else []))
    outcome = run_job(cfg, out, resume=resume, device=device, progress=not quiet,
                      console=err_console)
    s = outcome.summary
    metric = metric_from_json(s["metric"])
    out_console.print(
        f"[bold]{outcome.run_dir}[/bold]: {s['n_evals']} candidates ({s['n_failed']} failed), "
        f"front of {s['front_size']}, hypervolume {s['hypervolume']['value']:.4f}, dense "
        f"val {metric.name} {metric.show(s['dense']['val_score'])}, {s['wall_s']:.0f} s")
    _print_front(outcome.run_dir)


def _print_front(run_dir: Path) -> None:
    from prunesearch.runs.rundir import RunView

    view = RunView.load(run_dir)
    dense, m = view.summary["dense"], view.metric
    latency = dense.get("latency_us")  # predicted, when the run has a latency table
    table = Table(title=f"Pareto front of {run_dir} on {view.axis().label}: proxy {m.name} on "
                        f"validation; test {m.name} after fine-tuning where a point was "
                        f"fine-tuned")
    columns = ["id", "strategy", "FLOPs (MACs)", "MACs ratio"]
    columns += ["predicted latency", "latency ratio"] if latency else []
    for col in (*columns, "params", f"val {m.name} (proxy)", f"test {m.name} (fine-tuned)"):
        table.add_column(col, justify="right")
    for point in view.front:
        cells = [str(point.id), point.strategy, f"{point.macs / 1e6:.2f}M",
                 f"{point.macs_ratio:.3f}"]
        if latency:
            cells += [f"{point.latency_us / 1e3:.3f} ms", f"{point.latency_us / latency:.3f}"]
        table.add_row(*cells, f"{point.params / 1e3:.1f}k", m.show(point.val_score),
                      m.show(point.test_score))
    out_console.print(table)
    for name, variant in (view.summary.get("finetune") or {}).get("variants", {}).items():
        points = ", ".join(f"#{p['id']} {p['macs_ratio']:.2f} MACs: {m.show(p['test_score'])}"
                           for p in variant["points"])
        out_console.print(f"fine-tuned {name} (test {m.name}): {points}; test-score hypervolume "
                          f"{variant['hypervolume']['value']:.4f}, {variant['seconds']:.0f} s")
    out_console.print(f"dense: {dense['macs'] / 1e6:.2f}M MACs, {dense['params'] / 1e3:.1f}k "
                      f"params, val {m.name} {m.show(dense['val_score'])}, test {m.name} "
                      f"{m.show(dense['test_score'])}"
                      + (f", predicted latency {latency / 1e3:.3f} ms" if latency else ""))


@app.command()
def worker(
    storage: Annotated[str, typer.Option(help="The run's Optuna RDB URL (as given to `run "
                                              "--storage`).")],
    study: Annotated[str, typer.Option(help="The study: the run's name.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    trust_code: Annotated[bool, typer.Option(
        help="Import the code the run's config names (module:factory models or datasets, "
             "plugins); that config comes from the database.")] = False,
    wait: Annotated[float, typer.Option(
        min=0, help="Seconds to wait for the run to publish its study, and for a sign of "
                    "life from a run whose heartbeat stopped before the worker gives up "
                    "(exit 2).")] = 600.0,
    batch: Annotated[int, typer.Option(
        min=1, help="Candidates held, evaluated and recorded at a time: the storage's round "
                    "trips are paid once per batch (a fast evaluator, a distant "
                    "database).")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress line.")] = False,
) -> None:
    """Join a shared search: evaluate a run's candidates until the run is done. Start any
    number, on any machine that sees the database, the dataset and the run's cache folder.

    Example: prunesearch --threads 1 worker --storage postgresql://me@db/prune --study default
    """
    from prunesearch.app.worker import run_worker

    evaluated = run_worker(storage, study, device=device, trust_code=trust_code, wait_s=wait,
                           batch=batch, progress=not quiet)
    out_console.print(f"study {study} is done; this worker evaluated {evaluated} candidates")


@app.command()
def finetune(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a finished search.")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override finetune.* keys, e.g. --set finetune.kd=true.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Fine-tune a run's chosen front points (again, or another way), resumable per model.
    Under torchrun the processes train each point data-parallel; the first one writes.

    Example: prunesearch finetune runs/default --set finetune.kd=true
    Example: torchrun --nproc-per-node 2 -m prunesearch finetune runs/default
    """
    from prunesearch.app.finetune import finetune_run

    outcome = finetune_run(run_dir, set_ or [], device=device, progress=not quiet)
    if outcome is not None:
        _print_front(outcome.run_dir)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    id_: Annotated[int | None, typer.Option("--id", help="Candidate id to export.")] = None,
    max_flops: Annotated[float | None, typer.Option(
        help="Instead of --id: the best front point with at most this ratio of dense MACs.")]
    = None,
    max_latency: Annotated[float | None, typer.Option(
        help="Instead of --id: the best front point with at most this ratio of the dense "
             "model's predicted latency (runs searched with a latency table).")] = None,
    format_: Annotated[str, typer.Option("--format", help=(
        "Comma list of pt, ts, onnx, hf (a Hugging Face model pruned alike in every layer: a "
        "save_pretrained folder)."))] = "pt,ts,onnx",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Folder (default RUN_DIR/export/<id>).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Export a front point as a real smaller model: state_dict + arch.json (load it with
    prunesearch.load), TorchScript and ONNX (checked with onnxruntime), meta.json with MACs,
    params, test accuracy and CPU latency.

    Example: prunesearch export runs/default --max-flops 0.5
    """
    from prunesearch.app.export import export_run

    formats = [f.strip() for f in format_.split(",") if f.strip()]
    limits = [(name, ratio) for name, ratio in (("macs", max_flops), ("latency", max_latency))
              if ratio is not None]
    if len(limits) > 1:
        raise UserError("Pass only one of --max-flops and --max-latency.")
    folder = export_run(run_dir, id_, limits[0] if limits else None, formats, output,
                        progress=not quiet)
    meta = json.loads((folder / "meta.json").read_text())
    lat, m = meta["latency"], metric_from_json(meta["metric"])
    out_console.print(
        f"exported #{meta['id']} ({meta['source']}) to {folder}: {meta['macs'] / 1e6:.2f}M MACs "
        f"({meta['macs_ratio']:.3f} of dense), {meta['params'] / 1e3:.1f}k params, test "
        f"{m.name} {m.show(meta['test_score'])}; CPU latency ({lat['threads']} threads) batch 1 "
        f"{lat['model']['batch_1_ms']:.2f} ms ({lat['ratio_to_dense']['batch_1_ms']:.2f}x dense),"
        f" batch 64 {lat['model']['batch_64_ms']:.1f} ms "
        f"({lat['ratio_to_dense']['batch_64_ms']:.2f}x dense)"
        + (f"; onnxruntime batch 1 {lat['onnxruntime']['model']['batch_1_ms']:.2f} ms "
           f"({lat['onnxruntime']['ratio_to_dense']['batch_1_ms']:.2f}x dense)"
           if "onnxruntime" in lat else "") + "; checks: "
        + ", ".join(f"{k} max diff {v['max_abs_diff']:.1e}" for k, v in meta["checks"].items()))


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Print a run's Pareto front as a table.

    Example: prunesearch show runs/smoke
    """
    _print_front(run_dir)


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file (an SVG is written "
                                         "beside it).")] = Path("pareto.png"),
    x: Annotated[str | None, typer.Option(
        "--x", help="Cost axis: macs, params or latency (predicted; runs that recorded it). "
                    "Default: the first run's search.objective.")] = None,
) -> None:
    """Overlay the Pareto fronts of several runs in one plot, and their hypervolume-versus-
    evaluations curves in a second one (FILE_hv.png).

    Example: prunesearch plot runs/a runs/b -o compare.png --x latency
    """
    from prunesearch.objective import OBJECTIVES
    from prunesearch.runs.plots import plot_fronts, plot_hv_histories
    from prunesearch.runs.rundir import RunView

    if x is not None and x not in OBJECTIVES:
        raise UserError(f"--x takes one of {', '.join(OBJECTIVES)}; got '{x}'.")
    views = [RunView.load(p) for p in run_dirs]
    metrics = sorted({v.metric.name for v in views})
    if len(metrics) > 1:
        raise UserError(f"These runs score networks by different metrics ({', '.join(metrics)});"
                        f" plot runs of one kind of data together.")
    axis = x or views[0].axis().name
    files = plot_fronts([v.series(axis) for v in views], output,
                        " vs ".join(v.path.name for v in views))
    files += plot_hv_histories([(v.path.name, v.hv_history()) for v in views],
                               output.with_name(output.stem + "_hv.png"))
    out_console.print("wrote " + ", ".join(str(f) for f in files))


@app.command()
def space(
    model_or_config: Annotated[str, typer.Argument(
        help="A zoo model name, 'package.module:factory', or a TOML job config.")],
    input_shape: Annotated[str, typer.Option(help="C,H,W of one example (ignored for a "
                                             "config).")] = "1,28,28",
    num_classes: Annotated[int, typer.Option(help="Classes (ignored for a config).")] = 10,
) -> None:
    """Print the search space of a model: dimensions and dense MACs/params.

    Example: prunesearch space resnet20
    """
    import torch

    from prunesearch.app.config import load_config
    from prunesearch.app.prepare import load_run_data, space_of
    from prunesearch.models import build_model

    width_mult = 1.0
    if model_or_config.endswith(".toml"):
        cfg = load_config(model_or_config)
        data = load_run_data(cfg)
        shape, classes, name = data.input_shape, data.num_classes, cfg.model.name
        space_cfg, width_mult = cfg.space, cfg.model.width_mult
    else:
        try:
            shape = tuple(int(s) for s in input_shape.split(","))
        except ValueError:
            raise UserError(f"--input-shape must be integers separated by commas, like "
                            f"1,28,28; got '{input_shape}'.") from None
        classes, name = num_classes, model_or_config
        from prunesearch.spaces.options import SpaceConfig

        space_cfg = SpaceConfig()
    model = build_model(name, shape, classes, width_mult).eval()
    sp = space_of(space_cfg, model, torch.zeros(1, *shape))
    table = Table(title=f"search space of {name} on input {tuple(shape)}")
    for col in ("#", "dimension", "kind", "counts", "full", "choices"):
        table.add_column(col)
    for i, d in enumerate(sp.dims):
        table.add_row(str(i), d.name, d.kind, sp.unit(i), str(d.full),
                      " ".join(map(str, d.choices)))
    out_console.print(table)
    for group, why in sp.kept_whole:
        out_console.print(f"kept whole: {group}: {why}")
    smallest = sp.smallest()
    out_console.print(
        f"dense: {sp.dense_macs:,} FLOPs (MACs), {sp.dense_params:,} params; smallest arch: "
        f"{sp.macs(smallest) / sp.dense_macs:.3f} of dense MACs, "
        f"{sp.params(smallest) / sp.dense_params:.3f} of params")


@app.command()
def train(
    config: ConfigArg = None,
    set_: SetOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Train (or load from the cache) the dense model of a job, and its supernet stage when
    [supernet] epochs > 0, and report their accuracy; `prunesearch run` then finds both in
    the cache. Under torchrun the processes train data-parallel (gloo on CPU, nccl on CUDA).

    Example: prunesearch train configs/smoke.toml --set model.train.epochs=5
    Example: torchrun --nproc-per-node 2 -m prunesearch train configs/smoke.toml
    """
    from prunesearch.app.config import load_config
    from prunesearch.app.prepare import resolve_device, train_stages
    from prunesearch.training import distributed

    cfg = load_config(config, set_ or [])
    dev = resolve_device(device)
    distributed.init_from_env(dev)
    main = distributed.is_main()
    data, stages = train_stages(cfg, dev, progress=main)
    m = data.task.metric
    for what, done in stages if main else []:
        out_console.print(f"{what} on {cfg.data.dataset}: val {m.name} "
                          f"{m.show(done['val_score'])}, test {m.name} "
                          f"{m.show(done['test_score'])}, "
                          f"{'loaded from cache' if done.get('cached') else 'trained'}; "
                          f"checkpoint {done.get('checkpoint')}")


def main() -> None:
    try:
        _main()
    except SystemExit as done:
        from prunesearch.training import distributed

        if distributed.joined():  # a torchrun process in its group: see distributed.leave
            distributed.leave(_exit_code(done))
        raise


def _exit_code(done: SystemExit) -> int:
    if done.code is None or isinstance(done.code, int):
        return done.code or 0
    print(done.code, file=sys.stderr)  # what the interpreter does with a message
    return 1


def _main() -> None:
    try:
        app()
    except UserError as err:
        err_console.print(f"[bold red]error:[/bold red] {err}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; continue with --resume")
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        err_console.print("[bold red]internal error[/bold red]: this is a bug in prunesearch; "
                          "please report it with the traceback above.")
        sys.exit(1)
