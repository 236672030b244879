"""Installed-version checks for the hosts (verl, SGLang): read from package metadata, never by importing them."""

from __future__ import annotations

import os
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from npr.errors import HostVersionError  # noqa: F401  (re-exported)

# The host versions this release was tested against (README "Tested matrix"). Checked by register().
SUPPORTED = {
    "verl": ">=0.9.1,<0.10",
    "sglang": ">=0.5.23,<0.6",
}


def installed_version(dist: str) -> str | None:
    """Version string of an installed distribution, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_host_version(dist: str, spec: str | None = None) -> str:
    """Return the installed version of `dist`; raise HostVersionError naming installed vs supported.

    NPR_SKIP_VERSION_CHECK=1 accepts any installed version (at your own risk)."""
    spec = spec or SUPPORTED[dist]
    version = installed_version(dist)
    if version is not None and os.environ.get("NPR_SKIP_VERSION_CHECK"):
        return version
    if version is None:
        raise HostVersionError(
            f"{dist} is not installed; native-parallel-reasoner supports {dist}{spec}. "
            f"Install it with `pip install 'native-parallel-reasoner[{dist}]'`."
        )
    if Version(version) not in SpecifierSet(spec):
        raise HostVersionError(
            f"{dist} {version} is installed but native-parallel-reasoner supports {dist}{spec}. "
            f"Install a supported version (pip install '{dist}{spec}') or set NPR_SKIP_VERSION_CHECK=1 "
            "at your own risk."
        )
    return version
