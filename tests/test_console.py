"""Consoles, driven the way a person would: tmux types into a terminal and reads the screen."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .conftest import Bundle, container_inits, needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
              pytest.mark.usefixtures("cli_via")]

SUPERVISOR = f"{sys.executable} -m supervisor"


class Tmux:
    """A tmux session on a server of its own (``-L``): the default server is shared by every tmux
    user, and runs new windows in the mount namespace of whoever started it, which need not be ours
    (our control socket then refuses the CLI, rightly)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True, check=check)

    def start(self, command: str, width: int = 100, height: int = 30) -> None:
        self.run("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command)

    def type(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-t", self.name, "-p").stdout

    def wait_for(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (screen := self.screen()):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never showed:\n{self.screen()}")

    def resize(self, width: int, height: int) -> None:
        self.run("resize-window", "-t", self.name, "-x", str(width), "-y", str(height))

    def kill(self, check: bool = True) -> None:
        """Stop the server, and remove its socket, which tmux leaves behind."""
        self.run("kill-server", check=check)
        socket_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (socket_dir / self.name).unlink(missing_ok=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"sv-test-{time.monotonic_ns()}")
    yield t
    t.kill(check=False)


def terminal(c: dict[str, Any]) -> None:
    c["process"]["terminal"] = True


def test_run_attaches_the_terminal(bundle: Bundle, tmux: Tmux, tmp_path: Path) -> None:
    b = bundle("/bin/sh", edit=terminal)
    script = tmp_path / "session.sh"
    script.write_text(f"stty -g > {tmp_path}/before; {SUPERVISOR} run --bundle {b} box; echo EXIT=$?; "
                      f"stty -g > {tmp_path}/after; sleep 60\n")
    tmux.start(f"sh {script}")
    tmux.wait_for("/ #")
    tmux.type("tty; stty size; echo $$", "Enter")
    screen = tmux.wait_for("30 100")
    assert "/dev/pts/0" in screen  # a pty of the container's own devpts
    tmux.resize(120, 40)
    time.sleep(0.3)
    tmux.type("stty size", "Enter")
    tmux.wait_for("40 120")  # the new size reached the container
    tmux.type("C-c")  # raw mode: ^C goes to the container's shell, which stays
    tmux.type("exit 3", "Enter")
    tmux.wait_for("EXIT=3")
    time.sleep(0.2)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()  # the terminal is back


@contextmanager
def running_manifest(tmp_path: Path, text: str) -> Iterator[Path]:
    """``supervisor run`` of a manifest in the background; yields its state directory once it answers."""
    state = tmp_path / "state"
    manifest = tmp_path / "m.toml"
    manifest.write_text(text)
    with subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--state-dir", str(state), str(manifest)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as p:
        try:
            deadline = time.monotonic() + 10
            while not (state / "control.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            yield state
        finally:
            p.terminate()
            p.wait(20)


def test_exec_with_a_terminal(tmux: Tmux, tmp_path: Path) -> None:
    manifest = '[containers.web]\nargs = ["/bin/sleep", "60"]\nhostname = "web"\ninit = true\n'
    with running_manifest(tmp_path, manifest) as state:
        tmux.start(f"{SUPERVISOR} exec -t --state-dir {state} web -- /bin/sh; echo EXIT=$?; sleep 60")
        tmux.wait_for("#")  # the host root's /bin/sh (dash) prompts "# "
        tmux.type("tty; hostname; exit 4", "Enter")
        screen = tmux.wait_for("EXIT=4")
        assert "/dev/pts/" in screen and "\nweb\n" in screen


def test_a_terminal_containers_output_goes_to_the_logs(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text('[containers.t]\nargs = ["/bin/sh", "-c", "tty; echo hello"]\nterminal = true\n')
    events = tmp_path / "events"
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--state-dir", str(tmp_path / "s"),
                             str(manifest), "--events", str(events)], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["t | /dev/pts/0", "t | hello"]
    assert [json.loads(line)["event"] for line in events.read_text().splitlines()] == ["started", "exited"]


def test_a_hangup_ends_the_container(bundle: Bundle, tmux: Tmux, tmp_path: Path) -> None:
    b = bundle("/bin/sh", edit=terminal)
    pidfile = tmp_path / "pid"
    tmux.start(f"sh -c 'echo $$ > {pidfile}; exec {SUPERVISOR} run --bundle {b} hup'")
    tmux.wait_for("/ #")
    cli = int(pidfile.read_text())
    inits = container_inits(cli)
    assert len(inits) == 1
    tmux.kill()  # the terminal goes away
    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while any(alive(p) for p in (cli, *inits)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(cli), "the CLI is still running"
    assert not any(alive(p) for p in inits), "the container is still running"


def test_a_lot_of_input_does_not_deadlock_the_terminal(bundle: Bundle, tmp_path: Path) -> None:
    # both directions full at once: `cat` echoes 2 MB through the pty while we still send
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1023 + b"\n" * 1 + (b"y" * 1023 + b"\n") * 2047)
    b = bundle("/bin/sh", "-c", "stty -echo; cat", edit=terminal)
    with open(big, "rb") as stdin:
        result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--bundle", str(b), "bigcat"],
                                stdin=stdin, capture_output=True, timeout=15, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace(b"\r\n", b"\n").count(b"\n") >= 2048


def test_the_pty_has_the_terminals_size_before_the_workload_runs(bundle: Bundle, tmux: Tmux, tmp_path: Path) -> None:
    """A workload that asks at once sees the user's terminal, never 0x0 (no SIGWINCH had time to come)."""
    b = bundle("/bin/stty", "size", edit=terminal)
    tmux.start(f"{SUPERVISOR} run --bundle {b} sized; echo EXIT=$?; sleep 60", width=123, height=45)
    screen = tmux.wait_for("EXIT=")
    assert "45 123" in screen and "EXIT=0" in screen


def test_exec_with_a_terminal_starts_at_the_terminals_size(tmux: Tmux, tmp_path: Path) -> None:
    with running_manifest(tmp_path, '[containers.web]\nargs = ["/bin/sleep", "60"]\n') as state:
        tmux.start(f"{SUPERVISOR} exec -t --state-dir {state} web -- /bin/stty size; echo EXIT=$?; sleep 60",
                   width=111, height=33)
        screen = tmux.wait_for("EXIT=")
        assert "33 111" in screen and "EXIT=0" in screen


def test_console_size_from_the_config(bundle: Bundle, tmp_path: Path) -> None:
    """Without a terminal of ours (stdin is not one), the pty takes process.consoleSize."""
    def sized(c: dict[str, Any]) -> None:
        terminal(c)
        c["process"]["consoleSize"] = {"height": 21, "width": 77}

    b = bundle("/bin/stty", "size", edit=sized)
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--bundle", str(b), "cs"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout.split()) == (0, ["21", "77"]), result.stderr


def test_with_the_pid1_init_the_workload_is_the_terminals_foreground(bundle: Bundle, tmux: Tmux) -> None:
    """The init's children would share its process group: ^C would reach the workload from the
    terminal and again through the init. The workload leads the foreground group instead."""
    def edit(c: dict[str, Any]) -> None:
        terminal(c)
        c["annotations"] = {"supervisor.init": "true"}

    script = ("read pid comm state ppid pgrp session tty tpgid rest < /proc/self/stat; "
              "echo pid=$pid pgrp=$pgrp tpgid=$tpgid")
    b = bundle("/bin/sh", "-c", script, edit=edit)
    tmux.start(f"{SUPERVISOR} run --bundle {b} fg; echo EXIT=$?; sleep 60")
    screen = tmux.wait_for("EXIT=")
    assert "pid=2 pgrp=2 tpgid=2" in screen and "EXIT=0" in screen, screen
