"""Checkpoints load with torch's safe (weights_only) unpickler and an allowlist of what fairseq
checkpoints hold: ours and older fairseq ones load, resume and generate; a checkpoint whose pickle
would run code is refused in one line and the code does not run, unless the user opts in with
RDROP_TRUST_CHECKPOINTS=1 (the one switch: RDROP_FAIRSEQ_NO_FIXES does not turn it off); hub
downloads follow the same policy; an unreadable file is explained. A 1-layer, 16-dim Transformer
trained for 2 updates on the synthetic corpus, one CPU thread per process."""

import argparse
import contextlib
import io
import os
import pickle
import re
import subprocess
import sys
import types
from unittest import mock

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils, options

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, installs the safe loader)
from rdrop_fairseq.checkpoint_loading import load_checkpoint_file
from rdrop_fairseq.errors import UsageError
from support import BIN, USER_DIR
from support.tiny_model import TINY_TRANSFORMER as TINY
from support.training import as_in_a_new_process, fairseq_train

UPDATES = 2


def train(*args):
    """fairseq-train in this process: its Run (output, error)."""
    with as_in_a_new_process():
        return fairseq_train(*args)


def generate(*args):
    """fairseq-generate's ``cli_main`` in this process: (what it printed, what it logged, the
    exception it ended with or None)."""
    from fairseq_cli import generate as fairseq_generate

    out, err, error = io.StringIO(), io.StringIO(), None
    argv = ["fairseq-generate", *[str(a) for a in args]]
    with (
        as_in_a_new_process(),
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            fairseq_generate.cli_main()
        except (Exception, SystemExit) as e:
            error = e
    return out.getvalue(), err.getvalue(), error


def train_args(data, save_dir, max_update, *extra):
    # --eval-bleu: fairseq then keeps numpy arrays (the BLEU n-gram counts) in the metrics state
    return [
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "rdrop_translation",
        "--criterion",
        "label_smoothed_cross_entropy_rdrop",
        "--rdrop-alpha",
        "5",
        "--label-smoothing",
        "0.1",
        "-s",
        "de",
        "-t",
        "en",
        *TINY,
        "--optimizer",
        "adam",
        "--lr",
        "3e-3",
        "--lr-scheduler",
        "inverse_sqrt",
        "--warmup-updates",
        "4",
        "--max-tokens",
        "2000",
        "--max-update",
        str(max_update),
        "--seed",
        "3",
        "--num-workers",
        "0",
        "--save-dir",
        save_dir,
        "--no-epoch-checkpoints",
        "--eval-bleu",
        "--eval-bleu-args",
        '{"beam": 1, "max_len_b": 20}',
        "--best-checkpoint-metric",
        "bleu",
        "--maximize-best-checkpoint-metric",
        "--log-format",
        "simple",
        "--log-interval",
        "1",
        "--no-progress-bar",
        "--cpu",
        *extra,
    ]


def generate_command(data, path):
    return [
        BIN / "fairseq-generate",
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "rdrop_translation",
        "-s",
        "de",
        "-t",
        "en",
        "--path",
        path,
        "--gen-subset",
        "valid",
        "--cpu",
        "--beam",
        "1",
        "--batch-size",
        "8",
        "--num-workers",  # no worker process (forked from this one by the in-process runs)
        "0",
    ]


def full_load(path):
    """The whole pickle, with the full unpickler: only for files this test wrote."""
    return torch.load(path, weights_only=False)


# -- a checkpoint as older fairseq wrote it ------------------------------------------------------


class _NumpyOnePickler(pickle._Pickler):
    """Writes numpy's scalar and array reconstructors under numpy 1's module name,
    numpy.core.multiarray (numpy 2 writes numpy._core.multiarray)."""

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", None) == "numpy._core.multiarray":
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


NUMPY_ONE_PICKLE = types.SimpleNamespace(
    __name__="numpy_one_pickle", Pickler=_NumpyOnePickler, dump=pickle.dump
)


def as_older_fairseq_wrote_it(state, command, path):
    """Write ``state`` (one of our checkpoints) as the checkpoints released with fairseq up to
    0.12.2 (trained with numpy 1 and often an older torch) differ from ours:
    - the training configuration is an ``argparse.Namespace`` under ``args`` and ``cfg`` is None
      (fairseq rebuilds ``cfg`` with ``convert_namespace_to_omegaconf`` when it loads one);
    - the validation score and the best score are numpy float64 scalars;
    - numpy objects are pickled under numpy 1's module names (``numpy.core.multiarray.scalar``,
      ``numpy.core.multiarray._reconstruct``);
    - the file has torch's legacy (non-zip) format.
    What it does not reproduce: the model keys and option names of older fairseq versions, which
    fairseq's own ``_upgrade_state_dict`` upgrades."""
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [str(a) for a in command if a not in ("--user-dir", USER_DIR)],
    )
    args.user_dir = USER_DIR
    extra = dict(
        state["extra_state"],
        val_loss=np.float64(state["extra_state"]["val_loss"]),
        best=np.float64(state["extra_state"]["best"]),
    )
    old = dict(state, args=args, cfg=None, extra_state=extra)
    torch.save(old, path, pickle_module=NUMPY_ONE_PICKLE, _use_new_zipfile_serialization=False)
    return path


# -- a checkpoint whose pickle runs code ---------------------------------------------------------


class WritesMarker:
    """Unpickled, runs code: exec (an allowlist must not hold it) or os.system (torch blocks its
    module whatever the allowlist)."""

    def __init__(self, marker, via):
        self.marker, self.via = str(marker), via

    def __reduce__(self):
        if self.via == "exec":
            return exec, (f"open({self.marker!r}, 'w').close()",)
        return os.system, (f"touch '{self.marker}'",)


def crafted(state, path, marker, via="exec"):
    torch.save(
        dict(state, extra_state=dict(state["extra_state"], x=WritesMarker(marker, via))), path
    )
    return path


def refused_line(path, name):
    return (
        f"checkpoint {path} holds {name}, which the safe loader does not allow; "
        "if you trust this file, set RDROP_TRUST_CHECKPOINTS=1"
    )


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(data_bin, tmp_path_factory):
    """{"ours": a checkpoint fairseq-train wrote with the plugin, "older fairseq": the same
    written as older fairseq did}."""
    folder = tmp_path_factory.mktemp("checkpoints")
    command = train_args(data_bin, folder / "ours", UPDATES)
    run = train(*command)
    assert run.error is None, run.output[-3000:]
    ours = folder / "ours" / "checkpoint_last.pt"
    older = as_older_fairseq_wrote_it(full_load(ours), command, folder / "older.pt")
    return {"ours": ours, "older fairseq": older}


KINDS = ["ours", "older fairseq"]


def test_the_checkpoints_hold_what_the_allowlist_is_for(checkpoints):
    found = {
        kind: set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        for kind, path in checkpoints.items()
        if kind == "ours"
    }
    assert found["ours"] == {
        "argparse.Namespace",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy._core.multiarray._reconstruct",
    }
    older = full_load(checkpoints["older fairseq"])
    assert isinstance(older["args"], argparse.Namespace) and older["cfg"] is None
    assert type(older["extra_state"]["val_loss"]) is np.float64
    with open(checkpoints["older fairseq"], "rb") as f:
        head = f.read(2)
        data = f.read()
    assert head == b"\x80\x02"  # a pickle: torch's legacy format, not a zip archive
    assert b"numpy.core.multiarray\nscalar\n" in data
    assert b"numpy.core.multiarray\n_reconstruct\n" in data and b"numpy._core" not in data


# -- load, resume, generate ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_loads_with_the_safe_loader(checkpoints, kind):
    path = checkpoints[kind]
    expected = full_load(checkpoints["ours"])
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["cfg"].task._name == "rdrop_translation"
    assert state["optimizer_history"][-1]["num_updates"] == UPDATES
    assert state["extra_state"]["val_loss"] == expected["extra_state"]["val_loss"]
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
    assert type(task).__name__ == "RDropTranslationTask"
    for name, tensor in models[0].state_dict().items():
        assert torch.equal(tensor, expected["model"][name]), name


def test_numpy_objects_come_back(checkpoints):
    """The BLEU n-gram counts fairseq keeps in the metrics (numpy arrays) and, in the older
    checkpoint, the numpy float64 scores written under numpy 1's module names."""
    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoints["older fairseq"]))
    arrays = [v for v in _leaves(state["extra_state"]["metrics"]) if isinstance(v, np.ndarray)]
    expected = [
        v
        for v in _leaves(full_load(checkpoints["ours"])["extra_state"]["metrics"])
        if isinstance(v, np.ndarray)
    ]
    assert arrays and len(arrays) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, expected))
    assert type(state["extra_state"]["best"]) is np.float64


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


@pytest.fixture(scope="module")
def resumed_and_generated(checkpoints, data_bin, tmp_path_factory):
    """For each kind: fairseq-train resumed from it for 2 more updates (its Run), and
    fairseq-generate on it (what it printed, logged, and ended with)."""
    root = tmp_path_factory.mktemp("resumed")
    runs = {}
    for kind, path in checkpoints.items():
        save = root / kind.replace(" ", "-")
        runs[("resume", kind)] = train(
            *train_args(data_bin, save, UPDATES + 2, "--restore-file", path)
        )
        runs[("generate", kind)] = generate(*generate_command(data_bin, path)[1:])
    return runs


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_resumes(resumed_and_generated, checkpoints, kind):
    run = resumed_and_generated[("resume", kind)]
    log = run.output
    assert run.error is None, log[-3000:]
    assert re.search(
        rf"Loaded checkpoint {re.escape(str(checkpoints[kind]))} "
        rf"\(epoch 1 @ {UPDATES} updates\)",
        log,
    )
    assert re.findall(r"num_updates=(\d+),", log) == [str(UPDATES + 1), str(UPDATES + 2)]


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_generates(resumed_and_generated, data_bin, kind):
    out, err, error = resumed_and_generated[("generate", kind)]
    assert error is None, (out + err)[-3000:]
    hypotheses = re.findall(r"^H-(\d+)\t", out, flags=re.M)
    assert sorted(map(int, hypotheses)) == list(range(20))  # every valid sentence


# -- code in a checkpoint ------------------------------------------------------------------------


@pytest.mark.parametrize("via, refused", [("exec", "builtins.exec"), ("os.system", "posix.system")])
def test_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(
    checkpoints, tmp_path, monkeypatch, via, refused
):
    monkeypatch.delenv("RDROP_TRUST_CHECKPOINTS", raising=False)
    marker = tmp_path / "marker"
    path = crafted(full_load(checkpoints["ours"]), tmp_path / "crafted.pt", marker, via)
    if os.name != "posix":
        refused = refused.replace("posix", os.name)
    with pytest.raises(UsageError) as error:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert str(error.value) == refused_line(path, refused)
    with pytest.raises(UsageError):
        checkpoint_utils.load_model_ensemble_and_task([str(path)])
    assert not marker.exists()


def test_generate_refuses_such_a_checkpoint_in_one_line(checkpoints, data_bin, tmp_path):
    marker = tmp_path / "marker"
    path = crafted(full_load(checkpoints["ours"]), tmp_path / "crafted.pt", marker)
    env = {k: v for k, v in os.environ.items() if k != "RDROP_TRUST_CHECKPOINTS"}
    proc = subprocess.run(
        [str(a) for a in generate_command(data_bin, path)],
        capture_output=True,
        text=True,
        env=dict(env, OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: " + refused_line(path, "builtins.exec")
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_trusting_checkpoints_loads_such_a_file(checkpoints, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    path = crafted(full_load(checkpoints["ours"]), tmp_path / "crafted.pt", marker)
    monkeypatch.setenv("RDROP_TRUST_CHECKPOINTS", "1")
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert marker.exists()  # the full unpickler ran the (harmless) payload
    assert state["optimizer_history"][-1]["num_updates"] == UPDATES


def test_downloaded_checkpoints_follow_the_same_policy(
    checkpoints, data_bin, tmp_path, monkeypatch
):
    """load_model_ensemble_and_task_from_hf_hub reads what snapshot_download fetched with the same
    loader: a plain fairseq checkpoint loads, code is refused in one line, and
    RDROP_TRUST_CHECKPOINTS=1 is the one opt-in."""
    hub = tmp_path / "hub"
    hub.mkdir()
    for lang in ("de", "en"):  # a hub model folder holds the dictionaries beside the model
        (hub / f"dict.{lang}.txt").symlink_to(data_bin / f"dict.{lang}.txt")
    marker = tmp_path / "marker"
    monkeypatch.setitem(
        sys.modules,
        "huggingface_hub",
        types.SimpleNamespace(snapshot_download=lambda *args, **kwargs: str(hub)),
    )
    monkeypatch.delenv("RDROP_TRUST_CHECKPOINTS", raising=False)
    (hub / "model.pt").symlink_to(checkpoints["ours"])
    models, _, task = checkpoint_utils.load_model_ensemble_and_task_from_hf_hub("someone/model")
    assert type(task).__name__ == "RDropTranslationTask" and len(models) == 1
    (hub / "model.pt").unlink()
    crafted(full_load(checkpoints["ours"]), hub / "model.pt", marker)
    with pytest.raises(UsageError, match="holds builtins.exec, which the safe loader"):
        checkpoint_utils.load_model_ensemble_and_task_from_hf_hub("someone/model")
    assert not marker.exists()
    monkeypatch.setenv("RDROP_TRUST_CHECKPOINTS", "1")
    checkpoint_utils.load_model_ensemble_and_task_from_hf_hub("someone/model")
    assert marker.exists()


def test_ema_weights_load_through_the_same_policy(checkpoints, tmp_path, monkeypatch):
    """load_ema_from_checkpoint (fairseq's EMA weights of a checkpoint) refuses code too."""
    monkeypatch.delenv("RDROP_TRUST_CHECKPOINTS", raising=False)
    state = full_load(checkpoints["ours"])
    ema = dict(state, extra_state=dict(state["extra_state"], ema=dict(state["model"])))
    torch.save(ema, tmp_path / "ema.pt")
    loaded = checkpoint_utils.load_ema_from_checkpoint(str(tmp_path / "ema.pt"))
    assert loaded["model"].keys() == state["model"].keys()
    marker = tmp_path / "marker"
    path = crafted(ema, tmp_path / "crafted.pt", marker)
    with pytest.raises(UsageError, match="holds builtins.exec"):
        checkpoint_utils.load_ema_from_checkpoint(str(path))
    assert not marker.exists()


def test_turning_the_fixes_off_keeps_safe_loading(checkpoints, tmp_path):
    """RDROP_FAIRSEQ_NO_FIXES=1 leaves fairseq's bugs alone, not the loader: the crafted file is
    still refused and its code does not run."""
    marker = tmp_path / "marker"
    path = crafted(full_load(checkpoints["ours"]), tmp_path / "crafted.pt", marker)
    code = (
        "import rdrop_fairseq, sys\nfrom fairseq import checkpoint_utils\n"
        "checkpoint_utils.load_checkpoint_to_cpu(sys.argv[1])"
    )
    env = {k: v for k, v in os.environ.items() if k != "RDROP_TRUST_CHECKPOINTS"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=dict(env, RDROP_FAIRSEQ_NO_FIXES="1", OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith(refused_line(path, "builtins.exec"))
    assert not marker.exists()


def test_the_loader_is_the_public_entry_point_for_tools(checkpoints, tmp_path, monkeypatch):
    """What rdrop_tools call: one UsageError line for a refused file; map_location is passed on."""
    monkeypatch.delenv("RDROP_TRUST_CHECKPOINTS", raising=False)
    state = load_checkpoint_file(str(checkpoints["ours"]), map_location="cpu")
    assert state["optimizer_history"][-1]["num_updates"] == UPDATES
    path = crafted(full_load(checkpoints["ours"]), tmp_path / "crafted.pt", tmp_path / "marker")
    with pytest.raises(UsageError) as error:
        load_checkpoint_file(
            str(path), map_location="cpu", weights_only=False
        )  # the policy decides
    assert str(error.value) == refused_line(path, "builtins.exec")
    assert not (tmp_path / "marker").exists()


# -- unreadable files ----------------------------------------------------------------------------


def test_unreadable_checkpoints_say_what_is_wrong(checkpoints, tmp_path):
    zipped = checkpoints["ours"].read_bytes()
    legacy = checkpoints["older fairseq"].read_bytes()
    cases = {
        "empty": (b"", "is empty"),
        "cut": (zipped[:1000], r"is truncated or corrupt \(a damaged zip archive\)"),
        "cut-end": (zipped[:-10], r"is truncated or corrupt \(a damaged zip archive\)"),
        "legacy-cut": (legacy[: len(legacy) // 2], r"is truncated \(an incomplete pickle\)"),
        "text": (b"hello\n", r"is not a PyTorch checkpoint \(neither a zip archive nor a pickle\)"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(UsageError) as error:
            checkpoint_utils.load_checkpoint_to_cpu(str(path))
        assert re.fullmatch(rf"(checkpoint )?{re.escape(str(path))} {reason}", str(error.value)), (
            name,
            str(error.value),
        )


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError(
            "Attempting to deserialize object on a CUDA device but "
            "torch.cuda.is_available() is False."
        ),
        KeyboardInterrupt(),
        SystemExit(3),
    ],
    ids=lambda e: type(e).__name__ + (str(e)[:12] if isinstance(e, RuntimeError) else ""),
)
def test_what_is_not_the_files_fault_passes_through_as_itself(tmp_path, monkeypatch, error):
    """Out of memory, a device error, Ctrl-C: raised as themselves, not blamed on the file; a
    RuntimeError of the file (a damaged archive) still is, in one line."""
    path = tmp_path / "good.pt"
    torch.save({"model": {}}, path)
    raised_by_load = [
        error,
        RuntimeError(
            "PytorchStreamReader failed reading zip archive: failed finding central directory"
        ),
    ]

    def load(*args, **kwargs):
        raise raised_by_load.pop(0)

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(BaseException) as raised:
        load_checkpoint_file(str(path), map_location="cpu")
    assert raised.value is error
    with pytest.raises(
        UsageError,
        match=rf"cannot read checkpoint {re.escape(str(path))} "
        r"\(RuntimeError: PytorchStreamReader failed",
    ):
        load_checkpoint_file(str(path), map_location="cpu")
