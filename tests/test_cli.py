"""The ``supervisor`` command, run as a user runs it: exit codes, messages, stdio, signals."""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Bundle, container_hooks, container_inits, needs_root

pytestmark = [needs_root, pytest.mark.usefixtures("cli_via")]

CLI = [sys.executable, "-m", "supervisor"]


def run(bundle: Path, name: str = "box", **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + ["run", "--bundle", str(bundle), name], capture_output=True, text=True, timeout=30,
                          **kw)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_exit_code_and_stdio_pass_through(bundle: Bundle) -> None:
    result = run(bundle("/bin/sh", "-c", "cat; echo err >&2; exit 7"), input="hello\n")
    assert (result.returncode, result.stdout) == (7, "hello\n")
    assert result.stderr == "err\n"  # runc's default devices rule is applied, nothing to warn about


def test_one_shot_run_imports_no_event_loop(bundle: Bundle) -> None:
    """Its start-up time is part of every run: no anyio, trio or asyncio."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "supervisor", "run", "--bundle",
                             str(bundle("/bin/true")), "box"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "supervisor" in imported
    assert imported.isdisjoint({"anyio", "trio", "asyncio", "sniffio"})


@pytest.mark.parametrize("args, code, message", [
    (["/bin/nope"], 127, 'supervisor: box: exec "/bin/nope": No such file or directory'),
    (["/data/not-executable"], 126, 'supervisor: box: exec "/data/not-executable": Permission denied'),
])
def test_start_failures(bundle: Bundle, args: list[str], code: int, message: str) -> None:
    result = run(bundle(*args))
    assert (result.returncode, last_line(result.stderr)) == (code, message)
    assert "Traceback" not in result.stderr


def test_setup_failure_is_125(bundle: Bundle) -> None:
    b = bundle(edit=lambda c: c["mounts"].append({"destination": "/x", "type": "nosuchfs", "source": "x"}))
    result = run(b)
    assert (result.returncode, last_line(result.stderr)) == (125, 'supervisor: box: mount "/x": No such device')


def test_bad_config_exits_2(bundle: Bundle) -> None:
    b = bundle(edit=lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]))
    result = run(b)
    assert result.returncode == 2
    assert result.stderr == f'supervisor: {b}/config.json: process.rlimits[0].type: unknown rlimit "RLIMIT_FOO"\n'
    missing = run(b / "nowhere")
    assert (missing.returncode, missing.stderr) == (2, f"supervisor: {b}/nowhere/config.json: no such file\n")


def test_hooks_run_as_under_runc_run(bundle: Bundle, tmp_path: Path) -> None:
    """Every point, in the order of the container's life, each with its state; a poststart failure is
    a warning."""
    order = tmp_path / "seen" / "order"

    def host_hook(kind: str, extra: str = "") -> dict[str, Any]:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind} $(grep -o '\"status\": \"[a-z]*\"') >> {order}"
                                                         f"{extra}"]}

    def edit(config: dict[str, Any]) -> None:
        status = "$(grep -o '\"status\": \"[a-z]*\"')"
        container_hooks(config, tmp_path, create=[f"echo createContainer {status} >> {order}"],
                        start=[f"echo startContainer {status} >> /seen/order"])
        config["hooks"] |= {"prestart": [host_hook("prestart")], "createRuntime": [host_hook("createRuntime")],
                            "poststart": [host_hook("poststart", "; exit 4")], "poststop": [host_hook("poststop")]}

    b = bundle("/bin/sh", "-c", "until grep -q poststart /seen/order; do sleep 0.01; done; echo workload >> "
               "/seen/order; exit 3", edit=edit)
    result = run(b)
    assert result.returncode == 3, result.stderr
    assert result.stderr == "supervisor: box: warning: error running poststart hook #0 (/bin/sh): exit status 4\n"
    assert order.read_text().splitlines() == [
        'prestart "status": "creating"', 'createRuntime "status": "creating"', 'createContainer "status": "creating"',
        'startContainer "status": "created"', 'poststart "status": "running"', "workload",
        'poststop "status": "stopped"']


@pytest.mark.parametrize("kind", ["prestart", "createContainer", "startContainer"])
def test_a_failing_hook_fails_the_start(bundle: Bundle, tmp_path: Path, kind: str) -> None:
    def edit(config: dict[str, Any]) -> None:
        fail = "echo bad >&2; exit 1"
        container_hooks(config, tmp_path, create=[fail if kind == "createContainer" else "true"],
                        start=[fail if kind == "startContainer" else "true"])
        if kind == "prestart":
            config["hooks"]["prestart"] = [{"path": "/bin/sh", "args": ["sh", "-c", fail]}]

    result = run(bundle("/bin/sh", "-c", "echo the workload ran", edit=edit))
    path = {"prestart": "/bin/sh", "createContainer": f"{tmp_path}/create-hook",
            "startContainer": "/hookbin/start-hook"}[kind]
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr == f"supervisor: box: error running {kind} hook #0 ({path}): exit status 1, output: bad\n"


def _child_of(pid: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inits := container_inits(pid):
            return inits.pop()
        time.sleep(0.02)
    raise AssertionError(f"no child of {pid}")


def test_signals_are_forwarded_and_reported(bundle: Bundle) -> None:
    b = bundle("/bin/sh", "-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done")
    with subprocess.Popen(CLI + ["run", "--bundle", str(b), "t"], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 3

    b = bundle("/bin/sleep", "100")
    with subprocess.Popen(CLI + ["run", "--bundle", str(b), "k"]) as p:
        init = _child_of(p.pid)
        os.kill(init, signal.SIGKILL)
        assert p.wait(10) == 128 + signal.SIGKILL


def test_container_dies_with_the_supervisor(bundle: Bundle) -> None:
    b = bundle("/bin/sleep", "100")
    with subprocess.Popen(CLI + ["run", "--bundle", str(b), "orphan"]) as p:
        init = _child_of(p.pid)
        p.kill()
        p.wait(10)
    deadline = time.monotonic() + 1.0
    while os.path.exists(f"/proc/{init}") and time.monotonic() < deadline:
        time.sleep(0.01)
    # with its parent gone the init is killed (PDEATHSIG) and reaped by the host's init
    state = Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[0] if os.path.exists(
        f"/proc/{init}") else "gone"
    assert state in ("gone", "Z")


@pytest.mark.not_served
def test_a_closed_stdin_stays_closed(bundle: Bundle) -> None:
    """With our stdin closed, the container's is closed too. (Through a planner, the front end's
    socket took fd 0, and was sent as the stdin of the call.)"""
    b = bundle("/bin/sh", "-c", "cat; echo cat=$? >&2; echo out")
    result = subprocess.run(["/bin/sh", "-c", 'exec "$@" 0<&-', "sh", *CLI, "run", "--bundle", str(b), "c"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "cat: read error: Bad file descriptor\n"
                                                                              "cat=1\n")


@pytest.mark.not_served
def test_a_signal_while_planning_ends_the_run_as_it_would_the_command(bundle: Bundle, tmp_path: Path) -> None:
    """A SIGTERM that comes before the container is started (here: while config.json, a FIFO, is
    read) ends the command, and no container runs. (Through a planner, the worker ignored it: the
    container ran all the same.)"""
    config = bundle("/bin/sh", "-c", "echo the workload ran").joinpath("config.json")
    text = config.read_text()
    config.unlink()
    os.mkfifo(config)
    with subprocess.Popen(CLI + ["run", "--bundle", str(config.parent), "p"], stdout=subprocess.PIPE, text=True) as p:
        time.sleep(1)  # it reads the FIFO
        p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            fd = os.open(config, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads it any more
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(text)
        assert p.stdout is not None and p.stdout.read() == ""
        assert p.wait(10) == -signal.SIGTERM


def test_sigcont_is_forwarded(bundle: Bundle) -> None:
    """As runc run: the container's init is told when we are continued (kill -CONT, fg)."""
    b = bundle("/bin/sh", "-c", "trap 'echo continued' CONT; trap 'exit 3' TERM; echo ready; "
               "while :; do sleep 0.05; done")
    with subprocess.Popen(CLI + ["run", "--bundle", str(b), "c"], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGCONT)
        assert select.select([p.stdout], [], [], 10)[0] and p.stdout.readline() == "continued\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 3


def test_readme_commands_are_what_ci_runs() -> None:
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    ci_command = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in readme
    assert "pip install . && supervisor run examples/manifest.toml" in readme


def test_example_runs() -> None:
    root = Path(__file__).parent.parent
    result = subprocess.run(CLI + ["run", "--bundle", str(root / "examples" / "hello")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello from hello: pid 1, uid 0")
    assert "/usr is read-only\ntmp is writable\n" in result.stdout
