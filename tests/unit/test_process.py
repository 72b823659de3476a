"""tasks.process.long_lived_imports: the collector paused inside, restored after, and what new imports created
frozen (once: entering again with everything imported freezes nothing)."""

from __future__ import annotations

import gc
import sys

import pytest

from tasks.process import long_lived_imports


def test_freezes_what_new_imports_created_and_restores_the_collector(tmp_path, monkeypatch):
    (tmp_path / "gate_library_stand_in.py").write_text("TABLES = [[i] for i in range(1000)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gc.unfreeze()
    try:
        with long_lived_imports():
            assert not gc.isenabled()
            import gate_library_stand_in
        assert gc.isenabled()
        assert gc.get_freeze_count() > len(gate_library_stand_in.TABLES)
        # Entered again with nothing new to load: no freeze. (The freeze count itself is no witness here: it
        # drops whenever a frozen object is freed.)
        freezes: list[None] = []
        monkeypatch.setattr(gc, "freeze", lambda: freezes.append(None))
        with long_lived_imports():
            import gate_library_stand_in  # noqa: F401, F811
        assert freezes == []
    finally:
        gc.unfreeze()
        sys.modules.pop("gate_library_stand_in", None)


def test_a_paused_collector_stays_paused_and_an_import_error_passes_through():
    gc.disable()
    try:
        with pytest.raises(ModuleNotFoundError, match="no_such_gate_library"), long_lived_imports():
            import no_such_gate_library  # noqa: F401
        assert not gc.isenabled()
    finally:
        gc.enable()
