"""A digest of the package's own source code, carried by every resume checkpoint.

A checkpoint is resumed only by the code that wrote it: a run killed, then resumed after a code change
(a fix in the loop, a new seed rule) would otherwise mix two programs in one result while dvc.lock
records only the second. The digest covers every .py and .cpp file of the package: coarser than the
code a stage imports, so some harmless edits cost a restart, never a silently mixed run.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_SUFFIXES = (".py", ".cpp")


def source_files(root: Path = PACKAGE_DIR) -> list[Path]:
    return sorted(path for path in root.rglob("*")
                  if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file())


def _digest_files(files: list[Path], root: Path) -> str:
    """sha256 over each file's path relative to `root` and its bytes, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def digest_of(root: Path) -> str:
    return _digest_files(source_files(root), root)[:16]


def digest_of_paths(paths: list[Path], root: Path) -> str:
    """sha256 over every file in `paths` (files, or folders walked recursively), named relative to `root`,
    skipping bytecode caches as .dvcignore does: it changes exactly when DVC sees one of them change."""
    files = set()
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        candidates = path.rglob("*") if path.is_dir() else [path]
        files.update(f for f in candidates if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")
    return _digest_files(sorted(files), root)


@functools.cache
def code_fingerprint() -> str:
    """The digest of the installed package's source (computed once per process)."""
    return digest_of(PACKAGE_DIR)
