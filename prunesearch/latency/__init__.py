"""Latency: measuring a model (measure.py) and predicting any subnetwork's (table.py)."""

from prunesearch.latency.measure import latency_ratio, measure_latency_ms
from prunesearch.latency.table import LatencyModel, build_latency_model

__all__ = ["LatencyModel", "build_latency_model", "latency_ratio", "measure_latency_ms"]
