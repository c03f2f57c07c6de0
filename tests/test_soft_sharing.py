"""Soft weight sharing (engine/soft_sharing.py) against torch.distributions, resume, and quantize."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

from engine.events import iter_events
from engine.quantize import quantize_run
from engine.run_folder import RunFolder
from engine.soft_sharing import MixturePrior
from engine.train import prepare, train
from factories import tiny_spec


def sharing_spec(**overrides):
    settings = {"regularizer": {"name": "soft_weight_sharing", "components": 5, "tau": 0.005, "lr": 0.01},
                "train": {"steps": 12, "eval_every": 6}}
    return tiny_spec(**{**settings, **overrides})


def gmm(prior: MixturePrior) -> MixtureSameFamily:
    pi, mu, log_var = prior.mixture()
    return MixtureSameFamily(Categorical(probs=pi), Normal(mu, torch.exp(0.5 * log_var)))


def test_penalty_and_its_gradients_equal_a_torch_distributions_mixture():
    torch.manual_seed(0)
    prior = MixturePrior(6, 0.9, -0.4, 0.5)
    with torch.no_grad():
        prior.means.add_(0.05 * torch.randn(5))
        prior.log_vars.add_(0.3 * torch.randn(6))
        prior.logits.add_(torch.randn(5))
    w = (0.3 * torch.randn(500)).requires_grad_()
    ours = prior.nll(w)
    ours_grads = torch.autograd.grad(ours, [w, prior.means, prior.log_vars, prior.logits])
    theirs = -gmm(prior).log_prob(w).sum()
    theirs_grads = torch.autograd.grad(theirs, [w, prior.means, prior.log_vars, prior.logits])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    pi, mu, _ = (t.detach() for t in prior.mixture())
    assert mu[0] == 0 and pi[0] == pytest.approx(0.9) and float(pi.sum()) == pytest.approx(1.0)


def test_training_adds_tau_times_the_prior_and_the_prior_learns(tmp_path):
    plain, shared = RunFolder.create(tmp_path), RunFolder.create(tmp_path)
    train(prepare(tiny_spec(train={"steps": 12, "eval_every": 6})), plain, experiment="t")
    train(prepare(sharing_spec(regularizer={"name": "soft_weight_sharing", "components": 5, "tau": 0.05})), shared, experiment="t")
    a, b = (f.load_tensors(f.checkpoint_path("final")) for f in (plain, shared))
    assert any(not torch.equal(a[n], b[n]) for n in a)  # the prior changed the training
    evals = [e for e in iter_events(shared.events_path) if e["type"] == "eval"]
    assert all(len(e["mixture"]["mu"]) == 5 and e["mixture"]["mu"][0] == 0 and "prior_nll" in e for e in evals)
    prior = shared.load_tensors(shared.checkpoint_path("prior_final"))
    assert not torch.equal(prior["logits"], torch.zeros(4))  # mixing proportions were trained


def test_the_prior_survives_resume_bit_identically(tmp_path):
    spec = sharing_spec(checkpoint={"every": 5})
    straight = RunFolder.create(tmp_path)
    train(prepare(spec), straight, experiment="t")
    broken = RunFolder.create(tmp_path)
    seen = {"step": 0}
    train(prepare(spec), broken, experiment="t", on_step=lambda s: seen.update(step=s), should_stop=lambda: seen["step"] >= 7)
    train(prepare(spec), broken, experiment="t", resume=True)
    for name in ("final", "prior_final"):
        a, b = (f.load_tensors(f.checkpoint_path(name)) for f in (straight, broken))
        assert all(torch.equal(a[key], b[key]) for key in a), name


@pytest.mark.parametrize("on", ["all", "subset"])
def test_quantize_snaps_every_covered_weight_to_its_most_probable_mean(tmp_path, on):
    spec = sharing_spec(regularizer={"name": "soft_weight_sharing", "components": 4, "tau": 0.005, "on": on, "lr": 0.01})
    folder = RunFolder.create(tmp_path)
    train(prepare(spec), folder, experiment="t")
    result = quantize_run(folder.path, tmp_path)

    trained = folder.load_tensors(folder.checkpoint_path("final"))
    snapped = folder.load_tensors(folder.checkpoint_path("quantized"))
    subset = folder.load_tensors(folder.masks_path)["subset"]
    prior = MixturePrior(4, spec.regularizer.pi_zero, 0, 1)
    prior.load_state_dict(folder.load_tensors(folder.checkpoint_path("prior_final")))
    pi, mu, log_var = (t.detach() for t in prior.mixture())
    components = Normal(mu, torch.exp(0.5 * log_var))
    zeros = total = 0
    for name, weights in trained.items():
        if name not in subset:
            continue  # buffers
        mask = subset[name] if on == "subset" else torch.ones_like(subset[name])
        # independently: the component with the largest pi_j N(w | mu_j, sigma_j^2)
        best = (components.log_prob(weights[mask].unsqueeze(1)) + pi.log()).argmax(1)
        assert torch.equal(snapped[name][mask], mu[best]), name
        assert torch.equal(snapped[name][~mask], weights[~mask]), name  # uncovered: untouched
        zeros, total = zeros + int((best == 0).sum()), total + int(mask.sum())
    assert result["covered_weights"] == total and result["zero_share"] == pytest.approx(zeros / total)

    # an independent evaluation of the snapped weights
    prep = prepare(spec)
    prep.model.load_state_dict(snapped)
    prep.model.eval()
    with torch.no_grad():
        accuracy = (prep.model(prep.data.test_x).argmax(1) == prep.data.test_y).double().mean().item()
    assert result["eval_acc"] == pytest.approx(accuracy, abs=1e-9)
    assert (folder.path / "quantize.json").exists()
