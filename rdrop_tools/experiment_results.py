"""An experiment's results folder: results.json (with the machine and the commands that reproduce
it), results.md (its table) and curves.png (the runs' training curves)."""

import json
import os
import platform
from importlib.metadata import version

from .training_logs import plot


def write_results(out, results, table, logs, commands):
    """Write ``results`` (a dict, completed with the machine and ``commands``), ``table``
    (markdown) and the curves of ``logs`` (``[(run, log)]``) into the folder ``out``."""
    results["machine"] = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": version("torch"),
        "threads_per_run": int(os.environ.get("OMP_NUM_THREADS", "1")),
    }
    results["commands"] = ["bash scripts/setup-venv.sh", *commands]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    plot(logs, os.path.join(out, "curves.png"))
    print(table)
