"""`--engine ray`: a stage's batches on a pool of Ray actors.

Ray core (actors and object refs), not Ray Data: the unit of work is already fixed by the stage
(a batch of prompts = one resumable part, numbered the same way by every engine), the driver
writes each finished part itself (so resume, the output lock and the key checks are the local
path's, unchanged), and what a worker returns is a few hundred rows. Ray Data's streaming
reads and writes would add a second notion of block and of output files beside the parts, and
its retries would re-run a block without telling the driver which part it was.

Each actor builds its state once (`setup()`: a generator holding the model, or a judge) and then
runs `work(state, payload)` over one batch at a time, two batches in flight per actor so it never
waits for the driver. An actor lost with its node (or killed) is replaced, and the batches it held
go back to the queue; a batch that comes back is written once (its part). An error raised by the
work itself (a DnoError: a bad teacher function, a template that does not fit) stops the stage
with its one line, as locally.

The cluster: $RAY_ADDRESS (Ray's own variable, e.g. ray://head:10001 or head:6379), or a new local
one sized to the workers asked for. Ray's logs stay in its session folder (/tmp/ray/session_latest/
logs); the driver prints one progress line per interval.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import DnoError, first_line

IN_FLIGHT = 2  # batches queued on an actor: one running, one waiting
MAX_REPLACEMENTS = 3  # per worker slot: lost actors replaced before the stage gives up
START_TIMEOUT = float(os.environ.get("DNO_RAY_START_TIMEOUT", 900))  # seconds with no actor able to run


def _ray():
    if _loopback(os.environ.get("RAY_ADDRESS")):
        local_cluster_only()
    try:
        import ray
    except ImportError:
        raise DnoError("--engine ray needs Ray: pip install 'dno-data[ray]' (or pip install 'ray[data]')") from None
    return ray


def local_cluster_only() -> None:
    """Keep a cluster on this machine on 127.0.0.1. Without this, Ray turns 127.0.0.1 into the host's
    first network address, and a driver cannot reach a cluster that listens on 127.0.0.1 only.
    The variable is read when Ray is imported; when Ray already was, its constant is set too."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if "ray" in sys.modules and sys.modules["ray"] is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def _loopback(address: str | None) -> bool:
    if not address:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def connect(cpus: float, gpus: float) -> None:
    """Join the cluster of $RAY_ADDRESS, or start a local one with room for `cpus` and `gpus`."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    kw: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address is None:
            # Logical CPUs may exceed the physical ones: actors that mostly wait (on a GPU, a
            # server) still each need their reservation.
            # address="local": a new cluster of this process's own (ray.init() alone would join any Ray
            # instance running on this machine, e.g. another user's)
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(-(-cpus // 1))),
                     num_gpus=int(-(-gpus // 1)) or None, include_dashboard=False, _node_ip_address="127.0.0.1", **kw)
        else:
            ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray cluster"
        raise DnoError(f"--engine ray: could not start or join {where}: {first_line(e, 200)}; check that "
                       "`ray status` works from this machine") from None


def check_room(workers: int, cpus: float, gpus: float) -> None:
    """Fail before any work when not one worker fits anywhere in the cluster (it would wait forever)."""
    ray = _ray()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        total = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
        raise DnoError(f"--engine ray: no node of the cluster has {cpus:g} CPU and {gpus:g} GPU free for one worker "
                       f"(the cluster: {len(nodes)} nodes, {total['CPU']:g} CPUs, {total['GPU']:g} GPUs); lower "
                       "--cpus-per-worker / --gpus-per-worker or add nodes")


class _Worker:
    """One actor: its state built once, then batches. Never raises in __init__ (a failed setup is
    reported by `ready`, so the driver can tell a bad config from a lost node)."""

    def __init__(self, setup: Callable[[], Any], paths: list[str]):
        for p in paths:  # e.g. the driver's working folder, for python:module:function specs
            if p not in sys.path:
                sys.path.append(p)
        self.error: tuple[bool, str] | None = None  # (a DnoError?, its line)
        try:
            self.state = setup()
        except DnoError as e:
            self.error = (True, str(e))
        except Exception as e:  # noqa: BLE001 - reported as one line by the driver
            self.error = (False, f"{type(e).__name__}: {first_line(e, 300)}")

    def ready(self) -> tuple[bool, str] | None:
        return self.error

    def run(self, work: Callable[[Any, Any], Any], payload: Any) -> Any:
        return work(self.state, payload)


def run_units(units: Iterable[tuple[int, Any]], *, setup: Callable[[], Any], work: Callable[[Any, Any], Any],
              on_result: Callable[[int, Any], None], workers: int, cpus_per_worker: float = 1.0,
              gpus_per_worker: float = 0.0, what: str = "work", before_submit: Callable[[int, Any], Any] | None = None,
              on_progress: Callable[[], None] | None = None, interval: float = 1.0) -> dict:
    """Run `work(state, payload)` for every (unit, payload) on `workers` actors, each with state
    `setup()`, and call `on_result(unit, result)` in this process once per unit, as results arrive.

    `before_submit(unit, payload)` may replace a payload just before it is sent (work that must stay
    in the driver, e.g. API calls with the driver's cache). Returns counts (actors lost, batches
    retried, seconds until every worker was ready). `setup` and `work` must be picklable:
    module-level functions or partials of them.
    """
    ray = _ray()
    queue = collections.deque(units)
    if not queue:
        return {}
    workers = min(workers, len(queue))
    connect(workers * cpus_per_worker, workers * gpus_per_worker)
    check_room(workers, cpus_per_worker, gpus_per_worker)
    actor_cls = ray.remote(_Worker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
                                            max_restarts=0, scheduling_strategy="SPREAD")
    paths = [os.getcwd()]
    setup_ref = ray.put(setup)
    work_ref = ray.put(work)
    starting: dict = {}  # ready ref -> actor
    live: dict = {}  # actor -> refs in flight
    inflight: dict = {}  # ref -> (unit, payload, actor)
    sent: dict[int, Any] = {}  # unit -> payload as sent (before_submit applied once)
    counts = collections.Counter()
    replacements = collections.Counter()
    done_units: set[int] = set()
    slot_of: dict = {}  # actor -> its worker slot (replacements are counted per slot)

    def start(slot: int):
        actor = actor_cls.remote(setup_ref, paths)
        slot_of[actor] = slot
        starting[actor.ready.remote()] = actor

    def lose(actor, why: str) -> None:
        if actor in live:
            del live[actor]
            counts["workers lost"] += 1
            slot = slot_of[actor]
            replacements[slot] += 1
            if replacements[slot] > MAX_REPLACEMENTS:
                raise DnoError(f"{what}: a Ray worker was lost {replacements[slot]} times ({why}); see `ray status` "
                               "and the Ray logs (/tmp/ray/session_latest/logs on each node)")
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
            start(slot)

    t0 = waiting_since = time.monotonic()
    all_ready = None  # seconds until every first worker was ready (model loaded)
    for slot in range(workers):
        start(slot)
    try:
        while queue or inflight:
            for actor, refs in live.items():
                while len(refs) < IN_FLIGHT and queue:
                    unit, payload = queue.popleft()
                    if unit in done_units:
                        continue
                    if unit not in sent:
                        sent[unit] = before_submit(unit, payload) if before_submit else payload
                    ref = actor.run.remote(work_ref, sent[unit])
                    refs.add(ref)
                    inflight[ref] = (unit, payload, actor)
            if not live:
                if time.monotonic() - waiting_since > START_TIMEOUT:
                    raise DnoError(f"{what}: no Ray worker could start in {START_TIMEOUT:.0f} s (the cluster has no "
                                   "room for one: see `ray status`); lower --workers or the resources per worker")
            else:
                waiting_since = time.monotonic()
            ready, _ = ray.wait([*inflight, *starting], num_returns=1, timeout=interval)
            for ref in ready:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        error = ray.get(ref)
                    except ray.exceptions.RayActorError as e:
                        live[actor] = set()  # count it as lost, and replace it
                        lose(actor, f"it died while starting: {first_line(e, 200)}")
                        continue
                    if error is not None:  # a bad config, not a lost node: every worker would fail alike
                        dno, line = error
                        raise DnoError(line if dno else f"{what}: a Ray worker could not start: {line}")
                    live[actor] = set()
                    if all_ready is None and len(live) == workers:
                        all_ready = time.monotonic() - t0
                    continue
                unit, payload, actor = inflight.pop(ref)
                live.get(actor, set()).discard(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, DnoError):
                        raise DnoError(str(cause)) from None
                    raise DnoError(f"{what}: a Ray worker failed on batch {unit}: "
                                   f"{type(cause or e).__name__}: {first_line(cause or e, 300)}") from None
                except ray.exceptions.RayActorError as e:  # the actor or its node is gone: the batch goes back
                    counts["batches retried"] += 1
                    queue.appendleft((unit, payload))
                    lose(actor, first_line(e, 200))
                    continue
                except ray.exceptions.ObjectLostError:  # done, but its result was on a node now gone: again
                    counts["batches retried"] += 1
                    queue.appendleft((unit, payload))
                    continue
                if unit in done_units:  # a batch that came back twice is written once
                    continue
                done_units.add(unit)
                sent.pop(unit, None)
                on_result(unit, result)
            if on_progress is not None:
                on_progress()
    finally:
        for actor in [*live, *starting.values()]:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
    if all_ready is not None:
        counts["seconds until every worker was ready"] = round(all_ready, 1)
    return dict(counts)
