"""Every section of the design document cited in the code exists, and no stale citation is left.

Docstrings and comments cite the design document by its path followed by section signs, e.g.
"docs/design" ".md §4" or "... §4, §6" (one path, several sections in the same sentence). This
test collects those citations from the Python files of aehg/, tools/, benchmarks/ and tests/
and checks each number against the ``## N. Title`` headings of the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "design.md"
SCANNED = ("aehg", "tools", "benchmarks", "tests")
THIS_FILE = Path(__file__).resolve()

DOC_PATH = "docs/design" + ".md"          # split so that this file holds no citation itself
HEADING = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
REFERENCE = re.compile(re.escape(DOC_PATH))
SECTION = re.compile(r"§\s*(\d+)")
# A sentence ends at . ! ? followed by white space (or the end of the text).
SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
# "DESIGN §3" or "DESIGN.md §3" (the old sketch), unless it is the document's path.
STALE_DESIGN = re.compile(r"(?<!docs/)\bDESIGN(?:\.md)?\s*§")
STALE_INTERFACES = "interfaces" + ".md"


def _python_files(*tops: str) -> list[Path]:
    files: list[Path] = []
    for top in tops:
        base = ROOT / top
        if base.is_dir():
            files += [p for p in sorted(base.rglob("*.py"))
                      if "__pycache__" not in p.parts and p.resolve() != THIS_FILE]
    return files


def _sentence(text: str) -> str:
    """``text`` up to the end of its first sentence."""
    end = SENTENCE_END.search(text)
    return text if end is None else text[:end.start()]


def _references(path: Path) -> Iterator[tuple[int, int]]:
    """(line number, section number) of every citation in ``path``.

    The sections are the ``§N`` after the path in the rest of its sentence on the same line;
    when the line ends right after the path (a wrapped docstring), the next line continues it.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        for ref in REFERENCE.finditer(line):
            rest = _sentence(line[ref.end():])
            lineno = i + 1
            if not rest.strip() and i + 1 < len(lines):
                rest = _sentence(lines[i + 1].strip().lstrip("#").strip())
                lineno = i + 2
            for sec in SECTION.finditer(rest):
                yield lineno, int(sec.group(1))


def _headings() -> list[int]:
    return [int(n) for n in HEADING.findall(DOC.read_text(encoding="utf-8"))]


def test_design_doc_headings_are_numbered_in_order():
    numbers = _headings()
    assert numbers, f"{DOC.relative_to(ROOT)}: no '## N. Title' heading"
    assert numbers == list(range(1, len(numbers) + 1)), (
        f"{DOC.relative_to(ROOT)}: headings numbered {numbers}, expected 1..{len(numbers)}")


def test_every_cited_section_exists():
    sections = set(_headings())
    found, missing = 0, []
    for path in _python_files(*SCANNED):
        for lineno, number in _references(path):
            found += 1
            if number not in sections:
                missing.append(f"{path.relative_to(ROOT)}:{lineno}: §{number}")
    assert found > 0, f"no '{DOC_PATH} §N' citation found under {', '.join(SCANNED)}"
    assert not missing, (f"citations of sections missing from {DOC_PATH} (it has "
                         f"{sorted(sections)}):\n" + "\n".join(missing))


def test_no_stale_design_citations_in_the_package():
    stale = []
    for path in _python_files("aehg"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if STALE_DESIGN.search(line) or STALE_INTERFACES in line:
                stale.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not stale, (f"cite '{DOC_PATH} §N' instead of 'DESIGN §N' or "
                       f"'{STALE_INTERFACES}':\n" + "\n".join(stale))
