"""``python -m supervisor``: the same as the ``supervisor`` command."""

from .cli import entry

entry()
