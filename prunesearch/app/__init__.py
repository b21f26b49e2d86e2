"""The application layer: what the CLI, the Python API, `prunesearch worker`, torchrun and the
benchmarks all call. One module per command: prepare, run, finetune, export, results."""
