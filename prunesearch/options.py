"""The base of every options model: config sections, a strategy's or an evaluator's options.

Unknown keys and wrong types are refused (nanoGPT's rule: a typo is never silently ignored), and
options are frozen once validated."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # fields added after cache keys hashed the section: name -> the value they implicitly had
    added_later: ClassVar[dict[str, Any]] = {}

    def cache_fields(self) -> dict[str, Any]:
        """The section as cache keys hash it: every field, except a field added later while
        it holds the value it implicitly had before (so keys made earlier still find their
        files)."""
        fields = self.model_dump(mode="json")
        for name, before in self.added_later.items():
            if fields[name] == before:
                del fields[name]
        return fields
