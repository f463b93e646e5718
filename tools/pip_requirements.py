"""Print the pip section of environment.yml, one requirement per line.

Plain-text parsing on purpose: it runs with the system Python before any package (PyYAML included) is installed.
"""
import sys
from pathlib import Path


def pip_requirements(text: str) -> list[str]:
    requirements, in_pip, pip_indent = [], False, 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if item in ("- pip:", "-pip:"):
            in_pip, pip_indent = True, indent
            continue
        if in_pip:
            if indent <= pip_indent:
                in_pip = False
            elif item.startswith("- "):
                requirements.append(item[2:].strip())
    return requirements


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "environment.yml")
    reqs = pip_requirements(path.read_text())
    if not reqs:
        sys.exit(f"{path}: no `- pip:` section found; it must list the pip requirements")
    print("\n".join(reqs))
