"""systemd's readiness protocol (``sd_notify``), both ways.

Into containers: a service with ``notify = true`` gets ``NOTIFY_SOCKET=/run/notify.sock``, a unix
datagram socket of the supervisor's bound there; ``READY=1`` from any of its processes makes it
healthy, as systemd's ``Type=notify`` makes a unit active. The socket lives in a private directory
of the supervisor's, one per service name, for the Supervisor's lifetime: its path is part of the
container's spec, so a stable one keeps the plan of the spec cached across restarts.

Out to systemd: ``supervisor run`` under ``Type=notify`` (``NOTIFY_SOCKET`` in its environment)
says ``READY=1`` and ``STOPPING=1`` with ``notify_systemd``. Blocking and loop-free: the one-shot CLI
may import it.
"""

import os
import socket

__all__ = ["CONTAINER_PATH", "ENV", "NotifySockets", "notify_systemd", "parse"]

ENV = "NOTIFY_SOCKET"
#: where the socket appears inside a container (on its own /run, a tmpfs, for inline containers)
CONTAINER_PATH = "/run/notify.sock"


def notify_systemd(message: str, environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Send ``message`` (``"READY=1"``) to ``$NOTIFY_SOCKET``: a path, or ``@name`` for an abstract
    socket. False when there is no socket to tell, or it cannot be reached (systemd is then not
    waiting for us: nothing to fail)."""
    address = (os.environ if environ is None else environ).get(ENV)
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(message.encode(), target)
        except OSError:
            return False
    return True


def parse(datagram: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines of one notification (``READY=1\\nSTATUS=up``)."""
    out = {}
    for line in datagram.decode(errors="replace").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key] = value
    return out


class NotifySockets:
    """The sockets that containers notify, one per service name, in one private directory."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._sockets: dict[str, socket.socket] = {}

    def path(self, name: str) -> str:
        """The host path of ``name``'s socket, made and bound on first use."""
        if self._dir is None:
            import tempfile

            self._dir = tempfile.mkdtemp(prefix="supervisor-notify-")
            # searchable by a container's mapped root, for the bind mount; nothing to list
            os.chmod(self._dir, 0o711)
        path = os.path.join(self._dir, f"{name}.sock")
        if name not in self._sockets:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            try:
                s.bind(path)
                os.chmod(path, 0o666)  # the workload's user, whoever it is, may write
            except BaseException:
                s.close()
                raise
            self._sockets[name] = s
        return path

    def socket(self, name: str) -> socket.socket:
        self.path(name)
        return self._sockets[name]

    def drain(self, name: str) -> None:
        """Drop what an earlier run of ``name`` said and nobody read."""
        s = self._sockets.get(name)
        while s is not None:
            try:
                s.recv(4096)
            except BlockingIOError:
                return

    def close(self, name: str | None = None) -> None:
        """Close ``name``'s socket, or all of them and the directory."""
        for n in [name] if name is not None else list(self._sockets):
            s = self._sockets.pop(n, None)
            if s is not None:
                s.close()
                if self._dir is not None:
                    try:
                        os.unlink(os.path.join(self._dir, f"{n}.sock"))
                    except FileNotFoundError:
                        pass
        if name is None and self._dir is not None:
            os.rmdir(self._dir)
            self._dir = None
