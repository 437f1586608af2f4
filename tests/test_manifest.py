"""The manifest loader: TOML in, ``Service``s out, and errors that name the line and the key.
Pure: nothing runs."""

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from supervisor import ContainerSpec, SpecError
from supervisor.manifest import DEFAULT_CAPABILITIES, Manifest, ManifestError, _Locator, load_manifest
from supervisor.plan import DEFAULT_PATH
from supervisor.plan import Plan
from supervisor.plan import plan as plan_on
from supervisor.resources import Memory, Resources
from supervisor.service import LogConfig, Policy
from supervisor.spec import Mount, Namespace, User

from .conftest import ROOT_HOST, RUNC_SPEC, Bundle


def plan(spec: ContainerSpec, name: str = "container") -> Plan:
    """Planned for a root supervisor, whoever runs the tests: these need no root."""
    return plan_on(spec, name, ROOT_HOST)

HERE = Path(__file__).parent
EXAMPLE = HERE.parent / "examples" / "manifest.toml"
DATA = HERE / "data" / "manifests"


def load(tmp_path: Path, text: str) -> Manifest:
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return load_manifest(path)


def error(tmp_path: Path, text: str) -> str:
    """The error's text without the file name, which is checked once here."""
    with pytest.raises(ManifestError) as info:
        load(tmp_path, text)
    err = info.value
    assert isinstance(err, SpecError) and err.file == str(tmp_path / "manifest.toml")
    prefix = f"{err.file}: "
    assert str(err).startswith(prefix)
    return str(err)[len(prefix):]


def names(m: Manifest) -> list[str]:
    return [s.name for s in m.services]


# -- the example and the defaults ------------------------------------------------------------------

def test_the_example_loads() -> None:
    m = load_manifest(EXAMPLE)
    assert m.path == str(EXAMPLE)
    assert names(m) == ["setup", "clock", "worker-0", "worker-1", "flaky"]
    setup, clock, w0, w1, flaky = m.services
    assert setup.policy == Policy(restart="no", stop_timeout=5.0) and setup.spec.hostname == "setup"
    assert clock.policy == Policy(restart="always", stop_timeout=2.0)
    assert w0.policy == w1.policy == Policy(restart="on-failure", stop_timeout=5.0, depends_on=("clock",))
    assert flaky.policy == Policy(restart="on-failure", max_restarts=2, stop_timeout=5.0)
    assert w0.spec.process.env == (f"PATH={DEFAULT_PATH}", "GREETING=hi", "SUPERVISOR_REPLICA=0")
    assert w1.spec.process.env[-1] == "SUPERVISOR_REPLICA=1"
    assert setup.spec.process.env == (f"PATH={DEFAULT_PATH}", "GREETING=hello")
    for service in m.services:
        assert service.spec.root.path == "/" and service.spec.root.readonly
        assert service.log == LogConfig()
        assert m.service(service.name) is service
    with pytest.raises(KeyError):
        m.service("worker")
    for service in m.services:  # on the host root, with the default mounts
        assert plan(service.spec).rootfs == "/"


def test_inline_defaults(tmp_path: Path) -> None:
    m = load(tmp_path, '[containers.a]\nargs = ["true"]\n')
    (service,) = m.services
    spec = service.spec
    assert service.name == "a" and service.policy == Policy() and service.log == LogConfig()
    assert spec.root.path == "/" and spec.root.readonly and spec.bundle == str(tmp_path)
    assert spec.process.args == ("true",) and spec.process.cwd == "/"
    assert spec.process.env == (f"PATH={DEFAULT_PATH}",)
    assert spec.process.user == User() and spec.hostname is None and spec.domainname is None
    assert spec.namespaces == tuple(Namespace(t) for t in ("pid", "ipc", "uts", "mount"))
    assert [(mt.destination, mt.type) for mt in spec.mounts] == [
        ("/proc", "proc"), ("/dev", "tmpfs"), ("/dev/pts", "devpts"), ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"), ("/tmp", "tmpfs"), ("/run", "tmpfs")]  # no /sys: see below
    assert spec.mounts[1].options == ("nosuid", "strictatime", "mode=755", "size=65536k")
    assert spec.mounts[2].options == ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")
    caps = spec.process.capabilities
    assert caps is not None and len(DEFAULT_CAPABILITIES) == 14
    assert caps.bounding == caps.effective == caps.permitted == frozenset(DEFAULT_CAPABILITIES)
    assert caps.inheritable == caps.ambient == frozenset()
    assert spec.masked_paths == tuple(RUNC_SPEC["linux"]["maskedPaths"])
    assert spec.readonly_paths == tuple(RUNC_SPEC["linux"]["readonlyPaths"])
    assert spec.process.rlimits == () and not spec.process.no_new_privileges
    assert spec.annotations == {} and spec.sysctl == ()


def test_sysfs_only_with_a_network_namespace(tmp_path: Path) -> None:
    """sysfs cannot be mounted in the host's network namespace (EBUSY): without a namespace of its
    own, a container on the host root sees the host's /sys, read-only."""
    m = load(tmp_path, '[containers.a]\nargs = ["true"]\nnamespaces = ["pid", "network", "mount"]\n'
                       '[containers.b]\nargs = ["true"]\nroot = "rootfs"\n'
                       '[containers.c]\nargs = ["true"]\nroot = "rootfs"\nnamespaces = ["network", "mount"]\n')
    a, b, c = (s.spec for s in m.services)
    sysfs = Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro"))
    mqueue = Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev"))
    assert a.namespaces == (Namespace("pid"), Namespace("network"), Namespace("mount"))
    assert sysfs in a.mounts and mqueue in a.mounts
    assert sysfs not in b.mounts and mqueue in b.mounts and not b.root.readonly
    assert [mt.destination for mt in c.mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/tmp", "/run"]


def test_the_planner_accepts_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    m = load(tmp_path, '[containers.a]\nargs = ["true"]\nroot = "rootfs"\nhostname = "a"\n')
    p = plan(m.services[0].spec)
    assert p.rootfs == str(tmp_path / "rootfs") and p.hostname == "a"
    assert p.clone_flags == 0x20000000 | 0x08000000 | 0x04000000 | 0x00020000  # no CLONE_NEWNET


def test_the_full_data_manifest() -> None:
    """Every key, once (tests/data/manifests/full.toml)."""
    m = load_manifest(DATA / "full.toml")
    assert names(m) == ["db", "web-0", "web-1", "web-2", "job"]
    db, web0, _, web2, job = m.services
    assert db.policy.depends_on == () and web0.policy.depends_on == ("db",)
    assert job.policy.depends_on == ("db", "web-0", "web-1", "web-2")
    assert web0.policy.restart == "always" and web0.policy.max_restarts == 5
    assert web0.policy.stop_signal == signal.SIGQUIT and web0.policy.stop_timeout == 2.5
    assert db.policy.stop_signal == 2 and db.policy.restart == "on-failure"
    assert web2.log == LogConfig(str(DATA / "logs" / "web-2.log"), 1000, 0)
    assert db.log == LogConfig(str(DATA / "logs" / "db.log"), 1000, 2)
    spec = web0.spec
    assert spec.root.path == str(DATA / "rootfs") and not spec.root.readonly
    assert spec.process.cwd == "/srv" and spec.process.user == User(name="www-data")
    assert spec.hostname == "web" and spec.domainname == "example.org"
    assert spec.process.no_new_privileges and spec.process.oom_score_adj == 100
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [("RLIMIT_NOFILE", 1024, 4096)]
    assert spec.sysctl == (("net.core.somaxconn", "1024"), ("net.ipv4.ip_forward", "1"))
    assert spec.resources == Resources(memory=Memory(limit=1000000, reservation=5000), pids_limit=64)
    assert spec.annotations == {"team": "web", "tier": "front", "supervisor.init": "true"}
    assert spec.masked_paths == ("/proc/kcore",) and spec.readonly_paths == ()
    assert spec.devices[0].path == "/dev/fuse" and spec.rootfs_propagation == "rprivate"
    assert spec.cgroups_path == "/supervisor/web"
    assert spec.mounts[-1] == Mount("/data", "bind", "data", ("rbind", "ro"))
    assert spec.namespaces[-1] == Namespace("network", "/run/netns/web")
    assert job.spec.process.user == User(uid=33, gid=33) and job.spec.annotations == {"team": "ops"}


@pytest.mark.parametrize(("value", "number"), [('"SIGTERM"', 15), ('"KILL"', 9), ('"hup"', 1), ("10", 10),
                                               ('"SIGRTMIN"', int(signal.SIGRTMIN))])
def test_stop_signal_forms(tmp_path: Path, value: str, number: int) -> None:
    m = load(tmp_path, f'[containers.a]\nargs = ["x"]\nstop_signal = {value}\n')
    assert m.services[0].policy.stop_signal == number


# -- [defaults] ------------------------------------------------------------------------------------

def test_defaults_merge(tmp_path: Path) -> None:
    m = load(tmp_path, """\
[defaults]
restart = "always"
env = ["A=1", "B=2"]
sysctl = { "kernel.msgmax" = "1" }
annotations = { a = "1", b = "2" }
capabilities = ["CAP_KILL"]
rlimits = [{ type = "RLIMIT_NOFILE", soft = 10, hard = 10 }]
mounts = [{ destination = "/data", type = "tmpfs", source = "tmpfs" }]
cwd = "/tmp"

[containers.one]
args = ["true"]
env = { B = "two", C = "3", PATH = "/bin" }
sysctl.fs.mqueue.msg_max = "20"
annotations.b = "two"
rlimits = [{ type = "RLIMIT_NPROC", soft = 5, hard = 5 }]
mounts = [{ destination = "/tmp/", type = "tmpfs", source = "tmpfs", options = ["size=1m"] },
          { destination = "/cache", type = "tmpfs", source = "tmpfs" },
          { destination = "/cache", type = "bind", source = "." }]
restart = "no"

[containers.two]
args = ["true"]
capabilities = { bounding = ["CAP_CHOWN"], ambient = [] }
""")
    one, two = m.services
    assert one.policy.restart == "no" and two.policy.restart == "always"
    assert one.spec.process.env == ("A=1", "B=two", "C=3", "PATH=/bin")
    assert two.spec.process.env == (f"PATH={DEFAULT_PATH}", "A=1", "B=2")
    assert one.spec.sysctl == (("fs.mqueue.msg_max", "20"), ("kernel.msgmax", "1"))
    assert one.spec.annotations == {"a": "1", "b": "two"} and two.spec.annotations == {"a": "1", "b": "2"}
    assert [r.type for r in one.spec.process.rlimits] == ["RLIMIT_NPROC"]  # lists are replaced
    assert [r.type for r in two.spec.process.rlimits] == ["RLIMIT_NOFILE"]
    assert one.spec.process.cwd == two.spec.process.cwd == "/tmp"
    caps = one.spec.process.capabilities
    assert caps is not None and caps.bounding == caps.effective == caps.permitted == {"CAP_KILL"}
    caps = two.spec.process.capabilities  # a table replaces the list of [defaults]
    assert caps is not None and caps.bounding == {"CAP_CHOWN"} and caps.effective == frozenset()
    # mounts: a destination mounted by a layer below is replaced where it is; others are added after
    dests = [mt.destination for mt in one.spec.mounts]
    assert dests == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/tmp/", "/run", "/data", "/cache",
                     "/cache"]
    assert one.spec.mounts[5].options == ("size=1m",)
    assert [mt.destination for mt in two.spec.mounts][-1] == "/data"


def test_defaults_depends_on_skips_the_container_itself(tmp_path: Path) -> None:
    m = load(tmp_path, '[defaults]\ndepends_on = ["db"]\n[containers.db]\nargs = ["x"]\n'
                       '[containers.web]\nargs = ["x"]\nreplicas = 2\n'
                       '[containers.job]\nargs = ["x"]\ndepends_on = []\n')
    assert [(s.name, s.policy.depends_on) for s in m.services] == [
        ("db", ()), ("web-0", ("db",)), ("web-1", ("db",)), ("job", ())]


def test_init_is_an_annotation(tmp_path: Path) -> None:
    m = load(tmp_path, '[defaults]\ninit = true\n[containers.a]\nargs = ["x"]\n'
                       '[containers.b]\nargs = ["x"]\ninit = false\n')
    assert m.services[0].spec.annotations == {"supervisor.init": "true"}
    assert m.services[1].spec.annotations == {}


# -- replicas ----------------------------------------------------------------------------------------

def test_replicas_names_env_dependencies_and_logs(tmp_path: Path) -> None:
    m = load(tmp_path, """\
[containers.db]
args = ["db"]
replicas = 1

[containers.web]
args = ["web"]
env = { SUPERVISOR_REPLICA = "ignored", X = "y" }
replicas = 3
depends_on = ["db"]
log_file = "logs/{name}.log"

[containers.proxy]
args = ["proxy"]
depends_on = ["web", "db", "web"]
""")
    assert names(m) == ["db-0", "web-0", "web-1", "web-2", "proxy"]
    web = m.services[1:4]
    for i, service in enumerate(web):
        assert service.spec.process.env == (f"PATH={DEFAULT_PATH}", "X=y", f"SUPERVISOR_REPLICA={i}")
        assert service.policy.depends_on == ("db-0",)
        assert service.log.file == str(tmp_path / "logs" / f"web-{i}.log")
    assert m.services[0].spec.process.env[-1] == "SUPERVISOR_REPLICA=0"
    assert m.services[-1].policy.depends_on == ("web-0", "web-1", "web-2", "db-0")
    assert m.services[-1].spec.process.env == (f"PATH={DEFAULT_PATH}",)


# -- bundles -----------------------------------------------------------------------------------------

def test_bundle_reference(tmp_path: Path, bundle: Bundle) -> None:
    path = bundle("/bin/echo", "hi")
    assert path == tmp_path
    m = load(tmp_path, """\
[defaults]
env = { IGNORED = "for bundles" }
user = "nobody"
stop_signal = 10

[containers.b]
bundle = "."
restart = "on-failure"
replicas = 2
init = true
""")
    reference = ContainerSpec.from_bundle(path)
    assert names(m) == ["b-0", "b-1"]
    for i, service in enumerate(m.services):
        spec = service.spec
        assert spec.process.args == ("/bin/echo", "hi")
        assert spec.process.env == reference.process.env + (f"SUPERVISOR_REPLICA={i}",)
        assert spec.process.user == reference.process.user and spec.hostname == "runc"
        assert spec.annotations == {"supervisor.init": "true"}
        assert service.policy == Policy(restart="on-failure", stop_signal=10)
        assert spec.mounts == reference.mounts and spec.namespaces == reference.namespaces


def test_bundle_errors(tmp_path: Path, bundle: Bundle) -> None:
    bundle(edit=lambda config: config["process"].update(rlimits=[{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]))
    config = tmp_path / "config.json"
    text = '[containers.b]\nrestart = "always"\nbundle = "."\n'
    assert error(tmp_path, text) == (
        f'line 3: containers.b.bundle: {config}: process.rlimits[0].type: unknown rlimit "RLIMIT_FOO"')
    assert error(tmp_path, '[containers.b]\nbundle = "nope"\n') == (
        f"line 2: containers.b.bundle: {tmp_path}/nope/config.json: no such file")
    assert error(tmp_path, '[containers.b]\nbundle = "."\nhostname = "x"\n') == (
        'line 3: containers.b.hostname: not allowed with "bundle" (its config.json describes the container)')
    assert error(tmp_path, '[defaults]\nbundle = "."\n[containers.b]\nargs = ["x"]\n') == (
        "line 2: defaults.bundle: not allowed in [defaults]")


# -- users -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "user"), [
    ('"alice"', User(name="alice")),
    ('"www-data"', User(name="www-data")),
    ('"1000"', User(uid=1000, gid=100)),       # the uid's group in the rootfs's /etc/passwd
    ('"1000:5"', User(uid=1000, gid=5)),
    ('"4242"', User(uid=4242, gid=0)),         # not in /etc/passwd
    ("33", User(uid=33, gid=0)),
    ("{ uid = 7, gid = 8, umask = 0o077, additionalGids = [9] }", User(7, 8, 0o77, (9,))),
])
def test_user_forms(tmp_path: Path, value: str, user: User) -> None:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "rootfs" / "etc" / "passwd").write_text("alice:x:1000:100::/home/alice:/bin/sh\n")
    m = load(tmp_path, f'[containers.a]\nargs = ["x"]\nroot = "rootfs"\nuser = {value}\n')
    assert m.services[0].spec.process.user == user


def test_a_named_user_is_resolved_by_the_planner(tmp_path: Path) -> None:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "rootfs" / "etc" / "passwd").write_text("alice:x:1000:100::/home/alice:/bin/sh\n")
    (tmp_path / "rootfs" / "etc" / "group").write_text("audio:x:29:alice\n")
    m = load(tmp_path, '[containers.a]\nargs = ["x"]\nroot = "rootfs"\nuser = "alice"\n')
    p = plan(m.services[0].spec)
    assert (p.uid, p.gid, p.groups) == (1000, 100, (29,)) and "HOME=/home/alice" in p.env


# -- errors ------------------------------------------------------------------------------------------

WEB = '[containers.web]\nargs = ["x"]\n'  # lines 1-2

ERRORS = [
    # supervision keys
    (WEB + 'restart = "sometimes"\n',
     'line 3: containers.web.restart: expected one of "no", "on-failure", "always", got "sometimes"'),
    (WEB + "restart = false\n",
     'line 3: containers.web.restart: expected one of "no", "on-failure", "always", got false'),
    (WEB + "max_restarts = -1\n", "line 3: containers.web.max_restarts: expected an integer >= 0, got -1"),
    (WEB + "max_restarts = 1.5\n", "line 3: containers.web.max_restarts: expected an integer >= 0, got 1.5"),
    (WEB + "replicas = 0\n", "line 3: containers.web.replicas: expected an integer >= 1, got 0"),
    (WEB + 'stop_signal = "SIGFOO"\n', 'line 3: containers.web.stop_signal: unknown signal "SIGFOO"'),
    (WEB + "stop_signal = 999\n", "line 3: containers.web.stop_signal: 999 is not a signal number"),
    (WEB + "stop_signal = [15]\n",
     'line 3: containers.web.stop_signal: expected a signal name ("SIGTERM", "TERM") or number, got a list'),
    (WEB + "stop_timeout = -1\n", "line 3: containers.web.stop_timeout: expected a number of seconds >= 0, got -1"),
    (WEB + "stop_timeout = inf\n", "line 3: containers.web.stop_timeout: expected a number of seconds >= 0, got inf"),
    (WEB + 'init = "yes"\n', 'line 3: containers.web.init: expected true or false, got "yes"'),
    (WEB + 'log_file = ""\n', 'line 3: containers.web.log_file: expected a file name, got ""'),
    (WEB + "log_max_bytes = 0\n", "line 3: containers.web.log_max_bytes: expected an integer >= 1, got 0"),
    (WEB + "log_backups = -1\n", "line 3: containers.web.log_backups: expected an integer >= 0, got -1"),
    (WEB + 'depends_on = "db"\n', 'line 3: containers.web.depends_on: expected a list of container names or a '
                                  'table {NAME = "CONDITION"}, got "db"'),
    (WEB + "depends_on = [1]\n", "line 3: containers.web.depends_on[0]: expected a container name, got 1"),
    ('[defaults]\nrestart = "never"\n' + WEB,
     'line 2: defaults.restart: expected one of "no", "on-failure", "always", got "never"'),
    # keys and tables
    (WEB + "restrat = 'always'\n", "line 3: containers.web.restrat: unknown key"),
    ("[defaults]\nrestrat = 'always'\n" + WEB, "line 2: defaults.restrat: unknown key"),
    ('version = 1\n' + WEB, "line 1: version: unknown key (a manifest has [defaults] and [containers.NAME] tables)"),
    ("defaults = 1\n" + WEB, "line 1: defaults: expected a table, got 1"),
    ("", "containers: no containers: add a [containers.NAME] table"),
    ("[defaults]\nrestart = 'no'\n", "containers: no containers: add a [containers.NAME] table"),
    ("# nothing\n[containers]\n", "line 2: containers: no containers: add a [containers.NAME] table"),
    ("containers = [1]\n", "line 1: containers: expected a table of containers, got a list"),
    ("[containers]\nweb = 3\n", "line 2: containers.web: expected a table, got 3"),
    ('[containers."we b"]\nargs = ["x"]\n',
     'line 1: containers."we b": not a valid container name: letters, digits, "_", "." and "-", '
     'starting with a letter or a digit'),
    ("[containers._x]\nargs = ['x']\n", "line 1: containers._x: not a valid container name: letters, digits, "
                                       '"_", "." and "-", starting with a letter or a digit'),
    ("\n[containers.web]\nrestart = 'no'\n",
     'line 2: containers.web.args: required: the program and its arguments (or "bundle")'),
    # TOML itself
    (WEB + "restart = \n", "line 3: invalid TOML: Invalid value (column 11)"),
    (WEB + "[containers.web]\n", "line 3: invalid TOML: Cannot declare ('containers', 'web') twice (column 16)"),
    # other ways to write a table
    ('[containers]\nweb = { args = ["x"], restart = "sometimes" }\n',
     'line 2: containers.web.restart: expected one of "no", "on-failure", "always", got "sometimes"'),
    ('containers.web.args = ["x"]\n\ncontainers.web.restart = "sometimes"\n',
     'line 3: containers.web.restart: expected one of "no", "on-failure", "always", got "sometimes"'),
    ('[containers."web"]\nargs = ["x"]\n"restart" = "sometimes"\n',
     'line 3: containers.web.restart: expected one of "no", "on-failure", "always", got "sometimes"'),
    ('[containers]\n[containers.web]\nargs = """\nrestart = 1\n"""\n\'restart\' = "x" # [x]\n',
     'line 6: containers.web.restart: expected one of "no", "on-failure", "always", got "x"'),
    ('[containers.web]\r\nargs = ["x"]\r\n\r\nrestart = "x"\r\n',
     'line 4: containers.web.restart: expected one of "no", "on-failure", "always", got "x"'),
    # errors of the OCI loader, mapped back to the key and its line
    (WEB + 'rlimits = [{ type = "RLIMIT_FOO", soft = 1, hard = 1 }]\n',
     'line 3: containers.web.rlimits[0].type: unknown rlimit "RLIMIT_FOO"'),
    (WEB + 'rlimits = [\n  { type = "RLIMIT_NOFILE", soft = 1, hard = 1 },\n  { type = "RLIMIT_FOO" },\n]\n',
     'line 5: containers.web.rlimits[1].type: unknown rlimit "RLIMIT_FOO"'),
    (WEB + '\n[[containers.web.rlimits]]\ntype = "RLIMIT_NOFILE"\nsoft = 2\nhard = 1\n',
     "line 6: containers.web.rlimits[0].soft: 2 is above the hard limit 1"),
    ('[defaults]\nrlimits = [{ type = "RLIMIT_FOO", soft = 1, hard = 1 }]\n' + WEB,
     'line 2: defaults.rlimits[0].type: unknown rlimit "RLIMIT_FOO"'),
    (WEB + 'capabilities = ["CAP_KILL", "CAP_FOO"]\n',
     'line 3: containers.web.capabilities[1]: unknown capability "CAP_FOO"'),
    (WEB + 'capabilities.ambient = ["CAP_FOO"]\n',
     'line 3: containers.web.capabilities.ambient[0]: unknown capability "CAP_FOO"'),
    (WEB + 'namespaces = ["pid",\n  "bogus"]\n',
     'line 4: containers.web.namespaces[1]: unknown namespace type "bogus"'),
    (WEB + 'namespaces = ["pid", "pid"]\n', 'line 3: containers.web.namespaces[1]: "pid" given twice'),
    (WEB + 'namespaces = [{ type = "net" }]\n',
     'line 3: containers.web.namespaces[0].type: unknown namespace type "net"'),
    (WEB + "namespaces = [1]\n",
     "line 3: containers.web.namespaces[0]: expected a namespace type or a table {type, path}, got 1"),
    (WEB + '[[containers.web.mounts]]\ntype = "tmpfs"\n', "line 3: containers.web.mounts[0].destination: required"),
    (WEB + "mounts = [1]\n", "line 3: containers.web.mounts[0]: expected a table, got a number"),
    (WEB + 'mounts = [{ destination = "/x", bogus = 1 }]\n', "line 3: containers.web.mounts[0].bogus: unknown field"),
    (WEB + 'mounts = "x"\n', 'line 3: containers.web.mounts: expected a list of mount tables, got "x"'),
    (WEB + 'cwd = "srv"\n', 'line 3: containers.web.cwd: "srv" is not an absolute path'),
    (WEB + 'terminal = "yes"\n', "line 3: containers.web.terminal: expected true or false, got a string"),
    (WEB + "seccomp = {}\n", "line 3: containers.web.seccomp.defaultAction: required"),
    (WEB + "timeOffsets = {}\n", "line 3: containers.web.timeOffsets: not supported yet"),
    (WEB + "oomScoreAdj = 2000\n", "line 3: containers.web.oomScoreAdj: 2000 is out of range (-1000..1000)"),
    (WEB + "hostname = 1\n", "line 3: containers.web.hostname: expected a string, got a number"),
    (WEB + 'sysctl = { "net.core.x" = 1 }\n',
     'line 3: containers.web.sysctl."net.core.x": expected a string, got a number'),
    (WEB + '[containers.web.sysctl]\nnet.core.x = 1\n',
     "line 4: containers.web.sysctl.net.core.x: expected a string, got a number"),
    (WEB + "sysctl = 1\n", 'line 3: containers.web.sysctl: expected a table {"name" = "value"}, got 1'),
    (WEB + "annotations = { a = 1 }\n", "line 3: containers.web.annotations.a: expected a string, got a number"),
    (WEB + "devices = [{ path = '/dev/x', type = 'q' }]\n",
     'line 3: containers.web.devices[0].type: "q" is not one of c, b, u, p'),
    (WEB + "uidMappings = [{ containerID = 0, hostID = 1000 }]\n",
     "line 3: containers.web.uidMappings[0].size: must be at least 1"),
    ('[containers.web]\nargs = []\n', "line 2: containers.web.args: required: at least the program to run"),
    ('[containers.web]\nargs = "x"\n', "line 2: containers.web.args: expected a list, got a string"),
    (WEB + "root = 1\n", "line 3: containers.web.root: expected a directory, got 1"),
    (WEB + "readonly = false\n", 'line 3: containers.web.readonly: the host root ("/") can only be used read-only'),
    (WEB + "readonly = 1\n", "line 3: containers.web.readonly: expected true or false, got a number"),
    # env and user
    (WEB + 'env = ["A=1", "B"]\n', 'line 3: containers.web.env[1]: "B" is not NAME=VALUE'),
    (WEB + 'env = ["=1"]\n', 'line 3: containers.web.env[0]: "=1" is not NAME=VALUE'),
    (WEB + "env = [1]\n", "line 3: containers.web.env[0]: expected a string, got 1"),
    (WEB + "env = { PORT = 80 }\n", "line 3: containers.web.env.PORT: expected a string, got 80"),
    (WEB + 'env = { "A=B" = "x" }\n', 'line 3: containers.web.env."A=B": not a variable name'),
    (WEB + 'env = "A=1"\n',
     'line 3: containers.web.env: expected a table {NAME = "value"} or a list ["NAME=value"], got "A=1"'),
    (WEB + 'user = "a:b"\n',
     'line 3: containers.web.user: expected a user name, "UID", "UID:GID" or a table {uid, gid}, got "a:b"'),
    (WEB + 'user = "1:99999999999"\n', "line 3: containers.web.user: 99999999999 is out of range (0..4294967295)"),
    (WEB + "user = { name = 'x' }\n", "line 3: containers.web.user.name: unknown field"),
    # the whole manifest
    (WEB + 'depends_on = ["db"]\n', 'line 3: containers.web.depends_on[0]: unknown container "db"'),
    ('[defaults]\ndepends_on = ["db"]\n' + WEB, 'line 2: defaults.depends_on[0]: unknown container "db"'),
    (WEB + 'depends_on = ["web"]\n', "line 3: containers.web.depends_on: dependency cycle: web -> web"),
    ('[containers.a]\nargs = ["x"]\ndepends_on = ["c"]\n[containers.b]\nargs = ["x"]\ndepends_on = ["a"]\n'
     '[containers.c]\nargs = ["x"]\ndepends_on = ["b"]\n',
     "line 3: containers.a.depends_on: dependency cycle: a -> c -> b -> a"),
    ('[containers.z]\nargs = ["x"]\ndepends_on = ["b"]\n[containers.a]\nargs = ["x"]\ndepends_on = ["b"]\n'
     '[containers.b]\nargs = ["x"]\ndepends_on = ["a"]\n',
     "line 6: containers.a.depends_on: dependency cycle: a -> b -> a"),
    (WEB + "replicas = 2\n[containers.web-1]\nargs = ['x']\n",
     'line 4: containers.web-1: the name "web-1" is already used by replica 1 of containers.web'),
    ('[containers.web-0]\nargs = ["x"]\n' + WEB + "replicas = 2\n",
     'line 5: containers.web.replicas: replica 0 would be named "web-0", which containers.web-0 already uses'),
    ('[defaults]\nlog_file = "all.log"\n' + WEB + '[containers.db]\nargs = ["x"]\n',
     'line 2: defaults.log_file: "{dir}/all.log" is also the log file of web: give each its own, e.g. "{name}.log"'),
    (WEB + 'log_file = "web.log"\nreplicas = 2\n',
     'line 3: containers.web.log_file: "{dir}/web.log" is also the log file of web-0: give each its own, '
     'e.g. "{name}.log"'),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text) == expected.replace("{dir}", str(tmp_path))


def test_error_attributes_and_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, WEB + 'restart = "sometimes"\n')
    err = info.value
    assert (err.field, err.line) == ("containers.web.restart", 3)
    assert err.reason == 'expected one of "no", "on-failure", "always", got "sometimes"'
    assert str(err.with_file("m.toml")) == f"m.toml: line 3: containers.web.restart: {err.reason}"
    assert isinstance(err, ValueError)
    with pytest.raises(ManifestError, match="nope.toml: no such file$"):
        load_manifest(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_bytes(b"a = '\xff'\n")
    with pytest.raises(ManifestError, match=r"bad.toml: not UTF-8 text \(byte 5\)$"):
        load_manifest(tmp_path / "bad.toml")
    with pytest.raises(ManifestError, match="Is a directory"):
        load_manifest(tmp_path)
    # the file as given: relative stays relative
    os.chdir(tmp_path)
    (tmp_path / "rel.toml").write_text("[containers]\n")
    with pytest.raises(ManifestError) as info:
        load_manifest("rel.toml")
    assert str(info.value) == "rel.toml: line 1: containers: no containers: add a [containers.NAME] table"


# -- later errors: Manifest.locate -----------------------------------------------------------------

def test_locate_maps_planner_errors_to_lines(tmp_path: Path, bundle: Bundle) -> None:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    bundle(edit=lambda config: config.update(hostname="x") or config["linux"].update(
        namespaces=[{"type": "mount"}]))
    m = load(tmp_path, """\
[defaults]
root = "rootfs"

[containers.web]
args = ["x"]
user = "bob"
replicas = 2

[containers.dev]
args = ["x"]
mounts = [{ destination = "/dev", type = "bind", source = "nope" }]

[containers.b]
bundle = "."
""")
    errors = {}
    for service in m.services:
        with pytest.raises(SpecError) as info:
            plan(service.spec)
        errors[service.name] = m.locate(service.name, info.value)
    manifest = tmp_path / "manifest.toml"
    rootfs = tmp_path / "rootfs"
    assert str(errors["web-1"]) == f'{manifest}: line 6: containers.web.user: no user "bob" in {rootfs}/etc/passwd'
    assert str(errors["dev"]) == (
        f'{manifest}: line 11: containers.dev.mounts[0].source: "{tmp_path}/nope" does not exist')
    assert str(errors["b"]) == (
        f"{manifest}: line 14: containers.b.bundle: {tmp_path}/config.json: hostname: "
        "setting the hostname needs a new uts namespace")
    # a default mount has no key: the container is named, and the default
    m = load(tmp_path, '[containers.a]\nargs = ["x"]\n')
    err = m.locate("a", SpecError("mounts[3].destination", '"/dev/shm" does not exist'))
    assert str(err) == (f'{manifest}: line 1: containers.a: mounts[3].destination (the default mount on '
                        '/dev/shm): "/dev/shm" does not exist')
    assert str(m.locate("a", SpecError("", "too many symlinks"))) == (
        f"{manifest}: line 1: containers.a: too many symlinks")
    assert str(m.locate("a", SpecError("linux.uidMappings", "needs a user namespace"))) == (
        f"{manifest}: line 1: containers.a.uidMappings: needs a user namespace")
    assert m.locate("a", SpecError("x", "y", "/f")).file == "/f"
    assert str(m.locate("nope", SpecError("x", "y"))) == f"{manifest}: x: y"


# -- the locator -------------------------------------------------------------------------------------

def test_locator_follows_toml() -> None:
    text = """\
# [containers.not] in a comment
title = "a # not a comment [x]"
[containers."my app"]   # a header
args = ['''
multi = 1
''']
env.A = "\\" ]"
[containers . 'b']
args = [
  "x", # comment ]
  "y",
]
mounts = [ { destination = "/a",
             options = ["ro"] } ]
[[containers.b.rlimits]]
type = "RLIMIT_NOFILE"
[[containers.b.rlimits]]
type = \"\"\"a
\"\"\"\"
soft = 1
[containers.c.env]
X = 1979-05-27 07:32:00Z
Y = [[1, 2], [3]]
"""
    lines = _Locator(text)
    expected: dict[tuple[Any, ...], int | None] = {
        ("title",): 2, ("containers",): 3, ("containers", "my app"): 3, ("containers", "my app", "args"): 4,
        ("containers", "my app", "args", 0): 4, ("containers", "my app", "env", "A"): 7,
        ("containers", "b"): 8, ("containers", "b", "args", 1): 11, ("containers", "b", "mounts", 0): 13,
        ("containers", "b", "mounts", 0, "options"): 14, ("containers", "b", "rlimits", 0): 15,
        ("containers", "b", "rlimits", 0, "type"): 16, ("containers", "b", "rlimits", 1, "type"): 18,
        ("containers", "b", "rlimits", 1, "soft"): 20, ("containers", "c", "env"): 21,
        ("containers", "c", "env", "Y", 1): 23, ("containers", "my app", "args", 0, "x"): 4,
        ("containers", "not"): 3, ("nothing",): None,
    }
    assert {path: lines.line(path) for path in expected} == expected
    assert ("multi",) not in lines.found and ("containers", "not") not in lines.found


def test_network_key(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("""
[containers.web]
args = ["/bin/true"]

[containers.web.network]
bridge = "sv0"
address = "10.9.0.2/24"
gateway = "10.9.0.1"
mtu = 1400
routes = [{ dst = "10.8.0.0/16", via = "10.9.0.254" }]

[containers.side]
args = ["/bin/true"]
network = "container:web"
""")
    services = {s.name: s for s in load_manifest(path).services}
    web = services["web"].network
    assert web is not None and (web.bridge, web.addresses, web.gateway, web.mtu) == (
        "sv0", ("10.9.0.2/24",), "10.9.0.1", 1400)
    assert web.routes[0].dst == "10.8.0.0/16" and web.routes[0].via == "10.9.0.254"
    side = services["side"]
    assert side.network is not None and side.network.container == "web" and "web" in side.policy.depends_on
    path.write_text('[containers.web]\nargs = ["/bin/true"]\nnetwork = { bridge = "sv0", address = "nope" }\n')
    with pytest.raises(SpecError, match=r"line 3: containers.web.network: .*not an address with a prefix"):
        load_manifest(path)


def test_a_bridged_container_gets_its_network_namespace_at_load(tmp_path: Path) -> None:
    """Decided once, at load: the namespace, hence a sysfs of its own on /sys, and net.* sysctls
    that the planner accepts (the CLI and the Supervisor see the same final spec)."""
    m = load(tmp_path, '[containers.web]\nargs = ["/bin/true"]\nnetwork = { bridge = "sv0", address = "10.9.0.2/24" }\n'
                       'sysctl = { "net.ipv4.ip_forward" = "1" }\n')
    spec = m.services[0].spec
    assert Namespace("network") in spec.namespaces
    assert Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")) in spec.mounts
    assert plan(spec).loopback_up


def test_healthcheck(tmp_path: Path) -> None:
    from supervisor.service import HealthCheck

    m = load(tmp_path, '[defaults]\nhealthcheck = { test = "exit 0" }\n'
                       '[containers.a]\nargs = ["x"]\n'
                       '[containers.b]\nargs = ["x"]\nhealthcheck = { test = ["NONE"] }\n'
                       '[containers.c]\nargs = ["x"]\nhealthcheck = { test = ["CMD", "/bin/check", "-q"], '
                       'interval = "1m30s", timeout = 2.5, retries = 5, start_period = "500ms" }\n')
    assert m.service("a").policy.healthcheck == HealthCheck(("/bin/sh", "-c", "exit 0"))
    assert m.service("b").policy.healthcheck is None
    assert m.service("c").policy.healthcheck == HealthCheck(("/bin/check", "-q"), 90.0, 2.5, 5, 0.5)
    base = '[containers.a]\nargs = ["x"]\nhealthcheck = '
    assert error(tmp_path, base + '{ test = [] }\n') == \
        "line 3: containers.a.healthcheck.test: expected a non-empty list of strings, got a list"
    assert error(tmp_path, base + '{ interval = 1 }\n').startswith("line 3: containers.a.healthcheck.test: required")
    assert error(tmp_path, base + '{ test = "x", every = 1 }\n').startswith(
        "line 3: containers.a.healthcheck.every: unknown key")
    assert error(tmp_path, base + '{ test = "x", interval = "soon" }\n') == \
        'line 3: containers.a.healthcheck.interval: expected seconds or a duration like "1m30s", got \'soon\''
    assert error(tmp_path, base + '{ test = "x", retries = 0 }\n') == \
        "line 3: containers.a.healthcheck.retries: expected an integer >= 1, got 0"


def test_depends_on_conditions(tmp_path: Path) -> None:
    head = ('[containers.db]\nargs = ["x"]\nhealthcheck = { test = "true" }\n'
            '[containers.job]\nargs = ["x"]\nreplicas = 2\n')
    m = load(tmp_path, head + '[containers.web]\nargs = ["x"]\n'
                              'depends_on = { db = "healthy", job = "service_completed_successfully" }\n'
                              '[containers.api]\nargs = ["x"]\n'
                              'depends_on = { db = { condition = "service_started" } }\n')
    web, api = m.service("web").policy, m.service("api").policy
    assert web.depends_on == ("db", "job-0", "job-1")
    assert web.conditions == (("db", "healthy"), ("job-0", "completed"), ("job-1", "completed"))
    assert api.depends_on == ("db",) and api.conditions == ()
    assert error(tmp_path, head + '[containers.web]\nargs = ["x"]\ndepends_on = { job = "healthy" }\n') == \
        'line 9: containers.web.depends_on.job: "job" has no health check (a healthcheck, or notify = true): ' \
        "it would never be healthy"
    assert error(tmp_path, head + '[containers.web]\nargs = ["x"]\ndepends_on = { db = "ready" }\n') == \
        'line 9: containers.web.depends_on.db: expected one of "started", "healthy", "completed", got "ready"'
    assert error(tmp_path, head + '[containers.web]\nargs = ["x"]\ndepends_on = { nope = "started" }\n') == \
        'line 9: containers.web.depends_on.nope: unknown container "nope"'


def test_backoff_keys(tmp_path: Path) -> None:
    m = load(tmp_path, '[defaults]\nbackoff_initial = "250ms"\n[containers.a]\nargs = ["x"]\nbackoff_max = "1m"\n'
                       'stable_after = 2\n')
    policy = m.service("a").policy
    assert (policy.backoff_initial, policy.backoff_max, policy.stable_after) == (0.25, 60.0, 2.0)
    assert error(tmp_path, '[containers.a]\nargs = ["x"]\nbackoff_max = 0.01\n') == \
        "line 3: containers.a.backoff_max: backoff_max is less than backoff_initial"
    assert error(tmp_path, '[containers.a]\nargs = ["x"]\nstable_after = -1\n') == \
        "line 3: containers.a.stable_after: expected a number of seconds >= 0, got -1"


def test_parse_env_file() -> None:
    from supervisor.manifest import parse_env_file

    text = ('# a comment\n\nA=1\nexport B = two words  # a comment\nC="line\\none \\"q\\" $HOME"\n'
            "D='as $it #is'\nE=\nF=\"spans\nlines\"\nG=a#b\n")
    assert parse_env_file(text) == [("A", "1"), ("B", "two words"), ("C", 'line\none "q" $HOME'),
                                    ("D", "as $it #is"), ("E", ""), ("F", "spans\nlines"), ("G", "a#b")]
    for bad, why in (("A\n", "line 1: expected NAME=VALUE"), ("\n1A=x\n", "line 2: '1A' is not a variable name"),
                     ("A='x\n", "line 1: the single quote is not closed"),
                     ('A="x\n', "line 1: the double quote is not closed")):
        with pytest.raises(ValueError, match=why):
            parse_env_file(bad)


def test_env_file(tmp_path: Path) -> None:
    (tmp_path / "common.env").write_text("A=from file\nB=from file\nPATH=/bin\n")
    (tmp_path / "web.env").write_text("B=from web.env\nC=3\n")
    m = load(tmp_path, '[defaults]\nenv_file = "common.env"\n[containers.web]\nargs = ["x"]\n'
                       'env_file = ["common.env", "web.env"]\nenv = { C = "from env" }\n')
    assert m.service("web").spec.process.env == ("A=from file", "B=from web.env", "PATH=/bin", "C=from env")
    (tmp_path / "bad.env").write_text("OK=1\nnot a line\n")
    assert error(tmp_path, '[containers.web]\nargs = ["x"]\nenv_file = ["web.env", "bad.env"]\n') == \
        f"line 3: containers.web.env_file[1]: {tmp_path}/bad.env: line 2: expected NAME=VALUE, got 'not a line' " \
        "(values are not taken from the supervisor's environment)"
    assert error(tmp_path, '[containers.web]\nargs = ["x"]\nenv_file = "nope.env"\n') == \
        f"line 3: containers.web.env_file: {tmp_path}/nope.env: No such file or directory"
