"""The run directory: journal, Pareto front, hypervolume, plots, resume."""

from prunesearch.runs.journal import Candidate, CandidateJournal, read_journal
from prunesearch.runs.pareto import hypervolume, pareto_indices
from prunesearch.runs.plots import PlotSeries, plot_fronts
from prunesearch.runs.rundir import RunDir, RunView

__all__ = ["Candidate", "CandidateJournal", "PlotSeries", "RunDir", "RunView", "hypervolume",
           "pareto_indices", "plot_fronts", "read_journal"]
