"""The console script: commands that exist work, bad input gives a one-line error."""

from __future__ import annotations

import subprocess
import sys

from whatsreal.cli.main import main
from whatsreal.store import ObservationStore

from .conftest import write_image_store


def test_help_lists_working_commands():
    out = subprocess.run(
        [sys.executable, "-m", "whatsreal.cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("store", "pair"):
        assert command in out.stdout


def test_pair_and_info(tmp_path, capsys):
    path = write_image_store(tmp_path / "s.store", n_sources=50)
    assert main(["pair", str(path), "--k", "3", "--radius", "2arcmin"]) == 0
    assert "k=3, radius 120.0 arcsec" in capsys.readouterr().out
    assert ObservationStore(path).neighbours.k == 3
    assert main(["store", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hsc" in out and "legacy" in out and "neighbour graph: k=3" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["store", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a whatsreal store" in err
    path = write_image_store(tmp_path / "np.store", n_sources=5, positions=False)
    assert main(["pair", str(path)]) == 2
    assert "no sky positions" in capsys.readouterr().err
