"""The documentation's cheap claims, checked as written: every installed rdrop-* tool answers
--help, every documented call of a tool gives its required options, the environment variables do
what the docs say for the values they name, and the README's option table states the criterion's
defaults and choices."""

import dataclasses
import enum
import os
import re
import subprocess
import sys

import pytest

from support import BIN, ROOT, run_cli

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
]


def declared_tools():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return sorted(tomllib.load(f)["project"]["scripts"])


@pytest.fixture(scope="module")
def helps():
    """{tool: its --help output}, each run as the installed command (four at a time: each is
    mostly a Python start)."""
    from concurrent.futures import ThreadPoolExecutor

    names = declared_tools()
    with ThreadPoolExecutor(4) as pool:
        procs = pool.map(lambda name: run_cli(BIN / name, "--help", check=False), names)
        return dict(zip(names, procs))


@pytest.mark.slow
def test_every_tool_answers_help(helps):
    assert helps, "no rdrop-* tools declared in pyproject.toml"
    for name, proc in helps.items():
        assert proc.returncode == 0, f"{name} --help exited {proc.returncode}: {proc.stderr[-500:]}"
        assert proc.stdout.startswith(f"usage: {name}"), f"{name} --help: {proc.stdout[:200]}"
        assert proc.stderr.strip() == "", f"{name} --help wrote to stderr: {proc.stderr[-500:]}"


def required_options(usage):
    """The options a usage line requires: [{--flag}, {--a, --b} (one of), ...]."""
    usage = " ".join(usage.split())
    required, depth, group, token = [], 0, None, ""
    for char in usage + " ":
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif depth == 0 and char == "(":
            group = set()
        elif depth == 0 and char == ")":
            if re.fullmatch(r"--[\w-]+", token):
                group.add(token)
            required.append(group)
            group, token = None, ""
        elif char.isspace() or char == "|":
            if depth == 0 and re.fullmatch(r"--[\w-]+", token):
                (group.add(token) if group is not None else required.append({token}))
            token = ""
        elif depth == 0:
            token += char
    return required


def test_required_options_are_read_from_a_usage_line():
    usage = (
        "usage: rdrop-x [-h] --data DATA_BIN [--ctranslate2 DIR]\n"
        "               (--hyp HYP | --generate-log G)\n"
        "               [--quantization [Q]] --output OUTPUT IN OUT -- ARGS"
    )
    assert required_options(usage) == [{"--data"}, {"--hyp", "--generate-log"}, {"--output"}]


def documented_calls(text, tool):
    """Each call of ``tool`` with arguments in ``text``: code-block lines (with their ``\\``
    continuations) and inline code spans outside tables, from the tool's name on."""
    spans = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        spans += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    # a table's cells name cases (`rdrop-export IN IN`), not commands to copy
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("|"))
    spans += re.findall(r"`([^`]+)`", prose)
    calls = []
    for span in spans:
        span = " ".join(span.split())
        for match in re.finditer(rf"(?<![\w/-]){re.escape(tool)}(?![\w-])( [^#|;]*)?", span):
            args = (match.group(1) or "").strip()
            if args:
                calls.append(f"{tool} {args}")
    return calls


def test_documented_calls_are_found_in_code_and_prose():
    text = (
        "Run `rdrop-x --input A\n--threads 2` or\n\n"
        "```bash\nrdrop-x IN \\\n    --data D  # c\n```\n"
        "| `rdrop-x IN IN` | a case |\n`rdrop-xy --a` and `rdrop-x` alone"
    )
    assert documented_calls(text, "rdrop-x") == [
        "rdrop-x IN --data D",
        "rdrop-x --input A --threads 2",
    ]


@pytest.mark.slow
def test_documented_calls_give_the_required_options(helps):
    missing = []
    for name, proc in helps.items():
        usage = proc.stdout.split("\n\n")[0]
        for doc in DOCS:
            for call in documented_calls(doc.read_text(encoding="utf-8"), name):
                if "--help" in call.split():
                    continue
                for options in required_options(usage):
                    if not options & set(re.findall(r"--[\w-]+", call)):
                        missing.append(f"{doc.name}: `{call}` lacks {' or '.join(sorted(options))}")
    assert not missing, "\n".join(missing)


def test_no_doc_passes_the_plugin_as_a_relative_user_dir():
    """fairseq imports --user-dir by its basename: `--user-dir rdrop_fairseq` works only from
    the clone's root; the docs use the installed package's directory."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert not re.search(r"--user-dir\s+\.?/?rdrop_fairseq\b", text), doc.name


def test_the_readme_benchmark_command_writes_the_file_it_links():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    pairs = re.findall(
        r"`(python benchmarks/run\.py[^`]*)`,?\s*\[[^\]]*\]\((benchmarks/results/[^)]+)\)",
        " ".join(text.split()),
    )
    assert pairs, "the README no longer quotes a benchmark command beside its table"
    for command, link in pairs:
        args = command.split()
        if "--out" in args:
            out = args[args.index("--out") + 1]
        else:  # benchmarks/run.py's default: results/DEVICE.json, DEVICE-quick.json with --quick
            device = args[args.index("--device") + 1] if "--device" in args else "cpu"
            out = f"benchmarks/results/{device}{'-quick' if '--quick' in args else ''}.json"
        assert out.removesuffix(".json") == link.removesuffix(".md"), (command, link)
        assert (ROOT / link).is_file(), link


# -- environment variables -----------------------------------------------------------------------


@pytest.mark.parametrize("value, on", [("1", True), ("0", False), ("", False), ("yes", False)])
def test_traceback_variable(monkeypatch, capsys, value, on):
    """RDROP_TRACEBACK=1: the traceback, then the same one `error:` line; other values: the line."""
    from rdrop_fairseq import errors

    monkeypatch.setenv(errors.TRACEBACK, value)
    try:
        raise errors.UsageError("--rdrop-alpha must be a finite number >= 0, got -1.0")
    except errors.UsageError as exc:
        errors._excepthook(type(exc), exc, exc.__traceback__)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "error: --rdrop-alpha must be a finite number >= 0, got -1.0"
    assert (lines[0] == "Traceback (most recent call last):") == on
    assert len(lines) > 1 if on else len(lines) == 1


@pytest.mark.parametrize("value, on", [("1", True), ("0", False), ("", False)])
def test_trust_checkpoints_variable(monkeypatch, value, on):
    """Read at each load and for the start-up line: checked in this process."""
    from rdrop_fairseq import checkpoint_loading

    monkeypatch.setenv(checkpoint_loading.TRUST_CHECKPOINTS, value)
    policy = checkpoint_loading.policy()
    assert policy.startswith("full unpickler (RDROP_TRUST_CHECKPOINTS=1") == on, policy
    assert checkpoint_loading.trusted() == on


@pytest.mark.parametrize("value, on", [("1", True), ("0", False), ("", False)])
def test_no_fixes_variable(monkeypatch, value, on):
    """RDROP_FAIRSEQ_NO_FIXES=1 leaves fairseq as installed: apply(), which the import calls,
    reads it. Here apply() runs in this process on a stand-in for fairseq's load_checkpoint
    (restored after the test); the next test runs the import itself."""
    from fairseq import checkpoint_utils

    from rdrop_fairseq import fairseq_fixes

    def load_checkpoint(*args, **kwargs):  # fairseq's, as installed: no change on it
        pass

    monkeypatch.setattr(checkpoint_utils, "load_checkpoint", load_checkpoint)
    monkeypatch.setenv(fairseq_fixes.NO_FIXES, value)
    changed = fairseq_fixes.apply()
    assert (checkpoint_utils.load_checkpoint is load_checkpoint) == on
    assert hasattr(checkpoint_utils.load_checkpoint, fairseq_fixes.MARK) == (not on)
    assert ("missing --restore-file is an error" in changed) == (not on)


def test_no_fixes_variable_at_import():
    """The import-time path, once, as a program meets it: importing the plugin with
    RDROP_FAIRSEQ_NO_FIXES=1 leaves fairseq's load_checkpoint as installed, where this process,
    which imported the plugin without the variable, has it changed."""
    from fairseq import checkpoint_utils

    from rdrop_fairseq.fairseq_fixes import MARK, NO_FIXES  # imports the plugin

    code = (
        "import rdrop_fairseq\nfrom fairseq import checkpoint_utils\n"
        "from rdrop_fairseq.fairseq_fixes import MARK\n"
        "print(hasattr(checkpoint_utils.load_checkpoint, MARK))"
    )
    proc = run_cli(sys.executable, "-c", code, env={NO_FIXES: "1"})
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert os.environ.get(NO_FIXES) != "1" and hasattr(checkpoint_utils.load_checkpoint, MARK)


def test_documented_variables_take_one():
    """The docs name each variable with the one value that turns it on."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    for name in ("RDROP_TRUST_CHECKPOINTS", "RDROP_FAIRSEQ_NO_FIXES", "RDROP_TRACEBACK"):
        assert f"| `{name}=1` |" in text, name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("RDROP_TRUST_CHECKPOINTS", "RDROP_FAIRSEQ_NO_FIXES", "RDROP_TRACEBACK"):
        assert f"`{name}=1`" in readme, name


# -- the README's option table -------------------------------------------------------------------


def option_rows():
    """{--rdrop-option: (its header cell, its meaning cell)} of the README's option table."""
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `(--rdrop-[\w-]+)([^`]*)` \| (.*) \|$", line)
        if match:
            rows[match[1]] = (match[2].strip(), match[3])
    return rows


def documented_default(meaning):
    for pattern in (
        r"\(default:? `?([\w.]+)`?[;,)]",
        r"[Dd]efault:? `?([\w.]+)`?[;,.]",
        r"`([\w.]+)` \(default\)",
    ):
        match = re.search(pattern, meaning)
        if match:
            return match[1]
    return None


def test_readme_option_table_matches_the_criterion():
    from rdrop_fairseq.criterion import LabelSmoothedCrossEntropyRDropCriterionConfig as Config

    rows = option_rows()
    fields = [f for f in dataclasses.fields(Config) if f.name.startswith("rdrop_")]
    assert fields
    for field in fields:
        option = "--" + field.name.replace("_", "-")
        assert option in rows, f"the README's option table has no row for {option}"
        header, meaning = rows[option]
        documented = documented_default(meaning)
        assert documented is not None, f"{option}: the README states no default"
        default = field.default
        if isinstance(default, enum.Enum):
            default = default.value
        if isinstance(default, (int, float)):
            assert float(documented) == default, (option, documented, default)
        else:
            assert documented == str(default), (option, documented, default)
        if isinstance(field.type, type) and issubclass(field.type, enum.Enum):
            choices = {member.value for member in field.type}
            listed = re.fullmatch(r"\{([\w,]+)\}", header)
            assert listed and set(listed[1].split(",")) == choices, (option, header, choices)


def test_option_defaults_are_read_from_the_table():
    assert documented_default("weight of the KL term (default 5; 0 ≤ α ≤ 1000).") == "5"
    assert documented_default("as SimCut does. Default 0; 0 ≤ P < 1; needs α > 0.") == "0"
    assert documented_default("`rdrop` (default): the loss above.") == "rdrop"
    assert documented_default("`auto` (default) the Triton kernel") == "auto"
    assert documented_default("no default here") is None


def test_plain_python_import_leaves_the_excepthook_alone():
    """The docs: a plain `import rdrop_fairseq` in a program leaves sys.excepthook as it is."""
    code = "import sys, rdrop_fairseq; print(sys.excepthook is sys.__excepthook__)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "True"
    )


@pytest.mark.slow
def test_skips_are_counted_by_reason_in_one_line(tmp_path):
    """The README: without ../shared/data the real-text tests skip, "with one line saying how
    many"; that line counts every skip by reason."""
    missing = tmp_path / "no-shared-data"
    proc = run_cli(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_recipes.py"),
        "-k",
        "real_",
        check=False,
        env={"SHARED_DATA": str(missing)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("skipped, by reason:")]
    assert summary == [f"skipped, by reason: 2 x {missing} not present"], proc.stdout[-2000:]


@pytest.mark.parametrize(
    "module, args",
    [
        ("export_checkpoint", ["IN.pt", "OUT.pt", "--data", "."]),
        ("average_checkpoints", ["--inputs", "IN.pt", "--output", "OUT.pt"]),
    ],
)
def test_tools_without_fairseq_say_so_in_one_line(tmp_path, module, args):
    """The README: without fairseq the plugin "says in one line if there is none"; so do the
    tools that load checkpoints through it."""
    (tmp_path / "IN.pt").write_bytes(b"")
    code = (
        "import sys; sys.modules['fairseq'] = None\n"  # as if fairseq were not installed
        f"from rdrop_tools.{module} import main\nsys.exit(main({args!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: rdrop-fairseq needs fairseq >= 0.12.2, which is not installed: pip install "
        "'rdrop-fairseq[fairseq]' (a new environment) or pip install fairseq-fixed (Python 3.12)"
    ]
    assert not (tmp_path / "OUT.pt").exists()


def test_pytest_filters_only_third_party_deprecations():
    """pyproject's filterwarnings hide the deprecation notices raised inside fairseq and the
    libraries under it, never a warning raised by the plugin, the tools or the tests."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        filters = tomllib.load(f)["tool"]["pytest"]["ini_options"]["filterwarnings"]
    modules = []
    for spec in filters:
        action, message, category, module = (spec.split(":") + ["", "", ""])[:4]
        assert action == "ignore" and category.endswith("Warning") and (module or message), spec
        if module:
            modules.append(module)

    def hidden(name):
        return any(re.match(module, name) for module in modules)

    for name in (
        "fairseq.models.transformer",
        "fairseq_cli.train",
        "torch.jit._script",
        "hydra._internal.utils",
        "omegaconf.omegaconf",
    ):
        assert hidden(name), name
    for name in (
        "rdrop_fairseq.criterion",
        "rdrop_tools.evaluate",
        "test_docs",
        "support",
        "torchaudio_like_but_ours",
        "fairseqx",
    ):
        assert not hidden(name), name
