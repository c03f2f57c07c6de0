import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.freezing import Freezer
from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec

OPTIMIZERS = {
    "sgd": {"name": "sgd", "momentum": 0.0},
    "sgd-momentum": {"name": "sgd", "momentum": 0.9},
    "sgd-nesterov": {"name": "sgd", "momentum": 0.9, "nesterov": True},
    "sgd-coupled-decay": {"name": "sgd", "momentum": 0.9, "weight_decay": 0.05},
    "adam": {"name": "adam", "lr": 0.01},
    "adam-coupled-decay": {"name": "adam", "lr": 0.01, "weight_decay": 0.05},
    "adamw-decoupled-decay": {"name": "adamw", "lr": 0.01, "weight_decay": 0.5},
}
STRATEGIES = {
    "first_kernels": {"strategy": "first_kernels"},
    "first_kernels+fc": {"strategy": "first_kernels", "include_fc": True, "fraction": 0.25},
    "random_kernels": {"strategy": "random_kernels", "fraction": 0.75, "seed": 3},
    "random_elements+fc": {"strategy": "random_elements", "include_fc": True},
    "layers": {"strategy": "layers", "layers": ["features.conv1"]},
}


def run_frozen(tmp_path, model, optimizer, partition):
    spec = tiny_spec(model={"name": model, "width": 4}, optimizer=optimizer, partition=partition, freeze=True)
    prep = prepare(spec)
    folder = RunFolder.create(tmp_path)
    train(prep, folder, experiment="t")
    init = folder.load_tensors(folder.checkpoint_path("init"))
    final = folder.load_tensors(folder.checkpoint_path("final"))
    masks = folder.load_tensors(folder.masks_path)
    return init, final, masks


@pytest.mark.parametrize("model", ["lenet", "vgg"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fixed_coordinates_end_bit_identical_to_init(tmp_path, model, strategy, optimizer):
    init, final, masks = run_frozen(tmp_path, model, OPTIMIZERS[optimizer], STRATEGIES[strategy])
    assert any(m.any() for m in masks["fixed"].values()), "the partition fixed nothing: the test would be vacuous"
    for name, fixed in masks["fixed"].items():
        # bit for bit: compare the raw bytes, so -0.0 vs 0.0 or a last-ulp change would fail
        assert torch.equal(final[name][fixed].view(torch.int32), init[name][fixed].view(torch.int32)), name
    moved = [name for name, subset in masks["subset"].items() if subset.any() and not torch.equal(final[name][subset], init[name][subset])]
    assert moved, "nothing trained"


class ConvBackwardCalls(TorchDispatchMode):
    """Records, for every conv backward, the output-channel count of the weight whose gradient it computes."""

    def __init__(self):
        super().__init__()
        self.weight_grads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            weight, output_mask = args[2], args[-1]
            if output_mask[1]:
                self.weight_grads.append(weight.shape[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("strategy", ["first_kernels", "random_kernels"])
def test_fixed_kernels_get_no_weight_gradient_computed(strategy):
    spec = tiny_spec(model={"name": "vgg", "width": 8}, partition={"strategy": strategy, "fraction": 0.5}, freeze=True)
    prep = prepare(spec)
    Freezer(prep.model, prep.layers, prep.masks["fixed"])
    conv_kernels = [layer.kernels for layer in prep.layers if layer.kind == "conv"]
    with ConvBackwardCalls() as calls:
        prep.model(prep.data.train_x[:8]).sum().backward()
    # every conv computes weight gradients only for its trainable half
    assert sorted(calls.weight_grads) == sorted(k - (k + 1) // 2 for k in conv_kernels)


def test_layers_fixed_whole_are_out_of_autograd_and_the_optimizer():
    spec = tiny_spec(model={"name": "vgg", "width": 4}, partition={"strategy": "layers", "layers": ["features.conv2"]}, freeze=True)
    prep = prepare(spec)
    freezer = Freezer(prep.model, prep.layers, prep.masks["fixed"])
    params = dict(prep.model.named_parameters())
    frozen = {"features.conv2.weight", "features.bn2.weight", "features.bn2.bias"}
    assert {name for name, p in params.items() if not p.requires_grad} == frozen
    assert all(p.requires_grad for p in freezer.trainable())
    prep.model(prep.data.train_x[:8]).sum().backward()
    assert all(params[name].grad is None for name in frozen)


def test_split_forward_computes_the_same_outputs():
    spec = tiny_spec(model={"name": "vgg", "width": 8}, partition={"strategy": "random_kernels", "seed": 5}, freeze=True)
    prep = prepare(spec)
    x = prep.data.train_x[:16]
    prep.model.eval()
    with torch.no_grad():
        before = prep.model(x)
        Freezer(prep.model, prep.layers, prep.masks["fixed"])
        after = prep.model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
