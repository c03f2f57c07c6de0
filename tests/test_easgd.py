"""EASGD between ensemble members (engine/easgd.py) against an independent loop, resume, eval and fuse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.construction import _member_states
from engine.events import iter_events
from engine.features import evaluate
from engine.loop import BatchOrder
from engine.models import build_model
from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec

K, LR, RHO, PERIOD, STEPS = 3, 0.05, 2.0, 2, 7  # alpha = 0.1; couplings at steps 2, 4, 6 (not the last)


def easgd_spec(implementation: str, **overrides):
    settings = {
        "ensemble": {"members": K, "implementation": implementation, "coupling": {"mode": "easgd", "rho": RHO, "period": PERIOD}},
        "partition": {"strategy": "none"}, "optimizer": {"name": "sgd", "lr": LR, "momentum": 0.9},
        "train": {"steps": STEPS, "eval_every": 3},
    }
    return tiny_spec(**{**settings, **overrides})


def reference_run(spec, data):
    """The same K members trained by a plain loop with the synchronous rule written out per tensor."""
    torch.manual_seed(spec.seed)
    members = [build_model(spec.model, data.input_shape, data.num_classes) for _ in range(K)]
    center = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in members]).mean(0) for n, _ in members[0].named_parameters()}
    optimizer = torch.optim.SGD([p for m in members for p in m.parameters()], lr=LR, momentum=0.9)
    order = BatchOrder(len(data.train_y), spec.data.batch_size, spec.seed, torch.device("cpu"))
    for step in range(1, STEPS + 1):
        index = order.next()
        x, y = data.train_x[index], data.train_y[index]
        loss = sum(F.cross_entropy(m(x), y) for m in members)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % PERIOD == 0:
            alpha = LR * RHO
            with torch.no_grad():
                for name in center:
                    diffs = [dict(m.named_parameters())[name] - center[name] for m in members]
                    for m, diff in zip(members, diffs):
                        dict(m.named_parameters())[name].sub_(alpha * diff)
                    center[name] = center[name] + alpha * sum(diffs)
    return [m.state_dict() for m in members], center


@pytest.mark.parametrize("implementation", ["sequential", "vmap", "grouped"])
def test_members_and_center_match_an_independent_easgd_loop(tmp_path, implementation):
    spec = easgd_spec(implementation)
    prep = prepare(spec)
    folder = RunFolder.create(tmp_path)
    train(prep, folder, experiment="t")
    final = folder.load_tensors(folder.checkpoint_path("final"))
    got = _member_states(final, spec, prep.data.input_shape, prep.data.num_classes)
    want, want_center = reference_run(spec, prep.data)
    for k in range(K):
        for name, tensor in want[k].items():
            torch.testing.assert_close(got[k][name], tensor, rtol=1e-4, atol=1e-5, msg=f"member {k} {name}")
    center = folder.load_tensors(folder.checkpoint_path("center_final"))
    for name, tensor in want_center.items():
        torch.testing.assert_close(center[name], tensor, rtol=1e-4, atol=1e-5, msg=f"center {name}")
    # the coupling did pull: members are closer to the center than uncoupled ones end up
    uncoupled = tmp_path / "uncoupled"
    uncoupled.mkdir()
    plain = RunFolder.create(uncoupled)
    train(prepare(tiny_spec(**{**spec.model_dump(), "ensemble": {"members": K, "implementation": implementation}})), plain, experiment="t")
    loose = _member_states(plain.load_tensors(plain.checkpoint_path("final")), spec, prep.data.input_shape, prep.data.num_classes)
    spread = lambda states: sum(float((s[n] - states[0][n]).norm()) for s in states[1:] for n in want_center)  # noqa: E731
    assert spread(got) < spread(loose)


def test_center_is_evaluated_at_every_eval_and_matches_its_checkpoint(tmp_path):
    spec = easgd_spec("sequential")
    prep = prepare(spec)
    folder = RunFolder.create(tmp_path)
    train(prep, folder, experiment="t")
    evals = [e for e in iter_events(folder.events_path) if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6, 7] and all("center_acc" in e and "member_acc" in e for e in evals)
    model = build_model(spec.model, prep.data.input_shape, prep.data.num_classes)
    model.load_state_dict(folder.load_tensors(folder.checkpoint_path("center_final")))
    independent = evaluate(model, prep.data.test_x, prep.data.test_y)
    assert evals[-1]["center_acc"] == independent["eval_acc"]
    assert evals[-1]["center_loss"] == pytest.approx(independent["eval_loss"], rel=1e-6)


@pytest.mark.parametrize("implementation", ["sequential", "grouped"])
def test_the_center_survives_resume_bit_identically(tmp_path, implementation):
    spec = easgd_spec(implementation, train={"steps": 9, "eval_every": 3}, checkpoint={"every": 4})
    straight = RunFolder.create(tmp_path)
    train(prepare(spec), straight, experiment="t")
    broken = RunFolder.create(tmp_path)
    seen = {"step": 0}
    first = train(prepare(spec), broken, experiment="t", on_step=lambda s: seen.update(step=s), should_stop=lambda: seen["step"] >= 5)
    assert first["status"] == "cancelled"
    train(prepare(spec), broken, experiment="t", resume=True)
    for name in ("final", "center_final"):
        a, b = (f.load_tensors(f.checkpoint_path(name)) for f in (straight, broken))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name


def test_workbench_fuse_takes_each_run_s_center_as_one_model(tmp_path):
    from workbench.fuse import fused_spec

    records = []
    for seed, implementation in ((0, "sequential"), (1, "grouped")):
        folder = RunFolder.create(tmp_path)
        train(prepare(easgd_spec(implementation, seed=seed, train={"steps": 2, "eval_every": 0})), folder, experiment="t")
        records.append({"run_id": folder.run_id, "run_dir": str(folder.path), "status": "completed"})
    spec = fused_spec(records, "average", steps=None, overrides={"device": "cpu"}, fusion={"checkpoint": "center_final"})
    model = prepare(spec, tmp_path).model
    assert len(model.members) == 2  # one model per run, not K per run
    for member, record in zip(model.members, records):
        run = RunFolder(record["run_dir"])
        center = run.load_tensors(run.checkpoint_path("center_final"))
        assert all(torch.equal(member.state_dict()[name], center[name]) for name in center)
