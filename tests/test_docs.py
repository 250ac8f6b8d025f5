"""The README is a user's guide read in five minutes: short, starting with the two commands, every link live."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    first_block = text[text.index("```"):text.index("```", text.index("```") + 3)]
    assert "make repro" in first_block and "make test" in first_block


def test_every_link_in_the_user_facing_pages_resolves():
    for page in (README, ROOT / "docker" / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
