import json

import pytest

from engine.spec import ExperimentSpec, Experiments, SpecError, parse_override, settable_keys


def catalog(experiments: dict) -> Experiments:
    return Experiments({"experiments": experiments}, "exp.json")


def test_inheritance_overrides_only_named_keys():
    c = catalog(
        {
            "base": {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5}, "train": {"steps": 7}},
            "child": {"base": "base", "optimizer": {"lr": 0.2}, "freeze": True},
        }
    )
    child = c.resolve("child")
    assert child.optimizer.lr == 0.2
    assert child.optimizer.momentum == 0.5  # inherited, not reset to the default
    assert child.train.steps == 7
    assert child.freeze is True and c.resolve("base").freeze is False


def test_overrides_parse_json_values_else_strings():
    assert parse_override("optimizer.lr=0.3") == ("optimizer.lr", 0.3)
    assert parse_override("freeze=true") == ("freeze", True)
    assert parse_override("partition.layers=[\"features.conv1\"]") == ("partition.layers", ["features.conv1"])
    assert parse_override("device=cuda:1") == ("device", "cuda:1")
    spec = catalog({"a": {}}).resolve("a", dict([parse_override("partition.fraction=0.25")]))
    assert spec.partition.fraction == 0.25


@pytest.mark.parametrize(
    "text, fragment",
    [("nokey", "expected key=value"), ("optimizer.lrr=1", "unknown key"), ("=3", "expected key=value")],
)
def test_bad_overrides_are_named(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_override(text)


def test_every_issue_key_is_settable():
    required = """seed device data.name data.dir data.download data.batch_size model.name model.width
    optimizer.name optimizer.lr optimizer.momentum optimizer.nesterov optimizer.weight_decay train.steps
    train.eval_every partition.strategy partition.fraction partition.include_fc partition.seed freeze
    track.every checkpoint.every""".split()
    assert set(required) <= set(settable_keys())


def test_errors_report_every_problem_with_its_location():
    c = catalog(
        {
            "a": {"optimizer": {"lr": -1}, "partition": {"fraction": 1.5}},
            "b": {"partition": {"strategy": "bogus"}, "typo": 1},
            "c": {"base": "nowhere"},
            "d": {"base": "e"},
            "e": {"base": "d"},
        }
    )
    problems = "\n".join(c.errors())
    for location in [
        "experiments.a.optimizer.lr",
        "experiments.a.partition.fraction",
        "experiments.b.partition.strategy",
        "experiments.b.typo: unknown key",
        "experiments.c.base: unknown experiment 'nowhere'",
        "inheritance cycle",
    ]:
        assert location in problems


def test_device_names_are_checked_in_the_spec():
    for ok in ["cpu", "cuda", "cuda:3", "mps", "auto"]:
        assert ExperimentSpec(device=ok).device == ok
    with pytest.raises(ValueError, match="cuda:N"):
        ExperimentSpec(device="gpu0")


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        ExperimentSpec.model_validate({"optimizer": {"name": "sgd", "momentum": 0, "nesterov": True}})


def test_digest_ignores_description_but_not_freeze():
    a = ExperimentSpec(description="x")
    assert a.digest() == ExperimentSpec(description="y").digest()
    assert a.digest() != ExperimentSpec(freeze=True).digest()


def test_unknown_experiment_lists_the_known_ones(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"experiments": {"one": {}, "two": {}}}))
    with pytest.raises(SpecError, match="no experiment 'three' in .*e.json; it has: one, two"):
        Experiments.load(path).resolve("three")


def test_malformed_file_names_line_and_column(tmp_path):
    path = tmp_path / "e.json"
    path.write_text('{"experiments": {"a": {,}}}')
    with pytest.raises(SpecError, match="line 1 column"):
        Experiments.load(path)


def test_shipped_experiments_pair_baseline_and_half_fixed():
    c = Experiments.load("experiments.json")
    assert c.errors() == []
    baseline, half = c.resolve("baseline"), c.resolve("half-fixed")
    assert baseline.freeze is False and half.freeze is True
    assert baseline.model_copy(update={"freeze": True, "description": ""}) == half.model_copy(update={"description": ""})
    assert (baseline.partition.strategy, baseline.partition.fraction, baseline.partition.include_fc) == (
        "first_kernels",
        0.5,
        False,
    )
    assert baseline.data.name == "mnist5k"
