"""Per-attempt overhead of a trivial connector, warm fork vs cold interpreter start.

Not a test: run ``python -m tests.sandbox.bench_process [N]`` from the repository root.
"""

from __future__ import annotations

import statistics
import sys
import time

from sandbox import ConnectorSpec, Limits
from sandbox.process import ProcessSandbox

SPEC = ConnectorSpec("python", "tests.sandbox.hostile:Nothing")
PAYLOAD = {"config": {}, "input": {"x": 1}, "context": {"run_id": 1, "node_id": "n", "attempt": 1}}


def measure(sb: ProcessSandbox, n: int, limits: Limits) -> list[float]:
    sb.run(SPEC, PAYLOAD, limits)  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = sb.run(SPEC, PAYLOAD, limits)
        times.append((time.perf_counter() - start) * 1000)
        assert r.ok, r
    return times


def report(name: str, times: list[float]) -> None:
    times.sort()
    p90 = times[int(len(times) * 0.9)]
    print(f"{name:28s} median {statistics.median(times):7.2f} ms   p90 {p90:7.2f} ms   (n={len(times)})")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with ProcessSandbox(preload=["tests.sandbox.hostile"], slots=1) as sb:
        report("warm, no network", measure(sb, n, Limits()))
        report("warm, network=True", measure(sb, n, Limits(network=True)))
        print("not enforced:", sb.not_enforced or "nothing")
    with ProcessSandbox(slots=1, warm=False) as sb:
        report("cold (python -I per attempt)", measure(sb, max(n // 10, 10), Limits()))


if __name__ == "__main__":
    main()
