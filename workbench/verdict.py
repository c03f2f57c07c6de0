"""The verdict of a study: did a subset move farther (or faster) in an arm than in the
reference, and how sure can we be? (imports no torch: the UI process reads run folders only)

A study pairs runs by seed: the arm run and the reference run with seed s share their
initial weights and data order and differ only in what is frozen. For every pair the
verdict takes ratios arm / reference at the last step both runs recorded, and summarises
them over seeds (DESIGN.md, "A study pairs runs...").

Per comparison (one arm against the reference), see workbench/scoped_verdict.py:
- `headline`: `dist` of the coordinates of the *partitioned layers* (the layers the
  partition splits, workbench/scopes.py), the number the one-line `answer` states, with
  its scope in words ("conv kernels that kept training moved 1.21x as far ...");
- `kinds`, `layers`, `all`: the same per layer kind, per layer, for every layer;
- `normalized`: speed over the run and its thirds, gradient norms, path per gradient
  (workbench/normalized.py); `loss_matched`: dist at equal training loss
  (workbench/loss_matched.py);
each an S: geometric mean of the per-seed ratios, 95% t interval on the log ratios,
paired t and exact Wilcoxon p, and the ratio this n could detect (workbench/verdict_stats.py).

`subsets` (kept for scripts written against it) is the older whole-subset summary:
`dist` and `speed` of each tracked subset over all its layers, as an *arithmetic* mean of
the per-seed ratios with a t interval (`"mean": "arithmetic"`), at the final step and at
every matched step (`over_steps`). `final`: paired differences in final loss and
accuracy. A ratio whose reference value is 0 or missing (an empty subset, a frozen
reference subset) has no meaning: it is skipped and counted, never a division by zero.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.events import EventsFold
from engine.run_folder import RunFolder
from workbench.phase_verdict import note_phase_masks, phase_comparison
from workbench.scoped_verdict import scope_rows, scoped_comparison
from workbench.best_single import best_single_model
from workbench.verdict_stats import clip_interval, finite, mean_ci, ratio, t_quantile  # noqa: F401 (t_quantile: re-exported)

METRICS = ("dist", "speed")
FINAL_METRICS = ("eval_acc", "eval_loss", "train_loss")
SCOPED_KEYS = ("headline", "all", "kinds", "layers", "normalized", "loss_key", "loss_matched", "detectable_ratio", "phases")


# ---------------------------------------------------------------------------------------
# Reading a run folder


@dataclass
class RunSeries:
    """What the verdict and the report need from one run folder."""

    path: Path
    run_id: str
    spec: dict[str, Any]
    summary: dict[str, Any]
    movement: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> {subset: metrics}
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> eval event
    subset_sizes: dict[str, int] = field(default_factory=dict)  # from the start event: coordinates per subset

    @property
    def subsets(self) -> list[str]:
        names: dict[str, None] = {}
        for record in self.movement.values():
            names.update(dict.fromkeys(record))
        names.update(dict.fromkeys(self.summary.get("movement") or {}))
        return list(names)

    def final_eval(self) -> dict[str, Any]:
        """summary.json's final figures, else the last eval event."""
        final = self.summary.get("final")
        if final:
            return final
        return self.evals[max(self.evals)] if self.evals else {}


def read_run(path: str | Path) -> RunSeries:
    folder = RunFolder(path)
    # the fold drops what an earlier attempt of a resumed run wrote after the resume point
    events = EventsFold(folder.events_path)
    events.poll()
    movement = {e["step"]: e.get("subsets") or {} for e in events.standing("movement")}
    evals = {e["step"]: e for e in events.standing("eval")}
    starts = events.standing("start")
    sizes = (starts[0].get("subset_sizes") or {}) if starts else {}
    return RunSeries(folder.path, folder.run_id, folder.spec() or {}, folder.summary() or {}, movement, evals, sizes)


def value(subsets: dict[str, Any], subset: str, metric: str) -> float | None:
    """One metric of one subset from a movement record; None when absent or not finite."""
    return finite((subsets.get(subset) or {}).get(metric))


# ---------------------------------------------------------------------------------------
# The verdict


def study_verdict(
    study: str,
    runs: dict[str, dict[int, Path]],
    reference: str,
    *,
    metrics: Iterable[str] = METRICS,
) -> dict[str, Any]:
    """The verdict of `study`: every arm of `runs` (arm -> seed -> run folder) against the
    `reference` arm, paired by seed. JSON-serialisable (seeds become string keys)."""
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError("a verdict needs at least one metric")
    if reference not in runs:
        raise ValueError(f"reference arm {reference!r} has no runs (arms: {', '.join(runs) or 'none'})")
    arms = [arm for arm in runs if arm != reference]
    if not arms:
        raise ValueError(f"study {study!r} has no arm to compare with the reference {reference!r}")
    loaded = {arm: {int(seed): read_run(path) for seed, path in by_seed.items()} for arm, by_seed in runs.items()}
    notes = _seed_notes(loaded)
    subsets = _subset_names(loaded)
    comparisons = [_compare(arm, reference, loaded[arm], loaded[reference], subsets, metrics, notes) for arm in arms]
    first = comparisons[0]
    return {
        "study": study,
        "reference": reference,
        "arms": list(runs),
        "seeds": sorted({seed for by_seed in loaded.values() for seed in by_seed}),
        "metrics": list(metrics),
        "runs": {arm: {str(seed): run.run_id for seed, run in sorted(by_seed.items())} for arm, by_seed in loaded.items()},
        "comparisons": comparisons,
        "arm_figures": {arm: arm_figures(by_seed) for arm, by_seed in loaded.items()},
        "subsets": first["subsets"],
        "answer": first["answer"],
        # the first (for a two-arm study the only) arm's scoped verdict, at the top level as `subsets` is
        **{key: first[key] for key in SCOPED_KEYS if key in first},
        "notes": notes,
        # a study with ensemble arms: which one model is best (EASGD center, best member, fused model)
        **({"best_single": best} if (best := best_single_model(loaded)) else {}),
    }


def arm_figures(by_seed: dict[int, RunSeries]) -> dict[str, Any]:
    """What an arm costs and scores, over its seeds: parameters, final accuracy, step time.

    Arms of different shape (a half-frozen model, two half-size models) are compared on
    these as much as on movement.
    """
    runs = list(by_seed.values())
    params = sorted({run.summary["params"] for run in runs if run.summary.get("params") is not None})
    acc, acc_ci = mean_ci(v for v in (finite(run.final_eval().get("eval_acc")) for run in runs) if v is not None)
    rates = [finite(run.summary.get("steps_per_second")) for run in runs]
    step_ms, step_ci = mean_ci(1000 / rate for rate in rates if rate)
    return {"params": params[0] if len(params) == 1 else params or None, "eval_acc": acc, "eval_acc_ci": acc_ci,
            "step_ms": step_ms, "step_ms_ci": step_ci, "n": len(runs)}


def _subset_names(loaded: dict[str, dict[int, RunSeries]]) -> list[str]:
    names: dict[str, None] = {}
    for by_seed in loaded.values():
        for run in by_seed.values():
            names.update(dict.fromkeys(run.subsets))
    return list(names)


def _seed_notes(loaded: dict[str, dict[int, RunSeries]]) -> list[str]:
    notes = []
    for arm, by_seed in loaded.items():
        for seed, run in sorted(by_seed.items()):
            recorded = run.spec.get("seed")
            if recorded is not None and recorded != seed:
                notes.append(f"{arm} run {run.run_id} is listed for seed {seed} but its spec says seed {recorded}")
            if run.summary.get("status") not in (None, "completed"):
                notes.append(f"{arm} run {run.run_id} (seed {seed}) is {run.summary['status']}, not completed")
    return notes


def _compare(
    arm: str,
    reference: str,
    arm_runs: dict[int, RunSeries],
    ref_runs: dict[int, RunSeries],
    subsets: list[str],
    metrics: tuple[str, ...],
    notes: list[str],
) -> dict[str, Any]:
    seeds = sorted(set(arm_runs) & set(ref_runs))
    for seed in sorted(set(arm_runs) ^ set(ref_runs)):
        side = arm if seed in arm_runs else reference
        notes.append(f"seed {seed} has a {side} run but no {reference if side == arm else arm} run: left out of {arm} vs {reference}")
    pairs = [(seed, arm_runs[seed], ref_runs[seed]) for seed in seeds]
    finals = {seed: _final_records(a, r, seed, arm, reference, notes) for seed, a, r in pairs}
    shared = _shared_steps(pairs)

    compared: dict[str, Any] = {}
    for subset in subsets:
        entry: dict[str, Any] = {}
        for metric in metrics:
            per_seed = []
            for seed in seeds:
                step, a_rec, r_rec = finals[seed]
                a, r = value(a_rec, subset, metric), value(r_rec, subset, metric)
                if arm_runs[seed].subset_sizes.get(subset) == 0 or ref_runs[seed].subset_sizes.get(subset) == 0:
                    a = r = None  # an empty subset (nothing partitioned off) does not move: no ratio to take
                per_seed.append({"seed": seed, "step": step, "arm": a, "reference": r, "ratio": ratio(a, r)})
            entry[metric] = {**_summarise([p["ratio"] for p in per_seed]), "per_seed": per_seed}
        entry["over_steps"] = {metric: _over_steps(pairs, shared, subset, metric) for metric in metrics}
        lead = entry["dist" if "dist" in metrics else metrics[0]]
        compared[subset] = {
            "metric": "dist" if "dist" in metrics else metrics[0],
            "ratio": lead["ratio"],
            "ci": lead["ci"],
            "n": lead["n"],
            **entry,
        }

    frozen = bool(_first_spec(arm_runs).get("freeze")) and not _first_spec(ref_runs).get("freeze")
    scoped = scoped_comparison(pairs, finals, shared, notes, arm)
    phases = phase_comparison(pairs)
    note_phase_masks(phases, notes, arm)
    headline = scoped["headline"]["subset"]
    undecided = headline["ci"] is not None and headline["ci"][0] <= 1 <= headline["ci"][1]
    return {
        "arm": arm,
        "reference": reference,
        "seeds": seeds,
        "subsets": compared,
        "final": {key: _final_difference(pairs, key) for key in FINAL_METRICS},
        "answer": answer(scoped["headline"], arm, reference, frozen, paired=bool(seeds)),
        **scoped,
        **({"detectable_ratio": headline["detectable_ratio"]} if undecided else {}),
        **({"phases": phases} if phases else {}),
    }


def _first_spec(by_seed: dict[int, RunSeries]) -> dict[str, Any]:
    return by_seed[min(by_seed)].spec if by_seed else {}


def _summarise(ratios: list[float | None]) -> dict[str, Any]:
    """The whole-subset summary in `subsets`: arithmetic mean of ratios (see the module doc)."""
    kept = [r for r in ratios if r is not None]
    mean, ci = mean_ci(kept)
    return {"ratio": mean, "ci": ci, "n": len(kept), "skipped": len(ratios) - len(kept), "mean": "arithmetic"}


def _final_records(a: RunSeries, r: RunSeries, seed: int, arm: str, reference: str, notes: list[str]):
    """(step, arm record, reference record) at the last step both runs recorded movement;
    summary.json's movement when the events have none in common."""
    common = set(a.movement) & set(r.movement)
    if not common:
        return a.summary.get("steps"), a.summary.get("movement") or {}, r.summary.get("movement") or {}
    step = max(common)
    if step != max(a.movement) or step != max(r.movement):
        notes.append(
            f"seed {seed}: {arm} ends at step {max(a.movement)}, {reference} at step {max(r.movement)}; "
            f"compared at step {step}, the last both recorded"
        )
    return step, a.movement[step], r.movement[step]


def _shared_steps(pairs: list[tuple[int, RunSeries, RunSeries]]) -> list[int]:
    """Steps recorded by both runs of every pair; step 0 has no movement to compare (0/0)."""
    if not pairs:
        return []
    shared = set.intersection(*(set(a.movement) & set(r.movement) for _, a, r in pairs))
    return sorted(step for step in shared if step > 0)


def _over_steps(pairs, steps: list[int], subset: str, metric: str) -> dict[str, list]:
    out: dict[str, list] = {"step": [], "ratio": [], "lo": [], "hi": [], "n": []}
    for step in steps:
        summary = _summarise([ratio(value(a.movement[step], subset, metric), value(r.movement[step], subset, metric)) for _, a, r in pairs])
        ci = summary["ci"] or [None, None]
        out["step"].append(step)
        out["ratio"].append(summary["ratio"])
        out["lo"].append(ci[0])
        out["hi"].append(ci[1])
        out["n"].append(summary["n"])
    return out


# The range a paired difference arm - reference can take: accuracies lie in [0, 1]; a loss
# is >= 0, so the mean difference is >= -(the mean reference loss) (filled in below).
DIFFERENCE_RANGE = {"eval_acc": (-1.0, 1.0)}


def _final_difference(pairs, key: str) -> dict[str, Any]:
    """Final loss or accuracy: arm - reference per seed (mean, 95% t interval; `ci_shown`:
    the interval clipped to the range the difference can take) and arm / reference."""
    per_seed = []
    for seed, a, r in pairs:
        av, rv = finite(a.final_eval().get(key)), finite(r.final_eval().get(key))
        per_seed.append({"seed": seed, "arm": av, "reference": rv})
    both = [p for p in per_seed if p["arm"] is not None and p["reference"] is not None]
    difference, ci = mean_ci(p["arm"] - p["reference"] for p in both)
    ratios = _summarise([ratio(p["arm"], p["reference"]) for p in both])
    reference = statistics.fmean(p["reference"] for p in both) if both else None
    low, high = DIFFERENCE_RANGE.get(key, (-(reference or 0.0), math.inf))
    return {
        "arm": statistics.fmean(p["arm"] for p in both) if both else None,
        "reference": reference,
        "difference": difference,
        "ci": ci,
        "ci_shown": clip_interval(ci, low, high),
        "ratio": ratios["ratio"],
        "ratio_ci": ratios["ci"],
        "n": len(both),
        "per_seed": per_seed,
    }


# ---------------------------------------------------------------------------------------
# The one-line answer

# metric -> (more, less, same) as adverbs of "moved"
WORDS = {"dist": ("farther", "less far", "as far"), "speed": ("faster", "slower", "as fast")}


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.1 else f"{x:.2g}"


def fmt_ci(ci: list[float]) -> str:
    lo, hi = ci  # one format for ratios and (signed) differences alike: "a-b" misreads beside "-2 to 3"
    return f"{fmt_ratio(lo)} to {fmt_ratio(hi)}"


def fmt_p(p: float | None) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.2g}")


def answer(headline: dict[str, Any], arm: str, reference: str, frozen: bool, *, paired: bool = True) -> str:
    """One readable line: the headline scope's subset `dist` ratio, named by its scope, with
    its interval, p and seeds; when nothing is detected, the smallest ratio that could be."""
    if not paired:
        return f"no verdict: no seed has both a {arm} and a {reference} run"
    entry = headline["subset"]
    what = headline["description"]
    if frozen:
        who, when, pair = f"{what} that kept training", "when the rest was frozen", f"{arm} vs {reference}, "
    else:
        who, when, pair = f"subset {what}" if headline["scope"] != "all" else what, f"in {arm}", f"vs {reference}, "
    if headline["scope"] == "all":
        who = "the whole subset"
    more, less, same = WORDS["dist"]
    if entry["ratio"] is None:
        return f"no verdict: the {reference} {who} dist was 0 or missing for every seed ({arm} vs {reference})"
    r, ci, n = fmt_ratio(entry["ratio"]), entry["ci"], entry["n"]
    if ci is None:
        return f"{who} moved {r}x {same} {when} ({pair}1 seed: no confidence interval; use --seeds 3 or more)"
    figures = f"geometric mean of {n} seeds, 95% CI {fmt_ci(ci)}" + ("" if entry["p"] is None else f", p={fmt_p(entry['p'])}")
    if ci[0] > 1:
        return f"{who} moved {r}x {more} {when} ({pair}{figures})"
    if ci[1] < 1:
        return f"{who} moved {less} {when}: {r}x {same} ({pair}{figures})"
    detectable = entry.get("detectable_ratio")
    power = "" if detectable is None else (
        f"; {n} seeds detect only ratios beyond {fmt_ratio(detectable)}x or {fmt_ratio(1 / detectable)}x")
    return f"no difference detected: {who} moved {r}x {same} {when} ({pair}{figures}{power})"


# ---------------------------------------------------------------------------------------
# The CLI's table


def verdict_table(verdict: dict[str, Any]):
    """Rich renderables, 80 columns wide: per comparison the answer in bold, then one table
    led by the headline (the partitioned layers), then all layers, each kind, each layer,
    the normalised and loss-matched ratios (geometric means, 95% CI, paired t p, n), then
    the final loss/accuracy differences; the arm table and the notes last."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    for comparison in verdict["comparisons"]:
        parts += [Text(comparison["answer"], style="bold")]
        title = f"{verdict['study']}: {comparison['arm']} / {comparison['reference']} (dist unless named)"
        table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        for name, justify in (("scope", "left"), ("side", "left"), ("ratio", "right"), ("95% CI", "right"),
                              ("p", "right"), ("n", "right")):
            table.add_column(name, justify=justify, no_wrap=True, max_width=22 if name == "scope" else None,
                             min_width=3 if name == "n" else None, overflow="ellipsis")
        section = None
        for kind, scope, side, figures in scope_rows(comparison):
            if section is not None and kind != section:
                table.add_section()
            section = kind
            table.add_row(scope, side, *s_cells(figures))
        table.add_section()
        for key, figures in comparison["final"].items():
            if figures["n"]:
                shown = figures.get("ci_shown", figures["ci"])
                ci = "-" if shown is None else f"{_signed(shown[0], 2)} to {_signed(shown[1], 2)}"
                table.add_row(key, "arm-ref", _signed(figures["difference"]), ci, "", str(figures["n"]))
        parts += [table, Text("")]
    if verdict.get("arm_figures"):
        parts += [arm_table(verdict), Text("")]
    for note in verdict.get("notes", []):
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


def s_cells(figures: dict[str, Any]) -> tuple[str, str, str, str]:
    """ratio, 95% CI, p (paired t) and n of an S, as printed; n counts skipped seeds too."""
    r = "-" if figures["ratio"] is None else fmt_ratio(figures["ratio"])
    ci = "-" if figures["ci"] is None else fmt_ci(figures["ci"])
    n = str(figures["n"]) + (f"/{figures['n'] + figures['skipped']}" if figures["skipped"] else "")
    return r, ci, fmt_p(figures.get("p")), n


def arm_table(verdict: dict[str, Any]):
    """One row per arm: parameter count, final eval accuracy and time per step (mean, 95% CI)."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"{verdict['study']}: arms (* reference)", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("arm", "params", "eval acc [95% CI]", "ms/step [95% CI]", "n"):
        table.add_column(name, justify="left" if name == "arm" else "right", no_wrap=True)
    for arm, figures in verdict["arm_figures"].items():
        params, acc, acc_ci, ms, ms_ci, n = arm_cells(figures)
        label = f"{arm}*" if arm == verdict["reference"] else arm
        table.add_row(label, params, f"{acc} [{acc_ci}]", f"{ms} [{ms_ci}]", n)
    return table


def arm_cells(figures: dict[str, Any]) -> list[str]:
    """The arm table's cells after the arm's name, shared by the CLI table and the report."""
    params = figures["params"]
    params = "-" if params is None else (f"{params:,}" if isinstance(params, int) else "/".join(f"{p:,}" for p in params))

    def ci(bounds, fmt):
        return "-" if bounds is None else f"{fmt(bounds[0])}-{fmt(bounds[1])}"

    acc = "-" if figures["eval_acc"] is None else f"{figures['eval_acc']:.4f}"
    ms = "-" if figures["step_ms"] is None else f"{figures['step_ms']:.1f}"
    return [params, acc, ci(figures["eval_acc_ci"], "{:.3f}".format), ms, ci(figures["step_ms_ci"], "{:.0f}".format),
            str(figures["n"])]


def _signed(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:+.{digits}g}"
