"""R-Drop for fairseq: ``fairseq-train --user-dir <this directory> --task rdrop_translation
--criterion label_smoothed_cross_entropy_rdrop --rdrop-alpha 5``.

Importing the plugin checks that fairseq is there and new enough (:mod:`.compat`), registers the
task and the criterion, routes fairseq's checkpoint loading through the safe loader
(:mod:`.checkpoint_loading`) and installs the fairseq bug fixes (:mod:`.fairseq_fixes`). Only
when fairseq's command line imports it does it also print a :class:`~.errors.UsageError` as one
``error:`` line instead of a traceback.
"""

from . import errors

if errors.run_by_fairseq_command_line():
    errors.install_excepthook()

from . import compat  # noqa: E402

compat.check_fairseq()

from . import checkpoint_loading, criterion, fairseq_fixes, task  # noqa: E402,F401

checkpoint_loading.install()
fairseq_fixes.apply()

__version__ = "0.2.0"
