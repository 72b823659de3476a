"""Model families: one module per architecture in this folder, its file name being the family's name.

``family_names`` lists them from the file names alone, without importing a module (and so without
torch), so the config, the training CLI and the DAG files take their allowed model types from it.
Each module defines its ``IntentModelConfig`` subclass (the keys of its ``models.<name>`` config
section) and its ``IntentModel`` subclass, registered with ``tasks.models.base.register_model``.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES_DIR = Path(__file__).resolve().parent


def family_names() -> tuple[str, ...]:
    """Names of the families in this folder, sorted; read on every call so a family added at runtime counts."""
    return tuple(sorted(p.stem for p in FAMILIES_DIR.glob("*.py") if not p.stem.startswith("_")))
