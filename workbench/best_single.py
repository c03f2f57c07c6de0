"""The best single model of a study with ensemble arms (issue 16's EASGD study): which one
model should a researcher keep, and what does it cost in parameters?

Candidates, read from each run's final eval (summary.json) and parameter count:
- the center of an EASGD ensemble arm (`center_acc`; one member's parameters);
- the best member of each ensemble arm (the highest `member_acc`): picked on the same
  held-out split it is scored on, so its accuracy is optimistic (a selection bias the
  other candidates do not have);
- a fused arm's model (`eval_acc`; a mutant fusion is one model as wide as the members
  together, with cross-connections);
- an arm of single models.
Whole ensembles (their averaged prediction) are listed beside them for scale, with all
their members' parameters, but are not candidates: an ensemble is K models.

Each figure is the arithmetic mean over seeds with a 95% t interval; the best candidate
is the one with the highest mean, compared with every other model paired by seed (mean
of the per-seed differences in accuracy points, 95% t interval). Intervals are shown
clipped to the range the quantity can take (accuracy 0..1, a difference -1..1).
"""

from __future__ import annotations

from typing import Any

from workbench.verdict_stats import clip_interval, finite, mean_ci

SINGLE_KINDS = ("center", "best member", "fused", "single")  # candidates for "best single model"
SELECTION_NOTE = "the best member is picked on the held-out split it is scored on, so its accuracy is optimistic"


def best_single_model(loaded: dict[str, dict[int, Any]]) -> dict[str, Any] | None:
    """The section for `loaded` (arm -> seed -> workbench.verdict.RunSeries); None when no
    arm is an ensemble (nothing to compare a single model with)."""
    specs = {arm: by_seed[min(by_seed)].spec for arm, by_seed in loaded.items() if by_seed}
    if not any(_members(spec) >= 2 for spec in specs.values()):
        return None
    run_arm = {run.run_id: arm for arm, by_seed in loaded.items() for run in by_seed.values()}
    models: list[dict[str, Any]] = []
    per_seed: dict[int, dict[str, float | None]] = {}
    for arm, by_seed in loaded.items():
        spec = specs.get(arm) or {}
        members = _members(spec)
        fusion = (spec.get("fusion") or {}).get("mode", "none")
        kinds: list[tuple[str, str, str]] = []  # (model label, kind, eval key)
        if members >= 2:
            kinds.append((f"{arm} (whole ensemble of {members})", "ensemble", "eval_acc"))
            if ((spec.get("ensemble") or {}).get("coupling") or {}).get("mode") == "easgd":
                kinds.append((f"{arm} center", "center", "center_acc"))
            kinds.append((f"{arm} best member", "best member", "member_acc"))
        elif fusion != "none":
            sources = sorted({run_arm.get(run_id, run_id) for run in by_seed.values()
                              for run_id in (run.spec.get("fusion") or {}).get("runs", [])})
            kinds.append((f"{arm} ({fusion} fusion of {', '.join(sources)})", "fused", "eval_acc"))
        else:
            kinds.append((arm, "single", "eval_acc"))
        for label, kind, key in kinds:
            params = []
            for seed, run in by_seed.items():
                final = run.final_eval()
                acc = _best(final.get(key)) if key == "member_acc" else finite(final.get(key))
                per_seed.setdefault(seed, {})[label] = acc
                total = run.summary.get("params")
                if total is not None:
                    params.append(total // members if kind in ("center", "best member") else total)
            values = [per_seed[seed][label] for seed in by_seed if per_seed[seed][label] is not None]
            mean, ci = mean_ci(values)
            models.append({"model": label, "arm": arm, "kind": kind, "eval_acc": mean, "ci": clip_interval(ci, 0.0, 1.0),
                           "n": len(values),
                           "params": params[0] if len(set(params)) == 1 else (sorted(set(params)) or None)})
    singles = [m for m in models if m["kind"] in SINGLE_KINDS and m["eval_acc"] is not None]
    if not singles:
        return None
    best = max(singles, key=lambda m: m["eval_acc"])
    for model in models:
        if model is not best:
            pairs = [(s[best["model"]], s[model["model"]]) for s in per_seed.values()
                     if s.get(best["model"]) is not None and s.get(model["model"]) is not None]
            difference, ci = mean_ci(b - m for b, m in pairs)
            model["best_minus_this"] = {"difference": difference, "ci": clip_interval(ci, -1.0, 1.0), "n": len(pairs)}
    return {
        "best": best["model"],
        "models": models,
        "per_seed": [{"seed": seed, "eval_acc": figures} for seed, figures in sorted(per_seed.items())],
        "sentence": _sentence(best, models),
        "note": f"accuracy on the held-out split at the last step, mean over seeds with a 95% t interval; "
                f"differences paired by seed; {SELECTION_NOTE}",
    }


def _members(spec: dict[str, Any]) -> int:
    return int((spec.get("ensemble") or {}).get("members") or 1)


def _best(found: Any) -> float | None:
    values = [v for v in (finite(x) for x in found or []) if v is not None] if isinstance(found, list) else []
    return max(values) if values else None


def _sentence(best: dict[str, Any], models: list[dict[str, Any]]) -> str:
    """Which single model is best, and by how much over each other single model (points of accuracy)."""
    head = f"best single model: {best['model']}, {_pct(best['eval_acc'])} accuracy ({_params(best['params'])})"
    over = []
    for model in models:
        gap = model.get("best_minus_this") or {}
        if model["kind"] in SINGLE_KINDS and gap.get("difference") is not None:
            ci = gap["ci"]
            interval = f", 95% CI {_points(ci[0])} to {_points(ci[1])}" if ci else ""
            over.append(f"{_points(gap['difference'])} points over {model['model']} ({_params(model['params'])}{interval})")
    return head + ("; " + "; ".join(over) if over else "") + (f" ({SELECTION_NOTE})" if any(
        m["kind"] == "best member" for m in models) else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _params(params: Any) -> str:
    if isinstance(params, int):
        return f"{params:,} parameters"
    return "parameters " + (", ".join(f"{p:,}" for p in params) if params else "unknown")


def best_single_rows(section: dict[str, Any]) -> list[list[str]]:
    """One row per model: model, kind, accuracy, 95% CI, parameters, best minus it (points, 95% CI)."""
    rows = []
    for model in section["models"]:
        ci = model["ci"]
        gap = model.get("best_minus_this") or {}
        gap_ci = gap.get("ci")
        rows.append([
            model["model"], model["kind"], _pct(model["eval_acc"]),
            f"{_pct(ci[0])} to {_pct(ci[1])}" if ci else "-",
            f"{model['params']:,}" if isinstance(model["params"], int) else str(model["params"] or "-"),
            "best" if model["model"] == section["best"] else (
                "-" if gap.get("difference") is None else _points(gap["difference"])
                + (f" ({_points(gap_ci[0])} to {_points(gap_ci[1])})" if gap_ci else "")),
        ])
    return rows


HEADER = ("model", "kind", "accuracy", "95% CI", "parameters", "best minus it, points (95% CI)")


def best_single_table(section: dict[str, Any]):
    """The rows as a rich Table (the CLI's `study` and the Studies screen)."""
    from rich.table import Table

    table = Table(title="best single model", title_justify="left")
    for index, label in enumerate(HEADER):
        table.add_column(label, justify="left" if index < 2 else "right")
    for row in best_single_rows(section):
        table.add_row(*row)
    return table


def best_single_markdown(verdict: dict[str, Any]) -> list[str]:
    section = verdict.get("best_single")
    if not section:
        return []
    lines = ["## Best single model", "", section["sentence"] + ".", "",
             "| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in best_single_rows(section)]
    names = [m["model"] for m in section["models"]]
    lines += ["", "Per seed (accuracy on the held-out split at the last step):", "",
              "| seed | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for entry in section["per_seed"]:
        lines.append(f"| {entry['seed']} | " + " | ".join(_pct(entry["eval_acc"].get(n)) for n in names) + " |")
    lines += ["", section["note"][0].upper() + section["note"][1:] + ".", ""]
    return lines
