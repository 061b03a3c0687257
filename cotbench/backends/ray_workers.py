"""``--ray``: one sweep spread over engines on a Ray cluster, behind the same ``Backend`` protocol.

Each worker is a Ray actor holding one ordinary backend (``hf`` or ``vllm``, built from the run's settings as
on one machine), with its own GPU or set of CPU cores; it loads the model and valve once. This backend is what
the runner sees: it hands requests to the workers in chunks and yields every worker's generations as they
finish, so the runner stays the only writer of the run directory and stores and grades exactly as on one
machine (resume, ``kill -9`` and the report are unchanged). Sample keys come from the engine's own
``describe()``, so a sweep on 8 workers and on 1 has the same keys; the worker count is recorded only as
information (``engine_stats`` in the run's metadata).

Scheduling: work stealing from one queue. A worker asks for the next chunk when it has finished its last;
chunks shrink as the queue empties (a share of what is left, never more than ``MAX_CHUNK``), so the last
worker does not hold the sweep with a large chunk. Each chunk is a Ray streaming generator: generations
come back batch by batch, not at the end of the chunk.

Faults: a worker that dies (process killed, node lost, out of memory) has its unfinished requests put back
at the front of the queue and is replaced, up to ``MAX_RESTARTS`` times for each worker. Requests that were
in flight when a worker died are retried one at a time; one that kills a worker on its own
``POISON_STRIKES`` times is reported and skipped (it stays unstored, so the report shows the run incomplete
and a rerun tries it again). An error raised by the engine itself (a bad setting, an unloadable model) is
not a fault: it stops the sweep with its own message.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from cotbench.errors import ConfigError, CotbenchError
from cotbench.prompts import Messages, render_chat
from cotbench.records import Generation, GenerationRequest

MAX_CHUNK = 512  # requests per chunk at most: large enough to fill an engine's batch (hf: 256 rows)
MIN_CHUNK = 8
CHUNKS_PER_WORKER = 2  # a chunk is at most this share of the remaining requests per worker
MAX_RESTARTS = 3  # replacements per worker before the sweep gives up on it
POISON_STRIKES = 2  # a request that kills a worker this often, on its own, is skipped
RAY_ENGINES = ("hf", "vllm")  # openai: the server already spreads requests; point --base-url at a balancer


def ray_module():
    """``ray``, or a ConfigError that says how to get it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'cotbench[ray]' (or pip install ray), then start a cluster "
                          "with `ray start --head` or use --ray local") from None
    return ray


def connect(address: str):
    """Join the cluster at ``address`` ("auto": the one `ray start` made on this machine, or $RAY_ADDRESS;
    "local": a new single-machine cluster in this process; else host:port or ray://host:port)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    if address != "local":
        _check_reachable(address)  # ray.init waits for an absent cluster far longer than a user should
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "on this machine" if address == "auto" else f"at {address}"
        raise ConfigError(f"no Ray cluster found {where} ({str(exc).splitlines()[0][:200]}). Start one with "
                          "`ray start --head` (or join one with `ray start --address HEAD:6379`), pass its address to "
                          "--ray, or use --ray local for a cluster of this machine alone.") from None
    return ray


def engine_from_config(config):
    """What a worker runs: the registered engine ``config.backend``, exactly as one machine would build it."""
    from cotbench.backends.registry import BACKENDS

    return BACKENDS.get(config.backend).from_config(config)


CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # where `ray start` notes its address


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ConfigError now, rather than minutes of Ray's retries, when nothing listens at the cluster's address."""
    import socket

    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS") or (CURRENT_CLUSTER.read_text().strip() if CURRENT_CLUSTER.is_file() else "")
        if not target:
            raise ConfigError("no Ray cluster is running on this machine (--ray auto). Start one with `ray start --head`, "
                              "pass another cluster's address to --ray, or use --ray local for one of this machine alone.")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no Ray cluster found at {target} ({exc}). Start one with `ray start --head` (or join one "
                          "with `ray start --address HEAD:6379`), pass its address to --ray, or use --ray local for a "
                          "cluster of this machine alone.") from None


class _Worker:
    """The Ray actor: one engine, built once; ``run`` streams a chunk's generations back batch by batch."""

    def __init__(self, config, threads: int | None, engine):
        from dataclasses import replace

        # the worker's own cores, fixed: its engine shares the node with Ray's processes (see _worker_env)
        self.backend = engine(replace(config, threads=threads) if threads else config)

    def info(self) -> dict:
        import socket

        b = self.backend
        return {"model_id": b.model_id, "valve_id": b.valve_id, "n_params": b.n_params(), "describe": b.describe(),
                "numerics": b.numerics() if hasattr(b, "numerics") else {},
                "node": socket.gethostname(), "pid": os.getpid()}

    def tokenizer(self):
        return self.backend.tokenizer

    def run(self, requests):
        for batch in self.backend.generate(requests):
            yield batch

    def close(self) -> None:
        self.backend.close()


@dataclass
class _Slot:
    """One worker position: its current actor, its chunk in flight and what it did."""
    index: int
    actor: object = None
    stream: object = None  # the ObjectRefGenerator of the chunk in flight
    outstanding: dict = field(default_factory=dict)  # request_id -> request, for the chunk in flight
    restarts: int = 0
    tokens: int = 0
    requests: int = 0
    busy_s: float = 0.0
    chunk_started: float = 0.0
    info: dict = field(default_factory=dict)
    alive: bool = True


class RayBackend:
    """``Backend`` over ``workers`` Ray actors, each an ``engine`` backend built from the same settings."""

    def __init__(self, config, address: str = "auto", workers: int | None = None, worker_gpus: float = 0.0,
                 worker_cpus: float | None = None, engine=engine_from_config):
        """``engine(config)`` builds each worker's backend (in the worker); a picklable function."""
        if config.backend not in RAY_ENGINES:
            raise ConfigError(f"--ray runs engines in workers: --backend {' or '.join(RAY_ENGINES)}, not {config.backend} "
                              "(a server already spreads requests; put a load balancer in front of several)")
        started_here = address == "local" and not ray_module().is_initialized()
        self.ray = connect(address)
        # a cluster this backend started (--ray local) is stopped by its close(), from the CLI or from Python,
        # and at once if the workers cannot start
        self._owns_cluster, self._slots = started_here, []
        try:
            self._start_workers(config, address, workers, worker_gpus, worker_cpus, engine)
        except BaseException:
            self.close()
            raise

    def _start_workers(self, config, address, workers, worker_gpus, worker_cpus, engine) -> None:
        self.config, self.address, self._engine = config, address, engine
        resources = self.ray.cluster_resources()
        self.worker_gpus = float(worker_gpus or 0)
        if self.worker_gpus and resources.get("GPU", 0) < self.worker_gpus:
            raise ConfigError(f"--worker-gpus {worker_gpus} asks for GPUs the cluster does not have "
                              f"({resources.get('GPU', 0):g} GPUs); use --worker-gpus 0 for CPU workers")
        if workers is None:  # one worker per GPU share, else one
            workers = max(1, int(resources.get("GPU", 0) // self.worker_gpus)) if self.worker_gpus else 1
        self.n_workers = int(workers)
        if worker_cpus is None:  # CPU workers share the cluster's cores; GPU workers need one core each
            worker_cpus = 1.0 if self.worker_gpus else max(1.0, float(resources.get("CPU", 1) // self.n_workers))
        self.worker_cpus = float(worker_cpus)
        for name, per, have in (("CPU", self.worker_cpus, resources.get("CPU", 0)),
                                ("GPU", self.worker_gpus, resources.get("GPU", 0))):
            if per * self.n_workers > have + 1e-9:  # Ray would wait for ever for resources that never come
                raise ConfigError(f"{self.n_workers} workers × {per:g} {name}s each do not fit the cluster's {have:g} "
                                  f"{name}s: lower --workers or --worker-{name.lower()}s, or add nodes")
        self._actor_class = self.ray.remote(_Worker)
        self.skipped: dict[str, str] = {}  # request_id -> why
        self._strikes: dict[str, int] = {}
        self._suspects: set[str] = set()
        self._slots = [_Slot(i) for i in range(self.n_workers)]
        for slot in self._slots:
            self._start(slot)
        infos = self._first_info()
        first = infos[0]
        self.model_id, self.valve_id, self._n_params = first["model_id"], first["valve_id"], first["n_params"]
        self._describe = first["describe"]
        if any(i["describe"] != self._describe or i["valve_id"] != self.valve_id for i in infos):
            raise CotbenchError("Ray workers loaded different engines (dtype, device or valve differ between nodes: "
                                f"{[i['describe'] for i in infos]}); give --dtype and --device explicitly")
        self.tokenizer = self.ray.get(self._slots[0].actor.tokenizer.remote())

    @classmethod
    def from_config(cls, config) -> "RayBackend":
        return cls(config, config.ray, config.workers, config.worker_gpus, config.worker_cpus)

    # -- the Backend protocol
    def render(self, messages: Messages) -> tuple[str, bool]:
        return render_chat(self.tokenizer, messages)

    def n_params(self) -> int:
        return self._n_params

    def describe(self) -> dict:
        return dict(self._describe)  # the engine's own: keys do not depend on the worker count

    def numerics(self) -> dict:
        """The workers' engines' own record (hf: deterministic or why not); where workers differ, each one's."""
        records = [slot.info.get("numerics", {}) for slot in self._slots if slot.info]
        if not records or all(r == records[0] for r in records):
            return dict(records[0]) if records else {}
        deterministic = all(r.get("deterministic") for r in records)
        record = {"deterministic": deterministic, "workers": records}
        if not deterministic:
            record["because"] = "; ".join(sorted({r.get("because") or "not recorded" for r in records
                                                  if not r.get("deterministic")}))
        return record

    def stats(self) -> dict:
        """Per-worker throughput and faults, for the run's metadata (information only, not identity)."""
        return {"ray": {"address": self.address, "workers": self.n_workers, "worker_gpus": self.worker_gpus,
                        "worker_cpus": self.worker_cpus, "skipped": dict(self.skipped),
                        "per_worker": [{"worker": s.index, "node": s.info.get("node"), "requests": s.requests,
                                        "tokens": s.tokens, "busy_s": round(s.busy_s, 2),
                                        "tok_per_s": round(s.tokens / s.busy_s, 2) if s.busy_s else None,
                                        "restarts": s.restarts} for s in self._slots]}}

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Generation]]:
        queue: deque[GenerationRequest] = deque(requests)
        seen: set[str] = set()
        try:
            while queue or any(s.stream is not None for s in self._slots):
                for slot in self._slots:
                    if slot.alive and slot.stream is None and queue:
                        self._dispatch(slot, queue)
                streams = {s.stream: s for s in self._slots if s.stream is not None}
                if not streams:
                    if queue:  # every worker is gone
                        raise CotbenchError(f"every Ray worker failed {MAX_RESTARTS + 1} times; {len(queue)} requests "
                                            "left ungenerated (stored results are kept: rerun to resume)")
                    break
                ready, _ = self.ray.wait(list(streams), num_returns=1, timeout=None)
                for stream in ready:
                    batch = self._receive(streams[stream], queue)
                    fresh = [g for g in batch if g.request_id not in seen]  # a retried request never comes twice
                    seen.update(g.request_id for g in fresh)
                    if fresh:
                        yield fresh
        except BaseException:
            self._cancel_all()
            raise

    def close(self) -> None:
        for slot in self._slots:
            if slot.actor is not None:
                try:
                    self.ray.kill(slot.actor)
                except Exception:  # already gone
                    pass
                slot.actor = None
        if self._owns_cluster:
            self.ray.shutdown()
            self._owns_cluster = False

    # -- scheduling
    def _chunk_size(self, remaining: int) -> int:
        """A share of what is left: one worker steals from nobody, so it takes all (up to MAX_CHUNK) and its
        engine batches as on one machine; several take smaller shares as the queue empties."""
        live = sum(s.alive for s in self._slots)
        if live <= 1:
            return max(1, min(remaining, MAX_CHUNK))
        share = math.ceil(remaining / (CHUNKS_PER_WORKER * live))
        return max(1, min(remaining, MAX_CHUNK, max(MIN_CHUNK, share)))

    def _dispatch(self, slot: _Slot, queue: deque) -> None:
        if queue[0].request_id in self._suspects:  # in flight when a worker died: alone, to find a poison request
            chunk = [queue.popleft()]
        else:
            chunk = []
            while queue and len(chunk) < self._chunk_size(len(queue) + len(chunk)) and \
                    queue[0].request_id not in self._suspects:
                chunk.append(queue.popleft())
        slot.outstanding = {r.request_id: r for r in chunk}
        slot.chunk_started = time.perf_counter()
        slot.stream = slot.actor.run.remote(chunk)

    def _receive(self, slot: _Slot, queue: deque) -> list[Generation]:
        """The next batch of ``slot``'s chunk; [] when the chunk ended or the worker died (then handled)."""
        ray = self.ray
        try:
            batch = ray.get(next(slot.stream))
        except StopIteration:
            self._chunk_done(slot)
            return []
        except ray.exceptions.RayTaskError as exc:  # the engine raised: not a fault, the sweep stops with it
            self._chunk_done(slot)
            cause = exc.as_instanceof_cause()
            raise (cause if isinstance(cause, CotbenchError) else CotbenchError(f"a Ray worker's engine failed: {exc}"))
        except _faults(ray) as exc:
            self._worker_died(slot, queue, exc)
            return []
        batch = [g for g in batch if g.request_id in slot.outstanding]
        for g in batch:
            del slot.outstanding[g.request_id]
            self._suspects.discard(g.request_id)
        slot.tokens += sum(g.n_generated_tokens for g in batch)
        slot.requests += len(batch)
        return batch

    def _chunk_done(self, slot: _Slot) -> None:
        slot.busy_s += time.perf_counter() - slot.chunk_started
        slot.stream, slot.outstanding = None, {}

    def _worker_died(self, slot: _Slot, queue: deque, exc: Exception) -> None:
        lost = list(slot.outstanding.values())
        self._chunk_done(slot)
        if len(lost) == 1:  # it died running this request alone
            request_id = lost[0].request_id
            self._strikes[request_id] = self._strikes.get(request_id, 0) + 1
            if self._strikes[request_id] >= POISON_STRIKES:
                self.skipped[request_id] = f"killed {POISON_STRIKES} workers running alone ({type(exc).__name__})"
                self._suspects.discard(request_id)
                _note(f"request {request_id} killed {POISON_STRIKES} Ray workers on its own: skipped (left unstored; "
                      "a rerun tries it again)")
                lost = []
        for request in reversed(lost):  # back to the front, in their order, to be retried one at a time
            self._suspects.add(request.request_id)
            queue.appendleft(request)
        try:
            self.ray.kill(slot.actor)
        except Exception:
            pass
        if slot.restarts >= MAX_RESTARTS:
            slot.alive, slot.actor = False, None
            _note(f"Ray worker {slot.index} died {slot.restarts + 1} times ({type(exc).__name__}); continuing without it")
            return
        slot.restarts += 1
        _note(f"Ray worker {slot.index} died ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
              f"{len(lost)} requests back in the queue; restarting it ({slot.restarts}/{MAX_RESTARTS})")
        self._start(slot)

    def _start(self, slot: _Slot) -> None:
        threads = None if self.worker_gpus else max(1, int(self.worker_cpus))
        options = {"num_cpus": self.worker_cpus, "num_gpus": self.worker_gpus, "max_restarts": 0,
                   "runtime_env": {"env_vars": _worker_env(threads)}}
        slot.actor = self._actor_class.options(**options).remote(self.config, threads, self._engine)
        slot.info = {}

    def _first_info(self) -> list[dict]:
        """Every worker's engine, waiting for the loads; an engine that cannot load stops here with its reason."""
        ray = self.ray
        infos = []
        for slot in self._slots:
            try:
                slot.info = ray.get(slot.actor.info.remote())
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                self.close()
                raise CotbenchError(f"a Ray worker could not start its engine: {_root_message(exc)}") from None
            infos.append(slot.info)
        return infos

    def _cancel_all(self) -> None:
        """Ctrl-C or an error: stop every worker's chunk (what was stored stays stored)."""
        self.close()


def _worker_env(threads: int | None) -> dict[str, str]:
    """OpenMP settings for a worker's process, set before its torch starts: sleeping idle threads (unless the
    driver's environment says otherwise) and as many threads as the worker's cores, fixed. A worker shares
    its node with Ray's own processes and the driver, whose load comes and goes faster than the thread
    governor's one-second windows; spinning threads against them made the Ray path 3x slower on a 2-core
    machine, PASSIVE 1.5x (benchmarks/ray_overhead.py)."""
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if threads:  # the worker's own cores, not the driver's count
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _root_message(exc: Exception) -> str:
    """The original error of a worker's traceback as Ray reports it ("ValueError: ..."), without the frames."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    found = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:", line)]
    text = found[-1] if found else next((line for line in reversed(lines) if line), type(exc).__name__)
    return re.sub(r"^cotbench\.errors\.\w+: ", "", text)[:500]


def _faults(ray) -> tuple:
    """What a lost worker raises (the names Ray has in this version): killed, node gone, out of memory."""
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ObjectLostError", "OwnerDiedError",
             "OutOfMemoryError", "NodeDiedError", "WorkerCrashedError")
    return tuple(getattr(ray.exceptions, name) for name in names if hasattr(ray.exceptions, name))


def _note(message: str) -> None:
    print(f"[cotbench] {message}", file=sys.stderr, flush=True)
