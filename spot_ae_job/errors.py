"""The one exception type the command line turns into a clear message and a non-zero exit."""


class SpotAEError(Exception):
    """A problem the user can fix (bad input, missing data); shown without a traceback."""
