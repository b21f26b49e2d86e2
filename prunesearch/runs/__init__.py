"""The run directory: journal, finetune.csv, Pareto front, hypervolume, plots, resume, export.

Import from the submodules (`prunesearch.runs.rundir`, `.journal`, ...): this package imports
none of them, so a strategy can use `runs.pareto` without pulling in the run directory and the
config it reads.
"""
