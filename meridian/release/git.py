"""The repository as the release plan reads it: tags, the diff between two revisions, and the
files of a revision, all through the ``git`` command (subprocess), never the working tree.

Reading a revision's files rather than the checkout lets a plan be computed for any two tags from
any checkout; ``git cat-file --batch`` reads them all through one process.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class GitError(RuntimeError):
    """A git command failed; the message is git's own."""


@dataclass(frozen=True)
class Repository:
    root: Path

    def git(self, *args: str, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["git", "-C", str(self.root), *args], input=stdin, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def resolve(self, ref: str) -> str:
        """The commit ``ref`` names."""
        return self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()

    def previous_tag(self, ref: str, pattern: str) -> str | None:
        """The newest tag matching ``pattern`` (a glob: ``v*``, ``prod-v*``) on ``ref``'s history,
        other than one on ``ref`` itself: the last release before ``ref``; None before the first."""
        head = self.resolve(ref)
        tags = self.git("tag", "--list", pattern, "--merged", head, "--sort=-v:refname").decode()
        for tag in tags.split():
            if self.resolve(tag) != head:
                return tag
        return None

    def changed_files(self, old: str, new: str) -> list[str]:
        """Every path added, changed, removed or renamed (both names) between two revisions."""
        out = self.git("diff", "--name-only", "--no-renames", f"{old}", f"{new}", "--")
        return sorted(set(out.decode().splitlines()))

    def read(self, ref: str, paths: Iterable[str]) -> dict[str, str]:
        """The text of each of ``paths`` at ``ref``; a path missing there is left out."""
        wanted = list(paths)
        if not wanted:
            return {}
        request = "".join(f"{ref}:{p}\n" for p in wanted).encode()
        out = self.git("cat-file", "--batch", stdin=request)
        found: dict[str, str] = {}
        at = 0
        for path in wanted:
            end = out.index(b"\n", at)
            header = out[at:end].decode()
            at = end + 1
            if header.endswith(" missing"):
                continue
            size = int(header.rsplit(" ", 1)[1])
            found[path] = out[at : at + size].decode("utf-8", errors="replace")
            at += size + 1
        return found

    def files(self, ref: str, *tops: str) -> list[str]:
        """The files of ``ref`` (under the directories ``tops``, if any)."""
        out = self.git("ls-tree", "-r", "--name-only", ref, "--", *tops)
        return out.decode().splitlines()

