"""Per-subset weight movement, overall and per layer (metrics as DESIGN.md defines them).

For a subset S and a record at step t (previous record at step t-k):
    dist  = ||w_S(t) - w_S(0)||            displacement from initialisation
    rel   = dist / ||w_S(0)||
    speed = ||w_S(t) - w_S(t-k)|| / k      mean update size per step since the last record
    path  = running sum of ||w_S(t) - w_S(t-k)||  (distance travelled)
    cos   = <w_S(t), w_S(0)> / (||w_S(t)|| ||w_S(0)||)

Every coordinate belongs to one *group* (layer x subset). One pass over the flattened
weights computes four sums per group with `index_add_`; overall figures add the groups
up. All of it stays on the device: `measure` queues a small tensor and only `flush`
copies the queued records to the host (one sync per flush, not one per record).
"""

from __future__ import annotations

import torch

from engine.models import Layer
from engine.subsets import SUBSETS, Masks

METRICS = ("dist", "rel", "speed", "path", "cos")


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
        self.group = torch.cat(group_parts)
        self.n_groups = len(layers) * len(SUBSETS)
        self.sizes = torch.zeros(self.n_groups, device=device).index_add_(0, self.group, torch.ones_like(self.group, dtype=torch.float32))
        self.w0 = self._flat()
        self.previous = self.w0.clone()
        self.previous_step = 0
        self.w0_sq = self._group_sums(self.w0 * self.w0)
        # per-group path plus overall path per subset (a sum of norms does not add across groups)
        self.path_groups = torch.zeros(self.n_groups, device=device)
        self.path_overall = torch.zeros(len(SUBSETS), device=device)
        self._pending: list[tuple[int, torch.Tensor]] = []
        self.last_event: dict | None = None  # the newest flushed record

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def _group_sums(self, values: torch.Tensor) -> torch.Tensor:
        shape = (*values.shape[:-1], self.n_groups)
        return torch.zeros(shape, device=values.device, dtype=values.dtype).index_add_(-1, self.group, values)

    def _overall(self, group_values: torch.Tensor) -> torch.Tensor:
        """Sum groups over layers: [..., n_groups] -> [..., n_subsets]."""
        return group_values.unflatten(-1, (-1, len(SUBSETS))).sum(-2)

    @torch.no_grad()
    def measure(self, step: int) -> None:
        """Queue a record of the movement at `step` (no host sync)."""
        w = self._flat()
        moved, update = w - self.w0, w - self.previous
        sums = self._group_sums(torch.stack([moved * moved, update * update, w * self.w0, w * w]))
        steps = max(step - self.previous_step, 1)
        groups = self._metrics(sums, self.w0_sq, self.path_groups, steps)
        overall = self._metrics(self._overall(sums), self._overall(self.w0_sq), self.path_overall, steps)
        self._pending.append((step, torch.cat([overall, groups], dim=1)))
        self.previous.copy_(w)
        self.previous_step = step

    @staticmethod
    def _metrics(sums: torch.Tensor, w0_sq: torch.Tensor, path: torch.Tensor, steps: int) -> torch.Tensor:
        moved_sq, update_sq, dot, w_sq = sums
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
