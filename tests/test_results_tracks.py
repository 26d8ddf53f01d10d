"""A benchmark run on some tracks keeps the other tracks' figures and their command."""

from __future__ import annotations

import json

from whatsreal.utils import atomic_write_json, other_tracks


def test_other_tracks_keeps_what_is_not_rerun_with_its_command(tmp_path):
    path = tmp_path / "bench.json"
    assert other_tracks(path, ["a"]) == {}  # no previous results
    atomic_write_json(
        path,
        {
            "command": "python bench.py",
            "tracks": {"a": {"x": 1}, "b": {"x": 2, "command": "python bench.py --only b"}},
        },
    )
    kept = other_tracks(path, ["a"])
    assert kept == {"b": {"x": 2, "command": "python bench.py --only b"}}
    both = other_tracks(path, [])
    assert both["a"] == {"x": 1, "command": "python bench.py"}  # the run's command, inherited
    assert json.loads(path.read_text())["tracks"]["a"] == {"x": 1}  # the file is not changed
