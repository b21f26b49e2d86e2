"""Model names -> constructors, and a user's own `package.module:factory`.

Like timm's registry, with two differences: a name can be registered once only, and an unknown
name lists the valid ones. `build_model` is what the application calls: it picks the zoo or the
user's factory (a name with ':' is a user spec) and checks the result on an example batch, so a
model that does not fit the data fails here with a clear message, not deep inside a search.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from prunesearch.errors import ModelError, UserError
from prunesearch.plugins import accepted_kwargs, describe_error, import_factory


class ModelFactory(Protocol):
    """A zoo constructor. `input_size` is the spatial shape ((H, W) for images, (F,) or () for
    flat data); models with adaptive pooling ignore it."""

    def __call__(
        self,
        in_chans: int,
        num_classes: int,
        width_mult: float = 1.0,
        input_size: tuple[int, ...] = (28, 28),
    ) -> nn.Module: ...


_REGISTRY: dict[str, ModelFactory] = {}
# `package.module:factory` names of factories inside prunesearch (their module needs an
# optional extra, so they are not zoo names): as safe to build from a file as zoo names.
SHIPPED_FACTORIES = frozenset({"prunesearch.models.hf:llama", "prunesearch.models.hf:vit"})


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory under `name` (which must be new and contain no ':')."""
    if not name or ":" in name:
        raise ModelError(f"model name '{name}' is invalid: use a non-empty name without ':' "
                         f"(':' marks a user model spec 'package.module:factory').")

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            taken = _REGISTRY[name]
            raise ModelError(f"model '{name}' is already registered by "
                             f"{taken.__module__}.{taken.__qualname__}; choose another name.")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_models(filter: str = "") -> list[str]:
    """Registered names, sorted; `filter` is an fnmatch pattern such as 'resnet*'."""
    return sorted(n for n in _REGISTRY if not filter or fnmatch.fnmatchcase(n, filter))


def _check_sizes(in_chans: int, num_classes: int, width_mult: float) -> None:
    if in_chans < 1 or num_classes < 1 or not width_mult > 0:
        raise ModelError(f"cannot build a model with in_chans={in_chans}, "
                         f"num_classes={num_classes}, width_mult={width_mult}: all must be "
                         f"positive.")


def create_model(
    name: str,
    in_chans: int,
    num_classes: int,
    width_mult: float = 1.0,
    input_size: tuple[int, ...] = (28, 28),
) -> nn.Module:
    """A freshly initialised zoo model (seed with torch.manual_seed beforehand if needed)."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown model '{name}'; available: {', '.join(list_models())} "
                         f"(or your own as 'package.module:factory').")
    _check_sizes(in_chans, num_classes, width_mult)
    return _REGISTRY[name](in_chans=in_chans, num_classes=num_classes, width_mult=width_mult,
                           input_size=tuple(input_size))


def load_user_model(
    spec: str,
    in_chans: int,
    num_classes: int,
    width_mult: float = 1.0,
    input_size: tuple[int, ...] = (28, 28),
) -> nn.Module:
    """Import 'package.module:factory' and call it. The factory receives those of in_chans,
    num_classes, width_mult and input_size that its signature names (all with **kwargs); one
    taking none of them is called with no arguments."""
    _check_sizes(in_chans, num_classes, width_mult)
    factory = import_factory(spec, "model", ModelError, returns="an nn.Module")
    kwargs = accepted_kwargs(factory, {"in_chans": in_chans, "num_classes": num_classes,
                                       "width_mult": width_mult, "input_size": tuple(input_size)})
    if width_mult != 1.0 and "width_mult" not in kwargs:
        raise ModelError(f"model spec '{spec}': width_mult={width_mult} was asked for but the "
                         f"factory takes no width_mult argument; set model.width_mult = 1.0 or "
                         f"add the argument.")
    try:
        model = factory(**kwargs)
    except UserError:  # the factory already says what is wrong and how to fix it
        raise
    except Exception as err:
        raise ModelError(f"model spec '{spec}': calling it with {sorted(kwargs) or 'no args'} "
                         f"raised {describe_error(err)}; the factory should accept these "
                         f"keyword arguments (or none) and return an nn.Module.") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"model spec '{spec}' returned a {type(model).__name__}, not a "
                         f"torch.nn.Module; return the network itself.")
    return model


def split_input_shape(input_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """(in_chans, input_size) of one example's shape: (C, H, W) -> (C, (H, W)); a flat (F,)
    example has one channel, (F,) -> (1, (F,)), so in_features = in_chans * prod(input_size)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) >= 2:
        return shape[0], shape[1:]
    return 1, shape


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, width_mult: float = 1.0
) -> nn.Module:
    """A zoo model or, when `name` contains ':', a user model, checked to map a batch of
    `input_shape` examples to `num_classes` logits."""
    in_chans, input_size = split_input_shape(input_shape)
    make = load_user_model if ":" in name else create_model
    model = make(name, in_chans, num_classes, width_mult=width_mult, input_size=input_size)
    check_model_io(model, name, input_shape, num_classes)
    return model


def check_model_io(
    model: nn.Module, name: str, input_shape: Sequence[int], num_classes: int
) -> None:
    """Run a batch of two zero examples on the CPU; refuse anything but (2, num_classes)
    logits, or (2, T, num_classes) for examples of shape (T,) (a language model's tokens), or
    (2, num_classes, H, W) for images (C, H, W) (a label per pixel: segmentation)."""
    example = torch.zeros(2, *input_shape)
    was_training = model.training
    model.eval()  # batch statistics of two zeros are meaningless; and BN1d refuses batch 1
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as err:
        raise ModelError(f"model '{name}' fails on a batch of shape {tuple(example.shape)} "
                         f"({math.prod(input_shape)} values per example): "
                         f"{type(err).__name__}: {err}. Choose a model that accepts this data "
                         f"(e.g. 'mlp' for flat features).") from err
    finally:
        model.train(was_training)
    per_position = {1: (2, *input_shape, num_classes),  # tokens
                    3: (2, num_classes, *input_shape[1:])}.get(len(input_shape))  # pixels
    wanted = [(2, num_classes)] + ([per_position] if per_position else [])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) not in wanted:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        also = {1: "for a sequence of tokens", 3: "for a label per pixel"}.get(len(input_shape))
        raise ModelError(f"model '{name}' returned {got} for a batch of 2 examples; expected "
                         f"logits of shape (2, {num_classes}), one per class of the dataset"
                         + (f", or {per_position} {also}" if per_position else "") + ".")
