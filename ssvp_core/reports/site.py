"""reports/<profile>/index.html: every notebook's status, tables and figures on one page (no JavaScript)."""
from __future__ import annotations

import html
from pathlib import Path

from .. import io
from . import SMOKE_BANNER
from .pages import PAGES, load_manifest

TITLES = {
    "table1": "Table 1: comparison with the state of the art", "table2": "Table 2: MVTec-AD per class",
    "table3": "Table 3: component ablation", "table4": "Table 4: semantic-visual alignment",
    "table5": "Table 5: auxiliary visual backbone", "qualitative": "Figures 3-5: qualitative results",
    "tsne": "Figure 6: t-SNE of prompt embeddings", "sensitivity": "Figures 7-8: sensitivity to gamma and xi",
    "efficiency": "Efficiency (not in the paper)", "vip2clip": "ViP2-CLIP's tables", "dapo": "DAPO's tables (multi-type segmentation)",
}
CSS = """body{font-family:sans-serif;margin:24px;max-width:1400px}
.banner{background:#fff3cd;border:1px solid #e0b000;padding:10px;font-weight:bold}
.failed{color:#b00020}.ok{color:#1b5e20}.missing{color:#777}
table{border-collapse:collapse}td,th{padding:2px 6px}img{max-width:100%;border:1px solid #ddd}
section{margin-top:28px;border-top:1px solid #ccc}"""


def _preset_banner(profile: str) -> str:
    from ..errors import ConfigError
    from .experiments import section

    try:
        return section(profile, "banner") or ""
    except ConfigError:  # a profile whose preset is gone still gets its index
        return ""


def build_index(report_dir: Path, profile: str, status: dict) -> Path:
    report_dir = Path(report_dir)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ssvp reports: {profile}</title><style>{CSS}</style></head><body>",
             f"<h1>SSVP reproduction: {html.escape(profile)} profile</h1>"]
    banner = SMOKE_BANNER if profile == "smoke" else _preset_banner(profile)
    if banner:
        parts.append(f"<p class='banner'>{html.escape(banner)}</p>")
    parts.append("<table border='1'><tr><th>notebook</th><th>status</th><th>seconds</th><th>finished</th><th>error</th></tr>")
    for name in PAGES:
        st = status.get(name)
        state = st["status"] if st else "missing"
        link = f"<a href='{name}/{name}.html'>{html.escape(TITLES.get(name, name))}</a>" if (report_dir / name / f"{name}.html").is_file() else html.escape(TITLES.get(name, name))
        parts.append(f"<tr><td>{link}</td><td class='{state}'>{state}</td><td>{st.get('seconds', 0):.0f}</td>"
                     f"<td>{html.escape(st.get('finished', ''))}</td><td class='failed'>{html.escape(st.get('error', ''))}</td></tr>"
                     if st else f"<tr><td>{link}</td><td class='missing'>not run</td><td></td><td></td><td></td></tr>")
    parts.append("</table>")
    for name in PAGES:
        manifest = load_manifest(report_dir / name)
        if manifest is None:
            continue
        parts.append(f"<section id='{name}'><h2>{html.escape(TITLES.get(name, name))}</h2>")
        if status.get(name, {}).get("status") == "failed":
            parts.append(f"<p class='failed'>The last run failed ({html.escape(status[name]['error'])}); these are the "
                         "outputs of the last successful run.</p>")
        for note in manifest.get("notes", []):
            cls = "banner" if note in (SMOKE_BANNER, manifest.get("banner")) else ""
            parts.append(f"<p class='{cls}'>{html.escape(note)}</p>")
        for t in manifest.get("tables", []):
            fragment = (report_dir / name / t["html"]).read_text() if (report_dir / name / t["html"]).is_file() else ""
            parts.append(f"<h3>{html.escape(t['title'])}</h3>{fragment}<p><a href='{name}/{t['csv']}'>CSV</a></p>")
        for f in manifest.get("figures", []):
            parts.append(f"<h3>{html.escape(f['title'])}</h3><img src='{name}/{f['png']}' alt='{html.escape(f['title'])}'>")
        parts.append("</section>")
    parts.append("</body></html>")
    return io.write_text(report_dir / "index.html", "\n".join(parts))
