"""The one error type of `sweep.data`: its message names the file, the problem and the fix."""


class DataError(Exception):
    """A dataset file is missing, corrupt, truncated or cannot be downloaded."""
