"""Per-subset weight movement, overall and per layer (metrics as DESIGN.md defines them).

For a subset S and a record at step t (previous record at step t-k):
    dist  = ||w_S(t) - w_S(0)||            displacement from initialisation
    rel   = dist / ||w_S(0)||
    speed = ||w_S(t) - w_S(t-k)|| / k      mean update size per step since the last record
    path  = running sum of ||w_S(t) - w_S(t-k)||  (distance travelled)
    cos   = <w_S(t), w_S(0)> / (||w_S(t)|| ||w_S(0)||)

and, when the record's step was announced with `measure_grad` (after backward, before
the optimizer step):
    grad  = ||g_S(t)||                       the loss gradient of step t on S, as handed to
                                             the optimizer (no weight decay; a coordinate
                                             whose gradient autograd never computes, a frozen
                                             tensor or kernel, counts as 0)
Records without it (step 0, a cancelled run's last record, old runs) have no `grad` key.

Every coordinate belongs to one *group* (layer x subset), and the coordinates are cut
into *runs*: contiguous slices that lie in one group. A record takes three batched
`torch._foreach_norm` calls over the runs (a few kernels for any number of tensors) and
adds the squared norms up per group; whole subsets add their groups up. Nothing leaves
the device at a record: `measure` queues a small tensor, `flush` copies all queued
records to the host at once and derives the metrics there, in float64.
"""

from __future__ import annotations

import torch

from engine.models import Layer
from engine.subsets import SUBSETS, Masks
from engine.vocabulary import METRICS

MAX_RUNS = 64  # more runs than this (scattered masks): gather coordinates into group order instead


class MovementTracker:
    def __init__(self, params: dict[str, torch.Tensor], layers: list[Layer], masks: Masks) -> None:
        self.layer_names = [layer.name for layer in layers]
        self._live = [params[name] for layer in layers for name in layer.params]  # their .grad is read
        self.params = [p.detach() for p in self._live]
        self.n_groups = len(layers) * len(SUBSETS)
        device = self.params[0].device
        # group id of every coordinate (layer index * 2 + subset index), params in layer order
        group = torch.cat(
            [
                index * len(SUBSETS) + masks["fixed"][name].flatten().long()
                for index, layer in enumerate(layers)
                for name in layer.params
            ]
        )
        param_of = torch.cat([torch.full((p.numel(),), i) for i, p in enumerate(self.params)])
        # Runs never cross a parameter boundary, so in natural order a run is a view of a parameter.
        keys, lengths = torch.unique_consecutive(param_of * self.n_groups + group, return_counts=True)
        self.order: torch.Tensor | None = None
        self._run_owners, self._run_lengths = (keys // self.n_groups).tolist(), lengths.tolist()
        if len(keys) <= MAX_RUNS:
            # Whole-kernel partitions: each tensor is a block of fixed rows and a block of
            # trainable ones. The runs are views into the live parameters: no copy at all.
            self._views = _split_views([p.reshape(-1) for p in self.params], self._run_owners, self._run_lengths)
            run_group = keys % self.n_groups
        else:
            # Scattered masks (random elements): sort coordinates by group once; each record
            # gathers the weights into that order, where every group is one run.
            self.order = torch.argsort(group, stable=True).to(device)
            run_group, lengths = torch.unique_consecutive(group[self.order.cpu()], return_counts=True)
            self._natural = torch.empty(group.numel(), device=device)
            self._arranged = torch.empty(group.numel(), device=device)
            self._views = list(self._arranged.split(lengths.tolist()))
        self.run_group = run_group.to(device)
        self._gather()
        self.w0 = [run.clone() for run in self._views]
        # w - w0 at the previous record: the update since then is the change in displacement,
        # which saves copying the weights at every record
        self.moved_before = [torch.zeros_like(run) for run in self._views]
        self.sizes = self._group_sum(lengths.to(device, torch.float32)).tolist()
        self.w0_sq = self._group_sum(torch.stack(torch._foreach_norm(self.w0)) ** 2).cpu().double()
        self.previous_step = 0
        self._flushed_step = 0
        # distance travelled so far, per whole subset then per group (norms do not add up)
        self._path = torch.zeros(len(SUBSETS) + self.n_groups, dtype=torch.float64)
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._grad_sq: tuple[int, torch.Tensor] | None = None  # (step, [groups]) from measure_grad
        self.last_event: dict | None = None  # the newest flushed record

    def _gather(self) -> None:
        if self.order is not None:
            torch.cat([p.reshape(-1) for p in self.params], out=self._natural)
            torch.index_select(self._natural, 0, self.order, out=self._arranged)

    def _grad_runs(self) -> list[torch.Tensor]:
        """The current gradients cut into the same runs as the weights (None grads are zeros)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._live]
        if self.order is None:
            return _split_views([g.reshape(-1) for g in grads], self._run_owners, self._run_lengths)
        # The gather buffers are free until `measure` gathers the weights again (it always does).
        torch.cat([g.reshape(-1) for g in grads], out=self._natural)
        torch.index_select(self._natural, 0, self.order, out=self._arranged)
        return self._views

    def _group_sum(self, per_run: torch.Tensor) -> torch.Tensor:
        """[..., runs] -> [..., groups]"""
        sums = torch.zeros((*per_run.shape[:-1], self.n_groups), device=per_run.device, dtype=per_run.dtype)
        return sums.index_add_(-1, self.run_group, per_run)

    @torch.no_grad()
    def measure_grad(self, step: int) -> None:
        """Note the gradient norms of step `step` for its coming record: call after backward
        and before optimizer.step, only on steps that will be recorded (device work only)."""
        squares = torch.stack(torch._foreach_norm(self._grad_runs())) ** 2
        self._grad_sq = (step, self._group_sum(squares))

    @torch.no_grad()
    def measure(self, step: int) -> None:
        """Queue a record of the movement at `step` (device work only, no host sync)."""
        self._gather()
        moved = torch._foreach_sub(self._views, self.w0)
        update = torch._foreach_sub(moved, self.moved_before)
        self.moved_before = moved
        norms = [torch._foreach_norm(moved), torch._foreach_norm(update), torch._foreach_norm(self._views)]
        squares = self._group_sum(torch.stack([torch.stack(n) for n in norms]) ** 2)  # [3, groups]
        # A 4th row, the squared gradient norms, NaN where this step's gradient was not measured.
        grad_sq = self._grad_sq[1] if self._grad_sq is not None and self._grad_sq[0] == step else squares[0] * float("nan")
        self._grad_sq = None
        self._pending.append((step, torch.cat([squares, grad_sq.unsqueeze(0)])))
        self.previous_step = step

    def state_dict(self) -> dict:
        """What a resumed run needs to go on recording as if it never stopped (call after flush)."""
        assert not self._pending, "flush before saving the tracker"
        return {
            "moved_before": [t.cpu() for t in self.moved_before],
            "path": self._path.clone(),
            "previous_step": self.previous_step,
            "flushed_step": self._flushed_step,
            "last_event": self.last_event,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.w0[0].device
        self.moved_before = [t.to(device) for t in state["moved_before"]]
        self._path = state["path"].clone()
        self.previous_step, self._flushed_step = state["previous_step"], state["flushed_step"]
        self.last_event = state["last_event"]

    def flush(self) -> list[dict]:
        """Move queued records to the host as movement events (one device sync)."""
        if not self._pending:
            return []
        steps = [step for step, _ in self._pending]
        sums = torch.stack([record for _, record in self._pending]).cpu().double()  # [records, 4, groups]
        self._pending.clear()
        values = self._metrics(sums, steps).tolist()
        events = [self._event(step, record) for step, record in zip(steps, values)]
        self.last_event = events[-1]
        return events

    def _metrics(self, sums: torch.Tensor, steps: list[int]) -> torch.Tensor:
        """[records, 4, groups] sums -> [records, metrics, columns]; columns are the whole
        subsets, then the groups."""

        def overall(values: torch.Tensor) -> torch.Tensor:  # sum groups over layers
            return values.unflatten(-1, (-1, len(SUBSETS))).sum(-2)

        sums = torch.cat([overall(sums), sums], dim=-1)
        w0_sq = torch.cat([overall(self.w0_sq), self.w0_sq])
        moved_sq, update_sq, w_sq, grad_sq = sums.unbind(1)
        dist, update, w0_norm, w_norm = moved_sq.sqrt(), update_sq.sqrt(), w0_sq.sqrt(), w_sq.sqrt()
        path = self._path + update.cumsum(0)
        self._path = path[-1]
        gaps = torch.tensor(steps, dtype=torch.float64).diff(prepend=torch.tensor([float(self._flushed_step)]))
        self._flushed_step = steps[-1]
        speed = update / gaps.clamp_min(1).unsqueeze(1)
        # <w, w0> from ||w - w0||^2 = ||w||^2 - 2<w, w0> + ||w0||^2: no pass over the weights for it
        cos = (w_sq + w0_sq - moved_sq) / (2 * w_norm * w0_norm)
        return torch.stack([dist, dist / w0_norm, speed, path, cos, grad_sq.sqrt()], dim=1)

    def _event(self, step: int, record: list[list[float]]) -> dict:
        # record[m][c]: metric m of column c; columns are [whole subsets..., groups...]
        def figures(column: int) -> dict:
            entry = {metric: _finite(record[m][column]) for m, metric in enumerate(METRICS)}
            grad = record[len(METRICS)][column]
            if grad == grad:  # NaN: this step's gradient was not measured, so no `grad` key
                entry["grad"] = grad
            return entry

        subsets = {}
        for s, subset in enumerate(SUBSETS):
            entry = figures(s)
            entry["layers"] = {
                layer: figures(len(SUBSETS) + g)
                for layer_index, layer in enumerate(self.layer_names)
                if self.sizes[g := layer_index * len(SUBSETS) + s] > 0
            }
            subsets[subset] = entry
        return {"type": "movement", "step": step, "subsets": subsets}


def _split_views(flats: list[torch.Tensor], owners: list[int], lengths: list[int]) -> list[torch.Tensor]:
    """Consecutive slices of the flat parameters: run i is `lengths[i]` values of `flats[owners[i]]`."""
    views, offsets = [], [0] * len(flats)
    for owner, length in zip(owners, lengths):
        views.append(flats[owner][offsets[owner] : offsets[owner] + length])
        offsets[owner] += length
    return views


def _finite(value: float) -> float | None:
    # An empty subset has no norm: its rel and cos are undefined, written as null.
    return value if value == value and abs(value) != float("inf") else None
