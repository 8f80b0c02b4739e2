"""The machine a measurement ran on, as the benchmark and experiment results record it."""

import importlib.metadata
import os
import platform

import torch


def cpu_name():
    """The CPU's model name (/proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def distribution(module):
    """``(name, version)`` of the installed distribution that provides ``module`` (fairseq comes
    as fairseq, ve-fairseq or fairseq-fixed), ``(None, None)`` when there is none."""
    for name in importlib.metadata.packages_distributions().get(module, []):
        return name, importlib.metadata.version(name)
    return None, None


def machine_info(device=None, threads=None):
    """The CPU, the device (``"cpu"`` or the GPU's name; default: the GPU when there is one), the
    software versions and torch's threads (default: this process's, which the runs an experiment
    starts inherit)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": " ".join(filter(None, distribution("fairseq"))) or None,
        "threads": torch.get_num_threads() if threads is None else threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["triton"] = distribution("triton")[1]
    return info
