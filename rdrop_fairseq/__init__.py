"""R-Drop for fairseq: ``fairseq-train --user-dir <this directory> --task rdrop_translation
--criterion label_smoothed_cross_entropy_rdrop --rdrop-alpha 5``."""

from . import criterion, task  # noqa: F401  (registers the criterion and the task)
from .fairseq_fixes import apply

apply()

__version__ = "0.1.0"
