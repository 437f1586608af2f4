"""The two ways a container fails to start: a bad spec (before anything runs) or a failed bootstrap
(a hook the init ran among them)."""

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


def hook_problem(point: str, index: int, path: str, *, err: int = 0, code: int = 0, signal: int = 0,
                 timed_out: int = 0, output: str = "") -> str:
    """How a hook failed, in one wording for every hook point, whoever ran it (the supervisor on the
    host, or the init inside the container): ``error running createContainer hook #0 (/bin/x): exit
    status 1, output: no GPU``. ``err``: the errno that kept it from running; ``timed_out``: its
    timeout, which it ran past; else its exit ``code`` or the ``signal`` that killed it."""
    what = f"error running {point} hook #{index} ({path})"
    if err:
        return f"{what}: {os.strerror(err)}"
    if timed_out:
        return f"{what}: timed out after {timed_out}s"
    problem = f"killed by signal {signal}" if signal else f"exit status {code}"
    output = output.strip()
    return f"{what}: {problem}" + (f", output: {output}" if output else "")


class HookError(BootstrapError):
    """A hook the init runs inside the container (``createContainer``, ``startContainer``) failed:
    ``operation`` is its point, ``index`` its place there and ``object`` its path; ``status`` (a wait
    status, None when it did not run), ``timed_out`` (its timeout, when it ran past it) and
    ``output`` (the start of what it printed) say how."""

    def __init__(self, err: int, point: str, path: str, index: int, status: int | None, timed_out: int,
                 output: str) -> None:
        super().__init__(err, "hook", point, path)
        self.index = index
        self.status = status
        self.timed_out = timed_out
        self.output = output

    @property
    def message(self) -> str:
        status = self.status or 0
        return hook_problem(self.operation, self.index, self.object, err=self.errno or 0,
                            code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0,
                            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                            timed_out=self.timed_out, output=self.output)
