"""The run config as the application composes it: RunConfig plus a `[search.<name>]` section per
registered strategy with options and the `[evaluator]` options of the chosen kind, so pydantic
validates them like any section (errors name e.g. `search.emo.pop_size`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, create_model

from prunesearch.config import (
    RunConfig,
    SearchConfig,
    import_plugins,
    read_config_tree,
    section_field,
    validate_config,
)
from prunesearch.evaluators import evaluator_options
from prunesearch.strategies.registry import strategy_options

_SCHEMAS: dict[tuple[Any, ...], type[RunConfig]] = {}


def run_config_model(evaluator_kind: str = "weight-sharing") -> type[RunConfig]:
    """RunConfig with the registries' sections as they are now: a strategy registered by a
    plugin or a test gets its section."""
    sections = strategy_options()
    key = (tuple(sections.items()), evaluator_kind)
    if key not in _SCHEMAS:
        search = create_model("SearchConfig", __base__=SearchConfig, **{
            section_field(name): (model, Field(default_factory=model, alias=name))
            for name, model in sections.items()})
        evaluator = create_model("EvaluatorConfig", __base__=evaluator_options(evaluator_kind),
                                 kind=(Literal[evaluator_kind], evaluator_kind))
        _SCHEMAS[key] = create_model("RunConfig", __base__=RunConfig,
                                     search=(search, Field(default_factory=search)),
                                     evaluator=(evaluator, Field(default_factory=evaluator)))
    return _SCHEMAS[key]


def config_from_dict(tree: dict[str, Any], source: str,
                     run_dir: Path | None = None) -> RunConfig:
    """A config tree (TOML read, or the Python API's dict) validated with its plugins
    imported first; `run_dir`: the config is a run folder's own, read back."""
    import_plugins(tree.get("plugins", []), source, run_dir)
    evaluator = tree.get("evaluator", {})
    kind = evaluator.get("kind", "weight-sharing") if isinstance(evaluator, dict) else None
    schema = run_config_model(kind if isinstance(kind, str) else "weight-sharing")
    return validate_config(tree, source, schema, run_dir)


def load_config(path: str | Path | None, overrides: list[str] = (),
                run_dir: Path | None = None) -> RunConfig:
    """Read a TOML config (the embedded default job when `path` is None) and apply overrides.
    `run_dir`: the config is a run folder's own, read back (code inside it is refused)."""
    tree, source = read_config_tree(path, overrides)
    return config_from_dict(tree, source, run_dir)
