import pytest
import torch

from engine.devices import resolve_device
from engine.events import iter_events
from engine.run_folder import RunFolder
from engine.spec import SpecError
from engine.train import BatchOrder, prepare, train
from factories import tiny_spec


def run(tmp_path, **overrides):
    folder = RunFolder.create(tmp_path)
    summary = train(prepare(tiny_spec(**overrides)), folder, experiment="t")
    return folder, summary


def state(folder, name="final"):
    return folder.load_tensors(folder.checkpoint_path(name))


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def numbers(folder):
    return [{k: v for k, v in e.items() if k != "time"} for e in iter_events(folder.events_path) if e["type"] in ("movement", "eval")]


def test_same_seed_same_numbers(tmp_path):
    a, summary_a = run(tmp_path, seed=3, freeze=True, model={"name": "vgg", "width": 4})
    b, summary_b = run(tmp_path, seed=3, freeze=True, model={"name": "vgg", "width": 4})
    assert_same_state(state(a), state(b))
    assert numbers(a) == numbers(b)
    assert summary_a["movement"] == summary_b["movement"] and summary_a["final"] == summary_b["final"]


def test_different_seed_different_init(tmp_path):
    a, _ = run(tmp_path, seed=1)
    b, _ = run(tmp_path, seed=2)
    assert not torch.equal(state(a, "init")["features.conv1.weight"], state(b, "init")["features.conv1.weight"])


def test_freeze_pairs_share_init_masks_and_data_order(tmp_path):
    frozen, _ = run(tmp_path, freeze=True)
    baseline, _ = run(tmp_path, freeze=False)
    assert_same_state(state(frozen, "init"), state(baseline, "init"))
    masks_f, masks_b = frozen.load_tensors(frozen.masks_path), baseline.load_tensors(baseline.masks_path)
    for subset in ("subset", "fixed"):
        assert_same_state(masks_f[subset], masks_b[subset])


def test_freezing_nothing_reproduces_the_baseline_bit_for_bit(tmp_path):
    # Same init, same batches in the same order, same optimizer: only `freeze` differs, and
    # with nothing fixed it must change nothing.
    frozen, _ = run(tmp_path, freeze=True, partition={"strategy": "none"})
    baseline, _ = run(tmp_path, freeze=False, partition={"strategy": "none"})
    assert_same_state(state(frozen), state(baseline))


def test_batch_order_is_seeded_and_covers_each_epoch():
    a = BatchOrder(10, 3, seed=4, device=torch.device("cpu"))
    b = BatchOrder(10, 3, seed=4, device=torch.device("cpu"))
    epoch = torch.cat([a.next() for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # 3 full batches, the incomplete one dropped
    assert torch.equal(epoch, torch.cat([b.next() for _ in range(3)]))
    assert not torch.equal(a.next(), BatchOrder(10, 3, seed=5, device=torch.device("cpu")).next())


def test_run_folder_contract(tmp_path):
    folder, summary = run(tmp_path, checkpoint={"every": 6})
    names = {p.name for p in folder.path.iterdir()}
    assert {"spec.json", "events.jsonl", "masks.pt", "checkpoints", "summary.json"} <= names
    assert {p.name for p in folder.checkpoints.iterdir()} == {"init.pt", "step_000006.pt", "train_state.pt", "final.pt"}
    assert not [p for p in folder.path.rglob("*.tmp")]
    kinds = [e["type"] for e in iter_events(folder.events_path)]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert set(summary["final"]) >= {"train_loss", "eval_loss", "eval_acc"}
    assert folder.summary() == summary


def test_stop_request_cancels_at_a_step_boundary(tmp_path):
    folder = RunFolder.create(tmp_path)
    steps = []
    summary = train(
        prepare(tiny_spec(freeze=True)), folder, experiment="t", on_step=steps.append, should_stop=lambda: len(steps) >= 5
    )
    assert summary["status"] == "cancelled" and summary["steps"] == 5
    end = list(iter_events(folder.events_path, "end"))[-1]
    assert end["status"] == "cancelled"
    last = folder.load_tensors(folder.checkpoint_path("step_000005"))
    init, masks = state(folder, "init"), folder.load_tensors(folder.masks_path)
    for name, fixed in masks["fixed"].items():
        assert torch.equal(last[name][fixed], init[name][fixed])


def test_a_failing_run_records_the_error(tmp_path, monkeypatch):
    prep = prepare(tiny_spec())
    folder = RunFolder.create(tmp_path)

    def explode(step):
        if step == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        train(prep, folder, experiment="t", on_step=explode)
    end = list(iter_events(folder.events_path, "end"))[-1]
    assert end["status"] == "failed" and "boom" in end["error"]


@pytest.mark.parametrize("name", ["cuda", "cuda:2", "cuda:7"])
def test_missing_cuda_devices_are_refused_in_one_sentence(name):
    if torch.cuda.device_count() > int(name.partition(":")[2] or 0):
        pytest.skip("this machine has that device")
    with pytest.raises(SpecError, match=rf"device '{name}' is not available.*allowed: cpu"):
        resolve_device(name)


def test_auto_and_cpu_resolve_to_a_real_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected


def test_a_partition_that_fixes_everything_is_refused():
    with pytest.raises(SpecError, match="nothing would train"):
        prepare(tiny_spec(freeze=True, partition={"strategy": "random_elements", "fraction": 1.0, "include_fc": True}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_matches_masks_and_freezes_exactly(tmp_path):
    folder, summary = run(tmp_path, device="cuda", freeze=True, model={"name": "vgg", "width": 8})
    init, final, masks = state(folder, "init"), state(folder), folder.load_tensors(folder.masks_path)
    for name, fixed in masks["fixed"].items():
        assert torch.equal(final[name][fixed], init[name][fixed])
    cpu_folder, _ = run(tmp_path, device="cpu", freeze=True, model={"name": "vgg", "width": 8})
    assert_same_state(init, state(cpu_folder, "init"))  # init does not depend on the device


def _stop_at(step_to_stop: int):
    seen = {"step": 0}

    def on_step(step: int) -> None:
        seen["step"] = step

    return on_step, lambda: seen["step"] >= step_to_stop


@pytest.mark.parametrize(
    "overrides",
    [
        {"freeze": True, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}},
        {"freeze": True, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01}, "model": {"name": "vgg", "width": 4}},
        {"freeze": False, "partition": {"strategy": "random_elements"}, "checkpoint": {"every": 7}},
    ],
    ids=["sgd-nesterov-frozen", "adamw-vgg-batchnorm", "random-elements-periodic-state"],
)
def test_cancel_then_resume_equals_an_uninterrupted_run(tmp_path, overrides):
    """Model, optimizer moments, data position, RNG and tracker all come back: same bits."""
    spec = tiny_spec(train={"steps": 24, "eval_every": 6}, **overrides)
    straight = RunFolder.create(tmp_path)
    train(prepare(spec), straight, experiment="t")

    broken = RunFolder.create(tmp_path)
    on_step, stop = _stop_at(13)  # mid-epoch, off the eval and tracking grid
    first = train(prepare(spec), broken, experiment="t", on_step=on_step, should_stop=stop)
    assert first["status"] == "cancelled" and first["steps"] == 13
    assert broken.train_state_path.exists()
    resumed = train(prepare(spec), broken, experiment="t", resume=True)

    assert resumed["status"] == "completed" and resumed["steps"] == spec.train.steps
    assert_same_state(state(straight), state(broken))
    assert resumed["final"] == straight.summary()["final"]
    assert resumed["movement"]["subset"]["dist"] == straight.summary()["movement"]["subset"]["dist"]


def test_resume_without_saved_state_starts_over_and_supersedes_old_events(tmp_path):
    from engine.events import run_events

    spec = tiny_spec(freeze=True)
    folder = RunFolder.create(tmp_path)
    train(prepare(spec), folder, experiment="t")
    folder.train_state_path.unlink(missing_ok=True)  # e.g. killed before any checkpoint
    train(prepare(spec), folder, experiment="t", resume=True)
    steps = [e["step"] for e in run_events(folder.events_path, "movement")]
    assert steps == sorted(set(steps)) and steps[0] == 0  # one copy of every record, in order
    assert len(run_events(folder.events_path, "end")) == 1
