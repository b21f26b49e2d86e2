"""prunesearch: search-based network pruning; see README.md and docs/architecture.md."""

__version__ = "0.1.0"
