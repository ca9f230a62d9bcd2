"""Every Markdown file of the repository links only to what the repository has.

Each relative link (``[text](path)``, ``![alt](path)``, ``[id]: path``, ``href``/``src`` in HTML)
resolves to a file or folder inside the repository, and its ``#anchor``, if any, to a heading of
the target (GitHub's slugs) or an ``<a id|name>``; a link may not leave the repository
(``../shared/...``) or be an absolute path; and no text names a path of the machine the docs were
written on (``/work/...``, ``/root/...``, ``/tmp/...``, ``/home/...``). External ``http(s)://``
and ``mailto:`` links are allowed and not fetched. Code (fenced blocks, inline code) holds no
links, but a machine path in it still counts.

The checker is tested on small trees written to a temporary directory, so it is known to bite.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folders that are not the repository's own text (installed packages, caches, runtime state).
SKIPPED = {
    ".git",
    ".venv",
    ".tools",
    ".meridian",
    "node_modules",
    "test-artifacts",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "dist",
    "build",
}
EXTERNAL = ("http://", "https://", "mailto:")

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_ANCHOR = re.compile(r"""<a\s[^>]*\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
_MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(?:work|root|tmp|home)(?=/|[\s)\]\"'`>]|$)")


def markdown_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*.md")):
        parts = path.relative_to(root).parts
        if not any(part in SKIPPED for part in parts[:-1]):
            found.append(path)
    return found


def _without_code(text: str) -> str:
    """``text`` with fenced blocks and inline code blanked (line numbers kept)."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match[0])

    return _INLINE_CODE.sub(blank, _FENCE.sub(blank, text))


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line, target) of each link in Markdown ``text``, code excluded."""
    prose = _without_code(text)
    for pattern in (_INLINE_LINK, _REFERENCE, _HTML):
        for match in pattern.finditer(prose):
            yield prose.count("\n", 0, match.start()) + 1, match[1]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text in lower case, punctuation dropped,
    spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in ("L", "N", "M"))
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors a Markdown file offers: its headings' slugs (repeats numbered as GitHub does)
    and its HTML anchors."""
    text = path.read_text(encoding="utf-8")
    prose = _FENCE.sub("", text)
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(prose):
        base = slug(match[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found | set(_ANCHOR.findall(prose)))


@dataclass(frozen=True)
class Broken:
    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


def check_file(path: Path, root: Path) -> list[Broken]:
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(root).as_posix()
    broken = [
        Broken(
            name, text.count("\n", 0, m.start()) + 1, f"names a path outside the repository: {m[0]}"
        )
        for m in _MACHINE_PATH.finditer(text)
    ]
    for line, target in links(text):
        problem = _check_link(path, root, target)
        if problem:
            broken.append(Broken(name, line, f"{target}: {problem}"))
    return broken


def _check_link(path: Path, root: Path, target: str) -> str | None:
    if target.lower().startswith(EXTERNAL):
        return None
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
        return "not a relative link or an http(s) URL"
    location, _, fragment = target.partition("#")
    if location.startswith("/"):
        return "an absolute path; link relative to this file"
    resolved = (path.parent / location).resolve() if location else path
    if not resolved.is_relative_to(root.resolve()):
        return "points outside the repository"
    if not resolved.exists():
        return "no such file or folder"
    if fragment:
        if resolved.suffix != ".md" or resolved.is_dir():
            return None  # GitHub's line anchors (#L10) and the like: not checked
        if fragment not in anchors(resolved):
            return f"no heading or anchor #{fragment} in {resolved.relative_to(root.resolve())}"
    return None


def check_tree(root: Path) -> list[Broken]:
    return [b for path in markdown_files(root) for b in check_file(path, root)]


# The repository -----------------------------------------------------------------------------------


def test_the_docs_named_in_the_readme_exist() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in markdown_files(ROOT)}
    expected = {"README.md", "CONTRIBUTING.md", "BENCHMARKS.md", "docs/architecture.md"}
    assert expected <= files, f"missing: {sorted(expected - files)}"


def test_every_link_of_the_repositorys_markdown_resolves() -> None:
    broken = check_tree(ROOT)
    assert not broken, "\n".join(str(b) for b in broken)


# The checker --------------------------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


GOOD = {
    "README.md": (
        "# Meridian\n\n## Read on\n\nSee [the docs](docs/guide.md#the-cli-meridian-up), "
        "[again](docs/guide.md#the-cli-meridian-up-1), [a folder](docs), [here](#read-on), "
        "[Go](https://example.com/x), <https://example.com>, "
        '![logo](docs/logo.png "Logo") and [ref][r].\n\n[r]: docs/guide.md\n\n'
        "```sh\ncat [x](missing.md)\n```\n\nInline `[x](missing.md)` is code.\n"
    ),
    "docs/guide.md": (
        "# Guide\n\n## The CLI: `meridian up`\n\n## The CLI: `meridian up`\n\n"
        '<a id="custom"></a>\n\n[back](../README.md) [custom](#custom) [source](../src/a.py#L3)\n'
    ),
    "docs/logo.png": "",
    "src/a.py": "",
    ".venv/lib/pkg/README.md": "[broken](nowhere.md) in an installed package: not ours",
}


def test_a_tree_with_good_links_passes(tmp_path: Path) -> None:
    assert check_tree(_tree(tmp_path, GOOD)) == []


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("[x](docs/missing.md)", 4, "no such file or folder"),
        ("[x](docs/guide.md#no-such-heading)", 4, "no heading or anchor #no-such-heading"),
        ("[x](#nowhere)", 4, "no heading or anchor #nowhere"),
        ("[x](../shared/STYLE.md)", 4, "points outside the repository"),
        ("[x](../../outside.md)", 4, "points outside the repository"),
        ("[x](/docs/guide.md)", 4, "an absolute path"),
        ("[x](file:///etc/hosts)", 4, "not a relative link"),
        ("[ref]\n\n[ref]: docs/gone.md", 6, "no such file or folder"),
        ('<img src="docs/gone.png">', 4, "no such file or folder"),
        ("Run `cat /root/notes.txt` first", 4, "outside the repository: /root"),
        ("Logs are in /tmp/meridian.", 4, "outside the repository: /tmp"),
        ("```\ncd /work/main\n```", 5, "outside the repository: /work"),
    ],
)
def test_the_checker_finds_a_broken_link(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    root = _tree(tmp_path, {**GOOD, "README.md": f"# Meridian\n\nFirst line.\n{text}\n"})
    broken = check_tree(root)
    assert len(broken) == 1, broken
    assert problem in broken[0].problem
    assert (broken[0].file, broken[0].line) == ("README.md", line)


def test_a_machine_path_in_a_link_is_named_twice(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**GOOD, "README.md": "# M\n\n[x](/work/main/docs/guide.md)\n"})
    problems = sorted(b.problem for b in check_tree(root))
    assert len(problems) == 2
    assert "an absolute path" in problems[0]
    assert "outside the repository: /work" in problems[1]


def test_paths_that_only_look_like_machine_paths_pass(tmp_path: Path) -> None:
    text = "gs://B/tmp, projects/P/locations/L/workflows/W, `meridian/embedded/workflows`, ~/tmp"
    root = _tree(tmp_path, {**GOOD, "README.md": f"# Meridian\n\n{text}\n"})
    assert check_tree(root) == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Read on", "read-on"),
        ("The CLI: `meridian up`", "the-cli-meridian-up"),
        ("Answering, retries and the retry schedule", "answering-retries-and-the-retry-schedule"),
        ("`MERIDIAN_HOST` and [ports](x.md)", "meridian_host-and-ports"),
        ("Commands answer `202 Accepted`", "commands-answer-202-accepted"),
        ("Ports & adapters", "ports--adapters"),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
