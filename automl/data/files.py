"""Read a file a user or an artifact names, with bounds: regular files only, and never more than a size cap.

`Path.read_bytes()` on a FIFO waits forever for a writer, on `/dev/zero` reads until memory runs out, and
on a 3 GB file reads 3 GB. Every photo the product reads from disk (predict, data check, the report's
thumbnails) goes through `read_bounded` instead: it opens without blocking, refuses anything that is not
a regular file from the open descriptor (no race between a check and the read), and reads at most
`max_bytes` (a file that grows past the cap while being read is refused too).
"""

from __future__ import annotations

import os
import stat

MIB = 1024 * 1024
MAX_FILE_BYTES = 100 * MIB
"""Largest photo file read from disk: 5x the server's default upload limit, above an uncompressed 8-bit RGB
TIFF of 30 megapixels; a larger file is refused with this number rather than read whole."""

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


PSEUDO_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
"""Never a dataset, nor anything under them: devices, FIFOs and pseudo-files that hang or never end."""
SYSTEM_FOLDERS = frozenset({"/", "/etc", "/usr", "/var", "/run", "/boot", "/bin", "/sbin", "/lib", "/home", "/root"})
"""Never a dataset themselves: scanning one walks the machine's files as if each folder were a class."""


def is_system_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` (links and `..` resolved) is a system folder or lies in a pseudo file system."""
    real = os.path.realpath(path)
    return real in SYSTEM_FOLDERS or any(real == fs or real.startswith(fs + "/") for fs in PSEUDO_FILE_SYSTEMS)


class FileRefused(OSError):
    """A file that is not read at all: not a regular file, or larger than the cap. `str()` says which."""


def read_bounded(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file `path` (symlinks followed), or `FileRefused`/`OSError` saying why not."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO's open returns at once
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise FileRefused(f"not a regular file ({kind}): only photo files are read")
        if info.st_size > max_bytes:
            raise FileRefused(_too_large(f"{info.st_size:,} bytes", max_bytes))
        os.set_blocking(fd, True)
        chunks, received = [], 0
        while received <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - received, 4 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        if received > max_bytes:  # grew while read, or a /proc file whose size says 0
            raise FileRefused(_too_large(f"more than {max_bytes:,} bytes", max_bytes))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(what: str, max_bytes: int) -> str:
    return f"file too large: {what}, the limit is {max_bytes / MIB:g} MiB (--max-file-mb)"
