"""The Helm chart rendered by a real ``helm`` binary (v3), once per value set and Kubernetes version.

CI installs helm into ``.ci/bin`` (see ``.ci/run``); a missing helm fails these tests under CI and skips them,
with the install command, elsewhere.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "emoserve"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VALUE_SETS = {"default": None, **{p.name.removesuffix("-values.yaml"): p for p in CI_VALUES}}
"""Name -> values file (None: the chart's defaults)."""
KUBE_VERSIONS = ("1.29.0", "1.33.0")
RELEASE, NAMESPACE = "tts", "speech"
INSTALL_HINT = "bash .ci/install-helm (puts helm v3 into .ci/bin)"


def helm_binary() -> str | None:
    """``helm`` from PATH, else the copy CI installs into ``.ci/bin``."""
    local = ROOT / ".ci" / "bin" / "helm"
    return shutil.which("helm") or (str(local) if local.is_file() else None)


@pytest.fixture(scope="session")
def helm() -> str:
    binary = helm_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"helm is not installed; CI must install it first: {INSTALL_HINT}")
        pytest.skip(f"helm is not installed; run {INSTALL_HINT}")
    version = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v3."), f"the chart targets Helm 3, found {version!r}"
    return binary


class RenderError(Exception):
    """``helm template`` failed; the message holds its stderr."""


@functools.cache
def _render(helm: str, values: Path | None, kube_version: str, extra: tuple[str, ...]) -> tuple[dict, ...]:
    command = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version]
    if values is not None:
        command += ["--values", str(values)]
    done = subprocess.run([*command, *extra], check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RenderError(done.stderr)
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(helm: str, value_set: str = "default", kube_version: str = KUBE_VERSIONS[-1], *extra: str) -> list[dict]:
    """The manifests of ``helm template`` for a named value set (cached); ``extra``: more helm arguments."""
    return list(_render(helm, VALUE_SETS[value_set], kube_version, extra))


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Objects of ``kind`` (and ``metadata.name``)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component_name(component: str) -> str:
    return f"{RELEASE}-emoserve-{component}"


def container(deployment: dict) -> dict[str, Any]:
    """The single main container of a Deployment."""
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    return main
