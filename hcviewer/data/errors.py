"""The error type of every data reader (its own module so that readers and records share it
without importing each other)."""


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the record and the fix."""
