"""Export a front point as real files, and `load` them back without the run or dense model.

export/<id>/  model.pt (state_dict), arch.json (what rebuilds the module), model.ts
(TorchScript), model.onnx (checked with onnxruntime), meta.json (costs, accuracy, latency).
An export is built in a temporary sibling folder and swapped in whole, so a killed export
leaves the previous one (or none), never a mix; meta.json, written last, marks it complete.
"""

from __future__ import annotations

import copy
import glob
import json
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.errors import ModelError, UserError
from prunesearch.fileio import load_error_reason, save_state, write_json
from prunesearch.models.registry import SHIPPED_FACTORIES
from prunesearch.runs.hf_export import export_hf
from prunesearch.spaces import blocks_kept, shrink_to_state, truncate_depth

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
FORMATS = ("pt", "ts", "onnx", "hf")
GIVEN_MODEL = "(given in Python)"  # arch.json's model for a network no name rebuilds
SPEC_FORMAT = 1
SPEC_KEYS = {"format": int, "model": str, "width_mult": (int, float), "input_shape": list,
             "num_classes": int, "arch": dict}


def build_slim(spec: dict[str, Any], state: dict[str, torch.Tensor],
               full: nn.Module | None = None) -> nn.Module:
    """The slim module of an export spec with `state` loaded: the model is created full size
    (or copied from `full`, the network a run was given in Python; weights are then
    replaced), cut to the spec's depth and resized to the state's shapes."""
    from prunesearch.models import build_model

    if spec["model"] == GIVEN_MODEL:
        if full is None:
            raise UserError("This export was made from a network handed to prunesearch.search() "
                            "in Python, which no name rebuilds: pass that network again, "
                            "prunesearch.load(path, model=network).")
        model = copy.deepcopy(full).cpu()
    else:
        with torch.random.fork_rng(devices=[]):
            model = build_model(spec["model"], spec["input_shape"], spec["num_classes"],
                                spec["width_mult"])
    truncate_depth(model, blocks_kept(spec["arch"]))
    shrink_to_state(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"The exported weights do not fit model '{spec['model']}' as "
                         f"rebuilt from arch.json ({str(err).splitlines()[0]}). Was the file "
                         f"exported by another prunesearch version or model code?") from None
    return model.eval()


def load(path: str | Path, trust_code: bool = False, model: nn.Module | None = None
         ) -> nn.Module:
    """An exported model as an nn.Module in eval mode, from its export folder (or its
    model.pt): needs only arch.json + model.pt and the model's code (zoo or the user's; for a
    network handed to prunesearch.search() in Python, that full network as `model`).

    A folder whose arch.json names the user's code (`package.module:factory`, other than the
    factories prunesearch ships) is loaded only with `trust_code=True`: building the model
    imports and calls that code."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    if not (folder / "meta.json").is_file():
        raise UserError(f"'{folder}' is not a complete export (no meta.json: the export was "
                        f"killed, or this is not an export folder); export it again with "
                        f"`prunesearch export`.")
    try:
        spec = json.loads((folder / "arch.json").read_text())
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise UserError(f"Cannot load an exported model from '{folder}' "
                        f"({load_error_reason(err)}); pass a folder "
                        f"written by `prunesearch export` (arch.json + model.pt).") from None
    check_spec(spec, folder)
    if ":" in spec["model"] and spec["model"] not in SHIPPED_FACTORIES and not trust_code:
        raise UserError(f"'{folder}/arch.json' names code to run, '{spec['model']}': loading "
                        f"it imports and calls that factory. Pass trust_code=True only if you "
                        f"trust where the folder came from.")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise UserError(f"'{folder}/model.pt' is not a state_dict of tensors; export the model "
                        f"again with `prunesearch export`.")
    return build_slim(spec, state, model)


def check_spec(spec: Any, folder: Path) -> None:
    """arch.json has this version's format and every key with the right type."""
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise UserError(f"'{folder}/arch.json' is not an export spec of format {SPEC_FORMAT} "
                        f"(found format {found!r}); export the model again with this "
                        f"prunesearch version.")
    bad = [k for k, kind in SPEC_KEYS.items()
           if not isinstance(spec.get(k), kind) or isinstance(spec.get(k), bool)]
    if bad:
        raise UserError(f"'{folder}/arch.json' lacks or mistypes {bad}; it was edited or "
                        f"written by other code. Export the model again.")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def check_export_folder(out: Path) -> None:
    """Refuse an output that is a file, or a folder holding anything but an earlier export
    (replacing it would delete the user's files)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"Export folder '{out}' is a file; pass a folder path with -o.")
    if out.is_dir() and any(out.iterdir()) and not (out / "arch.json").is_file():
        raise UserError(f"Export folder '{out}' already holds other files; an export replaces "
                        f"its folder whole, so pass a new or empty folder with -o.")


def write_export(model: nn.Module, spec: dict[str, Any], meta: dict[str, Any], out: Path,
                 formats: list[str], example: torch.Tensor,
                 full: nn.Module | None = None) -> dict[str, Any]:
    """Write the files of one export and check each format reproduces `model`'s outputs; the
    folder is replaced whole (formats not asked for this time do not linger). `full`: the
    network a run was given in Python, which rebuilds the pt format for its check."""
    check_export_folder(out)
    model = model.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".tmp", ".old"):  # folders a killed export of this folder left (mkdtemp)
        for stale in out.parent.glob(f".{glob.escape(out.name)}.{'?' * 8}{suffix}"):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        meta = _write_files(model, spec, meta, staging, formats, example, full)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _write_files(model: nn.Module, spec: dict[str, Any], meta: dict[str, Any], out: Path,
                 formats: list[str], example: torch.Tensor,
                 full: nn.Module | None) -> dict[str, Any]:
    with torch.no_grad():
        expected = model(example)
    save_state(out / "model.pt", model)
    full_spec = {"format": SPEC_FORMAT, **spec}
    write_json(out / "arch.json", full_spec)
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        rebuilt = build_slim(full_spec, state, full)(example)
    checks: dict[str, Any] = {"pt": {"max_abs_diff": _max_diff(rebuilt, expected)}}
    if "ts" in formats:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: deprecated, works
            torch.jit.save(torch.jit.trace(model, example), str(out / "model.ts"))
            got = torch.jit.load(str(out / "model.ts"))(example)
        checks["ts"] = {"max_abs_diff": _max_diff(got, expected)}
    if "onnx" in formats:
        checks["onnx"] = _export_onnx(model, example, expected, out)
    if "hf" in formats:
        checks["hf"] = export_hf(model, example, expected, out / "hf")
    meta = {**meta, "checks": checks}
    write_json(out / "meta.json", meta)  # last: marks the export complete
    return meta


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished `staging` folder at `out`, replacing an earlier export there."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        out.rename(old / "export")
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old)


class _DecomposedRMSNorm(nn.Module):
    """nn.RMSNorm in elementary operations: torch's TorchScript-based ONNX exporter has no
    aten::rms_norm at any opset."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps
        self.dims = tuple(range(-len(norm.normalized_shape), 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        y = x * torch.rsqrt(x.pow(2).mean(self.dims, keepdim=True) + eps)
        return y if self.weight is None else y * self.weight


def _onnx_exportable(model: nn.Module) -> nn.Module:
    """`model`, or a copy whose nn.RMSNorm layers compute the same in elementary operations."""
    norms = [name for name, m in model.named_modules() if type(m) is nn.RMSNorm]
    if not norms:
        return model
    model = copy.deepcopy(model)
    for name in norms:
        model.set_submodule(name, _DecomposedRMSNorm(model.get_submodule(name)))
    return model


def _export_onnx(model: nn.Module, example: torch.Tensor, expected: torch.Tensor,
                 out: Path) -> dict[str, Any]:
    import onnxruntime as ort  # check_onnx_installed ran first

    path = out / "model.onnx"
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated, not broken
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(_onnx_exportable(model), (example,), str(path), dynamo=False,
                              opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except torch.onnx.errors.UnsupportedOperatorError as err:
            raise ModelError(f"The network cannot be exported to ONNX: {err}. Export the other "
                             f"formats (--format pt,ts).") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": example.numpy()})[0])
    diff = _max_diff(got, expected)
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"onnxruntime output differs from PyTorch by {diff:.2e} "
                           f"(> {ONNX_TOLERANCE}); nothing was exported.")
    return {"opset": ONNX_OPSET, "runtime": f"onnxruntime {ort.__version__}",
            "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE}


def check_onnx_installed() -> None:
    """Before any work: ONNX export needs both packages of the onnx extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise UserError(f"ONNX export needs onnx and onnxruntime ({err.name} is missing): "
                        f"pip install 'prunesearch[onnx]', or leave onnx out of "
                        f"--format.") from None
