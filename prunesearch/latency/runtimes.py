"""The runtimes a network's latency is measured in: torch eager (on the table's device), or
ONNX Runtime's CPU provider running the module exported to ONNX, with as many intra-op threads
as torch uses. A runtime turns a module and an input into a call that runs one forward."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from prunesearch.errors import UserError

Runtime = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")
ONNX_OPSET = 17


def check_runtime(runtime: str, device: torch.device) -> None:
    """Refuse, before any work, a runtime that is not installed or cannot time `device`."""
    if runtime not in RUNTIMES:
        raise UserError(f"latency runtime must be one of {', '.join(RUNTIMES)}; got "
                        f"'{runtime}'.")
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("search.latency_runtime = 'onnxruntime' needs onnxruntime: "
                            "pip install 'prunesearch[onnx]', or use 'torch'.") from None
        if device.type != "cpu":
            raise UserError("search.latency_runtime = 'onnxruntime' times ONNX Runtime's CPU "
                            "provider; run with --device cpu, or use 'torch' on the GPU.")


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


def onnx_session(module: nn.Module, x: torch.Tensor):
    """An onnxruntime session over `module` exported for inputs shaped like `x` (CPU
    provider, torch's thread count, graph optimisations on, as deployed)."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():  # the TorchScript exporter: deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module.cpu().eval(), (x.cpu(),), buffer, dynamo=False,
                          opset_version=ONNX_OPSET, input_names=["input"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # idle threads sleep, as torch's OpenMP threads do under the prunesearch command
    # (OMP_WAIT_POLICY=PASSIVE): spinning ones stall a machine shared with other work
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def forward_call(module: nn.Module, x: torch.Tensor, runtime: str) -> Callable[[], object]:
    """A call that runs one forward of `module` on `x` in `runtime`, eval mode (the timing
    functions of prunesearch.latency.measure run it with gradients off)."""
    module.eval()
    if runtime == "onnxruntime":
        session = onnx_session(module, x)
        feed = {session.get_inputs()[0].name: x.cpu().numpy()}
        return lambda: session.run(None, feed)
    return lambda: module(x)
