"""``python -m supervisor``: the same as the ``supervisor`` command."""

from ._entry import entry

entry()
