"""Runs waiting in Ray's queue: a heartbeat for them, so that one Ray drops is seen as `lost`.

A run submitted with `--backend ray` waits in Ray's queue as a pending detached actor until
a node has its resources; until that actor starts (and writes ray.json, workbench.ray_node)
no process of ours owns the run, so neither its lock nor a worker's heartbeat can tell
whether Ray still holds it. Ray can drop it there: the node it was being placed on dies,
the actor's process fails to start. Its run would then read `queued` forever.

So one detached actor per cluster, the *waiting keeper* (WaitingKeeper, on the head node,
no CPUs), beats for every run Ray still holds unstarted: every BEAT_SECONDS it writes
`ray_wait.json` {time} into the run folder while the run's actor is still known to Ray (a
named actor's name is released when it dies) and has not started. A run that stops getting
beats before it started reads `lost` once its newest sign of life is STALE_SECONDS old
(workbench.liveness), the same window as a worker's heartbeat; `resume` (any backend) then
takes it up. A keeper that dies (with the head, and so with the cluster's queue) stops
every beat: its waiting runs read lost too, as they should.

Imports neither torch nor ray at module level (the records reader uses `waiting_beat`).
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Callable

from engine.run_folder import atomic_write_json, read_json
from workbench.ray_node import node_of

WAIT_FILE = "ray_wait.json"  # written by the keeper while Ray holds the run's actor unstarted
KEEPER_NAME = "workbench-waiting-keeper"
BEAT_SECONDS = 5.0  # well inside workbench.heartbeat.STALE_SECONDS
NAME_GRACE_SECONDS = 5.0  # a just-made actor's name may not be registered yet: not "dropped" before this


def waiting_beat(run_dir: str | Path) -> float | None:
    """When the keeper last saw the run still waiting in Ray (None: never)."""
    found = (read_json(Path(run_dir) / WAIT_FILE) or {}).get("time")
    return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def beat_if_waiting(run_dir: str | Path, actor_known: Callable[[], bool], now: float | None = None) -> bool:
    """One beat for a run Ray holds: True (and a fresh ray_wait.json) while it still waits;
    False once its actor started (its lock and worker's heartbeat take over) or Ray no longer
    knows the actor (dropped: no more beats, so the run goes stale and reads lost)."""
    if node_of(run_dir) or not actor_known():
        return False
    atomic_write_json(Path(run_dir) / WAIT_FILE, {"time": time.time() if now is None else now})
    return True


class WaitingKeeper:
    """The detached actor that beats for waiting runs (made a Ray actor class by watch_waiting)."""

    def __init__(self) -> None:
        self.watched: dict[str, tuple[str, str, float]] = {}  # run folder -> (actor name, namespace, since)
        self.guard = threading.Lock()
        threading.Thread(target=self._beat_forever, daemon=True).start()

    def watch(self, run_dir: str, actor: str, namespace: str) -> None:
        entry = (actor, namespace, time.time())
        with self.guard:
            self.watched[run_dir] = entry
        self._beat(run_dir, entry)

    def watching(self) -> list[str]:
        with self.guard:
            return sorted(self.watched)

    def _beat(self, run_dir: str, entry: tuple[str, str, float]) -> None:
        import ray

        actor, namespace, since = entry

        def known() -> bool:
            try:
                ray.get_actor(actor, namespace=namespace)
                return True
            except ValueError:  # Ray released its name: the actor is dead (or not registered yet)
                return time.time() - since < NAME_GRACE_SECONDS

        try:
            waiting = beat_if_waiting(run_dir, known)
        except OSError:  # the run folder is gone or unwritable: nothing to keep
            waiting = False
        if not waiting:
            with self.guard:
                if self.watched.get(run_dir) == entry:  # not a newer launch of the same run
                    del self.watched[run_dir]

    def _beat_forever(self) -> None:
        while True:
            time.sleep(BEAT_SECONDS)
            with self.guard:
                watched = list(self.watched.items())
            for run_dir, entry in watched:
                self._beat(run_dir, entry)


def watch_waiting(run_dir: str, actor: str, namespace: str) -> bool:
    """Have the cluster's keeper (started on the head node if none is there yet) beat for the
    run until its actor starts or Ray drops it. Called by the Ray launcher after each launch.
    False when the keeper cannot be reached: the run is then judged as before the keeper
    existed (waiting while it has not started), so a keeper problem never reads as lost."""
    import ray

    if _unreachable:  # one failed try per command: a study's next launches do not wait again
        return False
    try:
        keeper = _keeper_class().options(
            name=KEEPER_NAME, namespace=namespace, lifetime="detached", get_if_exists=True, max_restarts=0,
            resources={"node:__internal_head__": 0.001},  # on the head: it lives as long as the cluster's queue
        ).remote()
        ray.get(keeper.watch.remote(run_dir, actor, namespace), timeout=60)
        return True
    except Exception:  # noqa: BLE001: any Ray failure here only costs the waiting beats
        _unreachable.append(True)
        return False


_unreachable: list[bool] = []  # set once the keeper could not be reached in this process


@functools.cache
def _keeper_class():
    import ray

    return ray.remote(num_cpus=0)(WaitingKeeper)  # made once per process, as ray_backend's run actor class
