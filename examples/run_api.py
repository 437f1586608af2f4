"""Run the hello bundle through the Python API, then one container we stop ourselves: the same
``main`` under asyncio or trio.

    python examples/run_api.py [asyncio|trio]      (as root; default asyncio)
"""

import asyncio
import signal
import sys
from pathlib import Path

import attrs

import supervisor


async def main() -> None:
    spec = supervisor.ContainerSpec.from_bundle(Path(__file__).parent / "hello")
    status = await supervisor.run(spec, name="hello")
    print(f"hello: {status}")

    sleeper = attrs.evolve(spec, process=attrs.evolve(spec.process, args=("/bin/sleep", "60")))
    async with supervisor.open_container(sleeper, name="sleeper") as container:
        print(f"sleeper: running as host pid {container.pid}")
        container.send_signal(signal.SIGKILL)  # pid 1 of a pid namespace ignores SIGTERM without a handler
        print(f"sleeper: {await container.wait()}")


if __name__ == "__main__":
    if sys.argv[1:] == ["trio"]:
        import trio

        trio.run(main)
    else:
        asyncio.run(main())
