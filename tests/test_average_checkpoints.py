"""rdrop-average-checkpoints: the mean of the last N epoch checkpoints; checkpoints loaded as
training loads them (nothing in a file runs), bad input refused in one line, inputs never
overwritten, the output written whole or not at all."""

import os

import pytest
import torch

from rdrop_tools import average_checkpoints
from support import BIN, run_cli
from support.crafted import OPEN, RunsCode


def average(*args):
    """Run the tool in this process; return its error line, or None when it succeeded."""
    try:
        average_checkpoints.main([str(a) for a in args])
    except SystemExit as e:
        assert isinstance(e.code, str) and "\n" not in e.code, e.code
        return e.code
    return None


def save_epochs(folder, epochs=6, size=2):
    for epoch in range(1, epochs + 1):
        state = {
            "model": {"w": torch.full((size,), float(epoch)).half(), "steps": torch.tensor(epoch)},
            "cfg": {"epoch": epoch},
        }
        torch.save(state, folder / f"checkpoint{epoch}.pt")


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_averages_last_epoch_checkpoints(tmp_path):
    save_epochs(tmp_path)
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "checkpoint_best.pt")
    assert (
        average("--inputs", tmp_path, "--num-epoch-checkpoints", 5, "--output", tmp_path / "avg.pt")
        is None
    )
    averaged = torch.load(tmp_path / "avg.pt", weights_only=True)
    assert torch.equal(averaged["model"]["w"], torch.full((2,), 4.0))  # mean of epochs 2..6
    assert averaged["model"]["steps"].item() == 4
    assert averaged["cfg"] == {"epoch": 6}
    assert not [
        name for name in files(tmp_path) if name.startswith("avg.pt") and name != "avg.pt"
    ]  # no temporary file left


def test_too_few_checkpoints(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "checkpoint1.pt")
    error = average(
        "--inputs", tmp_path, "--num-epoch-checkpoints", 5, "--output", tmp_path / "avg.pt"
    )
    assert error == f"error: {tmp_path}: 1 epoch checkpoints, 5 needed"
    assert not (tmp_path / "avg.pt").exists()


def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path):
    save_epochs(tmp_path, 2)
    state = torch.load(tmp_path / "checkpoint2.pt", weights_only=True)
    state["extra"] = RunsCode(tmp_path / "ran")
    torch.save(state, tmp_path / "checkpoint2.pt")
    error = average(
        "--inputs",
        tmp_path / "checkpoint1.pt",
        tmp_path / "checkpoint2.pt",
        "--output",
        tmp_path / "avg.pt",
    )
    assert error.startswith(
        f"error: checkpoint {tmp_path / 'checkpoint2.pt'} holds {OPEN},"
        " which the safe loader does not allow"
    )
    assert files(tmp_path) == ["checkpoint1.pt", "checkpoint2.pt"]  # nothing ran, nothing written


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "random": os.urandom(len(data)),
            "text": b"model = [1, 2, 3]\n",
            "empty": b"",
        }[how]
    )


@pytest.mark.parametrize(
    "how,message",
    [
        ("truncated", "checkpoint {} is truncated or corrupt (a damaged zip archive)"),
        ("random", "{} is not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
        ("text", "{} is not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
        ("empty", "checkpoint {} is empty"),
    ],
)
def test_a_damaged_checkpoint_is_one_error_line(tmp_path, how, message):
    save_epochs(tmp_path, 3)
    damage(tmp_path / "checkpoint2.pt", how)
    if how == "random":  # a random first byte could be a pickle's
        with open(tmp_path / "checkpoint2.pt", "r+b") as f:
            f.write(b"\x00")
    error = average(
        "--inputs", tmp_path, "--num-epoch-checkpoints", 3, "--output", tmp_path / "avg.pt"
    )
    assert error == "error: " + message.format(tmp_path / "checkpoint2.pt")
    assert "avg.pt" not in " ".join(files(tmp_path))


def test_not_a_fairseq_checkpoint(tmp_path):
    save_epochs(tmp_path, 1)
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    error = average(
        "--inputs",
        tmp_path / "checkpoint1.pt",
        tmp_path / "other.pt",
        "--output",
        tmp_path / "avg.pt",
    )
    assert (
        error == f"error: {tmp_path / 'other.pt'} is not a fairseq checkpoint (no model parameters)"
    )


def test_checkpoints_of_another_dictionary(tmp_path):
    save_epochs(tmp_path, 1, size=2)
    torch.save(
        {"model": {"w": torch.zeros(3).half(), "steps": torch.tensor(2)}}, tmp_path / "other.pt"
    )
    error = average(
        "--inputs",
        tmp_path / "checkpoint1.pt",
        tmp_path / "other.pt",
        "--output",
        tmp_path / "avg.pt",
    )
    assert error == (
        f"error: {tmp_path / 'other.pt'}: w has shape (3,), "
        f"{tmp_path / 'checkpoint1.pt'} (2,) (another dictionary or model size)"
    )
    assert not (tmp_path / "avg.pt").exists()


def test_a_missing_output_directory(tmp_path):
    save_epochs(tmp_path, 2)
    error = average(
        "--inputs", tmp_path, "--num-epoch-checkpoints", 2, "--output", tmp_path / "no" / "avg.pt"
    )
    assert error == (
        f"error: --output {tmp_path / 'no' / 'avg.pt'}: directory {tmp_path / 'no'} does not exist"
    )


@pytest.mark.parametrize("name", ["same", "relative", "symlink", "hardlink"])
def test_never_overwrites_an_input(tmp_path, monkeypatch, name):
    save_epochs(tmp_path, 2)
    target = tmp_path / "checkpoint2.pt"
    before = target.read_bytes()
    output = {
        "same": target,
        "relative": "sub/../checkpoint2.pt",
        "symlink": tmp_path / "link.pt",
        "hardlink": tmp_path / "hard.pt",
    }[name]
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    if name == "symlink":
        output.symlink_to(target)
    if name == "hardlink":
        os.link(target, output)
    error = average("--inputs", tmp_path, "--num-epoch-checkpoints", 2, "--output", output)
    assert error == (
        f"error: --output {output} is the input {target}: write the output to another file"
    )
    assert target.read_bytes() == before


@pytest.mark.slow
def test_command_line_error_is_one_line(tmp_path):
    save_epochs(tmp_path, 2)
    damage(tmp_path / "checkpoint1.pt", "empty")
    result = run_cli(
        BIN / "rdrop-average-checkpoints",
        "--inputs",
        tmp_path,
        "--num-epoch-checkpoints",
        2,
        "--output",
        tmp_path / "avg.pt",
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"error: checkpoint {tmp_path / 'checkpoint1.pt'} is empty\n",
    )


@pytest.mark.parametrize("n", [-1, 0])
def test_a_count_below_one_is_refused(tmp_path, n):
    save_epochs(tmp_path, 3)
    for flag in ("--num-epoch-checkpoints", "--num-update-checkpoints"):
        error = average("--inputs", tmp_path, flag, n, "--output", tmp_path / "avg.pt")
        assert error == f"error: {flag} must be at least 1, got {n}"
    assert not (tmp_path / "avg.pt").exists()


def test_a_directory_as_a_checkpoint_says_so(tmp_path):
    save_epochs(tmp_path, 1)
    (tmp_path / "sub").mkdir()
    error = average(
        "--inputs", tmp_path / "checkpoint1.pt", tmp_path / "sub", "--output", tmp_path / "avg.pt"
    )
    assert error.startswith(f"error: {tmp_path / 'sub'} is a directory, not a checkpoint")
