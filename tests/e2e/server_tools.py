"""What several end-to-end test modules do against a real server (imported by name, like cluster_checks)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        f" (wanted {status}): {response.text}")
    return response.json() if response.content else None


def open_console(http: httpx.Client, operator_token: str, establishment: str) -> tuple[dict, dict[str, str]]:
    """A new hosting account (the operator), its manager logged in with the invoice number and the licence
    agreement accepted: (the account as opened, with its one-time secrets; the console's headers)."""
    account = expect(http.post("/v1/operator/accounts", headers={"Authorization": f"Bearer {operator_token}"},
                               json={"establishment": establishment,
                                     "manager": {"name": "Claire Dupont", "email": "claire@ecole.fr"}}), 201)
    session = expect(http.post("/v1/console/sessions", json={
        "hosting_number": account["hosting_number"], "password": account["console_password"],
        "invoice_number": account["invoice_number"]}), 201)
    console = {"Authorization": f"Bearer {session['token']}"}
    expect(http.post("/v1/console/licence-agreement", headers=console), 200)
    return account, console


@contextmanager
def tmpfs(path: Path, *, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A small filesystem mounted at `path` for the block (a disk to fill, a read-only folder); the test
    is skipped with the reason where mounting is not permitted (it needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
