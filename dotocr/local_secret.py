"""The per-user secret by which a dotocr server on this machine proves it is this user's.

`dotocr ocr` hands a local server the image and the API token; anything can listen on 127.0.0.1:api_port,
another user's program included. Our servers read a random secret from a file only this user can read and
answer a challenge in /health with an HMAC over it and the port they serve on; the CLI checks that answer
before it sends anything. A fake server cannot answer, nor borrow the answer of a real one on another port.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

from dotocr.config import data_dir
from dotocr.storage import PRIVATE_FILE, write_atomic

SECRET_NAME = "server-secret"
CHALLENGE_HEADER = "X-DotOCR-Challenge"
MAX_CHALLENGE = 128
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def secret_path() -> Path:
    return data_dir() / SECRET_NAME


def read_secret(path: Path | None = None) -> bytes | None:
    """The secret, or None when there is none or it could have been planted or read by someone else."""
    path = path or secret_path()
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        if sys.platform != "win32":
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or info.st_mode & 0o077:
                return None
        data = os.read(fd, 256).strip()
    finally:
        os.close(fd)
    return data if len(data) >= 32 else None


def load_or_create_secret(path: Path | None = None) -> bytes:
    """The server's side: the secret, made (owner-only) when missing or not trustworthy."""
    path = path or secret_path()
    existing = read_secret(path)
    if existing is not None:
        return existing
    value = secrets.token_hex(32).encode("ascii")
    write_atomic(path, value, mode=PRIVATE_FILE)  # 0600 in a 0700 folder, never through a planted file
    return value


def proof(secret: bytes, challenge: str, port: int) -> str:
    return hmac.new(secret, f"dotocr-health:{port}:{challenge}".encode(), hashlib.sha256).hexdigest()


def new_challenge() -> str:
    return secrets.token_hex(16)


def proves(secret: bytes | None, challenge: str, port: int, answer: object) -> bool:
    return secret is not None and isinstance(answer, str) and hmac.compare_digest(
        answer.encode(), proof(secret, challenge, port).encode())
