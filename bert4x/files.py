"""Atomic file writes: a crash mid-write must never leave a half-written file under the real name."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` (atomic on
    POSIX), on failure it is removed and ``path`` keeps its previous content."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    # Same name behind a hidden prefix: Keras picks the format from the full suffix (.weights.h5).
    temporary = os.path.join(directory, ".partial." + os.path.basename(path))
    try:
        yield temporary
        # Some writers (safetensors) create owner-only files; give the result the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
