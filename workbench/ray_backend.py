"""The `ray` backend: runs placed by Ray on the nodes of a cluster (imports ray; only loaded
when a command asks for `--backend ray`, `cancel`s a Ray run, or calls `workbench cluster`).

Each run is one detached Ray actor (workbench.ray_node.RunActor) that asks for the run's
resources: `--gpus-per-run` GPUs for a CUDA device, `--cpus-per-run` CPUs always. Ray
queues it until a node has them free and starts it there; the actor runs the same worker
process a local run uses, so the run folder is the same file for file. Placement is
Ray's SPREAD strategy: a study's runs go to every node, not first to fill the head.

Run folders must be on a filesystem every node mounts at the same path (the logs dir);
see workbench.store_host for who writes the store then.
"""

from __future__ import annotations

import functools
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from engine.run_folder import RunFolder, read_json
from engine.spec import ExperimentSpec, SpecError
from workbench.ray_node import RAY_FILE, RunActor, node_of
from workbench.ray_waiting import watch_waiting

if TYPE_CHECKING:
    from workbench.backends import LaunchOptions
    from workbench.runner import Launched

NAMESPACE = "workbench"  # named actors of runs live here, apart from other Ray users' actors
START_HINT = (
    "start one with `ray start --head --port 6379` on one server and `ray start --address HEAD_IP:6379` "
    "on each of the others, then pass --ray-address HEAD_IP:6379 or set RAY_ADDRESS"
)


class _RayChatterToStderr:
    """sys.stdout while connected to Ray. Ray's driver threads print cluster events (a node
    that died) to sys.stdout, which would corrupt a command's --json output: lines written
    by any thread but the main one go to stderr, the command's own to stdout."""

    def __init__(self, out, err) -> None:
        self._out, self._err = out, err

    def write(self, text: str) -> int:
        return (self._out if threading.current_thread() is threading.main_thread() else self._err).write(text)

    def __getattr__(self, name: str):
        return getattr(self._out, name)  # flush, isatty, encoding, fileno: the real stdout's


def connect(address: str) -> None:
    """Join the Ray cluster at `address` as a driver (once per process); a cluster that is not
    there is one sentence and exit code 2, never a Ray traceback."""
    try:
        import ray
    except ImportError:
        raise SpecError("--backend ray needs Ray: pip install 'workbench[ray]' (on every node)") from None
    if ray.is_initialized():
        return
    _probe(address)
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)
        if not isinstance(sys.stdout, _RayChatterToStderr):
            sys.stdout = _RayChatterToStderr(sys.stdout, sys.stderr)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "on this machine" if address == "auto" else f"at {address}"
        reason = " ".join(str(exc).split())[:200]
        raise SpecError(f"no Ray cluster is reachable {where} ({reason}); {START_HINT}") from None


def _probe(address: str, patience: float = 5.0) -> None:
    """One TCP connection to the head's port first: ray.init retries an address where nothing
    listens for minutes, logging every try, where a user needs one sentence at once."""
    if address.startswith("ray://"):
        return  # Ray Client: its own connection timeout applies
    if address == "auto":  # the cluster `ray start` last started on this machine, as ray.init would find it
        try:
            from ray._private.services import canonicalize_bootstrap_address  # private, hence the fallback

            address = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001: another Ray version: let ray.init find it
            return
        if not address:
            raise SpecError(f"no Ray cluster is running on this machine; {START_HINT}")
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=patience).close()
    except ValueError:
        raise SpecError(f"Ray address {address!r} is not HOST:PORT; e.g. --ray-address 10.0.0.1:6379") from None
    except OSError as exc:
        raise SpecError(f"no Ray cluster is reachable at {address} ({exc.strerror or exc}); {START_HINT}") from None


def disconnect() -> None:
    """Leave the cluster once runs are handed over: a command that goes on waiting (study)
    must not get Ray's messages about other drivers' workers on its stdout."""
    ray = sys.modules.get("ray")  # never connected (every run re-used): nothing to leave
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def ray_device(device: str, options: LaunchOptions) -> str:
    """The device a run asks for, as its spec records it under Ray: Ray gives a GPU run its
    own GPUs (CUDA_VISIBLE_DEVICES), which the run sees as cuda:0, so `cuda` and `cuda:0`
    mean "the GPU Ray gives it" and a fixed index cannot be honoured; `auto` is a GPU when
    the cluster has any, else the CPU."""
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "cuda:0"):
        connect(options.address)
        if cluster_gpus() < options.gpus_per_run:  # Ray would keep such a run waiting forever
            raise SpecError(
                f"device {device!r}: the Ray cluster has {cluster_gpus():g} GPUs, a run asks for "
                f"{options.gpus_per_run:g} (--gpus-per-run); use device cpu, or join GPU servers to the cluster"
            )
        return "cuda:0"
    if device == "auto":
        connect(options.address)
        return "cuda:0" if cluster_gpus() > 0 else "cpu"
    raise SpecError(
        f"device {device!r} cannot be placed by Ray: Ray picks each run's GPU; allowed with --backend ray: cpu, cuda, auto"
    )


def resources(device: str, options: LaunchOptions) -> dict[str, float]:
    """What a run on `device` asks Ray for."""
    gpus = options.gpus_per_run if device.startswith("cuda") else 0.0
    return {"num_cpus": options.cpus_per_run, "num_gpus": gpus}


def actor_name(run_id: str) -> str:
    # A new name per launch: a resumed run's actor must not collide with its dead one's name,
    # which Ray keeps until it has noticed the death.
    return f"run-{run_id}-{time.time_ns()}"


@functools.cache
def _actor_class():
    import ray

    return ray.remote(RunActor)  # made once per process: Ray ships the class to the cluster once


class RayLauncher:
    """A Launcher (workbench.runner) that hands each run to Ray."""

    backend = "ray"
    slot_queue = False  # Ray schedules; the local per-device queue is bypassed

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        connect(options.address)

    def checkable(self, spec: ExperimentSpec) -> ExperimentSpec:
        """The spec as preflight checks it here: data, model and partition on this machine's CPU;
        the device is the node's, which Ray picks later (a CPU-only head can send GPU runs)."""
        return spec.model_copy(update={"device": "cpu"})

    def launch(self, folder: RunFolder, worker_args: list[str], pass_fds: tuple[int, ...] = ()) -> Launched:
        import ray

        from workbench.runner import Launched

        device = ExperimentSpec.model_validate(folder.spec()).device
        asks = resources(device, self.options)
        (folder.path / RAY_FILE).unlink(missing_ok=True)  # waiting in Ray until the actor writes it
        name = actor_name(folder.run_id)
        actor = _actor_class().options(
            name=name, lifetime="detached", max_restarts=0, scheduling_strategy="SPREAD", **asks
        )
        threads = max(1, int(self.options.cpus_per_run))
        actor.remote(str(folder.path.resolve()), worker_args, threads)
        details = {"address": self.options.address, "actor": name, "namespace": NAMESPACE, **asks}
        # beats while Ray holds it unstarted, so that a run Ray drops reads lost (workbench/ray_waiting.py)
        details["keeper"] = watch_waiting(str(folder.path.resolve()), name, NAMESPACE)
        return Launched(None, "ray", backend="ray", details=details)


def cancel_in_ray(run_dir: str) -> str:
    """Stop the run's actor through Ray: a started run stops cleanly (SIGTERM to its worker),
    one still waiting for resources is taken off Ray's queue and ends `cancelled`."""
    import ray

    from workbench.records import LAUNCH_FILE

    info = (read_json(RunFolder(run_dir).path / LAUNCH_FILE) or {}).get("ray") or {}
    if not info.get("actor"):
        return "not a Ray run"
    connect(info.get("address") or "auto")
    try:
        actor = ray.get_actor(info["actor"], namespace=info.get("namespace", NAMESPACE))
    except ValueError:
        return "its Ray actor has already ended"
    if node_of(run_dir):  # started: a clean stop from the worker itself
        try:
            return "stopped through Ray" if ray.get(actor.stop.remote(), timeout=30) else "already ending"
        except Exception:  # noqa: BLE001: the actor ended between the two calls
            return "its Ray actor has already ended"
    ray.kill(actor, no_restart=True)
    _end_unstarted(RunFolder(run_dir))
    return "taken off Ray's queue"


def _end_unstarted(folder: RunFolder) -> None:
    """The end of a run that Ray never started (its actor was killed while waiting)."""
    from workbench.store import Store
    from workbench.worker import _cancelled_while_queued

    if node_of(folder.path):  # it started after all, in the instant before the kill: its worker ends it
        return
    with open(folder.log_path, "a") as log:
        _cancelled_while_queued(folder, Store(folder.path.parent), log)


def cluster_view(records: list[dict]) -> list[dict]:
    """Every node of the cluster: its address, host, whether it is alive, its CPUs and GPUs and the live runs the run folders say it holds."""
    import ray

    by_node: dict[str, list[str]] = {}
    for record in records:
        if record.get("status") in ("queued", "running") and record.get("node"):
            by_node.setdefault(record["node"], []).append(record["run_id"])
    rows = []
    for node in ray.nodes():
        total = node.get("Resources", {})
        custom = sorted(k for k in total if not k.startswith(("node:", "CPU", "GPU", "memory", "object_store", "accelerator")))
        rows.append({
            "node_id": node["NodeID"],
            "address": node.get("NodeManagerAddress"),
            "host": node.get("NodeManagerHostname"),
            "alive": bool(node.get("Alive")),
            "cpus": total.get("CPU", 0),
            "gpus": total.get("GPU", 0),
            "resources": custom,
            "runs": sorted(by_node.get(node["NodeID"], [])),
        })
    return rows
