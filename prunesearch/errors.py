"""Errors a user can fix. The CLI prints their message and exits with code 2, no traceback."""


class UserError(Exception):
    """Bad input: a config field, a path, a data file, a model or a budget. The message names
    the problem and the fix in one paragraph."""


class DataError(UserError):
    """A dataset could not be found, read or verified."""


class ConfigError(UserError):
    """A run config is invalid."""


class ModelError(UserError):
    """A model cannot be created, loaded or searched."""
