"""Embedding the supervisor in a trio program: run services, watch their events, stop one by name.

    python examples/embed.py      (as root; examples/embed_asyncio.py is the same under asyncio)

Every container here runs on a read-only view of the host (the hello bundle's config), with a
different command.
"""

import signal
from pathlib import Path

import attrs
import trio

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

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            clock = command("/bin/sh", "-c", "while :; do date +%T; sleep 0.5; done")
            ticker = await sup.start(Service("ticker", clock, Policy(stop_signal=signal.SIGKILL)))
            sup.add(Service("flaky", command("/bin/sh", "-c", "echo trying; exit 1"),
                            Policy(restart="on-failure", max_restarts=2, backoff_initial=0.2)))
            await trio.sleep(2)
            print(f"ticker is {ticker.state.value}, pid {ticker.pid}")
            await sup.stop("ticker")
            await sup.handles["flaky"].wait_for(State.FAILED)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
