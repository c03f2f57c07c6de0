"""The study report: headline first, then per kind, per layer, normalised and loss-matched
tables; every PNG it links is written; run folders relative to the logs dir; ratio plots on
a log axis with a line at 1, markers where there are few points."""

from __future__ import annotations

import matplotlib.pyplot as plt

from test_verdict_scopes import known_study
from workbench.report import plot_ratios, plot_scopes, write_report
from workbench.verdict import study_verdict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_leads_with_the_headline_and_links_only_written_plots(tmp_path):
    logs = tmp_path / "logs"
    runs = known_study(logs)
    verdict = study_verdict("s", runs, "baseline")
    page = write_report(verdict, runs, tmp_path / "report").read_text()
    headings = ["### Headline: conv kernels (partitioned layers: `features.conv1`, `features.conv2`)",
                "### All layers", "### Per layer kind", "### Per layer", "### Normalised", "### Loss-matched",
                "### Final loss and accuracy", "## Arms", "## Plots", "## Runs"]
    positions = [page.index(heading) for heading in headings]
    assert positions == sorted(positions)
    assert page.index(verdict["answer"]) < positions[0]
    assert "| partitioned | subset | " in page and "| classifier.fc1 | subset | " in page
    assert "| speed, 2nd third | subset | " in page and "| eval loss <= 0.1 | subset | " in page

    linked = sorted(line.split("(")[1].rstrip(")") for line in page.splitlines() if line.startswith("!["))
    written = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert linked == written == ["layers.png", "movement.png", "ratio.png"]  # no eval events: no eval.png
    for name in written:
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG_MAGIC)
    assert str(tmp_path) not in page and "| baseline | 0 | `base0000` | `base0000` |" in page


def test_a_report_with_evals_links_the_eval_plot(tmp_path):
    runs = known_study(tmp_path / "logs", evals=[{"type": "eval", "step": s, "train_loss": 1 / s, "eval_loss": 2 / s,
                                                  "eval_acc": 0.5} for s in (50, 100)])
    page = write_report(study_verdict("s", runs, "baseline"), runs, tmp_path / "report").read_text()
    assert "![eval](eval.png)" in page and (tmp_path / "report" / "eval.png").read_bytes().startswith(PNG_MAGIC)
    assert "| train loss <= 1 | subset | " in page


def test_ratio_plots_use_a_log_axis_a_line_at_one_and_markers(tmp_path):
    verdict = study_verdict("s", known_study(tmp_path), "baseline")
    over_steps, per_scope = plot_ratios(verdict), plot_scopes(verdict)
    for ax in over_steps.axes:  # dist and speed ratios over steps: log y
        assert ax.get_yscale() == "log" and any(list(line.get_ydata()) == [1, 1] for line in ax.lines)
    ax = per_scope.axes[0]  # final ratio per scope: log x
    assert ax.get_xscale() == "log" and any(list(line.get_xdata()) == [1, 1] for line in ax.lines)
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["partitioned", "conv"]
    ratio_line = [line for line in plot_ratios(verdict).axes[0].lines if line.get_label().startswith("half-fixed")][0]
    assert ratio_line.get_marker() == "o"  # 10 matched steps: few points, shown as markers
    plt.close("all")
