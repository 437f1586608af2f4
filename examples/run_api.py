"""Run the hello bundle through the Python API, then one container we stop ourselves.

    python examples/run_api.py
"""

import signal
from pathlib import Path

import trio

import supervisor


async def main() -> None:
    spec = supervisor.ContainerSpec.from_bundle(Path(__file__).parent / "hello")
    status = await supervisor.run(spec, name="hello")
    print(f"hello: {status}")

    sleeper = supervisor.ContainerSpec.from_bundle(Path(__file__).parent / "hello")
    sleeper = supervisor.spec.attrs.evolve(
        sleeper, process=supervisor.spec.attrs.evolve(sleeper.process, args=("/bin/sleep", "60")))
    async with supervisor.open_container(sleeper, name="sleeper") as container:
        print(f"sleeper: running as host pid {container.pid}")
        await trio.sleep(0.2)
        container.send_signal(signal.SIGKILL)  # pid 1 of a pid namespace ignores SIGTERM without a handler
        print(f"sleeper: {await container.wait()}")


if __name__ == "__main__":
    trio.run(main)
