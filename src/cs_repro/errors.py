"""One exception type for everything a user can fix (bad params, missing or corrupt data).

The CLI prints its message as one line and exits with status 2: no traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names what to change."""
