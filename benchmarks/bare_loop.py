"""The plainest PyTorch loop that trains the same model on the same data for the same steps.

The yardstick for `headless_vs_bare.py`: no tracking, no events, no evaluation, no
checkpoints, no store. Uses the engine's data and model builders so the work is identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.data import load_data  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.spec import Experiments  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--experiment", default="baseline")
parser.add_argument("--device", default="cpu")
parser.add_argument("--steps", type=int, required=True)
args = parser.parse_args()

spec = Experiments.load(Path(__file__).resolve().parents[1] / "experiments.json").resolve(args.experiment)
device = torch.device(args.device)
data = load_data(spec.data, device)
torch.manual_seed(spec.seed)
model = build_model(spec.model, data.input_shape, data.num_classes).to(device)
o = spec.optimizer
optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
generator = torch.Generator().manual_seed(spec.seed)
batch, n = spec.data.batch_size, len(data.train_y)
permutation, position = None, n
for step in range(args.steps):
    if position + batch > n:
        permutation, position = torch.randperm(n, generator=generator).to(device), 0
    index = permutation[position : position + batch]
    position += batch
    loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
