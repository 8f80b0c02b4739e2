"""Training in several processes: 2 gloo processes equal 1 process with --update-freq 2; the
summed logging outputs reduce like the list; the launcher's commands, failure and signal handling;
the loaded state rank 0 broadcasts unpickles on the other ranks under the loading policy.

2 processes (gloo, legacy_ddp, our launcher) vs 1 process with ``--update-freq 2`` (fairseq-train's
``cli_main`` in this process, on one CPU thread as each rank), 8 updates across an epoch boundary
(where rank 1 gets fairseq's dummy batch): parameters equal within the asserted 1e-6 (measured:
0.0, i.e. bit-identical) and the same logged loss/nll_loss/kl_loss, *provided both draw dropout
masks per batch* (the ranks' entry point and the run in this process seed torch with (update,
first sentence id) before each batch). With stock fairseq seeding, both runs are valid but not
equal: every rank seeds ``seed + num_updates``, so rank 1 draws the masks of the single process's
first micro-batch, while the single process draws its second micro-batch's masks from the
continuing RNG stream. Batch order, the gradient sum, the normalisation by the all-reduced sample
size, and the metrics (summed across workers, then ``reduce_metrics``) agree exactly.
"""

import io
import math
import re
import shlex
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.logging import metrics
from omegaconf import OmegaConf

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, installs the loader)
from rdrop_fairseq.criterion import LabelSmoothedCrossEntropyRDropCriterion as RDrop
from rdrop_fairseq.errors import UsageError
from rdrop_fairseq.task import RDropTranslationTask
from support import LAUNCHER, launcher, run_cli
from support.tiny_model import build
from support.training import (
    as_in_a_new_process,
    curve,
    fairseq_train,
    last_state,
    output,
    train_args,
)

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


#: dropout masks that depend on (update, batch) only, not on the RNG history of the process, so
#: that N ranks and one process with --update-freq N draw the same masks
SEEDED = """
import torch

def seeded(train_step):
    def seeded_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        torch.manual_seed(100003 * update_num + int(sample["id"].min()))
        return train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)

    return seeded_train_step
"""

#: fairseq-train with :data:`SEEDED` dropout masks, for each rank
SEEDED_ENTRY = (
    SEEDED
    + """
import sys
import fairseq_cli.train
from rdrop_fairseq.task import RDropTranslationTask

RDropTranslationTask.train_step = seeded(RDropTranslationTask.train_step)
sys.exit(fairseq_cli.train.cli_main())
"""
)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_update_freq_2(data_bin, tmp_path):
    entry = tmp_path / "seeded_train.py"
    entry.write_text(SEEDED_ENTRY)
    args = lambda save: train_args(data_bin, save, 8, "--disable-validation")  # noqa: E731
    seeding = {}
    exec(SEEDED, seeding)
    with (
        as_in_a_new_process(),
        mock.patch.object(
            RDropTranslationTask,
            "train_step",
            seeding["seeded"](RDropTranslationTask.train_step),
        ),
    ):
        run = fairseq_train(*args(tmp_path / "one"), "--update-freq", "2")
    assert run.error is None, run.output[-3000:]
    single = run.output
    ddp = run_cli(
        *LAUNCHER,
        "--nproc",
        "2",
        "--entry",
        f"{shlex.quote(sys.executable)} {shlex.quote(str(entry))}",
        "--",
        *args(tmp_path / "two"),
        env=ONE_THREAD,
    )
    ddp_log = output(ddp)
    assert "[rank 1] " in ddp.stderr + ddp.stdout
    assert re.search(r"\[rank 1\] .*distributed init \(rank 1\)", ddp_log)

    one, two = curve(single), curve(ddp_log)
    assert sorted(one) == sorted(two) == list(range(1, 9)) and one[8][0] == 2
    for update in one:  # logged with 3 decimals; identical up to the last one
        for a, b in zip(one[update][1:], two[update][1:]):
            assert abs(float(a) - float(b)) <= 1.5e-3, (update, one[update], two[update])
    assert all(float(two[u][3]) > 0 for u in two)  # the KL term is there and reduced

    p1, p2 = last_state(tmp_path / "one"), last_state(tmp_path / "two")
    assert p2["optimizer_history"][-1]["num_updates"] == 8
    diff = max((p1["model"][k] - p2["model"][k]).abs().max().item() for k in p1["model"])
    print(f"2 ranks vs --update-freq 2: max |param difference| = {diff}")
    assert diff <= 1e-6, f"max |param difference| = {diff}"


def test_summed_logging_outputs_reduce_like_the_list():
    """What the workers' fast stat sync does: logging outputs are summed key by key first."""
    assert RDrop.logging_outputs_can_be_summed()
    logs = [
        {
            "loss": 30.0,
            "nll_loss": 12.0,
            "kl_loss": 0.9,
            "ntokens": 10,
            "nsentences": 2,
            "sample_size": 10,
        },
        {
            "loss": 61.0,
            "nll_loss": 20.0,
            "kl_loss": 3.1,
            "ntokens": 25,
            "nsentences": 3,
            "sample_size": 25,
        },
    ]
    summed = [{k: logs[0][k] + logs[1][k] for k in logs[0]}]
    values = []
    for outputs in (logs, summed):
        with metrics.aggregate() as agg:
            RDrop.reduce_metrics(outputs)
            values.append(agg.get_smoothed_values())
    assert values[0] == values[1]
    assert values[0]["kl_loss"] == pytest.approx(4.0 / 35 / math.log(2), abs=1e-3)


def test_launcher_commands_cpu_and_multi_node_gpu():
    args = SimpleNamespace(
        nproc=2,
        nodes=1,
        node_rank=0,
        master_addr="127.0.0.1",
        master_port=1234,
        entry="fairseq-train",
    )
    cpu = launcher.rank_commands(args, ["DATA", "--cpu"], use_cuda=False)
    assert cpu[1] == [
        "fairseq-train",
        "--distributed-backend",
        "gloo",
        "--ddp-backend",
        "legacy_ddp",
        "DATA",
        "--cpu",
        "--distributed-world-size",
        "2",
        "--distributed-rank",
        "1",
        "--distributed-init-method",
        "tcp://127.0.0.1:1234",
        "--distributed-no-spawn",
        "--device-id",
        "0",
    ]
    args.nproc, args.nodes, args.node_rank, args.master_addr = 4, 2, 1, "node0"
    gpu = launcher.rank_commands(args, ["DATA"], use_cuda=True)
    assert [c[c.index("--distributed-rank") + 1] for c in gpu] == ["4", "5", "6", "7"]
    assert [c[c.index("--device-id") + 1] for c in gpu] == ["0", "1", "2", "3"]
    assert all(c[c.index("--distributed-world-size") + 1] == "8" for c in gpu)
    assert all("nccl" in c and "legacy_ddp" not in c for c in gpu)


FAKE_RANK = """import signal, sys, time
rank = int(sys.argv[sys.argv.index("--distributed-rank") + 1])
def stop(signum, frame):
    print(f"rank {rank} got signal {signum}", flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
if rank == int(sys.argv[1]):
    time.sleep(1)  # the other ranks have their SIGTERM handler by then
    print("boom", file=sys.stderr, flush=True)
    sys.exit(3)
time.sleep(120)
"""


def start_launcher(tmp_path, failing_rank):
    script = tmp_path / "fake_rank.py"
    script.write_text(FAKE_RANK)
    entry = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {failing_rank}"
    return subprocess.Popen(
        [*LAUNCHER, "--nproc", "3", "--entry", entry, "--", "--cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_launcher_propagates_the_first_failure_and_stops_the_other_ranks(tmp_path):
    proc = start_launcher(tmp_path, failing_rank=1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "[rank 1] boom" in err
    assert "[rank 0] rank 0 got signal 15" in out and "[rank 2] rank 2 got signal 15" in out


@pytest.mark.slow
def test_launcher_forwards_sigterm_to_every_rank(tmp_path):
    proc = start_launcher(tmp_path, failing_rank=-1)
    ready, deadline = 0, time.monotonic() + 60
    while ready < 3 and time.monotonic() < deadline:
        ready += proc.stdout.readline().endswith("ready\n")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert all(f"[rank {r}] rank {r} got signal 15" in out for r in range(3))


# -- the broadcast of a loaded checkpoint -------------------------------------------------------


def broadcast_payload(state):
    """What rank 0 sends in fairseq's broadcast_object: the state without its tensors, saved with
    torch.save (``_broadcast_object_slow``)."""
    tensors = []
    buffer = io.BytesIO()
    torch.save(distributed_utils._split_tensors_from_obj(state, tensors), buffer)
    return io.BytesIO(buffer.getvalue())


def loaded_state(tmp_path):
    """A state as fairseq's load_checkpoint_to_cpu returns it: cfg is an omegaconf DictConfig."""
    cfg, _, model, _ = build(tmp_path, extra=["--rdrop-alpha", "5"])
    path = tmp_path / "checkpoint.pt"
    checkpoint_utils.torch_persistent_save(  # as the trainer saves it: cfg as plain containers
        {
            "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "model": model.state_dict(),
            "extra_state": {"val_loss": 1.5},
            "optimizer_history": [{"num_updates": 3, "best_loss": 1.5}],
            "last_optimizer_state": {},
        },
        str(path),
    )
    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_other_ranks_unpickle_the_broadcast_state_under_the_policy(tmp_path, monkeypatch):
    """Rank 1's torch.load in _broadcast_object_slow: the omegaconf config loads; code does not."""
    monkeypatch.delenv("RDROP_TRUST_CHECKPOINTS", raising=False)
    state = loaded_state(tmp_path)
    received = distributed_utils.torch.load(broadcast_payload(state), map_location="cpu")
    assert received["cfg"].task._name == "rdrop_translation"
    assert received["optimizer_history"][-1]["num_updates"] == 3

    class Payload:
        def __reduce__(self):
            return exec, ("raise SystemExit('ran')",)

    state["extra_state"]["x"] = Payload()
    with pytest.raises(
        UsageError,
        match=r"^the checkpoint state sent by rank 0 .* holds "
        r"builtins\.exec, which the safe loader does not allow",
    ):
        distributed_utils.torch.load(broadcast_payload(state), map_location="cpu")
