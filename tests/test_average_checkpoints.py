"""scripts/average_checkpoints.py: the mean of the last N epoch checkpoints."""

import sys

import torch

from support import ROOT, run_cli

SCRIPT = ROOT / "scripts" / "average_checkpoints.py"


def run(*args):
    return run_cli(sys.executable, SCRIPT, *args, check=False)


def test_averages_last_epoch_checkpoints(tmp_path):
    for epoch in range(1, 7):
        state = {"model": {"w": torch.full((2,), float(epoch)).half(), "steps": torch.tensor(epoch)},
                 "cfg": {"epoch": epoch}}
        torch.save(state, tmp_path / f"checkpoint{epoch}.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "checkpoint_best.pt")
    result = run("--inputs", tmp_path, "--num-epoch-checkpoints", 5, "--output", tmp_path / "avg.pt")
    assert result.returncode == 0, result.stderr
    averaged = torch.load(tmp_path / "avg.pt", weights_only=False)
    assert torch.equal(averaged["model"]["w"], torch.full((2,), 4.0))  # mean of epochs 2..6
    assert averaged["model"]["steps"].item() == 4
    assert averaged["cfg"] == {"epoch": 6}


def test_too_few_checkpoints(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "checkpoint1.pt")
    result = run("--inputs", tmp_path, "--num-epoch-checkpoints", 5, "--output", tmp_path / "avg.pt")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path}: 1 epoch checkpoints, 5 needed"
    assert not (tmp_path / "avg.pt").exists()
