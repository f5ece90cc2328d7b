"""What drives wins in one export: the tables and figures of ``notebooks/01-win-drivers.ipynb``.

Two kinds of view. Of the raw export: win rate by the furthest stage a deal reached, days spent in
each stage by won and lost deals, and win rate against decision-chain coverage at the training
snapshots. Of a model bundle: its strongest SHAP drivers and how each one's contribution moves
with its value, and the open deals ranked by risk. The notebook only wires these together, so
everything it shows is tested here and cannot drift from the packages.

Tables are pure functions of frames. An export without the table a view needs (a deals-only
export has no ``stage_history``) gives an empty table whose ``attrs["note"]`` says what is
missing, and its plot shows that note instead of failing: the notebook runs top to bottom on
whatever the export has. Figures are ``matplotlib.figure.Figure`` objects not registered with
pyplot, so a notebook shows each exactly once, nothing accumulates across cells, and no backend
is switched; matplotlib (~0.4 s to import) is imported when the first figure is drawn.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.contract.schema import OPEN_STAGES, Export
from features.model.contributions import model_contributions
from features.model.explain import explain_scores
from features.model.grades import RISK_LEVELS
from features.model.predict import encode_bundle_matrix
from features.pointintime.definitions import FEATURE_NAMES
from features.pointintime.pipeline import build_features, select_open_deals
from features.pointintime.snapshots import export_end
from features.pointintime.state import FeatureState
from training.pipeline import TrainingData

DAY = pd.Timedelta(days=1)
CLOSED_OUTCOMES = ("won", "lost")
MISSING_LABEL = "missing"
OUTCOME_COLOURS = {"won": "tab:green", "lost": "tab:red"}
RISK_COLOURS = {"high": "tab:red", "medium": "tab:orange", "low": "tab:green"}


def _empty(columns: list[str], note: str) -> pd.DataFrame:
    """An empty table whose ``attrs["note"]`` says why there is nothing to show."""
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    frame.attrs["note"] = note
    return frame


def _closed_deals(export: Export) -> pd.DataFrame:
    deals = export.deals
    closed = deals["outcome"].isin(CLOSED_OUTCOMES).to_numpy() & deals["closed_at"].notna().to_numpy()
    return deals.loc[closed, ["deal_id", "outcome", "closed_at"]].reset_index(drop=True)


# --- the raw export ----------------------------------------------------------------------------


def win_rate_by_stage_reached(export: Export) -> pd.DataFrame:
    """Closed deals that reached at least each open stage, how many of them were won, and the rate.

    "Reached" is the furthest open stage in the deal's stage history (a deal that went back a step
    still reached the stage it left). Read it as the funnel's conversion: of the deals that got to
    ``propose``, this share was eventually won. Closed deals with no open-stage entry are left out.

    >>> from features.contract.schema import Export
    >>> t = pd.Timestamp("2025-01-01", tz="UTC")
    >>> deals = pd.DataFrame({"deal_id": ["a", "b"], "outcome": ["won", "lost"], "closed_at": [t, t]})
    >>> history = pd.DataFrame({"deal_id": ["a", "a", "b"], "stage": ["identify", "propose", "identify"],
    ...                         "entered_at": [t, t, t]})
    >>> win_rate_by_stage_reached(Export(deals=deals, stage_history=history))["win_rate"].to_dict()
    {'identify': 0.5, 'qualify': 1.0, 'propose': 1.0, 'negotiate': nan, 'contract': nan}
    """
    columns = ["reached", "won", "win_rate"]
    if export.stage_history is None:
        return _empty(columns, "win rate by stage reached needs stage_history, which this export does not have")
    closed = _closed_deals(export)
    history = export.stage_history
    history = history.loc[history["deal_id"].isin(closed["deal_id"]).to_numpy() & history["stage"].isin(OPEN_STAGES).to_numpy()]
    if history.empty:
        return _empty(columns, "no closed deal has an open stage in stage_history")
    order = history["stage"].map({stage: i for i, stage in enumerate(OPEN_STAGES)}).astype(int)
    furthest = order.groupby(history["deal_id"].to_numpy()).max()
    won = furthest.index.map(closed.set_index("deal_id")["outcome"]).to_numpy() == "won"
    rows = []
    for i, stage in enumerate(OPEN_STAGES):
        reached = furthest.to_numpy() >= i
        n, w = int(reached.sum()), int((reached & won).sum())
        rows.append({"stage": stage, "reached": n, "won": w, "win_rate": w / n if n else float("nan")})
    return pd.DataFrame(rows).set_index("stage")


def stage_durations(export: Export) -> pd.DataFrame:
    """Days each closed deal spent in each open stage, with its outcome: one row per (deal, stage).

    A stage lasts from its entry to the deal's next stage entry (the last one to ``closed_at``);
    a stage entered twice counts both visits.

    >>> from features.contract.schema import Export
    >>> t = pd.Timestamp("2025-01-01", tz="UTC")
    >>> deals = pd.DataFrame({"deal_id": ["a"], "outcome": ["won"], "closed_at": [t + 10 * DAY]})
    >>> history = pd.DataFrame({"deal_id": ["a"] * 4, "stage": ["identify", "propose", "identify", "won"],
    ...                         "entered_at": [t, t + 2 * DAY, t + 5 * DAY, t + 10 * DAY]})
    >>> stage_durations(Export(deals=deals, stage_history=history))
      deal_id outcome     stage  days
    0       a     won  identify   7.0
    1       a     won   propose   3.0
    """
    columns = ["deal_id", "outcome", "stage", "days"]
    if export.stage_history is None:
        return _empty(columns, "stage durations need stage_history, which this export does not have")
    closed = _closed_deals(export).set_index("deal_id")
    history = export.stage_history
    history = history.loc[history["deal_id"].isin(closed.index).to_numpy()].sort_values(
        ["deal_id", "entered_at"], kind="stable"
    )
    ends = history.groupby("deal_id", sort=False)["entered_at"].shift(-1)
    ends = ends.fillna(history["deal_id"].map(closed["closed_at"]))
    history = history.assign(days=((ends - history["entered_at"]) / DAY).astype(float))
    history = history.loc[history["stage"].isin(OPEN_STAGES).to_numpy()]
    if history.empty:
        return _empty(columns, "no closed deal has an open stage in stage_history")
    days = history.groupby(["deal_id", "stage"], sort=True)["days"].sum().reset_index()
    days.insert(1, "outcome", days["deal_id"].map(closed["outcome"]).astype(str))
    return days[columns]


def win_rate_by(data: TrainingData, feature: str, cap: int | None = None) -> pd.DataFrame:
    """Per-deal weighted win rate of the labelled snapshots by the value of one feature.

    Snapshots are the training data's (every side), so each deal is seen at several moments; each
    snapshot weighs ``data.rows["weight"]`` (1 / snapshots of its deal), so a long deal counts no
    more than a short one. Values at or above ``cap`` are pooled as ``"{cap}+"``; a missing value
    (the table the feature needs is not in the export) is its own row, ``missing``. ``deals``
    counts the deals with a snapshot in the row: a deal whose coverage grew is in several rows.

    >>> rows = pd.DataFrame({"deal_id": list("aabc"), "won": [1.0, 1.0, 0.0, 0.0], "weight": [0.5, 0.5, 1, 1]})
    >>> data = TrainingData(plan=None, state=None, rows=rows, feature_names=["roles_engaged_30d"],
    ...                     features=pd.DataFrame({"roles_engaged_30d": [2.0, 3.0, 0.0, np.nan]}))
    >>> win_rate_by(data, "roles_engaged_30d", cap=2)
      roles_engaged_30d  deals  snapshots  win_rate
    0                 0      1          1       0.0
    1                2+      1          2       1.0
    2           missing      1          1       0.0
    """
    columns = [feature, "deals", "snapshots", "win_rate"]
    if feature not in data.features.columns:
        return _empty(columns, f"feature {feature} is not in the training data")
    labelled = data.rows["won"].notna().to_numpy()
    rows = data.rows.loc[labelled].reset_index(drop=True)
    values = pd.to_numeric(data.features.loc[labelled, feature], errors="coerce").reset_index(drop=True)
    if rows.empty:
        return _empty(columns, "no labelled snapshot")
    capped = values if cap is None else values.clip(upper=cap)
    order = capped.fillna(np.inf)  # missing sorts last
    labels = capped.map(lambda v: MISSING_LABEL if pd.isna(v) else (f"{v:g}+" if cap is not None and v >= cap else f"{v:g}"))
    weight = rows["weight"].to_numpy(float)
    frame = pd.DataFrame({"label": labels, "order": order, "deal_id": rows["deal_id"],
                          "weight": weight, "won_weight": weight * rows["won"].to_numpy(float)})
    table = frame.groupby(["order", "label"], sort=True).agg(
        deals=("deal_id", "nunique"), snapshots=("deal_id", "size"), weight=("weight", "sum"), won=("won_weight", "sum")
    ).reset_index()
    table["win_rate"] = table["won"] / table["weight"]
    table = table.rename(columns={"label": feature})
    return table[columns].reset_index(drop=True)


def overall_win_rate(data: TrainingData) -> float:
    """Per-deal weighted win rate of all labelled snapshots: the line ``win_rate_by``'s rows compare with.

    >>> rows = pd.DataFrame({"won": [1.0, 1.0, 0.0, np.nan], "weight": [0.5, 0.5, 1.0, 1.0]})
    >>> overall_win_rate(TrainingData(plan=None, state=None, rows=rows, features=pd.DataFrame(), feature_names=[]))
    0.5
    """
    labelled = data.rows["won"].notna().to_numpy()
    rows = data.rows.loc[labelled]
    return float(np.average(rows["won"].to_numpy(float), weights=rows["weight"].to_numpy(float))) if len(rows) else float("nan")


# --- a model bundle ----------------------------------------------------------------------------


def with_feature_state(export: Export, data: TrainingData, state: FeatureState) -> TrainingData:
    """The same labelled snapshots with their features rebuilt under another fitted state.

    A champion loaded from the registry was fitted with its own feature state (win-rate history,
    won-deal stage benchmarks, segment amounts); scoring this export's snapshots with it needs
    those features, not the ones fitted for a fresh training run. Features the training data
    leaves out (not in ``data.feature_names``: their table or history is missing from the export)
    stay missing in every row, as ``prepare_training_data`` left them.
    """
    features = build_features(export, data.rows[["deal_id", "as_of"]], state).reset_index(drop=True)
    left_out = [name for name in features.columns if name in FEATURE_NAMES and name not in data.feature_names]
    features = features.assign(**{name: data.features[name].array for name in left_out})
    return replace(data, state=state, features=features)


def sample_contributions(
    bundle, data: TrainingData, size: int = 500, seed: int = 0, side: str = "test", target: str = "win"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """SHAP contributions of a random sample of one side's snapshots: (contributions, matrix, names).

    The contributions are the ones serving explains with (TreeSHAP of the booster blended with the
    linear half's exact terms, log-odds before calibration), on the bundle's encoded matrix.
    """
    _, features = data.side(side)
    if features.empty:
        raise ValueError(f"training data: no {side} snapshots to explain")
    sample = features.sample(n=min(size, len(features)), random_state=seed)
    matrix = encode_bundle_matrix(bundle, sample)
    return model_contributions(bundle, matrix, target), matrix, list(bundle.features["names"])


def rank_drivers(contributions: np.ndarray, names: list[str], top: int | None = None) -> pd.DataFrame:
    """Features by mean |SHAP contribution| (log-odds), strongest first, with their share of the total.

    >>> rank_drivers(np.array([[0.1, -2.0], [0.3, 1.0]]), ["a", "b"])
      feature  mean_abs_contribution  share
    0       b                    1.5  0.882
    1       a                    0.2  0.118
    """
    strength = np.abs(np.asarray(contributions, dtype=float)).mean(axis=0)
    if strength.shape != (len(names),):
        raise ValueError(f"contributions have {strength.shape[0]} columns but {len(names)} names were given")
    total = strength.sum()
    table = pd.DataFrame({"feature": names, "mean_abs_contribution": strength,
                          "share": np.round(strength / total if total > 0 else np.zeros_like(strength), 3)})
    table = table.sort_values("mean_abs_contribution", ascending=False, kind="stable").reset_index(drop=True)
    return table if top is None else table.head(top)


def score_open_deals(export: Export, bundle, as_of=None) -> pd.DataFrame:
    """Explained scores (``features.model.explain.explain_scores``) of the deals open at ``as_of``.

    ``as_of`` defaults to the export's end (``features.pointintime.snapshots.export_end``): the deals
    still open when the export was taken, scored with the bundle's own fitted feature state, as the
    service would score them.
    """
    when = export_end(export) if as_of is None else as_of
    points = select_open_deals(export, when)
    features = build_features(export, points, FeatureState.from_dict(bundle.feature_state))
    return explain_scores(bundle, features)


def at_risk_table(explained: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """The ``top`` open deals most at risk: high risk level first, then the largest value at risk.

    ``main_risk`` is the deal's strongest factor lowering its win probability, in words; ``warnings``
    the codes of the rules that fired.

    >>> explained = pd.DataFrame({"deal_id": ["a", "b", "c"], "amount": [10.0, 50.0, 90.0],
    ...     "win_probability": [0.1, 0.5, 0.9], "slip_probability": [0.8, 0.4, 0.1], "grade": ["D", "B", "A"],
    ...     "risk_level": ["high", "medium", "low"], "value_at_risk": [9.0, 25.0, 9.0],
    ...     "factors_down": [[{"sentence": "No activity for 30 days"}], [], []],
    ...     "warnings": [[{"code": "no_activity"}], [], []]})
    >>> at_risk_table(explained, top=2)[["deal_id", "risk_level", "main_risk", "warnings"]].to_numpy().tolist()
    [['a', 'high', 'No activity for 30 days', 'no_activity'], ['b', 'medium', '', '']]
    """
    rank = explained["risk_level"].map({level: i for i, level in enumerate(RISK_LEVELS)}).fillna(len(RISK_LEVELS))
    order = pd.DataFrame({"rank": rank.to_numpy(), "var": -explained["value_at_risk"].to_numpy(float)})
    chosen = order.sort_values(["rank", "var"], kind="stable").index[:top]
    picked = explained.iloc[chosen]
    return pd.DataFrame({
        "deal_id": picked["deal_id"].to_numpy(),
        "amount": picked["amount"].to_numpy(float),
        "win_probability": picked["win_probability"].to_numpy(float).round(3),
        "slip_probability": picked["slip_probability"].to_numpy(float).round(3),
        "grade": picked["grade"].to_numpy(),
        "risk_level": picked["risk_level"].to_numpy(),
        "value_at_risk": picked["value_at_risk"].to_numpy(float).round(0),
        "main_risk": [factors[0]["sentence"] if factors else "" for factors in picked["factors_down"]],
        "warnings": [", ".join(w["code"] for w in warnings) for warnings in picked["warnings"]],
    })


# --- figures -----------------------------------------------------------------------------------


def _figure(width: float, height: float, panels: int = 1, columns: int | None = None):
    """A figure of ``panels`` axes, ``columns`` to a row (all in one row by default), each about
    ``width`` x ``height`` inches, not registered with pyplot (see the module docstring); unused
    axes of the last row are hidden."""
    from matplotlib.figure import Figure  # ~0.4 s: see the module docstring

    panels = max(panels, 1)
    columns = min(columns or panels, panels)
    rows = -(-panels // columns)
    fig = Figure(figsize=(width * columns, height * rows))
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel())
    for spare in axes[panels:]:
        spare.set_visible(False)
    return fig, axes[:panels]


def _noted(ax, frame: pd.DataFrame, title: str) -> bool:
    """Write the table's note on an empty panel; True when there was nothing to plot."""
    if not frame.empty:
        return False
    ax.text(0.5, 0.5, frame.attrs.get("note", "nothing to show"), ha="center", va="center", wrap=True)
    ax.set(title=title, xticks=[], yticks=[])
    return True


def plot_win_rate_by_stage(table: pd.DataFrame):
    """Bars: win rate of closed deals by the furthest stage reached, with the deal count on each."""
    fig, (ax,) = _figure(7, 4.2)
    title = "Win rate by furthest stage reached (closed deals)"
    if not _noted(ax, table, title):
        x = np.arange(len(table))
        ax.bar(x, table["win_rate"], color="tab:blue")
        for xi, (rate, n) in enumerate(zip(table["win_rate"], table["reached"])):
            ax.annotate(f"{rate:.0%}\nof {n:,}", (xi, rate), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, table.index)
        ax.set(ylim=(0, 1.15), ylabel="won / reached", title=title)
    fig.tight_layout()
    return fig


def plot_stage_durations(durations: pd.DataFrame):
    """Box plots of days spent in each open stage, won deals beside lost ones (outliers not drawn)."""
    fig, (ax,) = _figure(8, 4.5)
    title = "Days in each stage: won vs lost deals (closed deals)"
    if not _noted(ax, durations, title):
        stages = [s for s in OPEN_STAGES if s in set(durations["stage"])]
        for offset, outcome in ((-0.2, "won"), (0.2, "lost")):
            groups = [durations.loc[(durations["stage"] == s).to_numpy() & (durations["outcome"] == outcome).to_numpy(), "days"]
                      for s in stages]
            present = [i for i, g in enumerate(groups) if len(g)]
            if not present:
                continue
            parts = ax.boxplot([groups[i].to_numpy() for i in present], positions=np.array(present) + offset,
                               widths=0.35, showfliers=False, patch_artist=True)
            for box in parts["boxes"]:
                box.set(facecolor=OUTCOME_COLOURS[outcome], alpha=0.45)
            ax.plot([], [], color=OUTCOME_COLOURS[outcome], linewidth=8, alpha=0.45, label=outcome)
        ax.set_xticks(np.arange(len(stages)), stages)
        ax.set(ylabel="days in stage", title=title)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_win_rate_by(tables: dict[str, pd.DataFrame], overall: float | None = None):
    """One bar panel per table of ``win_rate_by``: win rate by value, deals counted on each bar."""
    fig, axes = _figure(5.0, 4.2, panels=len(tables))
    for ax, (feature, table) in zip(axes, tables.items()):
        title = f"Win rate by {feature}"
        if _noted(ax, table, title):
            continue
        x = np.arange(len(table))
        ax.bar(x, table["win_rate"], color="tab:purple")
        for xi, (rate, n) in enumerate(zip(table["win_rate"], table["deals"])):
            ax.annotate(f"{n:,} deals", (xi, rate), ha="center", va="bottom", fontsize=8)
        if overall is not None:
            ax.axhline(overall, color="grey", linestyle=":", label=f"all deals {overall:.0%}")
            ax.legend(loc="upper left")
        ax.set_xticks(x, table[feature])
        ax.set(ylim=(0, 1.05), xlabel=feature, ylabel="win rate (per-deal weighted)", title=title)
    fig.tight_layout()
    return fig


def plot_dependence(contributions: np.ndarray, matrix: np.ndarray, names: list[str], features: list[str],
                    categorical: dict[str, list[str]] | None = None):
    """SHAP dependence: each feature's value against its contribution, one panel per feature.

    Numbers are drawn at their value; categories at their level (jittered so rows do not hide each
    other); missing values in a separate column at the left, labelled ``missing``, because what a
    missing table or an empty history does to the score is part of the story.
    """
    categorical = categorical or {}
    contributions = np.asarray(contributions, dtype=float)
    unknown = [f for f in features if f not in names]
    if unknown:
        raise ValueError(f"features {unknown} are not among the model's features")
    fig, axes = _figure(5.0, 3.8, panels=len(features), columns=2)
    rng = np.random.default_rng(0)
    for ax, feature in zip(axes, features):
        j = names.index(feature)
        x, y = matrix[:, j].astype(float), contributions[:, j]
        missing = np.isnan(x)
        levels = categorical.get(feature)
        if levels is not None:
            shown = x[~missing] + rng.uniform(-0.25, 0.25, int((~missing).sum()))
            ax.set_xticks(np.arange(len(levels)), levels, rotation=30, ha="right")
            left = -1.0
        else:
            shown = x[~missing]
            span = (np.nanmax(x) - np.nanmin(x)) if (~missing).any() else 1.0
            left = (np.nanmin(x) if (~missing).any() else 0.0) - 0.15 * (span or 1.0)
        ax.scatter(shown, y[~missing], s=6, alpha=0.5, color="tab:blue")
        if missing.any():
            ax.scatter(np.full(int(missing.sum()), left), y[missing], s=6, alpha=0.5, color="tab:grey")
            ax.annotate(MISSING_LABEL, (left, float(np.max(y[missing]))), ha="center", va="bottom", fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel=feature, ylabel="SHAP contribution (log-odds)", title=feature)
    fig.tight_layout()
    return fig


def plot_at_risk(table: pd.DataFrame):
    """Horizontal bars of value at risk of the deals of ``at_risk_table``, coloured by risk level."""
    fig, (ax,) = _figure(8, 0.35 * max(len(table), 3) + 1.2)
    title = "Open deals most at risk (value at risk = amount x (1 - win probability))"
    if not _noted(ax, table, title):
        y = np.arange(len(table))[::-1]
        ax.barh(y, table["value_at_risk"], color=[RISK_COLOURS.get(level, "tab:grey") for level in table["risk_level"]])
        labels = [f"{deal}  (win {p:.0%})" for deal, p in zip(table["deal_id"], table["win_probability"])]
        ax.set_yticks(y, labels, fontsize=8)
        from matplotlib.patches import Patch  # matplotlib is loaded by now (_figure)

        ax.legend(handles=[Patch(color=colour, label=level) for level, colour in RISK_COLOURS.items()],
                  title="risk level", loc="lower right")
        ax.set(xlabel="value at risk", title=title)
    fig.tight_layout()
    return fig
