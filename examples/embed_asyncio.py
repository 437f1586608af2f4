"""Embedding the supervisor in an asyncio program: run services, watch their events, stop one by
name. ``examples/embed.py`` is the same program under trio; the library's calls are identical.

    python examples/embed_asyncio.py      (as root)

The containers' parent-death signal belongs to the thread that runs the event loop: here the main
thread, which outlives them. A loop run in a worker thread must keep that thread alive until its
containers have ended.
"""

import asyncio
import signal
from pathlib import Path

import attrs

import supervisor
from supervisor.logs import PrefixedOutput
from supervisor.service import Policy, Service
from supervisor.states import State
from supervisor.supervise import Supervisor

HELLO = supervisor.ContainerSpec.from_bundle(Path(__file__).parent / "hello")


def command(*args: str) -> supervisor.ContainerSpec:
    return attrs.evolve(HELLO, process=attrs.evolve(HELLO.process, args=args))


async def main() -> None:
    with PrefixedOutput() as output:
        await supervise(output)


async def supervise(output: PrefixedOutput) -> None:
    async with Supervisor(log_sink=output) as sup:

        async def watch() -> None:
            async with sup.events() as events:
                async for event in events:
                    print(f"event: {event.to_json()}")

        watcher = asyncio.create_task(watch())
        try:
            clock = command("/bin/sh", "-c", "while :; do date +%T; sleep 0.5; done")
            ticker = await sup.start(Service("ticker", clock, Policy(stop_signal=signal.SIGKILL)))
            sup.add(Service("flaky", command("/bin/sh", "-c", "echo trying; exit 1"),
                            Policy(restart="on-failure", max_restarts=2, backoff_initial=0.2)))
            await asyncio.sleep(2)
            print(f"ticker is {ticker.state.value}, pid {ticker.pid}")
            await sup.stop("ticker")
            await sup.handles["flaky"].wait_for(State.FAILED)
        finally:
            watcher.cancel()


if __name__ == "__main__":
    asyncio.run(main())
