"""Print the requirements of pyproject.toml (base dependencies plus the named extras), one per line.

Why: the image installs dependencies in a layer of their own, from pyproject.toml alone, so that editing
the source does not reinstall them. Standard library only (it runs before anything is installed).
Usage: python3 requirements.py [EXTRA ...] < pyproject.toml
"""

import sys

import tomllib

project = tomllib.loads(sys.stdin.read())["project"]
extras = project.get("optional-dependencies", {})
unknown = [e for e in sys.argv[1:] if e not in extras]
if unknown:
    sys.exit(f"requirements.py: no extra {', '.join(unknown)} in pyproject.toml; have {', '.join(extras)}")
for req in project.get("dependencies", []) + [r for e in sys.argv[1:] for r in extras[e]]:
    print(req)
