"""Remove outputs, execution counts and kernel metadata from the stored notebooks (notebooks/*.ipynb), or with --check
list those that hold any and exit 1. JupyterLab started by `make lab` already saves them stripped (jupyter_server_config.py);
this is for notebooks edited or run elsewhere. As a git hook: `ln -s ../../tools/pre-commit .git/hooks/pre-commit`.
"""
import argparse
import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def has_outputs(nb: dict) -> bool:
    """Outputs, execution counts, or the metadata a kernel adds (its language_info) that stored notebooks omit."""
    return (any(c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None)
                for c in nb.get("cells", []))
            or set(nb.get("metadata", {}).get("language_info", {})) - {"name"} != set())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only list notebooks with outputs; exit 1 if any")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        if not has_outputs(nb):
            continue
        dirty.append(path)
        if not args.check:  # the package (and its dependencies) only when a notebook is rewritten
            sys.path.insert(0, str(NOTEBOOKS.parent))
            from ssvp_core.reports.notebook import strip_outputs

            path.write_text(json.dumps(strip_outputs(nb), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    for path in dirty:
        print(f"{path}: {'has outputs' if args.check else 'outputs removed'}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
