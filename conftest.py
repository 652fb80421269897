"""Root pytest configuration: how README.md's and docs/*.md's code fences run."""

from __future__ import annotations

from typing import Any


def pytest_markdown_docs_globals() -> dict[str, Any]:
    """Fences run as a script does (``python file.py``): ``if __name__ == "__main__":`` blocks run too."""
    return {"__name__": "__main__"}
