"""Wall time and peak memory of `whatsreal demo` (issue 11), measured with /usr/bin/time -v.

Runs the demo exactly as a user does, in a child process (the `whatsreal` command of the
active environment), then reads the child's elapsed time and maximum resident set size from
GNU time's report and each track's stage timings from its results.json.

    python benchmarks/demo.py                 # both tracks, preset demo, into a temp folder
    python benchmarks/demo.py --out runs/demo # keep the outputs
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent


def _gnu_time(report: str) -> dict[str, float]:
    """Elapsed seconds and peak RSS (MiB) from `/usr/bin/time -v`'s report."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", report)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    if not wall or not rss:
        raise SystemExit("could not read /usr/bin/time -v's report:\n" + report[-2000:])
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return {"wall_seconds": round(seconds, 1), "peak_rss_mib": round(int(rss.group(1)) / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="both", choices=("both", "lightcurves", "galaxies"))
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--out", help="demo output folder (default: a temporary one, removed)")
    args = ap.parse_args()
    gnu_time = shutil.which("time") or "/usr/bin/time"
    exe = shutil.which("whatsreal")
    if exe is None or not Path(gnu_time).exists():
        raise SystemExit("needs the `whatsreal` command and GNU time (/usr/bin/time)")
    tmp = None if args.out else tempfile.mkdtemp(prefix="whatsreal-demo-")
    out = Path(args.out or tmp)
    cmd = [gnu_time, "-v", exe, "demo", "--track", args.track, "--preset", args.preset]
    cmd += ["--out", str(out)]
    print("running:", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the demo failed with exit code {proc.returncode}")
    measured = _gnu_time(proc.stderr)
    tracks = {}
    for name in ("lightcurves", "galaxies"):
        path = out / name / "results.json"
        if path.is_file():
            r = json.loads(path.read_text())
            tracks[name] = r.get("timings") if name == "lightcurves" else r["track"]["timings"]
    result = {
        "command": " ".join(["python", "benchmarks/demo.py", *sys.argv[1:]]),
        "demo_command": f"whatsreal demo --track {args.track} --preset {args.preset}",
        "machine": machine_info(),
        **measured,
        "goal_wall_seconds": 12 * 60,
        "goal_met": measured["wall_seconds"] <= 12 * 60,
        "track_stage_seconds": tracks,
    }
    atomic_write_json(HERE / "results" / "demo.json", result)
    print(json.dumps(result, indent=1))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
