"""The project's own error types: what the command line reports as one line and exit status 2.

Anything else that escapes is a bug and keeps its traceback; catching these, never a bare
``ValueError``, is what keeps a bug from passing for bad input.
"""


class CarbonbenchError(Exception):
    """Something the user can fix: the message names the problem and the fix."""


class InputError(CarbonbenchError, ValueError):
    """A bad argument, option or file content."""


class InternalError(CarbonbenchError):
    """A bug in carbonbench itself (not in the input, the machine or a case's model): said so,
    with where to find its traceback."""
