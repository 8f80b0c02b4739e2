"""The tests' multi-process fairseq training on the CPU (fairseq itself spawns only per GPU): one
fairseq-train per local rank.

  python tests/support/launcher.py --nproc N [--nodes M --node-rank R
      --master-addr HOST --master-port PORT] -- DATA --user-dir USER_DIR ...

Every process gets ``--distributed-world-size N*M --distributed-rank R*N+i
--distributed-init-method tcp://HOST:PORT --distributed-no-spawn``, plus
``--distributed-backend gloo --ddp-backend legacy_ddp`` on CPU (fairseq's ``pytorch_ddp`` and its
torchrun path need CUDA) or ``--distributed-backend nccl --device-id i`` on GPU; flags given after
``--`` override the backend choices. Each output line is prefixed with ``[rank R]``; SIGINT,
SIGTERM, SIGUSR1 and SIGUSR2 are forwarded to every rank; when one rank fails the others are
stopped and the launcher exits with the first non-zero exit status (128+N for a signal N).
"""

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_entry():
    local = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    return shlex.quote(local) if os.path.exists(local) else "fairseq-train"


def rank_commands(args, train_args, use_cuda):
    """The command line of every local rank of this node."""
    world = args.nodes * args.nproc
    init = f"tcp://{args.master_addr}:{args.master_port}"
    backend = (
        ["--distributed-backend", "nccl"]
        if use_cuda
        else ["--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
    )
    commands = []
    for local_rank in range(args.nproc):
        rank = args.node_rank * args.nproc + local_rank
        commands.append(
            shlex.split(args.entry)
            + backend
            + list(train_args)
            + [
                "--distributed-world-size",
                str(world),
                "--distributed-rank",
                str(rank),
                "--distributed-init-method",
                init,
                "--distributed-no-spawn",
                "--device-id",
                str(local_rank if use_cuda else 0),
            ]
        )
    return commands


def pump(stream, out, prefix):
    for line in iter(stream.readline, b""):
        out.buffer.write(prefix + line)
        out.buffer.flush()
    stream.close()


def exit_status(returncode):
    return 128 - returncode if returncode < 0 else returncode


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        usage="%(prog)s --nproc N [options] -- DATA [fairseq-train options...]",
    )
    parser.add_argument("--nproc", type=int, required=True, help="processes (GPUs) on this node")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--master-addr", default="127.0.0.1", help="host of node 0")
    parser.add_argument(
        "--master-port",
        type=int,
        default=None,
        help="free TCP port on node 0 (default: any free one; required with --nodes > 1)",
    )
    parser.add_argument(
        "--entry",
        default=default_entry(),
        help="command that trains (default: fairseq-train of this Python)",
    )
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])  # --help works without --
    if split == len(argv):
        parser.error("put the fairseq-train arguments after -- (e.g. -- DATA --user-dir ...)")
    train_args = argv[split + 1 :]
    if args.nproc < 1 or args.nodes < 1 or not 0 <= args.node_rank < args.nodes:
        parser.error("need --nproc >= 1, --nodes >= 1 and 0 <= --node-rank < --nodes")
    if args.master_port is None:
        if args.nodes > 1:
            parser.error("--master-port is required with --nodes > 1 (the same on every node)")
        args.master_port = free_port()

    import torch  # late: the argument errors above stay fast

    use_cuda = "--cpu" not in train_args and torch.cuda.is_available()
    if use_cuda and args.nproc > torch.cuda.device_count():
        parser.error(f"--nproc {args.nproc} but only {torch.cuda.device_count()} GPUs are visible")
    env = dict(os.environ)
    if not use_cuda and "OMP_NUM_THREADS" not in env:  # N ranks must not each use every core
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.nproc))

    procs, pumps = [], []
    for local_rank, command in enumerate(rank_commands(args, train_args, use_cuda)):
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
        )  # signals reach ranks only through us
        prefix = f"[rank {args.node_rank * args.nproc + local_rank}] ".encode()
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            pumps.append(threading.Thread(target=pump, args=(stream, out, prefix), daemon=True))
            pumps[-1].start()
        procs.append(proc)

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)

    status, stop_at = 0, None
    while [proc.poll() for proc in procs].count(None):  # poll every rank, every time
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed and stop_at is None:  # the other ranks would wait for it forever
            status, stop_at = exit_status(failed[0]), time.monotonic() + 30
            forward(signal.SIGTERM, None)
        if stop_at is not None and time.monotonic() > stop_at:
            forward(signal.SIGKILL, None)
        time.sleep(0.1)
    if status == 0:
        status = next((exit_status(p.returncode) for p in procs if p.returncode), 0)
    for thread in pumps:
        thread.join(timeout=5)
    return status


if __name__ == "__main__":
    sys.exit(main())
