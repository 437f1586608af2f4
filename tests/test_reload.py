"""Live reload: the Supervisor's ``reload`` and ``supervisor run``'s SIGHUP and ``supervisor reload``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import attrs
import pytest

import supervisor
from supervisor.service import Policy, Service
from supervisor.spec import User
from supervisor.states import State
from supervisor.supervise import Event, Supervisor

from .conftest import Bundle, needs_root
from .test_supervise import collect

pytestmark = needs_root

SERVE = "trap 'exit 0' TERM; while :; do sleep 0.05; done"


def service(bundle: Bundle, name: str, script: str, **policy: object) -> Service:
    spec = supervisor.ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script))
    return Service(name, spec, Policy(stop_timeout=2, **policy))  # type: ignore[arg-type]


async def test_reload_touches_only_what_changed(bundle: Bundle) -> None:
    events: list[Event] = []
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        keep = await sup.start(service(bundle, "keep", SERVE))
        change = await sup.start(service(bundle, "change", SERVE))
        gone = await sup.start(service(bundle, "gone", SERVE, depends_on=("change",)))
        kept_pid, old_pid = keep.pid, change.pid
        new = [service(bundle, "keep", SERVE), service(bundle, "change", "echo v2; " + SERVE),
               service(bundle, "new", SERVE, depends_on=("change",))]
        assert str(sup.changes(new)) == "1 started (new), 1 restarted (change), 1 stopped (gone), 1 unchanged"
        changes = await sup.reload(new)
        assert (changes.started, changes.restarted, changes.stopped, changes.unchanged) == (
            ("new",), ("change",), ("gone",), ("keep",))
        assert "gone" not in sup.handles and gone.state == State.STOPPED
        with anyio.fail_after(10):
            await sup.handles["new"].wait_for(State.RUNNING)
        assert keep.pid == kept_pid and keep.state == State.RUNNING
        assert sup.handles["change"] is change and change.pid != old_pid and change.state == State.RUNNING
        assert change.service.spec.process.args[-1].startswith("echo v2")
        await sup.stop_all()
    order = [(e.container, e.event) for e in events]
    assert order.index(("keep", "exited")) > order.index(("new", "started"))  # only by the stop_all
    # the one that goes is stopped before what it depends on; the new one starts after it
    assert order.index(("gone", "stopped")) < order.index(("change", "exited"))
    assert order.index(("change", "started"), order.index(("change", "exited"))) < order.index(("new", "started"))


async def test_a_reload_that_does_not_plan_changes_nothing(bundle: Bundle) -> None:
    async with Supervisor() as sup:
        keep = await sup.start(service(bundle, "keep", SERVE))
        pid = keep.pid
        spec = supervisor.ContainerSpec.from_bundle(bundle("/bin/true"))
        bad = attrs.evolve(spec, process=attrs.evolve(spec.process, user=User(name="nobody-here")))
        with pytest.raises(supervisor.SpecError, match="nobody-here"):  # found by planning
            await sup.reload([service(bundle, "keep", "echo v2; " + SERVE), Service("bad", bad)])
        assert keep.pid == pid and list(sup.handles) == ["keep"]
        await sup.stop_all()


# -- supervisor run ------------------------------------------------------------------------------

CLI = [sys.executable, "-m", "supervisor"]

V1 = """
[containers.db]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; echo db v1; while :; do sleep 0.05; done"]

[containers.web]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; echo web v1; while :; do sleep 0.05; done"]
depends_on = ["db"]

[containers.old]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
"""

V2 = V1.replace("web v1", "web v2").replace("[containers.old]", "[containers.new]")


def ps(state: Path) -> dict[str, dict[str, object]]:
    out = subprocess.run(CLI + ["ps", "--json", "--state-dir", str(state)], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return {r["name"]: r for r in json.loads(out)}


def wait_for(condition: object, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_sighup_and_supervisor_reload(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(V1)
    state = tmp_path / "state"
    events = tmp_path / "events.jsonl"
    with subprocess.Popen(CLI + ["run", "--state-dir", str(state), str(manifest), "--events", str(events)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            wait_for(lambda: state.joinpath("control.sock").exists()
                     and {r["state"] for r in ps(state).values()} == {"running"})
            before = ps(state)
            manifest.write_text(V2)
            p.send_signal(signal.SIGHUP)
            wait_for(lambda: set(ps(state)) == {"db", "web", "new"}
                     and {r["state"] for r in ps(state).values()} == {"running"})
            after = ps(state)
            assert after["db"]["pid"] == before["db"]["pid"]  # unchanged: untouched
            assert after["web"]["pid"] != before["web"]["pid"]
            # a manifest that no longer loads: reported with file, line and key; nothing changes
            manifest.write_text(V2.replace('depends_on = ["db"]', 'depends_on = ["nope"]'))
            result = subprocess.run(CLI + ["reload", "--state-dir", str(state)], capture_output=True, text=True,
                                    timeout=10, check=False)
            assert result.returncode == 1
            assert result.stderr == (f"supervisor: reload refused, nothing changed: {manifest}: line 7: "
                                     'containers.web.depends_on[0]: unknown container "nope"\n')
            assert {n: r["pid"] for n, r in ps(state).items()} == {n: r["pid"] for n, r in after.items()}
            manifest.write_text(V1)
            result = subprocess.run(CLI + ["reload", "--state-dir", str(state)], capture_output=True, text=True,
                                    timeout=10, check=False)
            assert result.stdout == "reloaded: 1 started (old), 1 restarted (web), 1 stopped (new), 1 unchanged\n"
        finally:
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "db | db v1" in out and "web | web v1" in out and "web | web v2" in out
    assert f"supervisor: reloaded {manifest}: 1 started (new), 1 restarted (web), 1 stopped (old), 1 unchanged" \
        in err.splitlines()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["event"] for r in records if r["container"] == "db"] == ["started", "exited", "stopped"]
    assert not os.path.exists(state / "control.sock")
