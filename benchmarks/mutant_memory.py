"""Peak memory of one training step of a K-member mutant, before and after pruning half its channels.

The mutant (engine.fusion.mutant_state) of K members of width w is a plain model of width
K*w; pruning (engine.pruning) removes 50% of every conv layer's channels (bn_scale; LeNet
falls back to channel_norm). Prints the peak memory of a training step (SGD with momentum,
so params + grads + momentum + activations) for each, the ratio after/before and the
parameter counts.

Each measurement runs in a fresh subprocess, so one model's memory cannot hide in another's:
- cuda: torch.cuda.max_memory_allocated over one steady-state step (peak reset after a
  warm-up step that allocates the momentum buffers), i.e. tensor bytes, not the cache.
- cpu: the rise of the process's peak resident set size (ru_maxrss) from just before the
  model is loaded to after the steps. The model is built on the meta device and its
  weights assigned from the saved state dict, so no wider copy ever exists in the child;
  library start-up (oneDNN, thread pools) is paid before the baseline by one step of a
  width-1 model. Includes allocator overhead, so it reads somewhat above tensor bytes.

    .venv/bin/python benchmarks/mutant_memory.py [--device cpu|cuda] [--members 4] [--width 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from engine.fusion import mutant_state  # noqa: E402
from engine.models import build_model, param_count  # noqa: E402
from engine.pruning import plan_pruning, prune_channels  # noqa: E402
from engine.spec import ModelSpec  # noqa: E402

SHAPE = (1, 28, 28)  # MNIST-shaped input
CLASSES = 10
LR, MOMENTUM = 0.05, 0.9  # the default optimizer spec


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def load_model(family: str, width: int, state_path: str, device: torch.device) -> nn.Module:
    """The (possibly pruned) model of a saved state dict, never materialising any other size."""
    state = torch.load(state_path, weights_only=True, map_location=device)
    with torch.device("meta"):
        model = build_model(ModelSpec(name=family, width=width), SHAPE, CLASSES)
    # Shrink the meta model's layers to the checkpoint's shapes (free on meta).
    prune_channels(model, {name: torch.arange(state[f"{name}.weight"].shape[0])
                           for name, m in model.named_modules() if isinstance(m, nn.Conv2d)})
    model.load_state_dict(state, assign=True)
    return model.train()


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # scratch buffers grow with threads; the machine is shared anyway
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *SHAPE, generator=generator).to(device)
    y = torch.randint(0, CLASSES, (args.batch,), generator=generator).to(device)
    if device.type == "cuda":
        model = load_model(args.family, args.model_width, args.child, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        step(model, optimizer, x, y)  # allocates the momentum buffers and cuDNN workspaces
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(model, optimizer, x, y)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        tiny = build_model(ModelSpec(name=args.family, width=1), SHAPE, CLASSES)
        step(tiny, torch.optim.SGD(tiny.parameters(), lr=LR, momentum=MOMENTUM), x, y)
        del tiny
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        model = load_model(args.family, args.model_width, args.child, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        for _ in range(3):
            step(model, optimizer, x, y)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    params = param_count(model)
    print(json.dumps({"peak_bytes": peak, "params": params}))


def measure(args: argparse.Namespace, family: str, path: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(path), "--family", family,
               "--model-width", str(args.members * args.width),
               "--device", args.device, "--batch", str(args.batch)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--members", type=int, default=4, help="K: members fused into the mutant")
    parser.add_argument("--width", type=int, default=16, help="each member's width (the mutant's is K times it)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of each conv layer's channels pruned")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--model-width", type=int, help=argparse.SUPPRESS)  # the unpruned mutant's width
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    method = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "ru_maxrss rise, fresh process"
    print(f"K={args.members} members of width {args.width}, batch {args.batch}, input {SHAPE}, "
          f"device {args.device}, peak by {method}")
    print(f"{'model':<7}{'params before':>15}{'params after':>14}{'peak before MiB':>17}{'peak after MiB':>16}"
          f"{'after/before':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for family in ("lenet", "vgg"):
            spec = ModelSpec(name=family, width=args.width)
            members = []
            for seed in range(args.members):
                torch.manual_seed(seed)
                members.append(build_model(spec, SHAPE, CLASSES).state_dict())
            wide_spec, state = mutant_state(members, spec, SHAPE, CLASSES)
            mutant = build_model(wide_spec, SHAPE, CLASSES)
            mutant.load_state_dict(state)
            before_path, after_path = Path(folder, f"{family}.pt"), Path(folder, f"{family}-pruned.pt")
            torch.save(mutant.state_dict(), before_path)
            prune_channels(mutant, plan_pruning(mutant, "bn_scale", args.fraction, {}))
            torch.save(mutant.state_dict(), after_path)
            before, after = measure(args, family, before_path), measure(args, family, after_path)
            mib = 2**20
            print(f"{family:<7}{before['params']:>15,}{after['params']:>14,}{before['peak_bytes'] / mib:>17.1f}"
                  f"{after['peak_bytes'] / mib:>16.1f}{after['peak_bytes'] / before['peak_bytes']:>14.2f}")


if __name__ == "__main__":
    main()
