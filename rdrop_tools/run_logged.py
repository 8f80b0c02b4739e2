"""Run one step of a recipe with its complete output in a log file and a short view of it on the
console (used by examples/translation/quickstart.sh).

    python -m rdrop_tools.run_logged --log FILE [--verbose] -- COMMAND [ARGS...]

Everything COMMAND writes to stdout and stderr goes to FILE (a progress bar's intermediate states
left out). What is shown depends on where this command's stdout goes:

- a terminal: COMMAND runs on a pseudo-terminal of the same width, so that fairseq's
  ``--log-format tqdm`` and the rdrop-* tools draw their progress bars; the current bar is shown
  on one line, redrawn in place, and of the rest only the end-of-epoch summaries, fairseq's
  ``Translated ...`` line and the plugin's ``nothing to do: ...`` or ``stopped by ...``, each
  cut to the terminal's width, and ``error:`` lines, whole;
- anything else (a file, a pipe, CI): the same lines plus fairseq's periodic progress lines
  (``--log-format simple``), one line each, and never a bar.

``--verbose`` shows everything as it comes. The exit status is COMMAND's; when it fails without
an ``error:`` line of its own, the last lines of the log are shown, then one ``error:`` line
naming the log.
"""

import argparse
import codecs
import fcntl
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# a tqdm bar: "prefix:  45%|####5     | 120/266 [00:30<00:37, 3.9it/s, ...]"
BAR = re.compile(r"\d+%\|.*\|\s*[\d.]+[kM]?/[\d.?]+[kM]?|\|\s*[\d.]+[kM]?\s+\S*\s*\[\d")
# fairseq's log lines: "2026-12-04 15:00:00 | INFO | train | epoch 001 | loss 9.1 | ..."
FAIRSEQ = re.compile(r"^\S+ \S+ \| (?P<level>[A-Z]+) \| (?P<name>[\w.]+) \| (?P<message>.*)$")
# the same from a command whose logging has the default format: "INFO:fairseq_cli.generate:..."
PLAIN = re.compile(r"^(?P<level>[A-Z]+):(?P<name>[\w.]+):(?P<message>.*)$")
# the plugin's notes on a run that stops early: said as they are
NOTES = ("nothing to do: ", "stopped by ")
SUMMARY = re.compile(r"^epoch (?P<epoch>\d+) \| (?P<stats>.*)$")
INNER = re.compile(r"^epoch (?P<epoch>\d+):\s+(?P<done>\d+) / (?P<total>\d+) (?P<stats>.*)$")
# "error: ..." (the plugin, the tools, the recipes) or argparse's "prog: error: ..."
ERROR = re.compile(r"^(?:[\w.-]+: )?(?P<error>error: .*)$")
KEEP = {
    "train": ("loss", "nll_loss", "kl_loss", "ppl", "wall"),
    "valid": ("loss", "nll_loss", "ppl", "bleu"),
    "train_inner": ("loss", "nll_loss", "kl_loss", "ppl", "lr"),
}
# lines cut to this width where no terminal says how wide it is
PLAIN_WIDTH = 160


def _stats(text, keys, sep):
    """``loss 9.1 | ppl 3`` (summary) or ``loss=9.1, ppl=3`` (simple progress) -> the kept keys."""
    pairs = {}
    for item in text.split(sep):
        key, _, value = item.strip().replace("=", " ").partition(" ")
        pairs[key] = value.strip()
    return ", ".join(f"{key} {pairs[key]}" for key in keys if pairs.get(key))


def summarize(line):
    """The console's version of one log line, or None when the line stays in the log only."""
    error = ERROR.match(line)
    if error:
        return line[error.start("error") :]
    match = FAIRSEQ.match(line) or PLAIN.match(line)
    if not match:
        return line if line.startswith(NOTES) else None
    if match["message"].startswith(NOTES):
        return match["message"]
    name, message = match["name"], match["message"]
    if match["level"] in ("ERROR", "CRITICAL"):
        return message
    if name in ("train", "valid"):
        summary = SUMMARY.match(message)
        if summary:
            stats = _stats(summary["stats"], KEEP[name], "|")
            return f"epoch {int(summary['epoch'])} {name}: {stats}"
    if name == "train_inner":
        inner = INNER.match(message)
        if inner:
            stats = _stats(inner["stats"], KEEP[name], ",")
            return f"epoch {int(inner['epoch'])}: {inner['done']}/{inner['total']} batches, {stats}"
    if name.endswith("generate") and message.startswith("Translated "):
        return message
    return None


class View:
    """What the console shows: chosen lines, and on a terminal the current progress bar."""

    def __init__(self, out, log, terminal, width, verbose):
        self.out, self.log, self.terminal, self.width = out, log, terminal, width
        self.verbose = verbose
        self.pending = ""  # text after the last line break
        self.bar = False  # a bar is drawn on the current console line
        self.errors = 0

    def feed(self, text):
        if self.verbose:
            self.out.write(text)
            self.out.flush()
        text = self.pending + text
        # a pseudo-terminal ends lines with "\r\n": a final "\r" may be half of one
        self.pending = "\r" if text.endswith("\r") else ""
        text = (text[:-1] if self.pending else text).replace("\r\n", "\n")
        *lines, rest = text.split("\n")
        for line in lines:
            self._line(line)
        if "\r" in rest:  # a bar redrawn in place: show its latest state now
            *done, rest = rest.split("\r")
            kept = []  # text overwritten on the same line that is no bar stays for the log
            for segment in done:
                if BAR.search(ANSI.sub("", segment)):
                    self._bar(segment)
                elif segment.strip():
                    kept.append(segment)
            rest = "\r".join(kept + [rest])
        self.pending = rest + self.pending
        self.out.flush()
        self.log.flush()  # the log can be followed (tail -f) while the step runs

    def close(self):
        if self.pending:
            self._line(self.pending)
        self.pending = ""
        self._clear_bar()
        self.out.flush()

    def _line(self, raw):
        """One line of output: every state of it that is no bar goes to the log and may be
        shown; a bar's last state is drawn."""
        bar = None
        for segment in raw.split("\r"):
            segment = ANSI.sub("", segment).rstrip()
            if not segment.strip():
                continue
            if BAR.search(segment):  # a bar's state, or its final one (tqdm's leave=True)
                bar = segment
            else:
                self._text(segment)
        if bar is not None:
            self._bar(bar)

    def _text(self, line):
        if FAIRSEQ.match(line.lstrip()):  # after a bar cleared with spaces but no \r
            line = line.lstrip()
        self.log.write(line + "\n")
        shown = summarize(line)
        if shown is None:
            return
        if shown.startswith("error:"):
            self.errors += 1
        if self.verbose:
            return
        self._clear_bar()
        if shown.startswith("error:"):  # whole, and where errors go
            self.out.flush()
            print(shown, file=sys.stderr, flush=True)
        else:
            self.out.write(self._cut(shown) + "\n")

    def _bar(self, segment):
        segment = ANSI.sub("", segment).strip()
        if self.verbose or not self.terminal or not segment:
            return
        self.out.write("\r" + self._cut(segment) + "\x1b[K")
        self.bar = True

    def _clear_bar(self):
        if self.bar:
            self.out.write("\r\x1b[K")
            self.bar = False

    def _cut(self, text):
        width = self.width - 1 if self.terminal else PLAIN_WIDTH
        return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def _spawn_on_pty(command, width):
    """COMMAND with stdout and stderr on a new pseudo-terminal WIDTH columns wide; its master fd."""
    master, slave = os.openpty()
    rows = shutil.get_terminal_size((width, 24)).lines
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, width, 0, 0))
    env = dict(os.environ, COLUMNS=str(width))
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
        )
    finally:
        os.close(slave)
    return child, master


def _read(fd):
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the pseudo-terminal's other side is closed
        return b""


def step_name(command):
    """What failed: ``train-multi30k.sh`` for ``bash .../train-multi30k.sh ...``, ``x.py`` for
    ``python x.py``, ``pkg.mod`` for ``python -m pkg.mod``."""
    name = os.path.basename(command[0])
    if (name in ("bash", "sh") or name.startswith("python")) and command[1:]:
        if command[1] == "-m" and command[2:]:
            return command[2]
        return os.path.basename(command[1])
    return name


def get_parser():
    parser = argparse.ArgumentParser(
        prog="python -m rdrop_tools.run_logged",
        description="Run COMMAND with its whole output in --log and a short view on the console.",
    )
    parser.add_argument("--log", required=True, metavar="FILE", help="where all the output goes")
    parser.add_argument("--verbose", action="store_true", help="show all the output as well")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no COMMAND given (after --)")
    log_dir = os.path.dirname(os.path.abspath(args.log))
    if not os.path.isdir(log_dir):
        print(f"error: --log {args.log}: directory {log_dir} does not exist", file=sys.stderr)
        return 1
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size((80, 24)).columns if terminal else PLAIN_WIDTH
    width = width if width > 10 else 80
    # Ctrl-C reaches COMMAND (same process group); this process waits for it to finish
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(args.log, "w", encoding="utf-8", errors="replace") as log:
        view = View(sys.stdout, log, terminal, width, args.verbose)
        try:
            if terminal:
                child, fd = _spawn_on_pty(command, width)
            else:
                child = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                fd = child.stdout.fileno()
        except OSError as exc:
            print(f"error: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
            return 127
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            data = _read(fd)
            if not data:
                break
            view.feed(decoder.decode(data))
        view.feed(decoder.decode(b"", final=True))
        view.close()
        status = child.wait()
        if terminal:
            os.close(fd)
    if status != 0 and not view.errors:
        if not args.verbose:
            with open(args.log, encoding="utf-8", errors="replace") as log:
                tail = log.read().splitlines()[-15:]
            for line in tail:
                print(view._cut(line), file=sys.stderr)
        reason = f"signal {-status}" if status < 0 else f"exit status {status}"
        print(
            f"error: {step_name(command)} stopped with {reason}; the whole output is in {args.log}",
            file=sys.stderr,
        )
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main())
