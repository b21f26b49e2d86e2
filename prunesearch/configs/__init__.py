"""Job configs shipped with the package (the embedded default job)."""
