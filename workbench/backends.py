"""Where background runs execute: the `backend` choice of submit, study, fuse, resume and
the Compose form's launch.

- `local`: a detached worker process on this machine per run, waiting for a slot of the
  per-device file-lock queue (workbench.queue).
- `ray`: each run is a Ray actor placed by Ray's scheduler on any node of a Ray cluster,
  with the GPUs / CPUs its device asks for; the local slot queue is not used, so Ray and
  the queue never both schedule (workbench.ray_backend).

Torch-free and ray-free: the CLI and the TUI learn the names and their help from here; ray
is imported only when a `ray` launcher is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.registry import Registry
from engine.spec import ExperimentSpec, SpecError

BACKENDS = Registry("backend")
BACKENDS.declare("local", "a worker process per run on this machine, queued per device")
BACKENDS.declare("ray", "a Ray actor per run, placed on any node of the Ray cluster at --ray-address or $RAY_ADDRESS")


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch background runs: the backend and, for Ray, where and with what resources."""

    backend: str = "local"
    ray_address: str | None = None  # None: $RAY_ADDRESS, else the cluster started on this machine
    gpus_per_run: float = 1.0  # a run on a GPU device asks Ray for this many GPUs (fractions share one)
    cpus_per_run: float = 1.0  # every Ray run asks for this many CPUs (and trains with that many threads)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SpecError(f"backend {self.backend!r} is not known; allowed: {', '.join(BACKENDS.names)}")
        if not 0 < self.gpus_per_run <= 64 or not 0 < self.cpus_per_run <= 1024:
            raise SpecError(
                f"--gpus-per-run {self.gpus_per_run:g} / --cpus-per-run {self.cpus_per_run:g}: "
                "each must be above 0 (at most 64 GPUs and 1024 CPUs)"
            )

    @property
    def address(self) -> str:
        return self.ray_address or os.environ.get("RAY_ADDRESS") or "auto"

    def launcher(self):
        """The Launcher (workbench.runner) of this backend; connects to Ray for `ray`."""
        if self.backend == "ray":
            from workbench.ray_backend import RayLauncher

            return RayLauncher(self)
        from workbench.runner import LocalLauncher

        return LocalLauncher()

    def placed(self, spec: ExperimentSpec) -> ExperimentSpec:
        """The spec with its device made concrete where this backend places it: on this machine
        for `local` (imports torch); for `ray`, on whichever node Ray picks (see ray_device)."""
        if self.backend == "ray":
            from workbench.ray_backend import ray_device

            return spec.model_copy(update={"device": ray_device(spec.device, self)})
        from workbench.runner import resolve_spec_device

        return resolve_spec_device(spec)


LOCAL = LaunchOptions()
