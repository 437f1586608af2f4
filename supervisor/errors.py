"""The two ways a container fails to start: a bad spec (before anything runs) or a failed bootstrap."""

import errno as _errno
import os


class SpecError(ValueError):
    """A container's config or manifest is wrong; raised before anything is spawned.

    ``file`` is the config or manifest (or None for a spec built in Python), ``field`` the JSON path
    or key of the bad value (``process.rlimits[1].type``), ``reason`` what was expected.
    """

    def __init__(self, field: str, reason: str, file: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.file = file
        super().__init__(str(self))

    def with_file(self, file: str) -> "SpecError":
        return SpecError(self.field, self.reason, file)

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}: {where}{self.reason}" if self.file else f"{where}{self.reason}"


class BootstrapError(OSError):
    """The container could not start: the bootstrap or the init reported a failed operation.

    An ``OSError`` with the kernel's ``errno``; ``stage`` says where (``parse``, ``bootstrap``,
    ``init`` or ``exec``), ``operation`` and ``object`` what failed, ``container`` whose.
    """

    def __init__(self, err: int, stage: str, operation: str, object: str, container: str | None = None):
        super().__init__(err, os.strerror(err) if err else "unknown error")
        self.stage = stage
        self.operation = operation
        self.object = object
        self.container = container

    @property
    def message(self) -> str:
        """``exec "/bin/nope": No such file or directory``"""
        return f'{self.operation} "{self.object}": {self.strerror}'

    def __str__(self) -> str:
        return f"{self.container}: {self.message}" if self.container else self.message

    @property
    def exit_code(self) -> int:
        """What a shell would exit with: 127 not found, 126 not executable, 125 anything else."""
        if self.stage == "exec":
            if self.errno in (_errno.ENOENT, _errno.ENOTDIR):
                return 127
            if self.errno in (_errno.EACCES, _errno.ENOEXEC, _errno.EPERM):
                return 126
        return 125
