"""R-Drop for fairseq: ``fairseq-train --user-dir <this directory> --task rdrop_translation
--criterion label_smoothed_cross_entropy_rdrop --rdrop-alpha 5``."""

from . import fairseq_patches  # noqa: F401  (checkpoint loading, last-batch fix)
from . import training_fixes  # noqa: F401  (--bf16 without TPU, crash-safe checkpoint_last.pt)
from . import cli_errors  # noqa: F401  (one-line errors; after fairseq_patches: wraps its torch)
from . import criterion, task  # noqa: F401  (registers the criterion and the task)

__version__ = "0.1.0"
