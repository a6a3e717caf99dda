"""Print the requirements of honed's core and the given extras, one per line, from pyproject.toml.

The images install these in a layer of their own before they copy honed's sources, so a change to
the sources rebuilds only the layer that installs honed itself (seconds, not minutes of wheels).
Extras that name other extras (``cpu = ["honed[onnxruntime,...]"]``) are expanded.

Usage: python requirements.py PYPROJECT EXTRA [EXTRA...]
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    found: list[str] = list(project.get("dependencies", []))
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{extra!r} is not an extra of {name} (known: {', '.join(sorted(optional))})")
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(rf"{re.escape(name)}\[([^]]+)\]", requirement.strip())
            if own:
                pending.extend(part.strip() for part in own.group(1).split(","))
            else:
                found.append(requirement)
    return list(dict.fromkeys(found))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "rb") as file:
        print("\n".join(requirements(tomllib.load(file), sys.argv[2:])))
