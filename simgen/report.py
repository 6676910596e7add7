r"""One self-contained HTML report of a run: figures embedded as base64 PNG, no external files or scripts.

Build it from primitives — :meth:`Report.section`, :meth:`Report.add_text`, :meth:`Report.add_figure` (or
:meth:`Report.add_png` for a saved image), :meth:`Report.add_table`, :meth:`Report.add_verdict` — or from the
run-level helpers, each adding one optional section with its figures, tables and verdicts (what ``simgen run`` /
``simgen report`` write):

=============================  ==============================================================================
helper                         section
=============================  ==============================================================================
``add_data``                   the simulations: counts, θ ranges, example x (maps gallery or histograms)
``add_training``               loss curves and the training summary
``add_posterior``              corner plot of posterior draws for one observation (truth, reference, C2ST)
``add_calibration``            SBC ranks and expected coverage (HPD/TARP), with their verdicts
``add_posterior_predictive``   the posterior predictive check
``add_likelihood_comparison``  an emulator vs the simulator: table, histograms or maps and power spectra
=============================  ==============================================================================

Example::

    report = Report("two_moons, NPE flow")
    report.add_training(history)
    report.add_posterior(samples, x_obs=x_obs, truth=theta_true)
    report.add_calibration(sbc=diagnostics.sbc(post, theta, x), coverage=diagnostics.coverage(post, theta, x))
    report.write("simgen-out/report.html")
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .utils import as_tensor

__all__ = ["Report"]

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #3b6ea5; padding-bottom: .2em; }
h2 { color: #3b6ea5; border-bottom: 1px solid #ddd; margin-top: 2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: .9em; color: #555; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #eef3f8; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; }
.flag { color: #b00020; font-weight: bold; } .ok { color: #1b7f3b; font-weight: bold; }
nav ul { columns: 2; } footer { margin-top: 3em; font-size: .8em; color: #777; }
"""


@dataclass
class _Section:
    title: str
    blocks: list[str] = field(default_factory=list)


def _format(value: Any, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}g}"
    try:  # 0-d tensors and numpy scalars
        return _format(float(value), digits) if getattr(value, "ndim", 1) == 0 else str(value)
    except (TypeError, ValueError):
        return str(value)


def _slug(title: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-") or "section"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


class Report:
    """A report under construction; :meth:`write` renders it to one HTML file.

    Every ``add_*`` method returns ``self`` (calls chain). Content added before the first :meth:`section` goes
    into an untitled introduction.

    Args:
        title: the page's title.
        subtitle: a line under it (e.g. the configuration file).
    """

    def __init__(self, title: str, *, subtitle: str = "") -> None:
        self.title = str(title)
        self.subtitle = str(subtitle)
        self.sections: list[_Section] = [_Section("")]
        self.num_figures = 0

    # ----------------------------------------------------------------------------------------- primitives
    def section(self, title: str) -> Report:
        """Start a new section titled ``title``; later content goes into it."""
        if not str(title).strip():
            raise ValueError("a section needs a non-empty title")
        self.sections.append(_Section(str(title)))
        return self

    def _add(self, block: str) -> Report:
        self.sections[-1].blocks.append(block)
        return self

    def add_text(self, text: str, *, preformatted: bool = False) -> Report:
        """A paragraph (blank lines split paragraphs), HTML-escaped; ``preformatted`` keeps line breaks and
        spacing in a monospace block."""
        if preformatted:
            return self._add(f"<pre>{html.escape(str(text))}</pre>")
        paragraphs = [p.strip() for p in str(text).split("\n\n") if p.strip()]
        return self._add("".join(f"<p>{html.escape(p)}</p>" for p in paragraphs))

    def add_verdict(self, flagged: bool, text: str) -> Report:
        """A one-line verdict, red when ``flagged`` (a test rejects), green otherwise."""
        cls, word = ("flag", "FLAGGED") if flagged else ("ok", "OK")
        return self._add(f'<p><span class="{cls}">{word}</span> {html.escape(str(text))}</p>')

    def add_figure(self, fig: Figure, caption: str = "", *, dpi: int = 100, close: bool = True) -> Report:
        """Embed a matplotlib figure as a base64 PNG (closed afterwards unless ``close=False``)."""
        if not isinstance(fig, Figure):
            raise ValueError(f"add_figure takes a matplotlib Figure; got {type(fig).__name__}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        if close:
            plt.close(fig)
        return self.add_png(buffer.getvalue(), caption)

    def add_png(self, png: bytes | str | os.PathLike[str], caption: str = "") -> Report:
        """Embed a PNG image as is, given as bytes or as a file path (e.g. a figure a run saved earlier)."""
        data = png if isinstance(png, bytes) else Path(png).read_bytes()
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("add_png takes PNG data (bytes or a .png file); the data given is not a PNG")
        self.num_figures += 1
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption or f"figure {self.num_figures}", quote=True)
        encoded = base64.b64encode(data).decode("ascii")
        return self._add(f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt}">{cap}</figure>')

    def add_table(
        self,
        rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]] | Mapping[str, Any],
        *,
        header: Sequence[str] | None = None,
        caption: str = "",
        digits: int = 4,
    ) -> Report:
        """A table from a list of dicts (keys: the header), a list of rows with ``header``, or one dict (two
        columns: name, value). Floats are shown with ``digits`` significant digits; cells are HTML-escaped."""
        if isinstance(rows, Mapping):
            header = list(header) if header is not None else ["", "value"]
            rows = [[k, v] for k, v in rows.items()]
        rows = list(rows)
        if rows and isinstance(rows[0], Mapping):
            keys: list[str] = list(header) if header is not None else []
            if header is None:
                for r in rows:
                    keys.extend(k for k in r if k not in keys)
            header, body = keys, [[r.get(k) for k in keys] for r in rows]
        else:
            body = [list(r) for r in rows]
            width = len(header) if header is not None else (len(body[0]) if body else 0)
            if any(len(r) != width for r in body):
                raise ValueError(f"every row must have {width} cells (the header's)")
        head = "" if not header else "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v, digits))}</td>" for v in r) + "</tr>"
                        for r in body)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        return self._add(f"<table>{cap}{head}{cells}</table>")

    # ----------------------------------------------------------------------------------------- run sections
    def add_data(
        self,
        theta: Any,
        x: Any,
        *,
        parameter_names: Sequence[str] | None = None,
        description: str = "",
        num_failed: int | None = None,
        x_kind: str | None = None,
    ) -> Report:
        """Section "Data": counts, per-parameter ranges of θ ``[n, d_theta]``, and example simulations x
        ``[n, *x_shape]``: a gallery for maps (``x_kind="map"``, or rows of two or more axes when ``x_kind`` is
        not given), per-observable histograms for vectors, the histogram of all values otherwise."""
        from . import plots

        theta, x = as_tensor(theta, "theta"), as_tensor(x, "x")
        if theta.dim() != 2 or x.shape[0] != theta.shape[0]:
            raise ValueError(f"theta must be [n, d_theta] and x [n, *x_shape] with one n; got {list(theta.shape)} "
                             f"and {list(x.shape)}")
        names = list(parameter_names) if parameter_names is not None else [
            f"theta_{i + 1}" for i in range(theta.shape[1])]
        self.section("Data")
        summary = f"{theta.shape[0]} simulations; θ has {theta.shape[1]} dimensions, x rows {list(x.shape[1:])}."
        if num_failed:
            summary += f" {num_failed} failed simulations were left out."
        self.add_text((description + "\n\n" if description else "") + summary)
        self.add_table([{"parameter": n, "min": float(theta[:, i].min()), "mean": float(theta[:, i].mean()),
                         "max": float(theta[:, i].max())} for i, n in enumerate(names)])
        if x_kind == "map" or (x_kind is None and x.dim() >= 3):
            self.add_figure(plots.maps(x[:6], num=6), "example simulations")
        else:
            self.add_figure(plots.histograms(x[:, :16] if x.dim() == 2 else x), "simulated observables")
        return self

    def add_training(self, history: Any, *, name: str = "Training") -> Report:
        """Section ``name``: loss curves and a table of epochs, best validation loss and wall time, for a
        :class:`~simgen.TrainingHistory` (or a mapping name → history)."""
        from . import plots

        runs = dict(history) if isinstance(history, Mapping) and "train_loss" not in history else {"": history}
        self.section(name)
        self.add_figure(plots.loss_curves(history), "training (dashed) and validation (solid) losses")
        rows = []
        for label, h in runs.items():
            get = (lambda k, h=h: h.get(k)) if isinstance(h, Mapping) else (lambda k, h=h: getattr(h, k, None))
            best = get("best_epoch")
            rows.append({"model": label or "model", "epochs": get("epochs"),
                         "best epoch": "initial state" if best == -1 else best,
                         "best validation loss": get("best_validation_loss"), "stopped early": get("stopped_early"),
                         "train rows": get("num_train"), "wall time (s)": get("wall_time")})
        return self.add_table(rows)

    def add_posterior(
        self,
        samples: Any,
        *,
        x_obs: Any = None,
        truth: Any = None,
        reference: Any = None,
        labels: Sequence[str] | None = None,
        c2st: float | None = None,
        name: str = "Posterior",
    ) -> Report:
        """Section ``name``: corner plot of posterior draws ``[n, d_theta]`` (or a mapping name → draws) for one
        observation, with the true θ and reference draws when known, and a table of posterior means and
        standard deviations; ``c2st`` (against the reference) is reported when given."""
        from . import plots

        self.section(name)
        if x_obs is not None:
            obs = as_tensor(x_obs, "x_obs").reshape(-1)
            shown = ", ".join(f"{v:.4g}" for v in obs[:10].tolist()) + (", …" if obs.numel() > 10 else "")
            self.add_text(f"Observation x_obs ({obs.numel()} values): {shown}")
        sets = dict(samples) if isinstance(samples, Mapping) else {"posterior": samples}
        self.add_figure(plots.corner(sets, reference=reference, truth=truth, labels=labels),
                        "posterior marginals (contours: 68 % and 95 % highest-density regions)")
        first = as_tensor(next(iter(sets.values())), "samples")
        names = list(labels) if labels is not None else [f"theta_{i + 1}" for i in range(first.shape[1])]
        t = None if truth is None else as_tensor(truth, "truth").reshape(-1)
        rows = []
        for i, n in enumerate(names):
            row: dict[str, Any] = {"parameter": n, "mean": float(first[:, i].mean()), "std": float(first[:, i].std())}
            if t is not None:
                row["truth"] = float(t[i])
            rows.append(row)
        self.add_table(rows)
        if c2st is not None:
            self.add_text(f"C2ST against the reference posterior: {c2st:.3f} (0.5: indistinguishable)")
        return self

    def add_calibration(self, *, sbc: Any = None, coverage: Any = None, labels: Sequence[str] | None = None,
                        name: str = "Calibration") -> Report:
        """Section ``name``: SBC rank histograms (:func:`simgen.diagnostics.sbc`) and expected coverage
        (:func:`simgen.diagnostics.coverage`), each with its verdict; either may be omitted."""
        from . import plots

        if sbc is None and coverage is None:
            raise ValueError("add_calibration needs sbc= and/or coverage= results")
        self.section(name)
        if sbc is not None:
            self.add_verdict(sbc.flagged, sbc.summary())
            self.add_figure(plots.sbc_ranks(sbc, labels=labels), "SBC ranks (grey: band under uniformity)")
        if coverage is not None:
            self.add_verdict(coverage.flagged, coverage.summary())
            self.add_figure(plots.coverage(coverage), "expected coverage (below the diagonal: over-confident)")
        return self

    def add_posterior_predictive(self, result: Any, *, name: str = "Posterior predictive check") -> Report:
        """Section ``name`` for a :class:`simgen.diagnostics.PosteriorPredictiveResult`."""
        from . import plots

        self.section(name)
        self.add_verdict(result.flagged, result.summary())
        x = as_tensor(result.x, "x")
        obs = as_tensor(result.x_obs, "x_obs")[None]
        if x.dim() >= 3:
            self.add_figure(plots.maps({"observed": obs, "predictive": x}, num=1 if x.shape[0] < 2 else 4),
                            "the observation and posterior-predictive simulations")
        else:
            fig = plots.histograms({"predictive": x[:, :16]})
            for j, ax in enumerate(a for a in fig.axes if a.get_visible()):
                ax.axvline(float(obs[0, j]), color="k", lw=1.2)
            self.add_figure(fig, "posterior-predictive simulations (black: the observation)")
        return self

    def add_likelihood_comparison(self, comparison: Any, *, name: str = "Emulator vs simulator",
                                  max_theta: int = 2) -> Report:
        """Section ``name`` for a :class:`simgen.diagnostics.LikelihoodComparison`: verdict, per-θ table (C2ST,
        MMD², W1, likelihood gap), and for the first ``max_theta`` θ rows the histograms of each observable, or
        for maps the galleries and power spectra."""
        from . import plots

        self.section(name)
        self.add_verdict(comparison.flagged, comparison.summary())
        self.add_table(comparison.table())
        if comparison.is_map and comparison.statistics:
            self.add_table([{"statistic": s.name, "max |z|": s.max_abs_z}
                            for s in comparison.statistics.values()],
                           caption="two-sample z-scores of the mean summary statistics")
        for i in range(min(max_theta, comparison.theta.shape[0])):
            theta = ", ".join(f"{v:.3g}" for v in comparison.theta[i].tolist())
            sim, emu = comparison.simulated[i], comparison.emulated[i]
            if comparison.is_map:
                self.add_figure(plots.maps(sim, emu), f"θ = ({theta}): simulated (top) and emulated maps")
                self.add_figure(plots.power_spectra(sim, emu), f"θ = ({theta}): power spectra")
            else:
                flat = (sim.reshape(sim.shape[0], -1), emu.reshape(emu.shape[0], -1))
                self.add_figure(plots.histograms(*flat), f"θ = ({theta}): each observable, simulated vs emulated")
        return self

    def add_emulator_comparison(self, comparison: Any, **options: Any) -> Report:
        """Deprecated name of :meth:`add_likelihood_comparison`."""
        warnings.warn("Report.add_emulator_comparison is deprecated; use add_likelihood_comparison",
                      DeprecationWarning, stacklevel=2)
        return self.add_likelihood_comparison(comparison, **options)

    # ----------------------------------------------------------------------------------------- output
    def html(self) -> str:
        """The report as one HTML document."""
        from ._version import __version__

        taken: set[str] = set()
        nav, body = [], []
        for s in self.sections:
            if not s.title:
                body.extend(s.blocks)
                continue
            slug = _slug(s.title, taken)
            nav.append(f'<li><a href="#{slug}">{html.escape(s.title)}</a></li>')
            body.append(f'<section id="{slug}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>')
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        contents = f"<nav><ul>{''.join(nav)}</ul></nav>" if len(nav) > 1 else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}{contents}{''.join(body)}"
            f"<footer>written by simgen {html.escape(__version__)} on {stamp}</footer></body></html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report to ``path`` (parent folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.html(), encoding="utf-8")
        os.replace(tmp, path)
        return path
