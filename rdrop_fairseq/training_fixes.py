"""Two more fixes to fairseq 0.12 training, applied when the plugin is imported.

1. ``--bf16`` without a TPU: fairseq's argument parser turns ``--bf16`` into ``--tpu``
   (``options.parse_args_and_arch``; fairseq issue #4696), so bf16 training dies in
   ``xm.xla_device()`` on CPU and GPU alike. When ``torch_xla`` is not installed, the ``tpu``
   flags it set are cleared before training starts, so ``--bf16`` trains in bfloat16 (fp32 master
   weights, fairseq's ``FP16Optimizer``) on CUDA or, with ``--cpu``, on the CPU.
2. Crash-safe ``checkpoint_last.pt``: fairseq writes the first checkpoint of a save atomically but
   then *copies* it over ``checkpoint_last.pt``/``checkpoint_best.pt`` in place, so a job killed
   during that copy (preemption, SIGKILL, full disk) leaves a truncated ``checkpoint_last.pt`` and
   cannot resume. The copy now goes to ``<name>.tmp`` and is renamed over the old file.
"""

import importlib.util
import logging
import os

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

logger = logging.getLogger(__name__)


def _bf16_without_tpu(call_main):
    def wrapper(cfg, main, **kwargs):
        if (cfg.common.bf16 and cfg.common.tpu
                and importlib.util.find_spec("torch_xla") is None):
            for key in cfg:  # cfg.common, cfg.distributed_training, cfg.optimizer, ... all copy it
                group = cfg[key]
                if getattr(group, "tpu", False):
                    setattr(group, "tpu", False)
            logger.info("--bf16 without torch_xla: training in bfloat16 on %s, not on a TPU",
                        "the CPU" if cfg.common.cpu else "CUDA if available")
        return call_main(cfg, main, **kwargs)

    wrapper.rdrop_fairseq = True
    return wrapper


class _AtomicCopyPathManager(PathManager):
    """``PathManager`` as seen by ``fairseq.checkpoint_utils``: local copies replace atomically."""

    @staticmethod
    def copy(src_path, dst_path, overwrite=False):
        if not PathManager.supports_rename(dst_path):
            return PathManager.copy(src_path, dst_path, overwrite=overwrite)
        tmp = dst_path + ".tmp"
        PathManager.copy(src_path, tmp, overwrite=True)
        os.replace(tmp, dst_path)
        return True


def apply():
    if not getattr(distributed_utils.call_main, "rdrop_fairseq", False):
        distributed_utils.call_main = _bf16_without_tpu(distributed_utils.call_main)
    if checkpoint_utils.PathManager is not _AtomicCopyPathManager:
        checkpoint_utils.PathManager = _AtomicCopyPathManager


apply()
