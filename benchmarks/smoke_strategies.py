"""Wall time of every registered strategy's smoke run: `prunesearch run configs/smoke.toml
--set search.strategy=X` (plus a weight-density space for the strategies that search masks),
from a warm dense-model cache, each a fresh process as a user would run it. The target: under 2
minutes each on the 2-core machine.

    python benchmarks/smoke_strategies.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, machine, publish, save_results  # noqa: E402

from prunesearch.strategies.registry import list_strategies  # noqa: E402

SMOKE = Path(__file__).parent.parent / "configs" / "smoke.toml"
MASK_SPACE = ["space.width_ratios=[1.0]", "space.depth=false",
              "space.densities=[0.1, 0.25, 0.5, 1.0]"]
NEEDS_DENSITIES = {"dass", "bip", "imp", "random-masks", "global-magnitude"}
TARGET_S = 120


def smoke(strategy: str, out: Path) -> dict[str, object]:
    overrides = [f"search.strategy={strategy}", f"name=smoke-{strategy}",
                 *(MASK_SPACE if strategy in NEEDS_DENSITIES else [])]
    cmd = [sys.executable, "-m", "prunesearch", "run", str(SMOKE), "--out", str(out), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    summary_path = out / f"smoke-{strategy}" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {"strategy": strategy, "overrides": overrides, "seconds": seconds,
            "returncode": done.returncode, "n_evals": summary.get("n_evals"),
            "error": done.stderr.strip().splitlines()[-1] if done.returncode else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/smoke_strategies.py")
    parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warm = smoke("random", Path(tmp) / "warm")  # trains (or finds) the smoke's dense model
        if warm["returncode"] != 0:
            raise SystemExit(f"the smoke job fails: {warm['error']}")
        rows = []
        for strategy in list_strategies():
            rows.append(smoke(strategy, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    m = machine()
    save_results("smoke_strategies", {"command": command_line(), "machine": m,
                                      "target_s": TARGET_S, "rows": rows})
    lines = [f"`{command_line()}` on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
             f"{m['date']}; dense model from the cache.", "",
             "| strategy | space | wall (s) | candidates | under 2 min |",
             "|---|---|---:|---:|---|"]
    lines += [f"| {r['strategy']} | "
              f"{'densities' if r['strategy'] in NEEDS_DENSITIES else 'widths + depth'} "
              f"| {r['seconds']:.0f} | {r['n_evals']} | "
              f"{'yes' if r['returncode'] == 0 and r['seconds'] < TARGET_S else 'NO'}"
              f"{'' if r['returncode'] == 0 else ' (failed: ' + str(r['error']) + ')'} |"
              for r in rows]
    publish("smoke_strategies", lines)


if __name__ == "__main__":
    main()
