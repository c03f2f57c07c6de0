import pytest
import torch

from engine.models import build_model
from engine.seeding import seed_groups, seeded_source
from engine.spec import ModelSpec, SpecError

SHAPE = (3, 16, 16)
SPEC = ModelSpec(name="vgg", width=4, groups=2, connectivity="grouped", head="members")


def run_model(seed, spec=SPEC):
    torch.manual_seed(seed)
    return build_model(spec, SHAPE, 10)


def state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_seeded_groups_take_the_seeds_values_whatever_the_run_seed():
    source = seeded_source(SPEC, SHAPE, 10, seed=7)
    runs = []
    for run_seed in (1, 2):
        model = run_model(run_seed)
        seed_groups(model, source, [0])
        runs.append(state(model))
    seeded = [n for n in runs[0] if n.endswith("_g0") and not n.startswith("classifier.fc2")]
    assert "features.conv1.weight_g0" in seeded and "features.bn2.weight_g0" in seeded and "classifier.fc1.bias_g0" in seeded
    for name in seeded:
        assert torch.equal(runs[0][name], source[name]) and torch.equal(runs[1][name], source[name]), name
    fresh = state(run_model(1))
    others = [n for n in runs[0] if n not in seeded]
    assert all(torch.equal(runs[0][n], fresh[n]) for n in others)  # the rest is the run seed's
    assert not torch.equal(runs[0]["features.conv1.weight_g1"], runs[1]["features.conv1.weight_g1"])


def test_the_head_is_never_seeded():
    source = seeded_source(SPEC, SHAPE, 10, seed=7)
    model = run_model(1)
    seed_groups(model, source, [0, 1])
    fresh = state(run_model(1))
    for name, param in model.named_parameters():
        if name.startswith("classifier.fc2"):
            assert torch.equal(param, fresh[name]) and not torch.equal(param, source[name]), name
        else:
            assert torch.equal(param, source[name]), name


def test_seeded_from_a_state_dict_equals_its_tensors():
    checkpoint = {name: torch.randn_like(p) for name, p in run_model(5).named_parameters()}
    model = run_model(1)
    seed_groups(model, checkpoint, [1])
    for name, param in model.named_parameters():
        if name.endswith("_g1") and not name.startswith("classifier.fc2"):
            assert torch.equal(param, checkpoint[name]), name


def test_seeded_source_leaves_the_callers_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    seeded_source(SPEC, SHAPE, 10, seed=11)
    assert torch.equal(torch.rand(4), expected)
    assert torch.equal(seeded_source(SPEC, SHAPE, 10, 11)["features.conv3.weight_g1"],
                       seeded_source(SPEC, SHAPE, 10, 11)["features.conv3.weight_g1"])  # fmt: skip


def test_one_group_seeds_the_whole_trunk_but_not_the_head():
    spec = ModelSpec(name="lenet", width=4)
    source = seeded_source(spec, SHAPE, 10, seed=7)
    model = run_model(1, spec)
    seed_groups(model, source, [0])
    params = dict(model.named_parameters())
    assert torch.equal(params["features.conv2.weight"], source["features.conv2.weight"])
    assert torch.equal(params["classifier.fc1.weight"], source["classifier.fc1.weight"])
    assert not torch.equal(params["classifier.fc2.weight"], source["classifier.fc2.weight"])


def test_a_shape_mismatch_names_the_key_and_both_shapes():
    wider = seeded_source(SPEC.model_copy(update={"width": 8}), SHAPE, 10, seed=0)
    with pytest.raises(SpecError, match=r"'features.conv1.weight_g0' is \(4, 3, 3, 3\) in the source but \(2, 3, 3, 3\)"):
        seed_groups(run_model(1), wider, [0])


def test_a_missing_tensor_names_the_key():
    source = seeded_source(SPEC, SHAPE, 10, seed=0)
    del source["features.bn3.bias_g1"]
    with pytest.raises(SpecError, match="features.bn3.bias_g1"):
        seed_groups(run_model(1), source, [1])
    with pytest.raises(SpecError, match="no kernel group 2"):
        seed_groups(run_model(1), source, [2])
