"""The workloads of issue #9, each returning a dict of results."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Hub

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body   = '{"order": 1, "name": "bench"}'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) accepted = 0; other = 0 end
function response(status, headers, body)
  if status == 202 or status == 200 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format(
    'WRKJSON {"requests": %d, "accepted": %d, "other": %d, "errors": %d, "duration_us": %d, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, a, o, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def wrk(url: str, connections: int, seconds: float) -> dict:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT)
    threads = max(1, min(connections, 2))
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", fh.name, url], capture_output=True, text=True, check=True,
    ).stdout
    Path(fh.name).unlink()
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    result = json.loads(line[len("WRKJSON "):])
    result["per_second"] = round(result["accepted"] / (result["duration_us"] / 1e6), 1)
    return result


def wrk_median(url: str, connections: int, seconds: float, repeats: int) -> dict:
    """Several wrk runs of one load point; every figure is the median over them (counts are summed)."""
    runs = [wrk(url, connections, seconds) for _ in range(repeats)]
    out = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    for key in ("requests", "accepted", "other", "errors"):
        out[key] = sum(r[key] for r in runs)
    out["repeats"] = repeats
    return out


def transform_chain(n: int, name: str) -> dict:
    nodes = [{"id": "n0", "connector": "transform", "config": {"value": "{{ trigger.body.order }}"}}]
    for i in range(1, n):
        nodes.append({"id": f"n{i}", "connector": "transform",
                      "config": {"value": f"{{{{ nodes.n{i - 1}.output + 1 }}}}"}})
    edges = [{"from": f"n{i - 1}", "to": f"n{i}"} for i in range(1, n)]
    return {"name": name, "nodes": nodes, "edges": edges, "output": f"{{{{ nodes.n{n - 1}.output }}}}"}


def ingest(hub: Hub, concurrencies=(1, 8, 32, 64), seconds: float = 8, repeats: int = 1) -> dict:
    """Accepted deliveries/s and latency; then prove nothing was lost once the backlog drains."""
    flow = hub.flow({"name": "ingest", "nodes": [
        {"id": "t", "connector": "transform", "config": {"value": "{{ trigger.body.order }}"}}]})
    url = hub.webhook(flow)
    rows, accepted = [], 0
    for c in concurrencies:
        r = wrk_median(url, c, seconds, repeats)
        accepted += r["accepted"]
        rows.append({"concurrency": c, **r})
    started = time.monotonic()
    recorded = hub.count_runs()
    while True:
        finished = hub.count_runs("succeeded") + hub.count_runs("failed")
        if finished >= recorded or time.monotonic() - started > 600:
            break
        time.sleep(0.5)
    # wrk stops counting at its deadline, so a few committed deliveries may have no counted answer:
    # recorded >= accepted is the proof; lost counts 2xx answers with no run behind them.
    return {"rows": rows, "accepted_total": accepted, "runs_recorded": recorded,
            "runs_finished": finished, "lost": max(0, accepted - recorded),
            "drain_seconds": round(time.monotonic() - started, 2), "rss_mib": hub.rss_mib()}


def sync_chain(hub: Hub, seconds: float = 8, repeats: int = 1) -> dict:
    """A sync webhook answering after a 10-node sequential chain of transform nodes."""
    chain = hub.flow(transform_chain(10, "chain10"))
    one = hub.flow(transform_chain(1, "chain1"))
    url10 = hub.webhook(chain, response="sync", sync_timeout_seconds=30)
    url1 = hub.webhook(one, response="sync", sync_timeout_seconds=30)
    rows = [{"nodes": 10, "concurrency": c, **wrk_median(url10, c, seconds, repeats)} for c in (1, 8)]
    single = wrk_median(url1, 1, seconds, repeats)
    # per-hop overhead: (chain p50 - single-node p50) / 9 extra hops
    per_hop = (rows[0]["p50_ms"] - single["p50_ms"]) / 9
    # and from the database: the gap between a node's finish and its successor's start
    run_id = hub.run(chain, {"order": 1})
    run = hub.wait_run(run_id)
    gaps = []
    nodes = {n["id"]: n for n in run["nodes"]}
    for i in range(1, 10):
        prev, cur = nodes[f"n{i - 1}"]["finished_at"], nodes[f"n{i}"]["started_at"]
        gaps.append(_ms_between(prev, cur))
    return {"rows": rows, "single_node": single, "per_hop_ms_from_latency": round(per_hop, 3),
            "per_hop_ms_median_from_events": round(statistics.median(gaps), 3),
            "per_hop_gaps_ms": [round(g, 3) for g in gaps]}


def _ms_between(a: str, b: str) -> float:
    from datetime import datetime

    fa = datetime.fromisoformat(a.rstrip("Z"))
    fb = datetime.fromisoformat(b.rstrip("Z"))
    return (fb - fa).total_seconds() * 1000


def code_chain(hub: Hub, n: int = 40) -> dict:
    """40 sequential `code` nodes each computing fib(10): total time for one run."""
    code = "def fib(k):\n    return k if k < 2 else fib(k - 1) + fib(k - 2)\noutput = fib(10) + (input or 0)\n"
    nodes = [{"id": "c0", "connector": "code", "config": {"code": code, "input": 0}}]
    for i in range(1, n):
        nodes.append({"id": f"c{i}", "connector": "code",
                      "config": {"code": code, "input": f"{{{{ nodes.c{i - 1}.output }}}}"}})
    flow = hub.flow({"name": "code40", "nodes": nodes,
                     "edges": [{"from": f"c{i - 1}", "to": f"c{i}"} for i in range(1, n)]})
    warm = hub.wait_run(hub.run(flow))  # first run pays the one-time module load
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        run_id = hub.run(flow)
        hub.wait_finished(flow)
        times.append(time.monotonic() - t0)
        run = hub.wait_run(run_id)
        assert run["status"] == "succeeded", run.get("error")
    return {"nodes": n, "first_run_status": warm["status"], "seconds": [round(t, 3) for t in times],
            "median_seconds": round(statistics.median(times), 3)}


def fan_out(hub: Hub, width: int = 50, runs: int = 3) -> dict:
    """A 1 → width → 1 flow: nodes/s."""
    nodes = [{"id": "start", "connector": "transform", "config": {"value": 1}}]
    nodes += [{"id": f"m{i}", "connector": "transform", "config": {"value": i}} for i in range(width)]
    nodes.append({"id": "end", "connector": "transform", "config": {"value": "done"}})
    edges = [{"from": "start", "to": f"m{i}"} for i in range(width)] + [
        {"from": f"m{i}", "to": "end"} for i in range(width)]
    flow = hub.flow({"name": f"fan{width}", "nodes": nodes, "edges": edges})
    hub.wait_run(hub.run(flow))
    rates = []
    for _ in range(runs):
        t0 = time.monotonic()
        ids = [hub.run(flow) for _ in range(4)]
        hub.wait_finished(flow)
        rates.append(4 * (width + 2) / (time.monotonic() - t0))
        for run_id in ids:
            assert hub.wait_run(run_id)["status"] == "succeeded"
    return {"width": width, "workers": hub.workers, "nodes_per_second": round(statistics.median(rates), 1),
            "rss_mib": hub.rss_mib()}


def sandbox_overhead(samples: int = 200) -> dict:
    """Per-attempt overhead of the sandboxes with a trivial connector, measured in-process."""
    code = r"""
import json, statistics, sys, tempfile, time
from pathlib import Path
from sandbox import ConnectorSpec, Limits
from sandbox.process import ProcessSandbox
from sandbox.wasm import WasmSandbox
n = int(sys.argv[1])
payload = {"config": {"value": 1}, "input": None, "context": {"run_id": 1, "node_id": "t", "attempt": 1,
           "idempotency_key": "k"}}
spec = ConnectorSpec("python", "bench.identity:Identity")
out = {}
def timed(fn, k):
    ts = []
    for _ in range(k):
        t0 = time.perf_counter(); r = fn(); ts.append((time.perf_counter() - t0) * 1000)
        assert r.ok, r.error
    return round(statistics.median(ts), 3)
with ProcessSandbox(preload=["bench.identity"], slots=1) as sb:
    sb.run(spec, payload, Limits())
    out["subprocess_warm_ms"] = timed(lambda: sb.run(spec, payload, Limits()), n)
with ProcessSandbox(preload=["bench.identity"], slots=1, warm=False) as sb:
    out["subprocess_cold_ms"] = timed(lambda: sb.run(spec, payload, Limits()), max(5, n // 20))
echo = str(Path("examples/wasm-echo/echo.wasm").resolve())
wspec = ConnectorSpec("wasm", echo)
cache = tempfile.mkdtemp()
t0 = time.perf_counter()
with WasmSandbox(cache) as w:
    w.run(wspec, payload, Limits())
    out["wasm_cold_first_run_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    out["wasm_cached_ms"] = timed(lambda: w.run(wspec, payload, Limits()), n)
    tspec = ConnectorSpec("wasm", str(Path("connectors/transform.wat").resolve()))
    w.run(tspec, payload, Limits())
    out["transform_wasm_ms"] = timed(lambda: w.run(tspec, payload, Limits()), n)
try:
    from sandbox.wasm_python import run_python, warm_cache
    import os
    cache = os.environ.get("HOOKHUB_TEST_WASM_CACHE") or f"/tmp/hookhub-test-wasm-cache-{os.getuid()}"
    with WasmSandbox(cache) as w:
        warm_cache(w, progress=lambda m: None)
        code = "def fib(k):\n    return k if k < 2 else fib(k-1) + fib(k-2)\noutput = fib(10)\n"
        run_python(w, code, None, Limits())
        out["code_connector_fib10_ms"] = timed(lambda: run_python(w, code, None, Limits()), max(10, n // 10))
except ImportError:
    out["code_connector_fib10_ms"] = None
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code, str(samples)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
