"""The report's figures: each a PNG (bytes) drawn with matplotlib's Agg backend, no pyplot state.

``report.write_report`` embeds them in the HTML (``report.data_uri``); the figure functions take
the curves / tables that ``report`` computed and return the PNG, so the same inputs give the same
bytes (no timestamp or software name in the PNG metadata).
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lumbarjax.eval import metrics as M

# Line colour per model name, shared by every figure.
COLORS = {"model": "#1f5fa8", "clinical logreg": "#d9822b", "clinical ridge": "#d9822b",
          "clinical GBM": "#3a9a57", "clinical-only network": "#8e44ad"}


def fmt_value(v, digits: int = 3) -> str:
    """A number as the report prints it (in the figures' legends and the HTML tables)."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "–" if not np.isfinite(v) else f"{float(v):.{digits}f}"
    return str(v)


def fig_to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi, tight box, no Software metadata: reproducible)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def fig_roc(curves: dict) -> bytes:
    """ROC curves, one panel per outcome head, as PNG bytes.

    ``curves``: ``{head: {model name: (y, p, auc)}}`` with ``y`` the 0/1 labels, ``p`` the
    predicted probabilities (same length) and ``auc`` the value printed in the legend.
    """
    heads = list(curves)
    fig = Figure(figsize=(4.2 * len(heads), 4.0))
    for i, head in enumerate(heads):
        ax = fig.add_subplot(1, len(heads), i + 1)
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
        for name, (y, p, a) in curves[head].items():
            fpr, tpr = M.roc_curve(y, p)
            ax.plot(fpr, tpr, lw=2 if name == "model" else 1.3, color=COLORS.get(name),
                    label=f"{name} (AUC {fmt_value(a)})")
        ax.set(title=head, xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1),
               ylim=(0, 1.01), aspect="equal")
        ax.legend(loc="lower right", fontsize=7)
    return fig_to_png(fig)


def fig_calibration(cals: dict) -> bytes:
    """Reliability plots, one panel per outcome head, as PNG bytes.

    ``cals``: ``{head: {model name: metrics.calibration(y, p)}}``; each bin is a point at
    (mean predicted probability, observed frequency) sized by its count, the legend gives the
    calibration slope. Models with no populated bin are left out.
    """
    heads = list(cals)
    fig = Figure(figsize=(4.2 * len(heads), 4.0))
    for i, head in enumerate(heads):
        ax = fig.add_subplot(1, len(heads), i + 1)
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--", label="ideal")
        for name, cal in cals[head].items():
            b = cal["bins"]
            if not b["count"]:
                continue
            sizes = 15 + 60 * np.asarray(b["count"]) / max(b["count"])
            ax.plot(b["mean_pred"], b["observed"], "-o", color=COLORS.get(name), lw=1.3,
                    ms=3, label=f"{name} (slope {fmt_value(cal['slope'], 2)})")
            ax.scatter(b["mean_pred"], b["observed"], s=sizes, color=COLORS.get(name),
                       alpha=0.4)
        ax.set(title=head, xlabel="predicted probability", ylabel="observed frequency",
               xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.legend(loc="upper left", fontsize=7)
    return fig_to_png(fig)


def fig_decision(dcs: dict) -> bytes:
    """Decision curves (net benefit against threshold probability), one panel per outcome head,
    as PNG bytes.

    ``dcs``: ``{head: {model name: metrics.decision_curve(y, p)}}``, every model of a head on
    the same thresholds; treat-all and treat-none are drawn from the first model's entry.
    """
    heads = list(dcs)
    fig = Figure(figsize=(4.2 * len(heads), 3.8))
    for i, head in enumerate(heads):
        ax = fig.add_subplot(1, len(heads), i + 1)
        first = next(iter(dcs[head].values()))
        t = np.asarray(first["thresholds"])
        ax.plot(t, first["treat_all"], color="#999999", lw=1, label="treat all")
        ax.plot(t, first["treat_none"], color="#333333", lw=1, ls=":", label="treat none")
        lo = -0.05
        for name, dc in dcs[head].items():
            ax.plot(t, dc["model"], color=COLORS.get(name), lw=2 if name == "model" else 1.3,
                    label=name)
        top = max(max(first["treat_all"]), max(max(d["model"]) for d in dcs[head].values()))
        ax.set(title=head, xlabel="threshold probability", ylabel="net benefit",
               ylim=(lo, max(top, 0.05) * 1.1 + 0.01))
        ax.legend(loc="best", fontsize=7)
    return fig_to_png(fig)


def fig_confusion(cm: np.ndarray) -> bytes:
    """The grader's confusion matrix as PNG bytes.

    ``cm``: (K, K) counts, rows the true grade and columns the predicted grade; each cell
    prints its count, coloured by its fraction of the row.
    """
    K = cm.shape[0]
    fig = Figure(figsize=(1.0 + 0.75 * K, 0.8 + 0.7 * K))
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=9)
    ax.set(xticks=range(K), yticks=range(K), xlabel="predicted grade", ylabel="true grade",
           title="grader confusion (row-normalised colour)")
    return fig_to_png(fig)


def fig_scatter(pairs: dict) -> bytes:
    """Predicted against observed VAS, one panel per regression head, as PNG bytes.

    ``pairs``: ``{head: (y, p)}``, (N,) arrays of observed and predicted VAS in mm (0–100);
    rows whose ``y`` is NaN are left out.
    """
    heads = list(pairs)
    fig = Figure(figsize=(4.0 * len(heads), 4.0))
    for i, head in enumerate(heads):
        ax = fig.add_subplot(1, len(heads), i + 1)
        y, p = pairs[head]
        m = np.isfinite(y)
        ax.plot([0, 100], [0, 100], color="#bbbbbb", lw=1, ls="--")
        ax.scatter(y[m], p[m], s=10, color=COLORS["model"], alpha=0.7)
        ax.set(title=head, xlabel="observed VAS (0–100)", ylabel="predicted VAS (0–100)",
               xlim=(0, 100), ylim=(0, 100), aspect="equal")
    return fig_to_png(fig)


def fig_hist(values: np.ndarray, xlabel: str, title: str) -> bytes:
    """Histogram of ``values`` (1-D; between 5 and 30 bins, about one per 3 values) as PNG
    bytes, with the given x-axis label and title."""
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(values, bins=min(30, max(5, values.size // 3)), color=COLORS["model"],
            edgecolor="white")
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    return fig_to_png(fig)
