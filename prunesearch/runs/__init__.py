"""The run directory: journal, finetune.csv, Pareto front, hypervolume, plots, resume, export.

Import from the submodules (`prunesearch.runs.rundir`, `.journal`, ...): this package imports
none of them. Search strategies never import this package: what they write goes through their
context.
"""
