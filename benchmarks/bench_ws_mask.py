"""WebSocket masking: our numpy XOR (store/websocket.py) against the C helper of `websockets`,
which the store used before issue 14 dropped `websockets` as a run-time dependency.

Two parts, both sides measured in the same run:
1. `apply_mask` alone on payloads from 40 bytes (a single `read`) to 16 MiB (a large batch).
2. End to end: our server and client, once with our masking and once with `websockets`' C
   helper patched into `narrative_pipeline.store.websocket` (server subprocess and client),
   interleaved rounds of batch_write / batch_read / single reads (bench_ws.py's workload).

    .venv/bin/python benchmarks/bench_ws_mask.py [--n 200000]

Needs the test extra (`websockets`). Prints a Markdown section for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ws import REPO_ROOT, Backend, make_keys, run_all  # noqa: E402
from websockets.speedups import apply_mask as c_mask  # noqa: E402

from narrative_pipeline.store import DataStoreWsClient, websocket  # noqa: E402

OURS = websocket.apply_mask
PATCH_C_MASK = (
    "import runpy, sys; from websockets.speedups import apply_mask; "
    "import narrative_pipeline.store.websocket as w; w.apply_mask = apply_mask; "
    "sys.argv = ['server', *sys.argv[1:]]; "
    "runpy.run_module('narrative_pipeline.store.serve', run_name='__main__')"
)


def time_masks() -> list[tuple[int, float, float]]:
    rows = []
    mask = os.urandom(4)
    for size in (40, 300, 20_000, 1 << 20, 16 << 20):
        data = os.urandom(size)
        assert OURS(data, mask) == c_mask(data, mask)
        number = max(3, int(2e7 // max(size, 1000)))
        ours, c = (
            min(timeit.repeat(lambda f=f, d=data: f(d, mask), number=number, repeat=5)) / number
            for f in (OURS, c_mask)
        )
        rows.append((size, ours, c))
    return rows


@contextlib.contextmanager
def server(path: Path, c_masking: bool) -> Iterator[tuple[str, int]]:
    head = [sys.executable, "-c", PATCH_C_MASK] if c_masking else [sys.executable, "-m"]
    module = [] if c_masking else ["narrative_pipeline.store.serve"]
    process = subprocess.Popen(
        [*head, *module, str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        match = re.search(r"ws://([^:]+):(\d+)/ws", process.stdout.readline().decode())
        assert match, "server did not start"
        yield match.group(1), int(match.group(2))
    finally:
        process.terminate()
        process.wait(30)


def with_mask(mask: Callable, fn: Callable) -> Callable:
    def call(*args):
        websocket.apply_mask = mask  # the client's frames are masked by this module's global
        return fn(*args)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=5_000)
    parser.add_argument("--c-first", action="store_true", help="run the C-masking pair first")
    args = parser.parse_args()

    print(
        f"`.venv/bin/python benchmarks/bench_ws_mask.py --n {args.n}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})\n"
    )
    print("| payload | ours (numpy) | websockets C | ours / C |\n|---:|---:|---:|---:|")
    for size, ours, c in time_masks():
        print(f"| {size:,} B | {ours * 1e6:,.1f} us | {c * 1e6:,.1f} us | {ours / c:.1f}x |")

    keys, values = make_keys(args.n)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        backends = []
        for name, mask, c_masking in (
            ("numpy masking", OURS, False),
            ("websockets C masking", c_mask, True),
        ):
            client = DataStoreWsClient(
                *stack.enter_context(server(Path(tmp) / f"{c_masking}.bin", c_masking))
            )
            backends.append(
                Backend(
                    f"our server + client, {name}",
                    with_mask(mask, client.batch_write),
                    with_mask(mask, client.batch_read),
                    with_mask(mask, client.read),
                )
            )
        print()
        run_all(backends[::-1] if args.c_first else backends, keys, values, args)
    websocket.apply_mask = OURS


if __name__ == "__main__":
    main()
