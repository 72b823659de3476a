"""The JVM class archive: when a driver maps it, and that a stale one leaves a driver running. That a built archive
maps into a new driver is checked on the one `make demo` builds (tests/e2e/test_pipeline_dags.py): building one
takes minutes of a small pipeline run."""

from __future__ import annotations

import os
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from spark_jobs import class_archive
from spark_jobs.session import SHORT_LIVED_JAVA_OPTIONS, driver_java_options
from tasks.config import with_overrides
from tasks.layers import class_archive_path
from tests.helpers.config import isolated_config
from tests.helpers.jvm import start_driver


def test_no_archive_option_until_the_file_exists(tmp_path):
    cfg = isolated_config(tmp_path / "var")
    archive = class_archive_path(cfg)
    assert archive == tmp_path / "var" / "jvm" / "spark-classes.jsa"
    assert driver_java_options(cfg) == "-XX:+UseParallelGC"
    assert driver_java_options(cfg, short_lived=True) == f"{SHORT_LIVED_JAVA_OPTIONS} -XX:+UseParallelGC"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x")
    options = driver_java_options(cfg, short_lived=True).split()
    assert options[:2] == [SHORT_LIVED_JAVA_OPTIONS, "-XX:+UseParallelGC"]
    assert f"-XX:SharedArchiveFile={archive}" in options
    # JVM warnings (e.g. a stale archive) must not land on stdout.
    assert "-Xlog:all=warning:stderr" in options


def test_archive_switched_off_or_elsewhere(tmp_path):
    cfg = isolated_config(tmp_path / "var", spark={"class_archive": None, "driver_gc": None})
    assert class_archive_path(cfg) is None and driver_java_options(cfg) == ""
    with pytest.raises(ValueError, match="spark.class_archive is null"):
        class_archive.build(cfg)
    spaced = tmp_path / "with space" / "a.jsa"
    spaced.parent.mkdir()
    spaced.write_bytes(b"x")
    cfg = with_overrides(cfg, {"spark": {"class_archive": str(spaced)}})
    assert class_archive_path(cfg) == spaced
    # Quoted, or Spark would split the path at the blank.
    assert f'"-XX:SharedArchiveFile={spaced}"' in driver_java_options(cfg)


def _jar_with_one_class(path) -> None:
    """A jar holding an empty class ``Stale`` (hand-assembled class file: no compiler needed)."""

    def utf8(text: str) -> bytes:
        return b"\x01" + struct.pack(">H", len(text)) + text.encode()

    pool = [utf8("Stale"), b"\x07" + struct.pack(">H", 1), utf8("java/lang/Object"), b"\x07" + struct.pack(">H", 3)]
    body = (
        b"\xca\xfe\xba\xbe"
        + struct.pack(">HHH", 0, 61, len(pool) + 1)
        + b"".join(pool)
        + struct.pack(">HHHHHHH", 0x21, 2, 4, 0, 0, 0, 0)
    )
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("Stale.class", body)


@pytest.mark.e2e
def test_archive_of_another_class_path_warns_and_the_driver_still_runs(tmp_path):
    # What an upgrade leaves behind: an archive of classes loaded from jars this class path no longer has.
    var = tmp_path / "var"
    archive = class_archive_path(isolated_config(var))
    archive.parent.mkdir(parents=True)
    _jar_with_one_class(tmp_path / "old.jar")
    # Loads Stale, then exits for want of a main method: the archive is written at exit all the same.
    java = Path(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"  # as Spark picks it
    subprocess.run(
        [str(java), f"-XX:ArchiveClassesAtExit={archive}", "-Xlog:disable", "-cp", str(tmp_path / "old.jar"), "Stale"],
        capture_output=True,
        timeout=120,
    )
    assert archive.is_file()
    done = start_driver(var)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 3" in done.stdout
    assert "unable to use shared archive" in done.stderr.lower()
    assert "shared archive" not in done.stdout.lower()
