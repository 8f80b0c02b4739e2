"""scripts/multi30k_report.py: the cost of a run resumed several times."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from multi30k_report import total_wall_s  # noqa: E402


def test_wall_time_adds_up_the_segments_of_a_resumed_run():
    # fairseq's wall clock restarts at 0 after each resume (here after epochs 2 and 3)
    walls = [100.0, 210.0, 90.0, 60.0, 130.0]
    records = [{"epoch": e + 1, "wall": w} for e, w in enumerate(walls)]
    assert total_wall_s(records) == 210.0 + 90.0 + 130.0
    assert total_wall_s(records[:2]) == 210.0  # never resumed: the last figure
