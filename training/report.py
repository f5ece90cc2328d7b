"""Render the evaluation report as rich tables (the CLI prints them; nothing here reads files)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("auc", "ROC AUC", "{:.3f}"),
    ("pr_auc", "PR AUC", "{:.3f}"),
    ("log_loss", "log-loss", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("lift_top_decile", "lift@10%", "{:.2f}"),
    ("deals", "deals", "{:.0f}"),
    ("snapshots", "snapshots", "{:.0f}"),
)
LABELS = {
    "model": "model (LightGBM + LR blend, calibrated)",
    "stage_table": "CRM stage table",
    "logistic_regression": "logistic regression",
}


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


INTERVAL_KEYS = ("auc", "log_loss", "brier", "ece")  # the columns that carry a 90% deal-bootstrap interval
INTERVAL_CAPTION = "(low-high): 90% interval from resampling deals (200 times); only a difference outside it is more than luck"


def _cell(block: dict, key: str, pattern: str, prefix: str = "") -> str:
    """A metric, with its interval in brackets when the block has one: ``0.846 (0.831-0.860)``."""
    value = block.get(f"{prefix}{key}")
    low, high = block.get(f"{prefix}{key}_ci90_low"), block.get(f"{prefix}{key}_ci90_high")
    if value is None or key not in INTERVAL_KEYS or low is None or high is None:
        return _fmt(value, pattern)
    return f"{pattern.format(value)} ({pattern.format(low)}-{pattern.format(high)})"


def render_metric_table(report: dict, target: str) -> Table:
    """One table per target: model and baselines on the test period, then the truth comparison.

    AUC, log-loss, Brier and ECE carry their 90% deal-bootstrap intervals.
    """
    title = (
        f"{target} model - test: deals created {report['split']['test_start'][:10]} .. {report['split']['end'][:10]}, "
        "per-deal weighted (each snapshot weighs 1/snapshots of its deal)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("predictor")
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    block = report[target]
    weight = report.get("linear_weight", {}).get(target)
    method = (report.get("calibration", {}).get(target) or {}).get("method")
    captions = []
    if weight is not None:
        calibrated = {"isotonic": "then calibrated (isotonic)", "platt": "then calibrated (Platt)",
                      "none": "not recalibrated (the raw blend did best on held-out validation deals)"}.get(method, "then calibrated")
        captions.append(f"model = {1 - weight:.1f} x LightGBM + {weight:.1f} x logistic regression (log-odds), {calibrated}")
    captions.append(INTERVAL_CAPTION)
    table.caption = "\n".join(captions)
    for name in ("model", "stage_table", "logistic_regression"):
        if name in block:
            table.add_row(LABELS[name], *(_cell(block[name], k, p) for k, _, p in COLUMNS))
    truth = block.get("truth")
    if truth and "auc" in truth:
        table.add_section()
        table.add_row("truth (generator's probability), each weekly point weighs 1", *(_cell(truth, k, p) for k, _, p in COLUMNS))
        for name, label in (("model", "model on the same truth points"), ("stage_table", "stage table on the truth points")):
            if f"{name}_auc" in truth:
                table.add_row(label, *(_cell(truth, k, p, f"{name}_") if k not in ("deals", "snapshots") else _fmt(truth.get(k), p)
                                       for k, _, p in COLUMNS))
    return table


def _interval(block: dict, key: str, pattern: str) -> str:
    return f"{_fmt(block.get(f'{key}_ci90_low'), pattern)} .. {_fmt(block.get(f'{key}_ci90_high'), pattern)}"


def _verdict(block: dict, key: str) -> str:
    low, high = block.get(f"{key}_ci90_low"), block.get(f"{key}_ci90_high")
    if low is None or high is None:
        return "no interval"
    if low > 0:
        return "ahead beyond luck"
    if high < 0:
        return "behind beyond luck"
    return "within luck"


def render_leads(report: dict, target: str) -> str:
    """One line per baseline: how far the model is ahead of it, with the 90% interval and what that means."""
    lines = []
    for baseline, label in (("stage_table", "the CRM stage table"), ("logistic_regression", "the logistic regression")):
        lead = report.get(target, {}).get(f"lead_over_{baseline}")
        if not lead:
            continue
        lines.append(
            f"{target} model ahead of {label}: AUC {_fmt(lead.get('auc'), '{:+.3f}')} (90% {_interval(lead, 'auc', '{:+.3f}')}: "
            f"{_verdict(lead, 'auc')}), Brier {_fmt(lead.get('brier'), '{:+.4f}')} (90% {_interval(lead, 'brier', '{:+.4f}')}: "
            f"{_verdict(lead, 'brier')})"
        )
    return "\n".join(lines)


def render_truth_gap(report: dict, target: str = "win") -> str:
    """One line: the model's AUC and Brier gap to the generator's truth on the same points, with intervals."""
    truth = report.get(target, {}).get("truth") or {}
    if truth.get("model_auc_gap") is None:
        return ""
    by_deal, creation = truth.get("by_deal") or {}, truth.get("at_creation") or {}
    return (
        f"{target} gap to the truth on {truth['snapshots']:.0f} truth points of {truth['deals']:.0f} test deals "
        f"(each weekly point weighs 1): AUC {truth['model_auc_gap']:+.3f} (90% {_interval(truth, 'model_auc_gap', '{:+.3f}')}), "
        f"Brier {_fmt(truth.get('model_brier_gap'), '{:+.4f}')} (90% {_interval(truth, 'model_brier_gap', '{:+.4f}')}); "
        f"each deal weighing 1: AUC {_fmt(by_deal.get('model_auc_gap'), '{:+.3f}')}; "
        f"at creation ({_fmt(creation.get('deals'), '{:.0f}')} deals): AUC {_fmt(creation.get('model_auc_gap'), '{:+.3f}')}"
    )


def render_forecast_table(report: dict) -> Table:
    """Monthly forecast: expected won amount per predictor against the amount actually won."""
    forecast = report["forecast"]
    names = [n for n in ("model", "stage_table", "truth") if f"{n}_mean_abs_error_pct" in forecast]
    table = Table(
        title="forecast by close month (test period): sum of weight x win probability x amount vs won amount",
        title_justify="left",
    )
    table.add_column("month")
    table.add_column("won amount", justify="right")
    for name in names:
        table.add_column(f"{name}", justify="right")
        table.add_column(f"{name} err %", justify="right")
    for month in forecast["months"]:
        table.add_row(
            month["month"], f"{month['actual_won']:,.0f}",
            *[cell for n in names for cell in (f"{month[n]:,.0f}", _fmt(month.get(f"{n}_error_pct"), "{:+.1f}"))],
        )
    table.add_section()
    table.add_row("mean |error| %", "", *[c for n in names for c in ("", _fmt(forecast[f"{n}_mean_abs_error_pct"], "{:.1f}"))])
    table.add_row("sum |error| / won %", "", *[c for n in names for c in ("", _fmt(forecast[f"{n}_wape_pct"], "{:.1f}"))])
    table.add_row("total error %", "", *[c for n in names for c in ("", _fmt(forecast[f"{n}_total_error_pct"], "{:+.1f}"))])
    return table


def render_slice_table(report: dict, target: str = "win") -> Table:
    """AUC and Brier per slice (stage, segment, deal type) for the model and the baselines."""
    table = Table(title=f"{target} model by slice (per-deal weighted)", title_justify="left")
    for header in ("slice", "value", "deals", "model AUC", "stage AUC", "LR AUC", "model Brier", "stage Brier", "LR Brier"):
        table.add_column(header, justify="right" if header not in ("slice", "value") else "left")
    for column, values in report.get("slices", {}).get(target, {}).items():
        for value, block in values.items():
            table.add_row(
                column, value, _fmt(block["model"].get("deals"), "{:.0f}"),
                *(_fmt(block.get(n, {}).get("auc"), "{:.3f}") for n in ("model", "stage_table", "logistic_regression")),
                *(_fmt(block.get(n, {}).get("brier"), "{:.4f}") for n in ("model", "stage_table", "logistic_regression")),
            )
    return table


def render_leak_check(report: dict) -> str:
    """One line: the strongest single feature and the win model's AUC against their leak-alarm thresholds."""
    check = report.get("leak_check") or {}
    limits = check.get("thresholds") or {}
    if not limits:
        return ""
    return (
        f"leak check: strongest single feature {check.get('strongest_feature')} AUC "
        f"{_fmt(check.get('max_single_feature_auc'), '{:.3f}')} on the training snapshots (alarm above "
        f"{limits['max_single_feature_auc']}); win model test AUC {_fmt(check.get('win_test_auc'), '{:.3f}')} "
        f"(alarm above {limits['max_win_auc']}); alarms: {len(report.get('leak_alarms', []))}"
    )


def render_report(report: dict) -> Group:
    """Everything ``dealrisk train`` prints after training."""
    parts = []
    for target in ("win", "slip"):
        if target not in report:
            continue
        parts.append(render_metric_table(report, target))
        parts.extend(line for line in (render_leads(report, target), render_truth_gap(report, target)) if line)
    if report.get("slices"):
        parts.append(render_slice_table(report, "win"))
    if report.get("forecast"):
        parts.append(render_forecast_table(report))
    if render_leak_check(report):
        parts.append(render_leak_check(report))
    return Group(*parts)


def print_report(report: dict, console: Console | None = None) -> None:
    """Print the evaluation tables."""
    (console or Console()).print(render_report(report))
