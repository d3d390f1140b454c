"""The evaluation report: PNG figures and one HTML page that shows them with the tables.

Figures are drawn with matplotlib (Agg backend, no display needed) from the numbers the
evaluation already computed; :func:`write_report` returns the path of ``index.html``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from interest_decay.model.metrics import calibration_curve, gains_curve  # noqa: E402

TIER_COLOURS = {"high": "#d62728", "medium": "#ff7f0e", "low": "#2ca02c"}
SECTIONS = (
    "summary",
    "cross-validation",
    "roc",
    "precision-recall",
    "calibration",
    "gains",
    "returners",
    "decay-curves",
    "half-life",
    "expected-visits",
    "visits-per-user",
    "interval-coverage",
    "decay-curves-by-decile",
    "decay-check",
    "tiers",
    "latent-space",
    "importance",
    "users",
    "comparison",
    "facts",
)


@dataclass
class ReportData:
    """Everything the report shows; built by jobs/evaluate.py."""

    title: str
    facts: dict[str, object]
    comparison: pd.DataFrame
    cross_validation: pd.DataFrame
    horizon: int  # the horizon the curves are drawn for
    labels: np.ndarray
    predictions: dict[str, np.ndarray]  # method -> P(active within `horizon`)
    probability_methods: list[str]
    curve_days: np.ndarray
    survival: np.ndarray  # users x curve_days, from the model
    tiers: np.ndarray
    half_life_days: np.ndarray
    latent_2d: np.ndarray | None
    importance: pd.DataFrame
    explained_users: pd.DataFrame
    days_to_return: np.ndarray  # per user: days until the return, inf when not back within `horizon`
    truth_tau_days: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    # Expected visits against observed by decile (model.evaluation.visits_calibration, with `days`).
    visits_calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Second-half over first-half visits by decile of interest half-life (model.evaluation.decay_check).
    decay_check: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Spearman against the true half-life by past sessions (generated data only).
    truth_by_sessions: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Per-user visits against the model's and the BTYD baselines' expectations (model.evaluated.visit_accuracy).
    visit_accuracy: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The same by the visits each user made before the date (model.evaluated.visit_accuracy_by_history).
    visit_accuracy_by_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    # How often the observed visits fall in each user's 80% interval (model.evaluated.interval_coverage).
    interval_coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Observed against predicted share still away, by decile (model.evaluated.curves_by_decile).
    decay_curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def _save(fig: plt.Figure, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def _roc(data: ReportData, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 5))
    for method, scores in data.predictions.items():
        fpr, tpr, _ = roc_curve(data.labels, scores)
        auc = data.comparison.query("method == @method and horizon_days == @data.horizon")["roc_auc"].iloc[0]
        ax.plot(fpr, tpr, label=f"{method} (AUC {auc:.3f})", lw=2 if method == "model" else 1)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, active within {data.horizon} days")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, folder, "roc.png")


def _pr(data: ReportData, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 5))
    for method, scores in data.predictions.items():
        precision, recall, _ = precision_recall_curve(data.labels, scores)
        ax.plot(recall, precision, label=method, lw=2 if method == "model" else 1)
    ax.axhline(data.labels.mean(), color="k", ls=":", lw=1, label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall, active within {data.horizon} days")
    ax.legend(fontsize=8)
    return _save(fig, folder, "precision_recall.png")


def _calibration(data: ReportData, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 5))
    for method in data.probability_methods:
        predicted, observed, _ = calibration_curve(data.labels, data.predictions[method])
        ax.plot(predicted, observed, "o-", ms=3, label=method, lw=2 if method == "model" else 1)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(
        xlabel="predicted P(active)", ylabel="observed share active", title=f"Calibration, {data.horizon} days", xlim=(0, 1), ylim=(0, 1)
    )
    ax.legend(fontsize=8)
    return _save(fig, folder, "calibration.png")


def _gains(data: ReportData, folder: Path) -> str:
    fig, (gains, lift) = plt.subplots(1, 2, figsize=(11, 4.5))
    # Targeting users at risk means ranking by the lowest P(active): gains of the inactive users.
    inactive = 1.0 - data.labels
    for method, scores in data.predictions.items():
        targeted, found = gains_curve(inactive, -scores)
        width = 2 if method == "model" else 1
        gains.plot(targeted, found, label=method, lw=width)
        lift.plot(targeted[1:], found[1:] / targeted[1:], label=method, lw=width)
    gains.plot([0, 1], [0, 1], "k:", lw=1)
    gains.set(xlabel="share of users targeted (most at risk first)", ylabel="share of the lapsed users reached", title="Cumulative gains")
    lift.axhline(1.0, color="k", ls=":", lw=1)
    lift.set(xlabel="share of users targeted", ylabel="lift over random", title="Lift")
    gains.legend(fontsize=8)
    return _save(fig, folder, "gains_lift.png")


def _returners(data: ReportData, folder: Path) -> str:
    """How many users are back d days after the as-of date: the model's sum of P(back within d)
    against the count, which is known up to the evaluated horizon."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(data.curve_days, (1.0 - data.survival).sum(axis=0), lw=2, label="model: sum of P(back within d days)")
    known = data.curve_days[data.curve_days <= data.horizon]
    ax.plot(known, [(data.days_to_return < d).sum() for d in known], "k--", lw=1.5, label="actual")
    ax.set(xlabel="days after the as-of date (d)", ylabel="users back within d days", title="Returning users, predicted and actual")
    ax.legend(fontsize=8)
    return _save(fig, folder, "returners.png")


def _decay_curves(data: ReportData, folder: Path) -> str:
    fig, (users, tiers) = plt.subplots(1, 2, figsize=(11, 4.5))
    rng = np.random.default_rng(0)
    for tier, colour in TIER_COLOURS.items():
        members = np.flatnonzero(data.tiers == tier)
        for u in rng.choice(members, size=min(3, len(members)), replace=False) if len(members) else []:
            users.plot(data.curve_days, data.survival[u], color=colour, lw=1, alpha=0.8)
        if len(members):
            mean = data.survival[members].mean(axis=0)
            tiers.plot(data.curve_days, mean, color=colour, lw=2, label=f"{tier} risk ({len(members)} users)")
    users.set(xlabel="days after the as-of date", ylabel="P(still away)", title="Decay curves of sample users (colour = tier)", ylim=(0, 1))
    tiers.set(xlabel="days after the as-of date", ylabel="mean P(still away)", title="Mean decay curve per risk tier", ylim=(0, 1))
    tiers.legend(fontsize=8)
    return _save(fig, folder, "decay_curves.png")


def _half_life(data: ReportData, folder: Path) -> str:
    with_truth = data.truth_tau_days is not None
    fig, axes = plt.subplots(1, 2 if with_truth else 1, figsize=(11 if with_truth else 6, 4.5), squeeze=False)
    finite = np.isfinite(data.half_life_days)
    axes[0, 0].hist(data.half_life_days[finite], bins=50, color="#1f77b4")
    axes[0, 0].set(
        xlabel="predicted interest half-life (days of silence until the interest left halves)",
        ylabel="users",
        title="Interest half-life distribution",
    )
    if with_truth:
        axes[0, 1].scatter(data.truth_tau_days * np.log(2), data.half_life_days, s=2, alpha=0.3)
        axes[0, 1].set(
            xscale="log",
            yscale="log",
            xlabel="true interest half-life (generator: tau ln 2)",
            ylabel="predicted",
            title="Predicted vs true interest half-life",
        )
    return _save(fig, folder, "half_life.png")


def _visits(data: ReportData, folder: Path) -> str | None:
    if data.visits_calibration.empty:
        return None
    spans = sorted(data.visits_calibration["days"].unique())
    fig, axes = plt.subplots(1, len(spans), figsize=(5.5 * len(spans), 4.5), squeeze=False)
    for ax, days in zip(axes[0], spans, strict=False):
        table = data.visits_calibration[data.visits_calibration["days"] == days]
        ax.plot(table["predicted"], table["observed"], "o-", label="deciles of the prediction")
        if "truth_expected" in table:
            ax.plot(table["predicted"], table["truth_expected"], "^--", label="what the generator's truth expects")
        top = float(max(table["predicted"].max(), table["observed"].max())) * 1.05
        ax.plot([0, top], [0, top], "k:", lw=1)
        ax.set(xlabel="predicted visits per user", ylabel="observed visits per user", title=f"Expected visits, next {days} days")
        ax.legend(fontsize=8)
    return _save(fig, folder, "expected_visits.png")


def _decay_check(data: ReportData, folder: Path) -> str | None:
    if data.decay_check.empty:
        return None
    table = data.decay_check
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(table["median_half_life_days"], table["predicted_ratio"], "o-", label="predicted (decay curve)")
    ax.plot(table["median_half_life_days"], table["observed_ratio"], "s--", label="observed")
    ax.set(
        xscale="log",
        xlabel="predicted interest half-life (decile median, days)",
        ylabel="visits later / visits sooner",
        title=f"Decay check: days {table['second_days'].iloc[0]} over days {table['first_days'].iloc[0]}",
    )
    ax.legend(fontsize=8)
    return _save(fig, folder, "decay_check.png")


def _curves_by_decile(data: ReportData, folder: Path) -> str | None:
    if data.decay_curves.empty:
        return None
    methods = list(dict.fromkeys(data.decay_curves["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4.8), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.95, 10))
    for ax, method in zip(axes[0], methods, strict=False):
        table = data.decay_curves[data.decay_curves["method"] == method]
        for decile, rows in table.groupby("decile"):
            colour = colours[int(decile) - 1]
            ax.plot(rows["day"], rows["observed_away"], "-", color=colour, lw=1.5)
            ax.plot(rows["day"], rows["predicted_away"], ":", color=colour, lw=1.5)
        by = "interest half-life" if method == "model" else "its expected visits"
        ax.set(xlabel="days after the as-of date", ylabel="share not yet back", ylim=(0, 1), title=f"{method}: deciles of {by}")
        ax.plot([], [], "k-", label="observed (Kaplan-Meier)")
        ax.plot([], [], "k:", label="predicted")
        ax.legend(fontsize=8)
    return _save(fig, folder, "decay_curves_by_decile.png")


def _latent(data: ReportData, folder: Path) -> str | None:
    if data.latent_2d is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 5))
    for tier, colour in TIER_COLOURS.items():
        members = data.tiers == tier
        ax.scatter(data.latent_2d[members, 0], data.latent_2d[members, 1], s=3, alpha=0.4, color=colour, label=tier)
    ax.set(xlabel="PC 1 of z", ylabel="PC 2 of z", title="Latent space (VAE mean), coloured by risk tier")
    ax.legend(markerscale=4, fontsize=8)
    return _save(fig, folder, "latent_space.png")


def _importance(data: ReportData, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ordered = data.importance.iloc[::-1]
    ax.barh(ordered["feature"], ordered["auc_drop"], xerr=ordered["auc_drop_sd"], color="#1f77b4")
    ax.set(xlabel="drop in ROC-AUC when shuffled", title=f"Permutation importance ({data.horizon} days)")
    return _save(fig, folder, "importance.png")


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="", border=0, classes="t")


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _image(name: str | None, alt: str, missing: str = "Not available for this model (no latent space).") -> str:
    return f'<img src="{name}" alt="{html.escape(alt)}">' if name else f"<p>{html.escape(missing)}</p>"


def _optional_table(frame: pd.DataFrame, digits: int = 3) -> str:
    return _table(frame, digits) if len(frame) else ""


# What the report calls each method (a baseline scored another way keeps its variant in brackets).
METHOD_NAMES = {
    "model": "interest-decay model",
    "recency_rule": "recency rule",
    "logistic_rfm": "logistic regression (RFM)",
    "lightgbm": "LightGBM",
    "bgnbd_expected_sessions": "BG/NBD (expected sessions)",
    "bgnbd_p_alive": "BG/NBD (P(alive))",
    "bgnbd": "BG/NBD",
    "pareto_nbd_expected_sessions": "Pareto/NBD (expected sessions)",
    "pareto_nbd_p_alive": "Pareto/NBD (P(alive))",
    "pareto_nbd": "Pareto/NBD",
}


def headline(comparison: pd.DataFrame, horizon: int) -> str:
    """One or two plain sentences: how well the model ranks and counts returners within
    ``horizon`` days against the best baseline that did not fail, with the paired interval."""
    rows = comparison[(comparison["horizon_days"] == horizon) & (comparison["status"] == "ok")].set_index("method")
    if "model" not in rows.index:
        return f"The model has no result at {horizon} days."
    model = rows.loc["model"]
    others = rows.drop(index="model")["roc_auc"].dropna()
    ranking = f"Within {horizon} days, the model ranks the users who come back with ROC-AUC {model['roc_auc']:.3f}"
    if others.empty:
        ranking += " (no baseline could be fitted)."
    else:
        best = rows.loc[others.idxmax()]
        name = METHOD_NAMES.get(best.name, best.name)
        gain, low, high = (float(best.get(k, np.nan)) for k in ("model_auc_gain", "model_auc_gain_low", "model_auc_gain_high"))
        ranking += f"; the best baseline, {name}, reaches {best['roc_auc']:.3f}"
        if np.isfinite(low) and np.isfinite(high):
            verdict = "ahead beyond the noise" if low > 0 else "behind beyond the noise" if high < 0 else "level within the noise"
            ranking += f": the model is {verdict} (difference {gain:+.3f}, 95% paired-bootstrap interval {low:+.3f} to {high:+.3f})."
        else:
            ranking += "."
    actual, predicted = model["actual_returners"], model["predicted_returners"]
    if np.isfinite(predicted) and actual > 0:
        ranking += f" It expects {predicted:,.0f} users to come back; {actual:,.0f} did ({predicted / actual - 1:+.0%})."
    return ranking


def compact_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Method x horizon: the ROC-AUC at each horizon (rounded), and the returners each method
    expects against the actual count, for the methods that give P(active)."""
    ok = comparison[comparison["status"] == "ok"]
    auc = ok.pivot_table(index="method", columns="horizon_days", values="roc_auc", sort=False)
    auc.columns = [f"AUC {h} d" for h in auc.columns]
    returners = ok.pivot_table(index="method", columns="horizon_days", values="predicted_returners", sort=False)
    returners.columns = [f"returners {h} d" for h in returners.columns]
    table = auc.round(3).join(returners.round(0))
    actual = ok[ok["method"] == "model"].set_index("horizon_days")["actual_returners"]
    actual_row = pd.DataFrame({f"returners {h} d": [n] for h, n in actual.items()}, index=["actual"])
    table = pd.concat([table, actual_row])
    table.index = [METHOD_NAMES.get(m, m) if m != "actual" else "what happened" for m in table.index]
    return table.reset_index(names="method")


def write_report(data: ReportData, folder: str | Path) -> Path:
    """Draw every figure into ``folder`` and write ``folder/index.html``; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    facts = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in data.facts.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    shown = [
        "method",
        "horizon_days",
        "status",
        "failure",
        "roc_auc",
        "pr_auc",
        "brier",
        "ece",
        "precision_top_10",
        "recall_top_10",
        "lift_top_10",
        "predicted_returners",
        "actual_returners",
        "model_auc_gain",
        "model_auc_gain_low",
        "model_auc_gain_high",
    ]
    cv = data.cross_validation
    compact = compact_table(data.comparison)
    body = [
        _section(
            "summary",
            "In short",
            f"<p class='headline'>{html.escape(headline(data.comparison, data.horizon))}</p>"
            + (f"<ul class='notes'>{notes}</ul>" if notes else "")
            + compact.to_html(
                index=False, na_rep="", border=0, classes="t", float_format=lambda v: f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
            )
            + "<p>Every method on the same users, labels and date, out of time. Returners: the users each method expects "
            "to come back (the sum of its P(active)), for the methods that give a probability. The full table, every raw "
            "figure of this run and the plots follow.</p>",
        ),
        _section(
            "cross-validation",
            "Rolling-origin cross-validation",
            _table(cv) if len(cv) else "<p>No earlier origin had enough history and fully observed labels.</p>",
        ),
        _section("roc", "ROC curves", _image(_roc(data, folder), "ROC curves")),
        _section("precision-recall", "Precision-recall curves", _image(_pr(data, folder), "precision-recall curves")),
        _section("calibration", "Calibration", _image(_calibration(data, folder), "calibration")),
        _section("gains", "Gains and lift", _image(_gains(data, folder), "gains and lift")),
        _section("returners", "Returning users over time", _image(_returners(data, folder), "returning users")),
        _section("decay-curves", "Decay curves", _image(_decay_curves(data, folder), "decay curves")),
        _section(
            "half-life",
            "Interest half-life",
            _image(_half_life(data, folder), "half-life")
            + (
                "<p>Spearman correlation with the generator's true half-life (tau ln 2), overall and by the sessions each "
                "user had before the as-of date; reference_mle is the generator's own process fitted to each user by "
                "maximum likelihood from the same history: what the data allow.</p>" + _table(data.truth_by_sessions)
                if len(data.truth_by_sessions)
                else ""
            ),
        ),
        _section(
            "expected-visits",
            "Expected visits, calibration by decile",
            _image(_visits(data, folder), "expected visits", "No future windows observed after the as-of date.")
            + _optional_table(data.visits_calibration),
        ),
        _section(
            "visits-per-user",
            "Visits per user: the model against the BTYD conditional expectations",
            _optional_table(data.visit_accuracy, 4)
            + "<p>Each user's visits within each horizon that the data cover, against each method's expectation: mean "
            "absolute error, Pearson correlation, and the totals. Pareto/NBD's and BG/NBD's are their conditional "
            "expected visits given each user's own history.</p>"
            + _optional_table(data.visit_accuracy_by_history, 3)
            + "<p>The same by the visits each user made before the date, with each group's share of the error. An "
            "expectation is the mean of a skewed count: where most users never come back (one-time buyers) the absolute "
            "error rewards predicting less than the mean, so compare the predicted and observed means there too.</p>"
            if len(data.visit_accuracy)
            else "<p>No horizon is covered by the data after the evaluation date.</p>",
        ),
        _section(
            "interval-coverage",
            "80% intervals of each user's visits",
            _optional_table(data.interval_coverage, 3)
            + "<p>How often each user's visits fall inside their 80% interval, overall and by decile of the predicted "
            "visits. Visits are whole numbers, so an interval cannot hold exactly 80%: promised is the probability the "
            "intervals do hold, which the coverage should match.</p>"
            if len(data.interval_coverage)
            else "<p>No horizon is covered by the data after the evaluation date.</p>",
        ),
        _section(
            "decay-curves-by-decile",
            "Decay curves by decile, predicted and observed",
            _image(_curves_by_decile(data, folder), "decay curves by decile", "The data end too soon after the evaluation date.")
            + "<p>Users in deciles of their predicted interest half-life (Pareto/NBD: of its own expected visits): the share "
            "not yet back after each day as observed, solid, against the mean predicted P(still away), dotted.</p>",
        ),
        _section(
            "decay-check",
            "Decay check (no truth needed)",
            _image(_decay_check(data, folder), "decay check", "Too few users with their future windows observed.")
            + "<p>Users in deciles of their predicted interest half-life: visits in the second half of the span over "
            "visits in the first half, as the decay curves predict and as observed (pooled over the decile). A decay "
            "that is right predicts the observed ratio in every decile; where little interest is left above the "
            "baseline both approach 1, and a decile with few visits is noisy.</p>" + _optional_table(data.decay_check),
        ),
        _section(
            "tiers",
            "Risk tiers",
            _table(
                pd.DataFrame(
                    [
                        {
                            "tier": t,
                            "users": int((data.tiers == t).sum()),
                            "share": float((data.tiers == t).mean()) if len(data.tiers) else 0.0,
                        }
                        for t in TIER_COLOURS
                    ]
                )
            ),
        ),
        _section("latent-space", "Latent space", _image(_latent(data, folder), "latent space")),
        _section(
            "importance", "What drives the risk (all users)", _image(_importance(data, folder), "importance") + _table(data.importance, 4)
        ),
        _section(
            "users",
            "Why these users are at risk",
            _table(data.explained_users, 3)
            + "<p>Each driver: how much P(active) would rise if that one feature were the typical user's.</p>",
        ),
        _section(
            "comparison",
            "Every metric, every method (out of time)",
            "<details><summary>The full comparison table</summary>"
            + _table(data.comparison[shown])
            + "<p>Brier, calibration error and predicted returners are left blank for the scores that rank but are no "
            "P(active within h): the recency rule, expected sessions and P(alive). model_auc_gain: the model's AUC minus "
            "the row's, with a 95% paired-bootstrap interval. A baseline that failed (its fit raised, or it gave NaN or "
            "infinity) keeps its row with the reason and no metrics; the model is judged against the others.</p></details>",
        ),
        _section(
            "facts",
            "Raw figures of this run",
            f"<details><summary>Every key this run recorded (also in its MLflow run)</summary><table class='facts'>{facts}</table></details>",
        ),
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table.t{border-collapse:collapse;font-size:13px}"
        "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}table.t td:first-child{text-align:left}img{max-width:100%}"
        "table.facts th{text-align:left;padding-right:1em}p.headline{font-size:18px;line-height:1.4}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title><style>{style}</style></head>"
    page += f"<body><h1>{html.escape(data.title)}</h1>{''.join(body)}</body></html>"
    index = folder / "index.html"
    index.write_text(page)
    # The tables behind the figures, for a notebook or a spreadsheet.
    for name, frame in (
        ("comparison", data.comparison),
        ("expected_visits", data.visits_calibration),
        ("decay_check", data.decay_check),
        ("half_life_vs_truth", data.truth_by_sessions),
        ("visit_accuracy", data.visit_accuracy),
        ("visit_accuracy_by_history", data.visit_accuracy_by_history),
        ("interval_coverage", data.interval_coverage),
        ("decay_curves_by_decile", data.decay_curves),
    ):
        if len(frame):
            frame.to_csv(folder / f"{name}.csv", index=False)
    return index
