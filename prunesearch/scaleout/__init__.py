"""Shared Optuna studies: the run's own study file (`study`), the tables many processes share
in one RDB (`tables`: claims, budget slots, heartbeats), the run's side of a shared search
(`driver`) and the worker's loop (`worker`)."""
