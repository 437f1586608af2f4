"""The public surface is what __all__ says, and every name in it resolves."""

import supervisor


def test_public_names() -> None:
    assert sorted(supervisor.__all__) == [
        "BootstrapError", "Container", "ContainerSpec", "Event", "ExitStatus", "Handle", "Health", "HealthCheck",
        "LogConfig", "Manifest", "Policy", "Service", "SpecError", "State", "Supervisor", "load_manifest",
           "open_container", "run"]
    for name in supervisor.__all__:
        assert getattr(supervisor, name) is not None
