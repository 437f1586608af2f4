"""Running the peers (unshare, bwrap, crun, runc, nsenter) from the bench scripts: spawned directly
(no shell), stdin and stdout on /dev/null, stderr kept so that a failing peer says why."""

import os
import sys
import tempfile
from typing import IO

__all__ = ["Peers"]


class Peers:
    def __init__(self) -> None:
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.err: IO[bytes] = tempfile.TemporaryFile()
        self.actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.devnull, 1),
                        (os.POSIX_SPAWN_DUP2, self.err.fileno(), 2)]

    def spawn(self, argv: list[str]) -> int:
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=self.actions)

    def run(self, argv: list[str]) -> None:
        """One peer run to its end; a failure raises with the end of what it said."""
        code = os.waitstatus_to_exitcode(os.waitpid(self.spawn(argv), 0)[1])
        if code:
            self.err.seek(0)
            text = self.err.read().decode(errors="replace").strip()[-500:]
            self.err.seek(0)
            self.err.truncate()
            raise RuntimeError(f"exit {code}: {' '.join(argv)}: {text}")

    def stderr_text(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def report(self) -> None:
        """Whatever the peers wrote on stderr, for the record."""
        errors = self.stderr_text()
        if errors.strip():
            print(f"peers' stderr (first 2000 chars):\n{errors[:2000]}", file=sys.stderr)

    def close(self) -> None:
        os.close(self.devnull)
        self.err.close()
