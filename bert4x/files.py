"""Atomic file writes (a crash mid-write must never leave a half-written file under the real
name), and finding the bytes of a text file that are not UTF-8."""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Optional

#: What ``errors="surrogateescape"`` makes of a byte that is not UTF-8.
_UNDECODED = re.compile("[\udc80-\udcff]")


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


def not_utf8(line: str) -> Optional[str]:
    """For a line read with ``errors="surrogateescape"``: where its first byte that is not UTF-8
    is (``"byte 0xff at column 3"``), or None. Decoding this way keeps the line numbers, so a
    reader can name the line instead of the decoder's offset in the whole file."""
    bad = _UNDECODED.search(line)
    if bad is None:
        return None
    return f"byte 0x{ord(bad.group()) - 0xDC00:02x} at column {bad.start() + 1}"


class LineCheckedText(io.TextIOWrapper):
    """A UTF-8 text file that refuses a byte that is not UTF-8 by file and line, where
    Python's decoder names only an offset into whatever block it was decoding.

    Lines are decoded with ``surrogateescape`` and checked as they are handed out by
    ``readline`` (which iteration calls for a subclass) or ``read``, so the line count is
    exact."""

    def __init__(self, path):
        super().__init__(open(path, "rb"), encoding="utf-8", errors="surrogateescape")
        self.path, self.lines_read = os.fspath(path), 0

    def _checked(self, text: str) -> str:
        bad = _UNDECODED.search(text)
        if bad:
            from bert4x.training.readers import DataError
            line = self.lines_read + text.count("\n", 0, bad.start()) + 1
            where = not_utf8(text[text.rfind("\n", 0, bad.start()) + 1:])
            raise DataError(self.path, line, f"not UTF-8 text ({where}); save the file as UTF-8")
        self.lines_read += text.count("\n")
        return text

    def readline(self, size=-1):
        return self._checked(super().readline(size))

    def read(self, size=-1):
        return self._checked(super().read(size))
