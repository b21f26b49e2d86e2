"""The base of every options model: config sections, a strategy's or an evaluator's options.

Unknown keys and wrong types are refused (nanoGPT's rule: a typo is never silently ignored), and
options are frozen once validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
