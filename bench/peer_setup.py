"""Create the two server venvs of the HTTP benchmark (idempotent).

- ``bench/.venv-server``: entra-guard (editable, this checkout) for the bare and
  guarded apps;
- ``bench/.venv-peer``: fastapi-azure-auth 5.3.0, the peer, kept apart so its
  dependencies (PyJWT, httpx2) never meet the project's.

Both get the same server stack: fastapi, starlette, uvicorn and h11 pinned to
the project venv's versions, plus httptools and uvloop (``uvicorn[standard]``,
what production deployments run) pinned to one version for both. Nothing is
installed into the project's own ``.venv``.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

from .common import PEER_PYTHON, PEER_VENV, ROOT, SERVER_PYTHON, SERVER_VENV

PEER = "fastapi-azure-auth==5.3.0"
SHARED = ("fastapi", "starlette", "uvicorn", "h11", "pydantic", "pydantic-core", "cryptography")
SERVER_ONLY = ("python-jose", "pydantic-settings", "httpx")
FAST = ("httptools", "uvloop")


def _pins(names: tuple[str, ...]) -> list[str]:
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def _versions(python: Path, names: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib.metadata as m, sys\n"
        "print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))"
    )
    out = subprocess.run(
        [str(python), "-c", code, *names], check=True, capture_output=True, text=True
    ).stdout
    return out.split()


def _ensure(env: Path, python: Path, requirements: list[str]) -> None:
    marker = env / ".installed"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return
    print(f"bench: setting up {env.relative_to(ROOT)}: {' '.join(requirements)}", flush=True)
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, *requirements],
        check=True,
        cwd=ROOT,
    )
    marker.write_text(wanted)


def main() -> int:
    shared = _pins(SHARED)
    _ensure(SERVER_VENV, SERVER_PYTHON, ["-e", str(ROOT), *shared, *_pins(SERVER_ONLY), *FAST])
    fast = _versions(SERVER_PYTHON, FAST)
    _ensure(PEER_VENV, PEER_PYTHON, [PEER, *shared, *fast])
    return 0


if __name__ == "__main__":
    sys.exit(main())
