"""The report's mixture.png: for each arm whose runs carry a soft-weight-sharing prior, the
histogram of the weights it covers with the prior's density drawn over it, at the first
seed's last eval (workbench/mixture_density.py; the Run screen's Mixture tab draws the same)."""

from __future__ import annotations

from typing import Any

from workbench.mixture_density import histogram_density, mixture_records, prior_curve


def plot_mixture(loaded: dict[str, dict[int, Any]]):
    """A panel per arm with a mixture (None: no arm has one). `loaded`: arm -> seed -> RunSeries."""
    panels = {}
    for arm, by_seed in loaded.items():
        if by_seed:
            seed = min(by_seed)
            records = mixture_records([by_seed[seed].evals[step] for step in sorted(by_seed[seed].evals)])
            if records:
                panels[arm] = (seed, records[-1])
    if not panels:
        return None
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    for ax, (arm, (seed, record)) in zip(axes[0], panels.items()):
        centres, density, width = histogram_density(record["weights_hist"])
        ax.bar(centres, density, width=width, color="#56b4e9", label="weights (histogram density)")
        xs, curve = prior_curve(record)
        ax.plot(xs, curve, color="#d55e00", label="mixture prior density")
        ax.set_ylim(0, max(density) * 1.15 if max(density) > 0 else 1)  # the spike at 0 would flatten the weights
        ax.set_title(f"{arm}, seed {seed}, step {record['step']}: {record['weights_hist'].get('n', 0):,} weights",
                     fontsize=9)
        ax.set_xlabel("weight value")
        ax.set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure
