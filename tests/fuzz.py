"""Inputs for the fuzz tests of the C parsers (the bootstrap message, supervisor-oci's record): random
netlink messages of one type, and mutations of good ones, most with an honest length in the header
so they get past the first check."""

import random
import struct
from collections.abc import Iterator, Sequence


def netlink_inputs(rng: random.Random, seeds: Sequence[bytes], msg_type: int, flags: int, count: int,
                   random_body: int, max_edits: int) -> Iterator[bytes]:
    for i in range(count):
        if i % 4 == 0:
            body = rng.randbytes(rng.randrange(0, random_body))
            yield struct.pack("=IHHII", 16 + len(body), msg_type, flags, 0, 0) + body
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, max_edits)):
            what = rng.randrange(4)
            pos = rng.randrange(len(data))
            if what == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif what == 1:
                data[pos] = rng.randrange(256)
            elif what == 2:
                del data[pos:pos + rng.randrange(1, 9)]
            else:
                data[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        if rng.random() < 0.8 and len(data) >= 4:
            data[0:4] = struct.pack("=I", len(data))  # keep the header honest, to get deeper
        yield bytes(data)
