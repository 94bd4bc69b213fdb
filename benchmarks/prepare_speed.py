"""Throughput and peak memory of `gmenet prepare` on FERPlus (Train + Valid) at --scale 2,4,8.

Each configuration runs in its own process so peak RSS is that run's own (ru_maxrss of the child).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import FERPLUS, header, require_ferplus


def run(workers: int, out: Path) -> dict:
    code = (
        "import json, resource, time, sys\n"
        "from gmenet_cli.config import PrepareConfig\n"
        "from gmenet_cli.data.prepare import prepare\n"
        "base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        f"_, m = prepare('ferplus', {str(FERPLUS)!r}, {str(out)!r}, PrepareConfig(scales=[2, 4, 8]), "
        f"workers={workers})\n"
        "s = time.perf_counter() - t\n"
        "n = sum(v['count'] for v in m['splits'].values())\n"
        "self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'faces': n, 'seconds': s, 'rss_mb': self_kb / 1024, 'base_mb': base_kb / 1024, "
        "'worker_rss_mb': kids_kb / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    require_ferplus()
    data_mb = sum(p.stat().st_size for p in FERPLUS.rglob("*") if p.is_file()) / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in (int(x) for x in args.workers.split(",")):
            r = run(w, Path(tmp) / f"w{w}")
            rows.append((w, r))
    print(header("prepare throughput (FERPlus Train+Valid, --scale 2,4,8)"))
    print(f"Dataset on disk: {data_mb:.0f} MB.\n")
    raw_mb = rows[0][1]["faces"] * (48 * 48 + 24 * 24 + 12 * 12 + 6 * 6) / 2**20
    print(f"Prepared arrays: {raw_mb:.0f} MB uncompressed.\n")
    print("| workers | faces | seconds | faces/s | peak RSS main (MB) | of which after imports (MB) | peak RSS per "
          "worker (MB) |")
    print("|---|---|---|---|---|---|---|")
    for w, r in rows:
        print(f"| {w} | {r['faces']} | {r['seconds']:.1f} | {r['faces'] / r['seconds']:,.0f} | {r['rss_mb']:.0f} | "
              f"{r['base_mb']:.0f} | {r['worker_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
