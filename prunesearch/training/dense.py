"""The dense model of a run: from the user's checkpoint, from the cache, or trained and cached.

Cache entries are named by a hash of everything that made them (model, width, data, recipe,
seed), so a changed input trains a new model instead of silently reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.fileio import default_cache_dir, load_error_reason, renamed_fields, write_torch
from prunesearch.models.options import ModelConfig, TrainConfig
from prunesearch.models.registry import build_model, split_input_shape
from prunesearch.scoring import split_scores
from prunesearch.training import distributed
from prunesearch.training.loop import train_model

if TYPE_CHECKING:
    from prunesearch.data import DatasetSplits

log = logging.getLogger(__name__)

# part of every key: bump it when training or a zoo architecture changes, so old entries go stale
CACHE_FORMAT = 1


def checkpoint_key(
    model_name: str,
    width_mult: float,
    in_chans: int,
    num_classes: int,
    data_fingerprint: str,
    recipe: TrainConfig,
    seed: int,
) -> str:
    """First 16 hex digits of the sha256 of a canonical JSON of what makes the dense model."""
    made_of = {
        "format": CACHE_FORMAT,
        "model": model_name,
        "width_mult": width_mult,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "data": data_fingerprint,
        "recipe": recipe.cache_fields(),
        "seed": seed,
    }
    canonical = json.dumps(made_of, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_checkpoint(path: Path, fix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of a file holding a state_dict or a dict with 'state_dict'."""
    try:
        # weights_only: a checkpoint is data, and unpickling arbitrary objects runs code
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"checkpoint '{path}' cannot be read ({load_error_reason(err)}); "
                         f"it must be a torch.save'd state_dict. {fix}") from err
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        meta = dict(obj.get("meta") or {})
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a state_dict "
                         f"(save model.state_dict(), or a dict with a 'state_dict' entry). {fix}")
    return dict(obj), meta


def load_weights(model: nn.Module, path: Path, fix: str) -> dict[str, Any]:
    """Read `path` into `model` (weights only); the checkpoint's meta. Every failure is a
    ModelError ending with `fix`."""
    state, meta = read_checkpoint(path, fix)
    _load_state(model, state, path, fix)
    return renamed_fields(meta)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, fix: str) -> None:
    """load_state_dict with a short, specific message instead of torch's wall of keys."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    problems = [f"{label} ({len(items)}): {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches (file vs model)", reshaped)) if items]
    if problems:
        raise ModelError(f"checkpoint '{path}' does not fit the model: {'; '.join(problems)}. "
                         f"{fix}")
    model.load_state_dict(state)


def dense_model(
    cfg: ModelConfig,
    data: DatasetSplits,
    *,
    seed: int,
    device: torch.device,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The run's dense model on `device` and a JSON-able dict describing it.

    `cfg.name` is a zoo name or 'package.module:factory'. With `cfg.checkpoint` the weights are
    loaded from that file and scored on val/test; otherwise they come from
    `<cache_dir>/<checkpoint_key>.pt` (default cache dir: `default_cache_dir()`), or are trained
    with `cfg.train` and saved there. The dict always holds model, width_mult, data_fingerprint,
    val_score, test_score, checkpoint (the file's path, None if it could not be saved) and cached;
    trained models add the recipe, seed, key and the TrainReport fields."""
    # seeded initial weights without touching the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg.name, data.input_shape, data.num_classes, cfg.width_mult)
    described = {"model": cfg.name, "width_mult": cfg.width_mult, "data": data.name,
                 "data_fingerprint": data.fingerprint()}

    if cfg.checkpoint is not None:
        path = Path(cfg.checkpoint).expanduser()
        fix = (f"Point model.checkpoint at weights of '{cfg.name}' with width_mult="
               f"{cfg.width_mult} for this dataset, or remove it to train the dense model.")
        if not path.is_file():
            raise ModelError(f"model.checkpoint '{path}' does not exist. {fix}")
        load_weights(model, path, fix)
        model.to(device)
        return model, {**described, **split_scores(model, data), "checkpoint": str(path),
                       "cached": False}

    in_chans, _ = split_input_shape(data.input_shape)
    key = checkpoint_key(cfg.name, cfg.width_mult, in_chans, data.num_classes,
                         described["data_fingerprint"], cfg.train, seed)
    path = (cache_dir if cache_dir is not None else default_cache_dir()) / f"{key}.pt"
    metric = data.task.metric.name
    if path.is_file():
        fix = f"Delete '{path}' and the dense model is trained again."
        meta = load_weights(model, path, fix)
        model.to(device)
        if meta.get("metric", "accuracy") != metric:  # cached before scores were named
            meta = {**meta, "metric": metric, **split_scores(model, data)}
        return model, {**meta, "checkpoint": str(path), "cached": True}

    report = train_model(model, data, cfg.train, seed=seed, device=device, progress=progress)
    meta = {**described, "recipe": cfg.train.model_dump(mode="json"), "seed": seed, "key": key,
            **asdict(report), "metric": metric, "torch_version": str(torch.__version__)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        if distributed.is_main():  # under torchrun the processes hold the same weights
            write_torch(path, {"state_dict": state, "meta": meta})
    except OSError as err:  # the trained model is still good: keep it, warn, go on uncached
        log.warning("could not cache the dense model in %s (%s); set PRUNESEARCH_CACHE to a "
                    "writable folder to reuse it next time", path.parent, err)
        return model, {**meta, "checkpoint": None, "cached": False}
    return model, {**meta, "checkpoint": str(path), "cached": False}
