"""Per-subset weight movement, overall and per layer (metrics as DESIGN.md defines them).

For a subset S and a record at step t (previous record at step t-k):
    dist  = ||w_S(t) - w_S(0)||            displacement from initialisation
    rel   = dist / ||w_S(0)||
    speed = ||w_S(t) - w_S(t-k)|| / k      mean update size per step since the last record
    path  = running sum of ||w_S(t) - w_S(t-k)||  (distance travelled)
    cos   = <w_S(t), w_S(0)> / (||w_S(t)|| ||w_S(0)||)

Every coordinate belongs to one *group* (layer x subset). A few passes over the flattened
weights compute three sums per group (GroupSums); overall figures add the groups up. All of it stays on the device: `measure` queues a small tensor and only `flush`
copies the queued records to the host (one sync per flush, not one per record).
"""

from __future__ import annotations

import torch

from engine.models import Layer
from engine.subsets import SUBSETS, Masks

METRICS = ("dist", "rel", "speed", "path", "cos")


MAX_RUNS = 48  # above this many runs of one group, sort coordinates by group instead (CPU)


class GroupSums:
    """Sums the columns of a [k, N] tensor into groups: [k, N] -> [k, n_groups].

    On a GPU, one `index_add_` kernel. On a CPU that scatter is slow (serial, ~5 ms for a
    million coordinates), while summing contiguous slices is fast; so coordinates are kept
    in an order where each group is a few contiguous runs. The natural order already is,
    for whole-kernel partitions (fixed kernels are a block of rows of each tensor); for
    scattered ones (random elements) the coordinates are sorted by group once, and every
    record gathers the weights into that order.
    """

    def __init__(self, group: torch.Tensor, n_groups: int) -> None:
        self.group, self.n_groups = group, n_groups
        self.order: torch.Tensor | None = None
        if group.device.type == "cuda":
            return
        if _run_count(group) > MAX_RUNS:
            self.order = torch.argsort(group, stable=True)
            group = group[self.order]
        values, lengths = torch.unique_consecutive(group, return_counts=True)
        self.run_group, self.run_lengths = values, lengths.tolist()

    def arrange(self, flat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`flat` (natural order) in the order this summer expects."""
        return flat if self.order is None else torch.index_select(flat, 0, self.order, out=out)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros((*values.shape[:-1], self.n_groups), device=values.device, dtype=values.dtype)
        if self.group.device.type == "cuda":
            return sums.index_add_(-1, self.group, values)
        runs = torch.stack([chunk.sum(-1) for chunk in values.split(self.run_lengths, dim=-1)], dim=-1)
        return sums.index_add_(-1, self.run_group, runs)


def _run_count(group: torch.Tensor) -> int:
    return int((group[1:] != group[:-1]).sum()) + 1


class MovementTracker:
    def __init__(self, params: dict[str, torch.Tensor], layers: list[Layer], masks: Masks) -> None:
        self.params = [params[name] for layer in layers for name in layer.params]
        self.layer_names = [layer.name for layer in layers]
        device = self.params[0].device
        # group id of every coordinate: layer index * 2 + subset index
        group_parts = []
        for index, layer in enumerate(layers):
            for name in layer.params:
                fixed = masks["fixed"][name].to(device).flatten().long()
                group_parts.append(index * len(SUBSETS) + fixed)
        group = torch.cat(group_parts)
        self.n_groups = len(layers) * len(SUBSETS)
        self.group_sums = GroupSums(group, self.n_groups)
        self.sizes = self.group_sums(torch.ones(group.shape, device=device))
        # Weights are kept flat, in the summer's order. Scratch buffers are reused by every
        # record: fresh weight-sized tensors per record cost more than the arithmetic.
        self._natural = torch.empty(group.numel(), device=device)
        self._arranged = torch.empty(group.numel(), device=device)
        self.w0 = self._flat().clone()
        self.previous = self.w0.clone()
        self._terms = torch.empty(3, self.w0.numel(), device=device)
        self.previous_step = 0
        self.w0_sq = self.group_sums(self.w0 * self.w0)
        # per-group path plus overall path per subset (a sum of norms does not add across groups)
        self.path_groups = torch.zeros(self.n_groups, device=device)
        self.path_overall = torch.zeros(len(SUBSETS), device=device)
        self._pending: list[tuple[int, torch.Tensor]] = []
        self.last_event: dict | None = None  # the newest flushed record

    def _flat(self) -> torch.Tensor:
        natural = torch.cat([p.detach().reshape(-1) for p in self.params], out=self._natural)
        return self.group_sums.arrange(natural, out=self._arranged)

    def _overall(self, group_values: torch.Tensor) -> torch.Tensor:
        """Sum groups over layers: [..., n_groups] -> [..., n_subsets]."""
        return group_values.unflatten(-1, (-1, len(SUBSETS))).sum(-2)

    @torch.no_grad()
    def measure(self, step: int) -> None:
        """Queue a record of the movement at `step` (no host sync)."""
        w = self._flat()
        moved_sq, update_sq, dot = self._terms  # rows of one buffer: one group sum for all three
        torch.sub(w, self.w0, out=moved_sq).square_()
        torch.sub(w, self.previous, out=update_sq).square_()
        torch.mul(w, self.w0, out=dot)
        sums = self.group_sums(self._terms)
        steps = max(step - self.previous_step, 1)
        groups = self._metrics(sums, self.w0_sq, self.path_groups, steps)
        overall = self._metrics(self._overall(sums), self._overall(self.w0_sq), self.path_overall, steps)
        self._pending.append((step, torch.cat([overall, groups], dim=1)))
        self.previous.copy_(w)
        self.previous_step = step

    @staticmethod
    def _metrics(sums: torch.Tensor, w0_sq: torch.Tensor, path: torch.Tensor, steps: int) -> torch.Tensor:
        moved_sq, update_sq, dot = sums
        # ||w||^2 from ||w - w0||^2 = ||w||^2 - 2<w, w0> + ||w0||^2: saves a pass over the weights
        w_sq = (moved_sq + 2 * dot - w0_sq).clamp_min(0)
        dist, update, w0_norm = moved_sq.sqrt(), update_sq.sqrt(), w0_sq.sqrt()
        path.add_(update)  # in place: the running distance travelled lives on the device
        cos = dot / (w_sq.sqrt() * w0_norm)
        return torch.stack([dist, dist / w0_norm, update / steps, path.clone(), cos])

    def flush(self) -> list[dict]:
        """Move queued records to the host as movement events (one device sync)."""
        if not self._pending:
            return []
        steps = [step for step, _ in self._pending]
        values = torch.stack([record for _, record in self._pending]).cpu().tolist()
        self._pending.clear()
        sizes = self.sizes.cpu().tolist()
        events = [self._event(step, record, sizes) for step, record in zip(steps, values)]
        self.last_event = events[-1]
        return events

    def _event(self, step: int, record: list[list[float]], sizes: list[float]) -> dict:
        # record[m][g]: metric m of column g; columns are [overall per subset..., groups...]
        def figures(column: int) -> dict:
            return {metric: _finite(record[m][column]) for m, metric in enumerate(METRICS)}

        subsets = {}
        for s, subset in enumerate(SUBSETS):
            entry = figures(s)
            entry["layers"] = {
                layer: figures(len(SUBSETS) + g)
                for layer_index, layer in enumerate(self.layer_names)
                if sizes[g := layer_index * len(SUBSETS) + s] > 0
            }
            subsets[subset] = entry
        return {"type": "movement", "step": step, "subsets": subsets}


def _finite(value: float) -> float | None:
    # An empty subset has no norm: its rel and cos are undefined, written as null.
    return value if value == value and abs(value) != float("inf") else None
