"""mkdocs hook: the site's home page is the README and its changelog page CHANGELOG.md, and
links between them and the pages keep working on both sides (GitHub shows the files as they
are; the site gets them rewritten here, so no copy is kept by hand)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Pages whose source is a file at the repository's root.
FROM_ROOT = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
# ](docs/x.md) in a root file is ](x.md) on the site; ](../README.md) in a page is the home page.
DOCS_LINK = re.compile(r"\]\(docs/")
HOME_LINK = re.compile(r"\]\(\.\./README\.md")
# A fence's words after the language are the tests' (```python fixture:default_run, see
# conftest.py); Markdown would not read such a fence as code.
TEST_FENCE = re.compile(r"^(\s*```\w+)[ \t]+[^{\n]*$", re.MULTILINE)


def on_page_read_source(page: Any, config: Any) -> str | None:
    """The source of a page of :data:`FROM_ROOT` (its docs/ file only says so)."""
    name = FROM_ROOT.get(page.file.src_uri)
    if name is None:
        return None
    return DOCS_LINK.sub("](", (ROOT / name).read_text(encoding="utf-8"))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """A page's link to the README goes to the home page; test words leave the fences."""
    return TEST_FENCE.sub(r"\1", HOME_LINK.sub("](index.md", markdown))
