"""Where the per-user weights cache lives: ``$UNETRPP_HOME``, else the platform's user data folder.

One folder per user, shared by every Slicer version and the CLI: ``~/.local/share/unetrpp`` (Linux),
``%LOCALAPPDATA%\\unetrpp`` (Windows), ``~/Library/Application Support/unetrpp`` (macOS).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["HOME_ENVIRONMENT_VARIABLE", "model_home"]

HOME_ENVIRONMENT_VARIABLE = "UNETRPP_HOME"


def model_home() -> Path:
    """Root of the cache: ``$UNETRPP_HOME`` if set, else the per-user data folder."""
    override = os.environ.get(HOME_ENVIRONMENT_VARIABLE, "").strip()
    if override:
        return Path(override).expanduser()
    try:
        import platformdirs
    except ImportError:  # Slicer's Python before the requirements are installed
        return _fallback_user_data_dir()
    return Path(platformdirs.user_data_dir("unetrpp", appauthor=False))


def _fallback_user_data_dir() -> Path:
    """What platformdirs answers for an application without author, for when it is missing."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "unetrpp"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "unetrpp"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "unetrpp"
