"""Loading a repository script (one that is not part of a package) as a module, to test its functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(name: str, path: Path) -> ModuleType:
    """Execute ``path`` as a fresh module called ``name`` and return it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path} as a module"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
