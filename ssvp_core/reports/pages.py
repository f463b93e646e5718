"""A page of the report: what one notebook writes (tables as CSV + Markdown + HTML fragment, figures as PNG,
notes, and a manifest.json the report site reads), shown in the notebook as it is written, then published.

The notebooks call the steps (Study.train, Study.evaluate, the table builders, the figures) one per cell and hand
their results to the Page, which keeps what a reader sees clean: every number is shown with 2 decimals (NaN as "—";
the CSVs keep full precision), warnings and log records raised while a page is computed go to
`<out_dir>/warnings.log` (the index says how many) instead of red boxes in the notebook, and where the paper's
numbers belong to another dataset (smoke) they are a labelled reference column without a delta.
"""
from __future__ import annotations

import html as _html
import math
import os
import shutil
import time
from pathlib import Path

import pandas as pd
from IPython.display import HTML

from .. import io
from ..errors import ConfigError
from . import figures, tables
from .experiments import Study
from .formatting import MISSING, STYLE, format_number, format_p, table_html  # noqa: F401 (format_p: re-exported)
from .notebook import capture_warnings, in_kernel, show, show_markdown
from .reported import reported

class Page:
    """The output folder of one notebook: what it has written so far (tables as CSV + Markdown + HTML fragment,
    figures as PNG, notes, all listed in manifest.json), and how it reaches the report site.

    `out_dir=None` (a notebook opened in JupyterLab, or papermill without parameters): the page is written into a
    work folder, `reports/<profile>/.work/<name>.notebook/`, and `publish()` (the notebook's last step) moves it to
    `reports/<profile>/<name>/`, records the run in `status.json` and rebuilds the index, as `ssvp reproduce` does
    after a successful notebook. With an `out_dir` (what `ssvp reproduce` passes) the page is written there and the
    runner moves it into place.
    """

    def __init__(self, study: Study, name: str, out_dir: str | os.PathLike | None = None):
        from .catalog import PAGES

        if name not in PAGES:
            raise ConfigError(f"unknown page {name!r}; pages: {', '.join(PAGES)}")
        self.study, self.name = study, name
        self.final = study.reports / name
        self.publishes = out_dir is None
        self.out = Path(out_dir) if out_dir else study.reports / ".work" / f"{name}.notebook"
        if self.publishes:
            shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.manifest = {"name": name, "profile": study.name, "workspace": str(study.workspace.root), "tables": [],
                         "figures": [], "notes": [], "warnings": 0}
        self.warnings_log = self.out / "warnings.log"
        if in_kernel():
            capture_warnings(self.warnings_log, self._count_warning)
        else:
            self.warnings_log.write_text("")
        if study.banner:
            self.manifest["banner"] = study.banner
            self.note(f"**{study.banner}**")
        show_markdown(f"Workspace: `{study.workspace.root}` ({study.workspace.found_by}). Data, models and this "
                      f"page are read and written there; the page is published to `{self.final}`.")
        self._write_manifest()

    def __repr__(self) -> str:
        return f"Page({self.name!r}, profile={self.study.name!r}, out={str(self.out)!r})"

    def _write_manifest(self) -> None:
        io.write_json(self.out / "manifest.json", self.manifest)

    def _count_warning(self) -> None:
        self.manifest["warnings"] = self.manifest.get("warnings", 0) + 1
        self._write_manifest()

    # -- what the page shows -------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """A sentence shown in the notebook and on the page's section of the index."""
        self.manifest["notes"].append(text.strip("*") if text.startswith("**") else text)
        self._write_manifest()
        show_markdown(text)

    def paper(self, paper: str, table: str, **filters) -> None:
        """What the paper reports for this page (from reported.csv), shown before anything runs, with its sources."""
        rows = reported(paper, table, **filters)
        if not len(rows):
            show_markdown(f"No reported numbers of {paper} {table} are stored in `reported.csv`.")
            return
        shown = paper_view(rows)
        sources = sorted({str(s).split(", row")[0] for s in rows.source})
        show(HTML(f"<h4>{_html.escape(paper)} {_html.escape(table)}, as published</h4>{table_html(shown)}"
                  f"<p><small>Source: {_html.escape('; '.join(sources))} (ssvp_core/reports/data/reported.csv)"
                  "</small></p>"))

    def protocol(self, jobs) -> None:
        """The protocol of this run, one row per model the page needs (Study.protocol_table), saved with the page."""
        frame = self.study.protocol_table(jobs)
        self.table("protocol", "Protocol of this run", frame.set_index("method"), frame)

    def table(self, name: str, title: str, shown: pd.DataFrame, data: pd.DataFrame | None = None) -> None:
        """Save a table (CSV of `data` with full precision; Markdown and an HTML fragment of `shown` with 2 decimals)
        and show it."""
        data = shown if data is None else data
        shown = self._reference_columns(shown, data)
        io.write_text(self.out / f"{name}.csv", data.to_csv(index=False))
        io.write_text(self.out / f"{name}.md", f"### {title}\n\n"
                      + _flat(shown).to_markdown(floatfmt=".2f").replace(" nan ", f" {MISSING} ") + "\n")
        html = table_html(shown)
        # `<table>.table.html`: a table may share its page's name, whose `<page>.html` is the exported notebook
        io.write_text(self.out / f"{name}.table.html", html)
        self.manifest["tables"] = [t for t in self.manifest["tables"] if t["name"] != name]  # a re-run cell replaces
        self.manifest["tables"].append({"name": name, "title": title, "html": f"{name}.table.html", "csv": f"{name}.csv"})
        self._write_manifest()
        show(HTML(f"<h4>{_html.escape(title)}</h4>{html}"))

    def _reference_columns(self, shown: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
        """Tables without a dataset column (ablations, alignment) in a profile whose paper numbers stand beside
        another dataset: drop the deltas and label the paper columns as a reference."""
        alias = self.study.section("paper_alias") or {}
        if not alias or "dataset" in data.columns or not any(c == "paper" or "paper" in c for c in _labels(shown)):
            return shown
        label = f"paper, {', '.join(tables._title(a) for a in sorted(set(alias.values())))} (reference)"

        def rename(col):
            return label if col == "paper" else (f"{label}, std" if col == "paper_std" else col)

        if isinstance(shown.columns, pd.MultiIndex):
            keep = [c for c in shown.columns if "delta" not in c]
            shown = shown[keep]
            shown.columns = pd.MultiIndex.from_tuples([tuple(rename(x) for x in c) for c in shown.columns])
        else:
            shown = shown[[c for c in shown.columns if c != "delta"]].rename(columns=rename)
        return shown

    def figure(self, name: str, title: str, fig) -> None:
        io.save_figure(fig, self.out / f"{name}.png", dpi=110, bbox_inches="tight")
        self.manifest["figures"] = [f for f in self.manifest["figures"] if f["name"] != name]
        self.manifest["figures"].append({"name": name, "title": title, "png": f"{name}.png"})
        self._write_manifest()
        show(fig)
        figures.close(fig)

    def summary(self, fragment: str) -> None:
        """An HTML fragment the report index shows at its top (Table 1's overview)."""
        io.write_text(self.out / "summary.html", fragment)
        self.manifest["summary"] = "summary.html"
        self._write_manifest()

    def differences(self) -> None:
        """Show what differs from the paper in this profile, and why (the preset's `differences` for this page;
        `publish` records them with the page, and the index shows them)."""
        items = self.study.differences(self.name)
        if not items:
            show_markdown("Nothing in this profile is known to differ from the paper's protocol for this page.")
        else:
            show_markdown("\n".join(f"- **{d['what']}** {d['why']}" for d in items))

    def publish(self) -> None:
        """Make this page part of the report (see the class docstring)."""
        self.manifest["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.manifest["differences"] = [{"what": d["what"], "why": d["why"]} for d in self.study.differences(self.name)]
        self._write_manifest()
        if not self.publishes:
            return
        from .site import publish

        publish(self.study.reports, self.name, self.study.name, self.out,
                {"status": "ok", "error": "", "seconds": round(time.time() - self.started, 1), "key": None,
                 "run_by": "notebook kernel"})
        show_markdown(f"Published to `{self.final}`; the index is `{self.study.reports / 'index.html'}`.")


def _labels(frame: pd.DataFrame) -> list[str]:
    return [str(x) for c in frame.columns for x in (c if isinstance(c, tuple) else (c,))]


def paper_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Reported rows laid out as the paper prints them: per-class tables one row per class and a (method, metric)
    column each; the others one row per (dataset, method), whichever vary, and a column per metric (with its std
    where the paper gives one)."""
    values = ["value", "std"] if rows["std"].notna().any() else ["value"]
    if rows["cls"].nunique() > 1:
        view = rows.pivot_table(index="cls", columns=["method", "metric"], values="value", sort=False, aggfunc="first")
        return view.reindex(list(dict.fromkeys(rows.cls)))
    index = [c for c in ("dataset", "method") if rows[c].nunique() > 1] or ["method"]
    if rows.duplicated(index + ["metric"]).any():  # several tables or versions report the same cell (DAPO's abstracts)
        index = ["table"] + index
    view = rows.pivot_table(index=index, columns="metric", values=values, sort=False, aggfunc="first")
    if values == ["value"]:
        view.columns = view.columns.droplevel(0)
    else:
        view = view.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    return view


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Single-level column and index labels for Markdown."""
    out = frame.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(c) for c in col) for col in out.columns]
    if isinstance(out.index, pd.MultiIndex):
        out.index = [" / ".join(str(c) for c in idx) for idx in out.index]
    return out


def interval_note(study: Study, jobs) -> str:
    """How the tables' 95% intervals were computed (the settings of the page's first evaluation)."""
    cfg = study.config(jobs[0].model)
    return (f"95% CI: percentile bootstrap over test images ({cfg.eval.bootstrap} resamples, seed "
            f"{cfg.eval.bootstrap_seed}), stratified by class and label; each resample recomputes every class's metric "
            "on the drawn images (pixel metrics on all pixels of the drawn images) and averages over classes.")


def reference_note(frame: pd.DataFrame) -> str | None:
    """When the paper's numbers belong to another dataset than ours: say they are a reference, without deltas."""
    label = tables.paper_reference_label(frame)
    if not label:
        return None
    return (f"The column '{label}' holds the paper's published numbers for that dataset, for orientation only: the "
            "data here are another set, so no delta is computed.")


def paired_test_view(test: pd.DataFrame) -> pd.DataFrame:
    """The paired test of SSVP against the best other method, as shown: CI and p-value formatted."""
    shown = test.assign(**{tables.CI: [tables.format_ci(lo, hi) for lo, hi in zip(test.diff_ci_low, test.diff_ci_high)],
                           "p": test.p_value.map(format_p)})
    return shown.set_index(["dataset", "metric"])[["value", "best_baseline", "baseline_value", "difference", tables.CI, "p"]]


def summary_fragment(frame: pd.DataFrame, test: pd.DataFrame | None = None,
                     metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc", "pixel_aupro_legacy")) -> str:
    """Per dataset: each method's reproduced class mean (95% CI) beside the paper's, the best reproduced value of
    each metric in bold with a star, and what trained the method here (and, where it differs, what trained the
    published one); then SSVP against the best other method."""
    ref = tables.paper_reference_label(frame)
    paper_head = "paper (reference)" if ref else "paper"
    parts = []
    for ds in dict.fromkeys(frame.dataset):
        sub = frame[(frame.dataset == ds) & frame.metric.isin(metrics)]
        present = [m for m in metrics if m in set(sub.metric)]
        head = "".join(f"<th>{figures.METRIC_LABELS.get(m, m)}</th><th>{paper_head}</th>" for m in present)
        rows = []
        best = {m: sub[sub.metric == m].reproduced.max() for m in present}
        for method in dict.fromkeys(sub.method):
            cells = []
            for m in present:
                r = sub[(sub.method == method) & (sub.metric == m)].iloc[0]
                value = format_number(r.reproduced)
                if not math.isnan(r.reproduced) and r.reproduced == best[m]:
                    value = f"<b>★ {value}</b>"
                ci = "" if math.isnan(r.get("ci_low", math.nan)) else f" <small>{tables.format_ci(r.ci_low, r.ci_high)}</small>"
                cells.append(f"<td>{value}{ci}</td><td>{format_number(r.paper)}</td>")
            first = sub[sub.method == method].iloc[0]
            trained = _html.escape(str(first.get("trained_on", "")))
            published = str(first.get("paper_trained_on", trained))
            if published != trained:
                trained += f" <small>(paper: {_html.escape(published)})</small>"
            rows.append(f"<tr><td>{_html.escape(method)}</td><td>{trained}</td>{''.join(cells)}</tr>")
        title = f"{_html.escape(ds)}" + (f" (paper values: {_html.escape(tables._title(sub.paper_dataset.iloc[0]))}, "
                                         "for reference only)" if ref else "")
        parts.append(f"<h3>{title}</h3><table border='1' style='{STYLE}'><tr><th>method</th><th>trained on</th>{head}"
                     f"</tr>{''.join(rows)}</table>")
        if test is not None and len(test):
            lines = []
            for _, t in test[test.dataset == ds].iterrows():
                lines.append(f"{figures.METRIC_LABELS.get(t.metric, t.metric)}: SSVP {t.value:.2f} vs {_html.escape(t.best_baseline)} "
                             f"{t.baseline_value:.2f}, difference {t.difference:+.2f} "
                             f"(95% CI {tables.format_ci(t.diff_ci_low, t.diff_ci_high)}), "
                             f"p {format_p(t.p_value) if format_p(t.p_value).startswith('<') else '= ' + format_p(t.p_value)}")
            if lines:
                parts.append("<p>SSVP vs the best other method (paired bootstrap): " + "; ".join(lines) + ".</p>")
    parts.append("<p><small>Class means in %, ★ = best reproduced value of the column; in brackets the 95% bootstrap "
                 "CI.</small></p>")
    return "\n".join(parts)




def gpu_table(page: Page, path: str | os.PathLike) -> None:
    """The table `bench/gpu.py --out PATH` wrote, shown as a page table with its device; without one, a note on how
    to make it."""
    from .efficiency import read_gpu_table

    measured = read_gpu_table(path)
    if measured is None:
        page.note(f"No GPU measurement in {path}: on a CUDA machine, `python bench/gpu.py --out {path}` measures "
                  "every method at paper settings and this page shows its table.")
        return
    device, frame = measured
    page.table("gpu", f"GPU, paper settings ({device}; bench/gpu.py, {path})", frame.set_index(frame.columns[0]), frame)
