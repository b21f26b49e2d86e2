"""A user's own code named as 'package.module:factory' (models, datasets): importing it and
calling it with the keyword arguments it accepts, every failure a one-paragraph UserError."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prunesearch.errors import UserError


def describe_error(err: BaseException) -> str:
    """'Type: message' on one line, for quoting an exception inside a one-paragraph message."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def refuse_code_inside(module: str, root: Path, source: str) -> None:
    """A run folder is data: refuse the user code a config read back from it names
    (`module` or 'module:factory') when that code lies inside the folder. Otherwise a folder
    someone sent, opened as the working directory, could carry the module its config.toml
    imports. Finding a top-level module does not run it."""
    top = module.partition(":")[0].split(".")[0]
    try:
        spec = importlib.util.find_spec(top) if top else None
    except (ImportError, ValueError):
        return  # not importable at all: the import itself will say so
    places = [spec.origin, *(spec.submodule_search_locations or [])] if spec else []
    inside = [p for p in places if p and Path(p).resolve().is_relative_to(root.resolve())]
    if inside:
        raise UserError(f"{source} names code '{module}' found inside the run folder itself "
                        f"({inside[0]}); a run folder is data and prunesearch does not run "
                        f"code from it. Install that module elsewhere (or put it on "
                        f"PYTHONPATH outside the folder) if you trust it.")


def import_factory(
    spec: str, what: str, error: type[UserError], returns: str
) -> Callable[..., Any]:
    """The callable that `spec` ('package.module:factory', or 'module:Class.method') names.
    `what` ('model', 'dataset') and `returns` ('an nn.Module') only word the messages; every
    failure raises `error`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise error(f"{what} spec '{spec}' is not of the form 'package.module:factory'; e.g. "
                    f"'mypkg.things:build' for the function build in mypkg/things.py.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise error(f"{what} spec '{spec}': module '{module_name}' was not found; make it "
                        f"importable (pip install it, or run with PYTHONPATH set to the folder "
                        f"that contains it).") from err
        raise error(f"{what} spec '{spec}': importing '{module_name}' failed: {err}; install "
                    f"what it needs.") from err
    except Exception as err:
        raise error(f"{what} spec '{spec}': importing '{module_name}' raised "
                    f"{describe_error(err)}; fix the module.") from err
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise error(f"{what} spec '{spec}': '{module_name}' has no attribute '{attr}'; it "
                        f"defines: {', '.join(public) or '(nothing public)'}.")
        factory = getattr(factory, part)
    if not callable(factory):
        raise error(f"{what} spec '{spec}': '{attr}' is a {type(factory).__name__}, not a "
                    f"function or class that returns {returns}.")
    return factory


def accepted_kwargs(factory: Callable[..., Any], offered: Mapping[str, Any]) -> dict[str, Any]:
    """Those of `offered` that `factory`'s signature names (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature: offer nothing
        return {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in offered.items() if takes_any or k in params}
