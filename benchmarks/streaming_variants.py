"""Worker variants side by side on one handbook world: saturation and paced latency per variant.

Builds the streaming benchmark's world once (handbook replay, local stack), then for each
``--variant`` starts a fresh worker with that variant's extra environment on fresh topics and
measures: warm saturation throughput with the worker's own stage histograms and the CPU time
each process spent per event meanwhile (worker, broker, Redis, this script's reader, which
also publishes the paced events) with Redis's own time per command (``INFO commandstats``),
and for each
paced rate p50/p90/p99/max latency (one producer per rate; the first ``--warmup`` seconds are
not measured) with the micro-batches' sizes, ages and stage times from the worker's /metrics.
Variants run one after the other in the order given; repeat one (``--variant a --variant b
--variant a``) to see how much of a difference is noise.

    .venv/bin/python benchmarks/streaming_variants.py \
        --variant "timeout 50 ms:FRAUDSTREAM_SCORING__BATCH_TIMEOUT_S=0.05" \
        --variant "timeout 10 ms:FRAUDSTREAM_SCORING__BATCH_TIMEOUT_S=0.01"

A variant is ``label`` or ``label:NAME=VALUE,NAME=VALUE`` (the environment also reaches a
reference's agent: ``bare:FRAUDSTREAM_SCORING__BATCH_SIZE=1000``). ``label@DIR`` runs that variant's
worker from another source tree (a ``git worktree`` of another commit: its ``fraudstream``
and ``streaming`` packages come first on the worker's ``PYTHONPATH``), so two commits are
compared side by side on one world:

    git worktree add /tmp/base 6595b1d
    .venv/bin/python benchmarks/streaming_variants.py \
        --variant "base@/tmp/base" --variant new --variant "base2@/tmp/base" --variant new2

The label ``bare`` runs reference (a) of ``benchmarks/streaming.py`` instead of a worker: the
bare Faust agent forwarding each message, saturated on a fresh topic with ``--saturation``
pre-loaded events; ``naive`` runs its reference (b) in this process: per event one Feast
``get_online_features`` and one ``predict``, over ``--naive`` events. Alternated with the
worker, they give the issue's ratios worker / (a) and worker / (b) as several pairs measured
minutes apart, not one pair, since the host's speed moves by 25 % or more within minutes
(``RESULTS.md``). Each worker's warm throughput is divided by the mean of the nearest run of
the reference before it and after it in the order given, and the summary line gives every
such ratio and their median. For context, ``bare1`` runs the per-event agent (a1) instead
(Faust's documented form: ``async for`` over the events, ``await Topic.send`` each, no
micro-batches), and ``bare2`` reference (a) with the worker's own intake (a2:
``streaming.intake`` instead of ``take_events``); the issue's target reads against ``bare``:

    .venv/bin/python benchmarks/streaming_variants.py --saturation 10000 --rates \
        --variant bare --variant naive --variant cur --variant bare --variant naive \
        --variant cur2 --variant bare --variant naive
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from benchmarks import streaming as bench  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, assignments = text.partition(":")
    env = {}
    for item in filter(None, assignments.split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FRAUDSTREAM_"):
            raise SystemExit(f"--variant {text!r}: expected NAME=VALUE with FRAUDSTREAM_ names")
        env[name.strip()] = value.strip()
    return label.strip(), env


def cpu_s(procs: dict[str, psutil.Process]) -> dict[str, float]:
    """User + system CPU seconds of each process so far (its own threads, not its children:
    the worker and the stack are children of this script)."""
    return {name: bench.cpu_seconds(proc) for name, proc in procs.items()}


def watched(name: str, pid: int, settings: Any) -> dict[str, psutil.Process]:
    """The process under test as ``name``, this script's (the reader) and the local stack's,
    for :func:`cpu_s`."""
    from fraudstream.stack import read_state

    state = read_state(settings)
    assert state is not None
    return {name: psutil.Process(pid), "reader": psutil.Process()} | {
        stack_name: psutil.Process(info.pid) for stack_name, info in state.processes.items()
    }


def redis_commands(client: Any) -> dict[str, tuple[int, int]]:
    """Redis's ``INFO commandstats``: each command's calls and µs so far. A command a
    script runs counts both for itself and within the script's ``evalsha``."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (s["calls"], s["usec"]) for name, s in stats.items()}


def redis_per_event(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], events: int
) -> dict[str, dict[str, float]]:
    """Per command between two :func:`redis_commands`: calls and µs of Redis's time per
    event, the costliest first."""
    out = {}
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0))
        if calls > calls0:
            out[name] = {
                "calls": round((calls - calls0) / events, 2),
                "us": round((usec - usec0) / events, 2),
            }
    return dict(sorted(out.items(), key=lambda item: -item[1]["us"]))


def fresh_topics(ctx: dict[str, Any], template: dict[str, str]) -> tuple[dict[str, str], str]:
    """The topics of ``template`` with ``{tag}`` a new random tag, created; and the tag."""
    from fraudstream.kafka import ensure_topics

    tag = uuid.uuid4().hex[:6]
    topics = {role: name.format(tag=tag) for role, name in template.items()}
    ensure_topics(ctx["settings"].kafka, ctx["bootstrap"], list(topics.values()))
    return topics, tag


#: The bare agents a label runs: ``benchmarks/streaming.py``'s ``--bare-mode``, the
#: reference's name, and the key of its throughput in a result.
BARE_MODES = {
    "bare": ("topic", "a", "saturation_ev_s"),
    "bare1": ("each", "a1", "each_ev_s"),
    "bare2": ("bulk", "a2", "bulk_ev_s"),
}


def run_bare(
    label: str, extra: dict[str, str], args: argparse.Namespace, ctx: dict[str, Any]
) -> dict[str, Any]:
    """Reference (a) (label ``bare``), the per-event agent (a1) (label ``bare1``) or (a) with
    the worker's intake (a2) (label ``bare2``), saturated on a fresh topic of
    ``--saturation`` pre-loaded events."""
    from fraudstream.publish import publish_events
    from fraudstream.stack import running

    settings, new = ctx["settings"], ctx["new"]
    kafka, bootstrap = settings.kafka, ctx["bootstrap"]
    template = {"in": "bare-in-{tag}", "out": "bare-out-{tag}", "dlq": "bare-dlq-{tag}"}
    topics, tag = fresh_topics(ctx, template)
    sat = args.saturation
    res = publish_events(new.iloc[:sat], kafka=kafka, bootstrap=bootstrap, topic=topics["in"])
    assert res.delivered == sat, res.summary()
    reader = bench.Reader(settings, bootstrap, topics["out"])
    env = {**bench.env_for(settings, topics, ctx["work"] / f"stack-{tag}"), **extra}
    argv = [sys.executable, str(ROOT / "benchmarks" / "streaming.py")]
    mode, reference, key = BARE_MODES[label]
    argv += ["--bare-agent", f"bare-{tag}", "--bare-mode", mode]
    out: dict[str, Any] = {"variant": label, "reference": reference, "env": extra}
    out["load_1m"] = os.getloadavg()[0]
    with running(argv, ctx["work"] / f"bare-{tag}.log", env=env) as proc:
        procs = watched("bare", proc.pid, settings)
        alive = lambda: proc.poll() is None  # noqa: E731
        started = time.time()
        reader.drain(1, 240, alive)  # CPU from its first output on: its start-up left out
        cpu_before = cpu_s(procs)
        result = bench.saturation(reader, sat, started, alive, 240)
        cpu_after = cpu_s(procs)
    reader.close()
    out[key] = round(result["ev_s"])
    out["cpu_us_per_event"] = {
        name: round(1e6 * (cpu_after[name] - cpu_before[name]) / (sat - 1), 1) for name in procs
    }
    return out


#: The references a variant label names, and the key of their throughput in a result.
REFERENCES = {label: key for label, (_, _, key) in BARE_MODES.items()} | {"naive": "naive_ev_s"}


def run_naive(label: str, args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    """Reference (b) in this process on the first ``--naive`` events of the replay (it reads
    the online store and writes nothing)."""
    result = bench.naive_throughput(ctx["world"], ctx["new"].iloc[: args.naive])
    return {"variant": label, "reference": "b", "naive_ev_s": round(result["ev_s"], 1)}


def ratios_to(results: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Each worker's warm throughput over the mean of the nearest reference run (the one
    whose result has ``key``) before it and after it in order."""
    out = []
    for i, r in enumerate(results):
        if "warm_ev_s" not in r:
            continue
        before = [x[key] for x in results[:i] if key in x][-1:]
        after = [x[key] for x in results[i + 1 :] if key in x][:1]
        near = before + after
        if near:
            ratio = r["warm_ev_s"] / float(np.mean(near))
            out.append({"variant": r["variant"], "reference_ev_s": near, "ratio": round(ratio, 3)})
    return out


def run_variant(
    label: str, extra: dict[str, str], args: argparse.Namespace, ctx: dict[str, Any]
) -> dict[str, Any]:
    from fraudstream.publish import publish_events
    from fraudstream.stack import running

    settings, new = ctx["settings"], ctx["new"]
    kafka, bootstrap = settings.kafka, ctx["bootstrap"]
    topics, tag = fresh_topics(ctx, {"in": "tx-{tag}", "out": "dec-{tag}", "dlq": "tx-{tag}.dlq"})
    sat = args.saturation
    start = ctx["offset"]
    publish_events(
        new.iloc[start : start + 2 * sat], kafka=kafka, bootstrap=bootstrap, topic=topics["in"]
    )
    ctx["offset"] += 2 * sat
    reader = bench.Reader(settings, bootstrap, topics["out"])
    env = {**bench.env_for(settings, topics, ctx["work"] / f"stack-{tag}"), **extra}
    label, _, source = label.partition("@")
    out_source: dict[str, str] = {}
    if source:
        tree = Path(source).resolve()
        if not (tree / "fraudstream" / "__init__.py").exists():
            raise SystemExit(f"--variant {label}@{source}: no fraudstream package there")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        out_source = {"source": str(tree), "commit": commit}
    argv = [sys.executable, "-m", "fraudstream", "worker", "--app-id", f"variant-{tag}"]
    out: dict[str, Any] = {"variant": label, "env": extra, **out_source}
    out["load_1m"] = os.getloadavg()[0]
    started = time.time()
    with running(argv, ctx["work"] / f"worker-{tag}.log", env=env) as proc:
        alive = lambda: proc.poll() is None  # noqa: E731
        # the first half: a worker just started (every state read from Redis, unless its
        # warm start cached them while it joined the group)
        cold = bench.saturation(reader, sat, started, alive, 300)
        out["cold_ev_s"] = round(cold["ev_s"])
        out["first_output_after_start_s"] = round(cold["first_output_after_start_s"], 2)
        before = bench.scrape_worker()
        out["cold_history_reads"] = before.get("history_reads")
        procs = watched("worker", proc.pid, settings)
        commands_before = redis_commands(ctx["redis"])
        cpu_before = cpu_s(procs)
        reader.drain(2 * sat, 300, alive)
        cpu_after = cpu_s(procs)
        commands_after = redis_commands(ctx["redis"])
        stamps = np.sort(np.asarray(reader.stamps[sat : 2 * sat], dtype=np.int64))
        out["warm_ev_s"] = round((len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000.0))
        after = bench.scrape_worker()
        stages = bench.stage_delta(before, after)
        out["warm_events_per_batch"] = bench.events_per_batch(before, after)
        out["warm_action_shares"] = bench.action_shares(before, after)
        out["warm_stages_us_per_event"] = {k: round(v, 1) for k, v in stages.items()}
        out["warm_cpu_us_per_event"] = {
            name: round(1e6 * (cpu_after[name] - cpu_before[name]) / sat, 1) for name in procs
        }
        out["warm_redis_per_event"] = redis_per_event(commands_before, commands_after, sat)
        for rate in args.rates:
            count = int(rate * (args.warmup + args.measure))
            events = new.iloc[ctx["offset"] : ctx["offset"] + count]
            ctx["offset"] += count
            m0 = bench.scrape_worker()
            c0 = cpu_s(procs)
            lat, _, _, timed = bench.paced_latency(
                reader,
                events,
                int(rate * args.warmup),
                rate,
                kafka,
                bootstrap,
                topics["in"],
                alive,
            )
            out[f"latency_{rate:g}"] = {
                q: round(float(np.percentile(lat, p)), 1)
                for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            } | {
                "n": len(lat),
                "per_batch": bench.per_batch(m0, bench.scrape_worker()),
                "windows": bench.windows(timed),
            }
            # this script publishes here: "reader" is the publisher's CPU (and the reading's)
            c1 = cpu_s(procs)
            out[f"latency_{rate:g}"]["cpu_us_per_event"] = {
                name: round(1e6 * (c1[name] - c0[name]) / count, 1) for name in procs
            }
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    reader.close()
    return out


def main() -> None:
    from workspace import add_kafka_argument, private_workspace

    from fraudstream.stack import redis_client

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="label[:NAME=V,...]")
    parser.add_argument("--data", type=Path, default=bench.HANDBOOK)
    parser.add_argument("--saturation", type=int, default=8_000, help="events per phase")
    parser.add_argument(
        "--rates", type=float, nargs="*", default=[200.0, 1000.0], help="none: saturation only"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="s not measured per rate")
    parser.add_argument("--measure", type=float, default=10.0, help="s measured per rate")
    parser.add_argument("--naive", type=int, default=2_000, help="events per naive run")
    bench.add_world_arguments(parser)
    add_kafka_argument(parser)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    if any(label == "naive" and extra for label, extra in variants):
        raise SystemExit("--variant naive takes no settings: it runs in this process")

    with private_workspace("fraudstream-variants-", args.kafka_bootstrap) as ws:
        world = bench.build_world(args, ws.settings, ws.endpoints)
        per_variant = 2 * args.saturation + sum(
            int(r * (args.warmup + args.measure)) for r in args.rates
        )
        workers = sum(1 for label, _ in variants if label not in REFERENCES)
        if per_variant * workers > len(world["new"]):
            raise SystemExit(
                f"{workers} worker variants need {per_variant * workers:,} events, the "
                f"replay has {len(world['new']):,}: fewer variants, --saturation or --measure"
            )
        ctx = {
            "settings": ws.settings,
            "bootstrap": ws.endpoints.kafka_bootstrap,
            "new": world["new"],
            "world": world,
            "work": ws.work,
            "offset": 0,
            "redis": redis_client(ws.endpoints.redis_url, ws.settings),
        }
        results = []
        for label, extra in variants:
            if label in BARE_MODES:
                result = run_bare(label, extra, args, ctx)
            elif label == "naive":
                result = run_naive(label, args, ctx)
            else:
                result = run_variant(label, extra, args, ctx)
            bench.log(json.dumps(result))
            results.append(result)
    summary: dict[str, Any] = {}
    # bare1 (a1) and bare2 (a2) are context: the target reads against bare (a)
    pairs = (("bare", "vs_bare"), ("bare1", "vs_bare"), ("bare2", "vs_bare"), ("naive", "vs_naive"))
    for label, target in pairs:
        ratios = ratios_to(results, REFERENCES[label])
        if ratios:
            summary[f"worker_vs_{label}"] = {
                "pairs": ratios,
                "median_ratio": round(float(np.median([r["ratio"] for r in ratios])), 3),
                "target": bench.TARGETS[target],
            }
    if summary:
        bench.log(json.dumps(summary))
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps({"date": date, "results": results, **summary}))


if __name__ == "__main__":
    main()
