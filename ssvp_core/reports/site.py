"""The report site of a profile, `reports/<profile>/`: one folder per page, `status.json` (how each page's last run
ended), and `index.html` with every page's status, tables and figures on one page (no JavaScript).

`publish` is how a finished page enters the site, whoever ran it (`ssvp reproduce`, or the notebook's last step in
JupyterLab): its work folder replaces the page's folder in one rename, its status is recorded, the index rebuilt.
A page that failed keeps its earlier good folder.
"""
from __future__ import annotations

import html
import json
import shutil
import time
from pathlib import Path

from .. import io
from . import SMOKE_BANNER
from .catalog import PAGES, load_manifest

TITLES = {name: spec.title for name, spec in PAGES.items()}
STATUS = "status.json"


def read_status(report_dir: Path) -> dict:
    path = Path(report_dir) / STATUS
    return json.loads(path.read_text()) if path.is_file() else {}


def record_status(report_dir: Path, name: str, entry: dict) -> dict:
    """Store one page's run in status.json (read afresh, so that concurrent writers lose nothing but a race)."""
    status = read_status(report_dir)
    status[name] = {**entry, "finished": entry.get("finished") or time.strftime("%Y-%m-%d %H:%M:%S")}
    io.write_json(Path(report_dir) / STATUS, status)
    return status


def replace_folder(work: Path, final: Path) -> None:
    """Move a finished work folder into place; the previous folder is removed only once the new one is there."""
    backup = final.parent / ".work" / f"{final.name}.old"
    shutil.rmtree(backup, ignore_errors=True)
    backup.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rename(backup)
    work.rename(final)
    shutil.rmtree(backup, ignore_errors=True)


def relocate_manifest(work: Path, final: Path) -> None:
    """The page was written into `work`; its manifest records where it will live."""
    manifest = load_manifest(work)
    if manifest is not None:
        manifest["out_dir"] = str(final)
        io.write_json(work / "manifest.json", manifest)


def publish(report_dir: Path, name: str, profile: str, work: Path, entry: dict) -> Path:
    """A page finished in `work`: put it in place as `report_dir/name`, record `entry` in status.json, rebuild the
    index. Returns the index."""
    report_dir = Path(report_dir)
    relocate_manifest(work, report_dir / name)
    replace_folder(work, report_dir / name)
    (report_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
    (report_dir / f"{name}.failed.log").unlink(missing_ok=True)
    return build_index(report_dir, profile, record_status(report_dir, name, entry))
CSS = """body{font-family:sans-serif;margin:24px;max-width:1400px}
.banner{background:#fff3cd;border:1px solid #e0b000;padding:10px;font-weight:bold}
.failed{color:#b00020}.ok{color:#1b5e20}.missing{color:#777}
table{border-collapse:collapse}td,th{padding:2px 6px}td{white-space:nowrap}img{max-width:100%;border:1px solid #ddd}
section{margin-top:28px;border-top:1px solid #ccc}"""


def _preset_banner(profile: str) -> str:
    from ..config import load_preset
    from ..errors import ConfigError

    try:
        return load_preset(profile).get("banner") or ""
    except ConfigError:  # a profile whose preset is gone still gets its index
        return ""


def build_index(report_dir: Path, profile: str, status: dict) -> Path:
    report_dir = Path(report_dir)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ssvp reports: {profile}</title><style>{CSS}</style></head><body>",
             f"<h1>SSVP reproduction: {html.escape(profile)} profile</h1>"]
    banner = SMOKE_BANNER if profile == "smoke" else _preset_banner(profile)
    if banner:
        parts.append(f"<p class='banner'>{html.escape(banner)}</p>")
    parts.append("<table border='1'><tr><th>notebook</th><th>status</th><th>seconds</th><th>finished</th><th>run by</th>"
                 "<th>error</th></tr>")
    for name in PAGES:
        st = status.get(name)
        state = st["status"] if st else "missing"
        title = html.escape(TITLES.get(name, name))
        link = f"<a href='{name}/{name}.html'>{title}</a>" if (report_dir / name / f"{name}.html").is_file() else title
        parts.append(f"<tr><td>{link}</td><td class='{state}'>{state}</td><td>{st.get('seconds', 0):.0f}</td>"
                     f"<td>{html.escape(st.get('finished', ''))}</td><td>{html.escape(st.get('run_by', 'ssvp reproduce'))}</td>"
                     f"<td class='failed'>{html.escape(st.get('error', ''))}</td></tr>"
                     if st else f"<tr><td>{link}</td><td class='missing'>not run</td><td></td><td></td><td></td><td></td></tr>")
    parts.append("</table>")
    manifests = {name: load_manifest(report_dir / name) for name in PAGES}
    summaries = [(name, m) for name, m in manifests.items() if m and m.get("summary") and (report_dir / name / m["summary"]).is_file()]
    if summaries:
        parts.append("<section id='summary'><h2>Summary: reproduced vs paper</h2>")
        for name, m in summaries:
            parts.append((report_dir / name / m["summary"]).read_text())
            parts.append(f"<p><a href='#{name}'>Full {html.escape(TITLES.get(name, name))}</a></p>")
        parts.append("</section>")
    for name in PAGES:
        manifest = manifests[name]
        if manifest is None:
            continue
        parts.append(f"<section id='{name}'><h2>{html.escape(TITLES.get(name, name))}</h2>")
        if status.get(name, {}).get("status") == "failed":
            parts.append(f"<p class='failed'>The last run failed ({html.escape(status[name]['error'])}); these are the "
                         "outputs of the last successful run.</p>")
        for note in manifest.get("notes", []):
            cls = "banner" if note in (SMOKE_BANNER, manifest.get("banner")) else ""
            parts.append(f"<p class='{cls}'>{html.escape(note)}</p>")
        if manifest.get("differences"):
            items = "".join(f"<li><b>{html.escape(d['what'])}</b> {html.escape(d['why'])}</li>" for d in manifest["differences"])
            parts.append(f"<p>What differs from the paper in this profile, and why:</p><ul>{items}</ul>")
        if manifest.get("warnings"):
            parts.append(f"<p class='missing'>{manifest['warnings']} warning(s) while computing this page: "
                         f"<a href='{name}/warnings.log'>warnings.log</a></p>")
        for t in manifest.get("tables", []):
            fragment = (report_dir / name / t["html"]).read_text() if (report_dir / name / t["html"]).is_file() else ""
            parts.append(f"<h3>{html.escape(t['title'])}</h3>{fragment}<p><a href='{name}/{t['csv']}'>CSV</a></p>")
        for f in manifest.get("figures", []):
            parts.append(f"<h3>{html.escape(f['title'])}</h3><img src='{name}/{f['png']}' alt='{html.escape(f['title'])}'>")
        parts.append("</section>")
    parts.append("</body></html>")
    return io.write_text(report_dir / "index.html", "\n".join(parts))
