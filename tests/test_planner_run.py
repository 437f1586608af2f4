"""``supervisor run --bundle`` through a planner, played against: the caller, the worker and the
service killed or signalled at awkward moments, and hostile planners against the Python front end
(``_planner_call.py``). What the direct path does is the standard; each test says where the planner
path differed."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor._wire import PlanMsg

from .conftest import Bundle, container_inits, needs_root
from .test_console import Tmux, terminal
from .test_oci_containerd import supervisor_oci
from .test_oci_planner_attacks import (NOBODY, answer, encode, gone, play_planner, send, spawn_id_u, spawn_message,
                                      spawned)

pytestmark = needs_root

CLI = [sys.executable, "-m", "supervisor"]


class Service:
    """A ``supervisor-oci planner`` in a session of its own (as from a terminal of its own)."""

    def __init__(self, proc: "subprocess.Popen[str]", root: Path) -> None:
        self.proc = proc
        self.root = root

    @property
    def socket(self) -> str:
        return str(self.root / "planner.sock")

    def workers(self) -> list[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def run(self, b: Path, name: str, **kw: Any) -> "subprocess.Popen[str]":
        return subprocess.Popen(CLI + ["run", "--bundle", str(b), name], text=True,
                                env={**os.environ, "SUPERVISOR_PLANNER": self.socket}, **kw)

    def serves(self, bundle: Bundle) -> None:
        """A run through it still works, and went through it (the planner's log says so)."""
        with self.run(bundle("/bin/sh", "-c", "echo still $((6*7))"), "again", stdout=subprocess.PIPE) as p:
            out, _ = p.communicate(timeout=20)
        assert (p.returncode, out) == (0, "still 42\n")


@contextlib.contextmanager
def service(root: Path) -> Iterator[Service]:
    proc = subprocess.Popen([supervisor_oci(), "--root", str(root), "--debug", "planner"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (root / "planner.sock").exists() or not Service(proc, root).workers():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the planner did not start"
            time.sleep(0.02)
        yield Service(proc, root)
    finally:
        if proc.poll() is None:
            proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err, err


def cgroups_of(pid: int) -> list[str]:
    """What a worker made for its calls and left: its ``supervisor-<pid>`` cgroups."""
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup", onerror=lambda e: None):
        if f"supervisor-{pid}" in dirs:
            found.append(os.path.join(top, f"supervisor-{pid}"))
        dirs[:] = [d for d in dirs if not d.startswith("supervisor-")]
    return found


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gone(pid)


def the_init(caller: int) -> int:
    deadline = time.monotonic() + 10
    while not (inits := container_inits(caller)):
        assert time.monotonic() < deadline, "no container"
        time.sleep(0.01)
    return inits.pop()


# -- the worker, the caller, the service ----------------------------------------------------------


def test_a_killed_worker_ends_the_run_and_what_it_made(bundle: Bundle, tmp_path: Path) -> None:
    """The worker SIGKILLed while the container runs: the front end, waiting for the container on
    the worker's behalf, kills it, says why and exits 125; the worker's cgroups go; the planner
    serves on. (The front end went on waiting for the container, which ran on unattended.)"""
    with service(tmp_path / "root") as planner:
        [worker] = planner.workers()  # the spare, which takes the next call
        with planner.run(bundle("/bin/sleep", "100"), "w", stderr=subprocess.PIPE) as p:
            init = the_init(p.pid)
            os.kill(worker, signal.SIGKILL)
            _, err = p.communicate(timeout=10)
        assert (p.returncode, err) == (125, "supervisor: the planner: the planner ended the call without an answer\n")
        assert gone(init)
        assert cgroups_of(worker) == []
        planner.serves(bundle)


def test_a_killed_caller_takes_its_container_and_the_worker_cleans_up(bundle: Bundle, tmp_path: Path) -> None:
    """The front end SIGKILLed: its container dies with it (parent-death signal), the worker ends
    having removed the container's cgroup, and the planner serves on."""
    with service(tmp_path / "root") as planner:
        [worker] = planner.workers()  # the spare, which takes the next call
        with planner.run(bundle("/bin/sleep", "100"), "c") as p:
            init = the_init(p.pid)
            p.kill()
            p.wait(10)
        assert wait_gone(worker) and wait_gone(init)
        assert cgroups_of(worker) == []
        planner.serves(bundle)


@pytest.mark.parametrize("how", ["SIGINT to its process group", "SIGHUP to its process group", "SIGTERM"])
def test_a_run_under_way_outlives_the_service(bundle: Bundle, tmp_path: Path, how: str) -> None:
    """The service stopped while a run is under way: by ^C or a hangup of the terminal it was started
    from (its process group), or SIGTERM. The run goes on, and ends as its container does; then the
    service ends. (A busy worker stayed in the service's process group: the ^C or hangup was passed
    on to the container.)"""
    b = bundle("/bin/sh", "-c", "trap 'echo got INT; exit 3' INT; trap 'echo got HUP; exit 4' HUP; echo ready; "
               "while :; do sleep 0.05; done")
    with service(tmp_path / "root") as planner:
        with planner.run(b, "s", stdout=subprocess.PIPE) as p:
            try:
                assert p.stdout is not None and p.stdout.readline() == "ready\n"
                sig = signal.Signals[how.split()[0]]
                if "group" in how:
                    os.killpg(planner.proc.pid, sig)
                else:
                    planner.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    planner.proc.wait(0.5)  # it waits for the calls under way (but a SIGHUP kills it)
                assert p.poll() is None
            finally:
                p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=10)
        assert (p.returncode, out) == (3, "got INT\n")
        assert planner.proc.wait(10) == (-signal.SIGHUP if "SIGHUP" in how else 0)


def test_a_terminal_run_with_the_planner_in_the_background_of_the_same_terminal(bundle: Bundle,
                                                                                  tmp_path: Path) -> None:
    """``supervisor-oci planner &`` then ``supervisor run --bundle`` in the same shell: the worker
    relays the caller's terminal, which was its own controlling terminal too, as a background job's
    (its reads and its tcsetattr stopped it: SIGTTIN, SIGTTOU)."""
    root = tmp_path / "root"
    b = bundle("/bin/sh", "-c", "read line; echo got $line; exit 5", edit=terminal)
    tmux = Tmux(f"sv-test-{time.monotonic_ns()}")
    try:
        tmux.start("env -i PATH=/usr/bin:/bin TERM=screen bash --norc --noprofile -i")  # job control
        tmux.type(f"{supervisor_oci()} --root {root} planner &", "Enter")
        tmux.type(f"while [ ! -S {root}/planner.sock ]; do sleep 0.05; done; sleep 1", "Enter")
        tmux.type(f"SUPERVISOR_PLANNER={root}/planner.sock {' '.join(CLI)} run --bundle {b} t; echo exit=$?",
                  "Enter")
        time.sleep(2)
        tmux.type("hello", "Enter")
        tmux.wait_for("exit=5", timeout=15)
        assert "got hello" in tmux.screen()
        tmux.type("kill %1; wait", "Enter")
    finally:
        tmux.kill(check=False)
        deadline = time.monotonic() + 10
        while (root / "planner.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


# -- a hostile planner, against the Python front end ------------------------------------------------------------


def fake_planner(path: Path, b: Path, script: Callable[[socket.socket], None], listen_as: int | None = None,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
    """A hostile planner on ``path``, against ``supervisor run --bundle`` offering it the run."""
    return play_planner(path, CLI + ["run", "--bundle", str(b), "x"], script, listen_as,
                        env={**os.environ, "SUPERVISOR_PLANNER": str(path)}, **kw)


def test_a_planner_that_goes_away_before_it_takes_the_run(bundle: Bundle, tmp_path: Path) -> None:
    """Nothing was done (a planner stopping, say): the run goes on without it."""
    def script(conn: socket.socket) -> None:
        kind, _, fds = answer(conn)
        for fd in fds:
            os.close(fd)
        assert kind == PlanMsg.CALL

    result = fake_planner(tmp_path / "planner.sock", bundle("/bin/echo", "direct"), script)
    assert (result.returncode, result.stdout, result.stderr) == (0, "direct\n", "")


def test_a_planner_of_another_user_is_not_offered_the_run(bundle: Bundle, tmp_path: Path) -> None:
    """A planner that another user listens with gets nothing (no call: no working directory, stdio or
    environment) and no spawn run as root; the run goes on without it. (The Python front end did
    not check whose planner it was, and obeyed its SPAWN.)"""
    os.chmod(tmp_path, 0o777)
    victim = tmp_path / "ran-as"
    got: list[int | None] = []
    result = fake_planner(tmp_path / "planner.sock", bundle("/bin/echo", "direct"), spawn_id_u(victim, got),
                          listen_as=NOBODY)
    assert not victim.exists(), f"the spawn ran as uid {victim.read_text().strip()}"
    assert got == [None], (got, result)
    assert (result.returncode, result.stdout) == (0, "direct\n"), result.stderr


def _sleep_then(message: bytes, n_fds: int) -> Callable[[socket.socket], None]:
    def script(conn: socket.socket) -> None:
        kind, _, fds = answer(conn)
        for fd in fds:
            os.close(fd)
        send(conn, encode(PlanMsg.ACCEPT, [("PID", os.getpid())]), [])
        with open("/bin/sleep", "rb") as program:
            send(conn, spawn_message(["sleep", "100"], []), [program.fileno()])
        pids.append(spawned(conn))
        with open("/bin/true", "rb") as program:
            send(conn, message, [program.fileno()] * n_fds)
        answer(conn)  # until the front end closes

    pids: list[int] = []
    script.pids = pids  # type: ignore[attr-defined]
    return script


@pytest.mark.parametrize("message, fds, expected", [
    (encode(PlanMsg.WAIT, [("PID", 0xFFFFFFFF)]), 0, "pid 4294967295"),
    (encode(PlanMsg.WAIT, [("PID", 0)]), 0, "pid 0"),
    (encode(PlanMsg.DONE, [("EXIT", 300)]), 0, "exit code 300"),
    (spawn_message(["", "x"], []), 1, "argv first element cannot be empty"),
    (spawn_message(["true"], [], ["=nameless"]), 1, "illegal environment variable name"),
    (spawn_message(["true"], [1 << 30]), 2, "Invalid argument"),
])
def test_malformed_messages_after_a_spawn(bundle: Bundle, tmp_path: Path, message: bytes, fds: int,
                                          expected: str) -> None:
    """Each ends the call with 125 and a message that says what was wrong, once what was spawned is
    killed and reaped. (Some were a traceback, with the spawned process left running; an exit code
    over 255 was taken modulo 256.)"""
    script = _sleep_then(message, fds)
    result = fake_planner(tmp_path / "planner.sock", bundle(), script)
    assert result.returncode == 125 and result.stderr.startswith("supervisor: the planner: "), result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert gone(script.pids[0])  # type: ignore[attr-defined]


def test_an_accept_naming_no_process(bundle: Bundle, tmp_path: Path) -> None:
    """An ACCEPT whose pid is out of range is an error before anything runs (forwarding a signal to it
    was a traceback in the signal handler)."""

    def script(conn: socket.socket) -> None:
        _, _, fds = answer(conn)
        for fd in fds:
            os.close(fd)
        send(conn, encode(PlanMsg.ACCEPT, [("PID", 0xFFFFFFFF)]), [])
        answer(conn)

    result = fake_planner(tmp_path / "planner.sock", bundle(), script)
    assert (result.returncode, result.stderr) == (125, "supervisor: the planner: pid 4294967295\n")
