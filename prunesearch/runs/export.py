"""Export a front point as real files, and `load` them back without the run or dense model.

export/<id>/  model.pt (state_dict), arch.json (what rebuilds the module), model.ts
(TorchScript), model.onnx (checked with onnxruntime), meta.json (costs, accuracy, latency).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.errors import ModelError, UserError
from prunesearch.fileio import save_state, write_json
from prunesearch.spaces import blocks_kept, shrink_to_state, truncate_depth

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
FORMATS = ("pt", "ts", "onnx")
SPEC_FORMAT = 1


def build_slim(spec: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """The slim module of an export spec with `state` loaded: the model is created full size
    (weights are then replaced), cut to the spec's depth and resized to the state's shapes."""
    from prunesearch.models import build_model

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


def load(path: str | Path) -> nn.Module:
    """An exported model as an nn.Module in eval mode, from its export folder (or its
    model.pt): needs only arch.json + model.pt and the model's code (zoo or the user's)."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    try:
        spec = json.loads((folder / "arch.json").read_text())
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"Cannot load an exported model from '{folder}' ({err}); pass a folder "
                        f"written by `prunesearch export` (arch.json + model.pt).") from None
    return build_slim(spec, state)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def write_export(model: nn.Module, spec: dict[str, Any], meta: dict[str, Any], out: Path,
                 formats: list[str], example: torch.Tensor) -> dict[str, Any]:
    """Write the files of one export and check each format reproduces `model`'s outputs."""
    model = model.cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        expected = model(example)
    save_state(out / "model.pt", model)
    write_json(out / "arch.json", {"format": SPEC_FORMAT, **spec})
    with torch.no_grad():
        checks: dict[str, Any] = {"pt": {"max_abs_diff": _max_diff(load(out)(example),
                                                                   expected)}}
    if "ts" in formats:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: deprecated, works
            traced = torch.jit.trace(model, example)
            tmp = out / ".model.ts.tmp"
            torch.jit.save(traced, str(tmp))
            tmp.replace(out / "model.ts")
            got = torch.jit.load(str(out / "model.ts"))(example)
        checks["ts"] = {"max_abs_diff": _max_diff(got, expected)}
    if "onnx" in formats:
        checks["onnx"] = _export_onnx(model, example, expected, out)
    meta = {**meta, "checks": checks}
    write_json(out / "meta.json", meta)
    return meta


def _export_onnx(model: nn.Module, example: torch.Tensor, expected: torch.Tensor,
                 out: Path) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install "
                        "'prunesearch[onnx]', or leave onnx out of --format.") from None
    tmp = out / ".model.onnx.tmp"
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated, not broken
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": example.numpy()})[0])
    diff = _max_diff(got, expected)
    if diff > ONNX_TOLERANCE:
        tmp.unlink()
        raise RuntimeError(f"onnxruntime output differs from PyTorch by {diff:.2e} "
                           f"(> {ONNX_TOLERANCE}); the ONNX file was not written.")
    tmp.replace(out / "model.onnx")
    return {"opset": ONNX_OPSET, "runtime": f"onnxruntime {ort.__version__}",
            "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE}
