"""The SHA-256 of a file, read in blocks: a model file's identity (the GGUF an LLM answers with, a student's skops file).

A leaf module with no dependencies, so that prediction and serving can check a student's file
without importing the LLM stack.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
