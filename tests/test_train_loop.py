"""The step loop and its hooks (engine.loop, engine.features): same events and weights as
the inline loop it replaced, one resumable state, and the seam for changing masks mid-run."""

from __future__ import annotations

import torch

from engine.events import read_events
from engine.loop import BatchOrder, Hook, TrainState
from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec

START_KEYS = ["device", "digest", "experiment", "host", "params", "pid", "provenance", "run_id", "step", "subset_sizes", "type"]
MOVEMENT_KEYS = ["step", "subsets", "type"]
CHECKPOINT_KEYS = ["path", "step", "type"]
EVAL_KEYS = ["eval_acc", "eval_loss", "step", "train_loss", "type"]
END_KEYS = ["status", "step", "type"]

# Recorded from the inline loop (main before the hooks) for these two runs: the order,
# steps and keys of every event (times left out). Values are compared between runs below.
OLD_COMPLETED = [
    ("start", 0, START_KEYS), ("movement", 0, MOVEMENT_KEYS), ("movement", 3, MOVEMENT_KEYS),
    ("checkpoint", 4, CHECKPOINT_KEYS), ("movement", 6, MOVEMENT_KEYS), ("eval", 6, EVAL_KEYS),
    ("checkpoint", 8, CHECKPOINT_KEYS), ("movement", 9, MOVEMENT_KEYS), ("movement", 12, MOVEMENT_KEYS),
    ("eval", 12, EVAL_KEYS), ("end", 12, END_KEYS),
]  # fmt: skip
OLD_CANCELLED_AT_5 = [
    ("start", 0, START_KEYS), ("movement", 0, MOVEMENT_KEYS), ("movement", 3, MOVEMENT_KEYS),
    ("checkpoint", 4, CHECKPOINT_KEYS), ("movement", 5, MOVEMENT_KEYS), ("checkpoint", 5, CHECKPOINT_KEYS),
    ("end", 5, END_KEYS),
]  # fmt: skip


def spec():
    return tiny_spec(freeze=True, checkpoint__every=4)


def events(folder: RunFolder) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "time"} for e in read_events(folder.events_path)[0]]


def shape(folder: RunFolder) -> list[tuple]:
    return [(e["type"], e["step"], sorted(e)) for e in events(folder)]


def stop_after(count: int) -> dict:
    steps: list[int] = []
    return {"on_step": steps.append, "should_stop": lambda: len(steps) >= count}


def test_events_keep_the_inline_loops_order_steps_and_keys(tmp_path):
    done, cancelled = RunFolder.create(tmp_path), RunFolder.create(tmp_path)
    train(prepare(spec()), done, experiment="t")
    train(prepare(spec()), cancelled, experiment="t", **stop_after(5))
    assert shape(done) == OLD_COMPLETED
    assert shape(cancelled) == OLD_CANCELLED_AT_5


def test_a_resumed_run_ends_with_the_same_weights_and_event_values(tmp_path):
    straight, broken = RunFolder.create(tmp_path), RunFolder.create(tmp_path)
    train(prepare(spec()), straight, experiment="t")
    train(prepare(spec()), broken, experiment="t", **stop_after(5))
    train(prepare(spec()), broken, experiment="t", resume=True)

    a, b = (f.load_tensors(f.checkpoint_path("final")) for f in (straight, broken))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # After the resume point, evals and checkpoints are the same to the last bit, and so is
    # every movement figure that depends only on the weights of its step (speed and path
    # differ by design: the cancelled run recorded one more step, 5, before stopping).
    def later(folder: RunFolder) -> list:
        return [
            {**e, "subsets": {s: {m: v[m] for m in ("dist", "rel", "cos", "grad")} for s, v in e["subsets"].items()}}
            if e["type"] == "movement" else e
            for e in events(folder) if e["step"] > 5 and e["type"] in ("movement", "eval", "checkpoint")
        ]  # fmt: skip

    assert later(broken) == later(straight) and len(later(straight)) == 6


def test_the_train_state_is_one_snapshot_that_restores_exactly(tmp_path):
    folder = RunFolder.create(tmp_path)
    train(prepare(spec()), folder, experiment="t", **stop_after(5))
    saved = folder.load_tensors(folder.train_state_path)
    assert saved["step"] == 5 and saved["tracker"] is not None

    prep = prepare(spec())
    optimizer = torch.optim.SGD([p for p in prep.model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    order = BatchOrder(len(prep.data.train_y), 32, 0, prep.device)
    state = TrainState(spec(), prep.device, prep.model, optimizer, order, prep.masks, emit=lambda event: None)
    state.restore(saved)
    again = state.snapshot()
    assert again["step"] == 5 and again["loss_count"] == saved["loss_count"]
    assert all(torch.equal(again["model"][k], saved["model"][k]) for k in saved["model"])
    assert again["optimizer"]["state"].keys() == saved["optimizer"]["state"].keys()
    assert torch.equal(again["order"]["permutation"], saved["order"]["permutation"])


class SwapMasks(Hook):
    """Changes which coordinates are fixed at `at`: the formerly trainable conv kernels become fixed."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.fixed_at: dict[str, torch.Tensor] | None = None

    def after_optimizer_step(self, state: TrainState) -> None:
        if state.step != self.at:
            return
        old = state.masks
        fixed = {name: old["subset"][name] & _is_conv(name, state) for name in old["fixed"]}
        state.replace_masks({"fixed": fixed, "subset": {name: ~mask for name, mask in fixed.items()}})
        self.fixed_at = {name: p.detach().clone() for name, p in state.model.named_parameters()}


def _is_conv(name: str, state: TrainState) -> torch.Tensor:
    param = dict(state.model.named_parameters())[name]
    return torch.full_like(param, param.dim() == 4 or name.startswith("features"), dtype=torch.bool)


def test_a_hook_can_change_the_masks_mid_run_and_the_newly_fixed_coordinates_stay_put(tmp_path):
    prep = prepare(spec())
    old_fixed = {name: mask.clone() for name, mask in prep.masks["fixed"].items()}
    init = {name: p.detach().clone() for name, p in prep.model.named_parameters()}
    swap = SwapMasks(at=4)
    train(prep, RunFolder.create(tmp_path), experiment="t", hooks=[swap])

    final = dict(prep.model.named_parameters())
    newly_fixed = {name: ~old_fixed[name] & _is_conv(name, _Named(prep.model)) for name in old_fixed}
    assert sum(int(m.sum()) for m in newly_fixed.values()) > 0
    for name, mask in newly_fixed.items():
        assert torch.equal(final[name].detach()[mask], swap.fixed_at[name][mask]), name
        if mask.any():  # they did train before the swap
            assert not torch.equal(swap.fixed_at[name][mask], init[name][mask]), name
    # The formerly fixed kernels were released: they moved after the swap.
    released = [name for name, mask in old_fixed.items() if mask.any()]
    assert released and any(not torch.equal(final[n].detach()[old_fixed[n]], init[n][old_fixed[n]]) for n in released)


class _Named:
    """Just enough of a TrainState for `_is_conv`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
