"""Where ragcoder keeps things on disk. Override with RAGCODER_CACHE_DIR / RAGCODER_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Re-creatable files: installed and converted models (``~/.cache/ragcoder`` by default)."""
    env = os.environ.get("RAGCODER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ragcoder"))


def data_dir() -> Path:
    """User data: the Chroma index (``~/.local/share/ragcoder`` by default)."""
    env = os.environ.get("RAGCODER_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("ragcoder"))


def models_dir() -> Path:
    return cache_dir() / "models"


def index_dir() -> Path:
    return data_dir() / "chroma"
