"""The docs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli.docs import DOCS, FILES
from core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("name", sorted(FILES))
def test_generated_docs_are_current(name):
    assert (DOCS / name).read_text() == FILES[name](), f"run `python -m cli.docs` to refresh docs/{name}"


def test_every_setting_is_in_the_readme_table():
    readme = README.read_text()
    for field in Settings.model_fields.values():
        variable = field.validation_alias.choices[0]
        assert f"`{variable}`" in readme, f"{variable} is not documented in README.md"


def test_every_path_the_docs_name_exists():
    """README.md and docs/ name files and folders of this repository only, and those exist."""
    root = README.parent
    texts = [README, *sorted((root / "docs").rglob("*.md"))]
    missing = []
    for doc in texts:
        for path in re.findall(r"`((?:core|service|workers|cli|sdk|tests|bench|examples|docs|k8s)/[\w./-]*)`",
                               doc.read_text()):
            if not (root / path.rstrip("/")).exists():
                missing.append(f"{doc.name}: {path}")
        assert "../shared" not in doc.read_text(), f"{doc.name} names a file outside the repository"
    assert not missing, missing
