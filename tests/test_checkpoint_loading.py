"""Checkpoints load with torch's safe (weights_only) unpickler and an allowlist of what fairseq
checkpoints hold: ours and older fairseq ones load, resume and generate; a checkpoint whose pickle
would run code is refused in one line and the code does not run, unless the user opts in with
RDROP_TRUST_CHECKPOINTS=1; an unreadable file is explained. A 1-layer, 16-dim Transformer trained
for 2 updates on the synthetic corpus, one CPU thread per process."""

import argparse
import os
import pickle
import re
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils, options
from fairseq.data import data_utils

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, applies the fixes)
from support.tiny_model import TINY_TRANSFORMER as TINY
from support import BIN, USER_DIR, run_cli
from rdrop_fairseq import fairseq_fixes
from rdrop_fairseq.errors import UsageError

UPDATES = 2


def train_args(data, save_dir, max_update, *extra):
    # --eval-bleu: fairseq then keeps numpy arrays (the BLEU n-gram counts) in the metrics state
    return [
        data, "--user-dir", USER_DIR, "--task", "rdrop_translation",
        "--criterion", "label_smoothed_cross_entropy_rdrop", "--rdrop-alpha", "5",
        "--label-smoothing", "0.1", "-s", "de", "-t", "en", *TINY,
        "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "4", "--max-tokens", "2000", "--max-update", str(max_update),
        "--seed", "3", "--num-workers", "0", "--save-dir", save_dir, "--no-epoch-checkpoints",
        "--eval-bleu", "--eval-bleu-args", '{"beam": 1, "max_len_b": 20}',
        "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
        "--log-format", "simple", "--log-interval", "1", "--no-progress-bar", "--cpu", *extra,
    ]


def generate_command(data, path):
    return [BIN / "fairseq-generate", data, "--user-dir", USER_DIR, "--task", "rdrop_translation",
            "-s", "de", "-t", "en", "--path", path, "--gen-subset", "valid", "--cpu",
            "--beam", "1", "--batch-size", "8"]


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


NUMPY_ONE_PICKLE = types.SimpleNamespace(__name__="numpy_one_pickle", Pickler=_NumpyOnePickler,
                                         dump=pickle.dump)


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
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       [str(a) for a in command if a not in ("--user-dir", USER_DIR)])
    args.user_dir = USER_DIR
    extra = dict(state["extra_state"], val_loss=np.float64(state["extra_state"]["val_loss"]),
                 best=np.float64(state["extra_state"]["best"]))
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
    torch.save(dict(state, extra_state=dict(state["extra_state"], x=WritesMarker(marker, via))),
               path)
    return path


def refused_line(path, name):
    return (f"checkpoint {path} holds {name}, which the safe loader does not allow; "
            "if you trust this file, set RDROP_TRUST_CHECKPOINTS=1")


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(data_bin, tmp_path_factory):
    """{"ours": a checkpoint fairseq-train wrote with the plugin, "older fairseq": the same
    written as older fairseq did}."""
    folder = tmp_path_factory.mktemp("checkpoints")
    command = train_args(data_bin, folder / "ours", UPDATES)
    run_cli(BIN / "fairseq-train", *command)
    ours = folder / "ours" / "checkpoint_last.pt"
    older = as_older_fairseq_wrote_it(full_load(ours), command, folder / "older.pt")
    return {"ours": ours, "older fairseq": older}


KINDS = ["ours", "older fairseq"]


def test_the_checkpoints_hold_what_the_allowlist_is_for(checkpoints):
    found = {kind: set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
             for kind, path in checkpoints.items() if kind == "ours"}
    assert found["ours"] == {"argparse.Namespace", "numpy.dtype", "numpy.ndarray",
                             "numpy._core.multiarray._reconstruct"}
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
    expected = [v for v in _leaves(full_load(checkpoints["ours"])["extra_state"]["metrics"])
                if isinstance(v, np.ndarray)]
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
    """For each kind: fairseq-train resumed from it for 2 more updates, and fairseq-generate."""
    root = tmp_path_factory.mktemp("resumed")
    commands = {}
    for kind, path in checkpoints.items():
        save = root / kind.replace(" ", "-")
        commands[("resume", kind)] = [BIN / "fairseq-train", *train_args(
            data_bin, save, UPDATES + 2, "--restore-file", path)]
        commands[("generate", kind)] = generate_command(data_bin, path)

    def run(key):
        return key, run_cli(*commands[key], check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, commands))


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_resumes(resumed_and_generated, checkpoints, kind):
    proc = resumed_and_generated[("resume", kind)]
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(rf"Loaded checkpoint {re.escape(str(checkpoints[kind]))} "
                     rf"\(epoch 1 @ {UPDATES} updates\)", log)
    assert re.findall(r"num_updates=(\d+),", log) == [str(UPDATES + 1), str(UPDATES + 2)]


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_generates(resumed_and_generated, data_bin, kind):
    proc = resumed_and_generated[("generate", kind)]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    hypotheses = re.findall(r"^H-(\d+)\t", proc.stdout, flags=re.M)
    assert sorted(map(int, hypotheses)) == list(range(20))  # every valid sentence


# -- code in a checkpoint ------------------------------------------------------------------------


@pytest.mark.parametrize("via, refused", [("exec", "builtins.exec"), ("os.system", "posix.system")])
def test_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(
        checkpoints, tmp_path, monkeypatch, via, refused):
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
    proc = subprocess.run([str(a) for a in generate_command(data_bin, path)], capture_output=True,
                          text=True, env=dict(env, OMP_NUM_THREADS="1"), timeout=600)
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


def test_downloaded_checkpoints_keep_torchs_default(checkpoints, tmp_path, monkeypatch):
    """load_model_ensemble_and_task_from_hf_hub reads what snapshot_download fetched with torch's
    own default (weights_only, no allowlist), even with RDROP_TRUST_CHECKPOINTS=1."""
    hub = tmp_path / "hub"
    hub.mkdir()
    marker = tmp_path / "marker"
    crafted(full_load(checkpoints["ours"]), hub / "model.pt", marker)
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(
        snapshot_download=lambda *args, **kwargs: str(hub)))
    monkeypatch.setenv("RDROP_TRUST_CHECKPOINTS", "1")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpoint_utils.load_model_ensemble_and_task_from_hf_hub("someone/model")
    assert not marker.exists()
    (hub / "model.pt").unlink()
    (hub / "model.pt").symlink_to(checkpoints["ours"])  # a plain fairseq checkpoint: its
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):  # Namespace is refused
        checkpoint_utils.load_model_ensemble_and_task_from_hf_hub("someone/model")


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
        assert re.fullmatch(rf"(checkpoint )?{re.escape(str(path))} {reason}", str(error.value)), \
            (name, str(error.value))


# -- the fixes themselves ------------------------------------------------------------------------


def test_each_check_sees_the_bug_in_fairseq_as_installed_and_not_after_the_fix():
    assert fairseq_fixes._drops_last_batch(data_utils.batch_by_size.__wrapped__)
    assert not fairseq_fixes._drops_last_batch(data_utils.batch_by_size)
    from fairseq.file_io import PathManager
    assert fairseq_fixes._copies_in_place(PathManager)
    assert not fairseq_fixes._copies_in_place(checkpoint_utils.PathManager)
    assert fairseq_fixes._bf16_turns_on_tpu()
    assert fairseq_fixes.apply() == []  # applied once, at import


APPLY_TWICE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
import rdrop_fairseq
from rdrop_fairseq import fairseq_fixes
from fairseq import checkpoint_utils
from fairseq.data import data_utils
import torch
print("again:", fairseq_fixes.apply())
print("torch replaced:", checkpoint_utils.torch is not torch)
print("batch_by_size replaced:", hasattr(data_utils.batch_by_size, "__wrapped__"))
"""


@pytest.mark.parametrize("no_fixes", [False, True])
def test_fixes_are_logged_once_and_can_be_turned_off(no_fixes):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RDROP_FAIRSEQ_NO_FIXES", None)
    if no_fixes:
        env["RDROP_FAIRSEQ_NO_FIXES"] = "1"
    proc = subprocess.run([sys.executable, "-c", APPLY_TWICE], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [line for line in proc.stdout.splitlines()
              if line.startswith("rdrop_fairseq.fairseq_fixes fixes to fairseq")]
    assert "again: []" in proc.stdout
    assert f"torch replaced: {not no_fixes}" in proc.stdout
    assert f"batch_by_size replaced: {not no_fixes}" in proc.stdout
    if no_fixes:
        assert logged == []
    else:
        assert len(logged) == 1 and "safe checkpoint loading" in logged[0], proc.stdout
