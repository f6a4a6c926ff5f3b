"""What the dev issuers of several workers share (``make run WORKERS=4``).

Each uvicorn worker builds its own in-process dev issuer. For a token minted
by one worker to pass on another, they sign with one key, kept in a file
beside the project (``.dev/``, git-ignored), created once, atomically, by
whichever worker starts first. Overage memberships registered through
``/_dev/token`` live in the same folder, one small file per user, so any
worker's fake Graph can answer for them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: Default folder: ``.dev`` in the working directory (``make run`` runs from the project).
DEFAULT_DIR = Path(".dev")
#: Overage users remembered on disk (oldest forgotten first).
MAX_MEMBERSHIP_FILES = 10_000
_OBJECT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def shared_signing_key(folder: Path = DEFAULT_DIR) -> bytes:
    """The PEM private key every worker signs dev tokens with (created on first use)."""
    path = folder / "dev-signing-key.pem"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
        tmp.write(pem)
    try:
        os.chmod(tmp.name, 0o600)
        os.link(tmp.name, path)  # atomic, and fails if another worker was first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp.name)
    return path.read_bytes()


class SharedMemberships(MutableMapping[str, list[str]]):
    """``object id -> group ids`` on disk, for the dev Graph of every worker (bounded:
    the oldest users are forgotten beyond ``MAX_MEMBERSHIP_FILES``)."""

    def __init__(self, folder: Path = DEFAULT_DIR) -> None:
        self.folder = folder / "memberships"

    def __setitem__(self, object_id: str, groups: list[str]) -> None:
        if not _OBJECT_ID.fullmatch(object_id):
            raise ValueError("object id must be a lower-case GUID")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.folder, delete=False) as tmp:
            json.dump(list(groups), tmp)
        os.replace(tmp.name, self.folder / f"{object_id}.json")
        self._prune()

    def __getitem__(self, object_id: str) -> list[str]:
        if not _OBJECT_ID.fullmatch(object_id):
            raise KeyError(object_id)
        try:
            value = json.loads((self.folder / f"{object_id}.json").read_text())
        except (FileNotFoundError, ValueError):
            raise KeyError(object_id) from None
        if not isinstance(value, list):
            raise KeyError(object_id)
        return [g for g in value if isinstance(g, str)]

    def __delitem__(self, object_id: str) -> None:
        if not _OBJECT_ID.fullmatch(object_id):
            raise KeyError(object_id)
        try:
            (self.folder / f"{object_id}.json").unlink()
        except FileNotFoundError:
            raise KeyError(object_id) from None

    def __iter__(self) -> Iterator[str]:
        """Oldest first."""
        return iter(f.stem for f in self._files())

    def __len__(self) -> int:
        return len(self._files())

    def _files(self) -> list[Path]:
        try:
            files = list(self.folder.glob("*.json"))
        except FileNotFoundError:
            return []
        return sorted(files, key=_mtime)

    def _prune(self) -> None:
        files = self._files()
        for old in files[: max(0, len(files) - MAX_MEMBERSHIP_FILES)]:
            old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
