"""The session signing key: refused when missing or known, generated once for the embedded default.

Whoever knows the key can sign a dashboard session for any user, so a published default is a
skeleton key. ``serve`` and ``worker`` call :func:`require_strong_key` and exit with instructions;
``distillery up`` (one machine, no configuration) calls :func:`embedded_key`, which creates a random
key in the state folder once (mode 0600) and reuses it, so logins survive a restart.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

MIN_LENGTH = 32
# Values published in this repository's history, its docs and common placeholders.
KNOWN_WEAK = frozenset({"dev-only-change-me", "change-me", "changeme", "change_me", "secret", "test", "dev",
                        "development", "password", "default", "insecure", "please-change-me"})
HOW_TO_SET = ('set DISTILLERY_SECRET_KEY to a random value of at least 32 characters, e.g. '
              'export DISTILLERY_SECRET_KEY="$(python3 -c \'import secrets; print(secrets.token_hex(32))\')"')


class WeakSecretKey(RuntimeError):
    """The configured key is missing, too short or a published placeholder."""


def weakness(key: str) -> str | None:
    """Why ``key`` must not sign sessions, or None when it may."""
    if not key:
        return "DISTILLERY_SECRET_KEY is not set"
    if key.strip().lower() in KNOWN_WEAK:
        return "DISTILLERY_SECRET_KEY is a published placeholder"
    if len(key) < MIN_LENGTH:
        return f"DISTILLERY_SECRET_KEY is shorter than {MIN_LENGTH} characters"
    return None


def require_strong_key(key: str) -> None:
    """Raise :class:`WeakSecretKey` (with how to fix it) unless ``key`` is strong."""
    why = weakness(key)
    if why:
        raise WeakSecretKey(f"{why}: anyone who knows the key can sign a session for any user. {HOW_TO_SET}")


def embedded_key(path: Path) -> str:
    """The key in ``path``, created (random, mode 0600, never overwritten) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        os.chmod(path, 0o600)
        if weakness(key) is None:
            return key
        raise WeakSecretKey(f"{path} holds a weak key; delete it and a new one is generated") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
