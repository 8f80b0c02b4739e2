"""examples/translation/config/*.yaml against the shell recipes: the config fairseq-hydra-train
resolves from each yaml equals, field by field, the one fairseq-train builds from the options the
recipe passes it (read by running the recipe with a fairseq-train that only prints them); and a
few updates of fairseq-hydra-train with the plugin train on the synthetic corpus (``data_bin``)."""

import dataclasses
import os
import shlex
import subprocess
import sys
from argparse import Namespace

import pytest
from fairseq import options
from fairseq.dataclass.initialize import add_defaults, hydra_init
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_CONFIG_REGISTRY
from fairseq.models.transformer import TransformerConfig
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, as --user-dir does)
from support import BIN, ROOT, USER_DIR, run_cli
from support.tiny_model import TINY_TRANSFORMER

CONFIG_DIR = ROOT / "examples" / "translation" / "config"
RECIPES = {
    "iwslt14": "train-iwslt14.sh",
    "wmt14en2de": "train-wmt14en2de.sh",
    "multi30k": "train-multi30k.sh",
}
#: The yaml files hold the GPU setup, where the recipes pass --fp16 instead of --cpu.
GPU_FLAGS = {"--cpu": "--fp16"}


def recipe_options(recipe, data, save, tmp_path):
    """The fairseq-train arguments of ``recipe DATA SAVE``, as the recipe builds them. The recipes
    put the commands beside PYTHON first on PATH, so PYTHON is a wrapper in a folder whose
    fairseq-train only prints its arguments. The wrapper answers the recipes' CUDA probe itself
    (no GPU, without importing torch: the recipe then passes --cpu, read as the yaml's --fp16)."""
    stub = tmp_path / "stub-bin"
    stub.mkdir(exist_ok=True)
    scripts = {
        "python": "#!/bin/sh\n"
        'case "$*" in *torch.cuda.is_available*) echo 0; exit 0 ;; esac\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n',
        "fairseq-train": '#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n',
        "rdrop-text-pipeline": "#!/bin/sh\nexit 1\n",
    }  # only looked for
    for name, text in scripts.items():
        (stub / name).write_text(text)
        (stub / name).chmod(0o755)
    env = dict(os.environ, PYTHON=str(stub / "python"))
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "translation" / recipe), str(data), str(save)],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return [GPU_FLAGS.get(arg, arg) for arg in proc.stdout.decode().split("\0")[:-1]]


def train_config(args):
    """The config fairseq-train runs with, as plain containers; ``model`` is the argparse
    Namespace fairseq-train builds its (legacy, --arch) model from."""
    GlobalHydra.instance().clear()
    parsed = options.parse_args_and_arch(options.get_training_parser(), args)
    return OmegaConf.to_container(
        convert_namespace_to_omegaconf(parsed), resolve=True, enum_to_str=True
    )


def hydra_config(name, overrides):
    """The config fairseq-hydra-train runs with (its hydra_main: compose, add_defaults, resolve)."""
    GlobalHydra.instance().clear()
    hydra_init(name)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.1"):
        cfg = compose(name, overrides=overrides)
    GlobalHydra.instance().clear()
    add_defaults(cfg)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def model_fields(model_cfg):
    """The model arguments after the --arch function (fairseq's build_model applies it to a
    hydra model config too), and the TransformerConfig the model is built from."""
    args = Namespace(**(vars(model_cfg) if isinstance(model_cfg, Namespace) else model_cfg))
    ARCH_CONFIG_REGISTRY[args._name](args)
    return vars(args), dataclasses.asdict(TransformerConfig.from_namespace(args))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_yaml_resolves_to_the_recipe_config(name, tmp_path):
    data, save = tmp_path / "data-bin", tmp_path / "save"
    data.mkdir()
    (data / ".complete").touch()
    expected = train_config(recipe_options(RECIPES[name], data, save, tmp_path))
    got = hydra_config(
        name, [f"task.data={data}", f"checkpoint.save_dir={save}", f"common.user_dir={USER_DIR}"]
    )
    assert expected["common"]["fp16"] and expected["common"]["user_dir"] == USER_DIR
    assert set(got) == set(expected)
    for group in sorted(set(expected) - {"model"}):
        if isinstance(expected[group], dict):
            assert set(got[group]) == set(expected[group]), group
            for key, value in expected[group].items():
                assert got[group][key] == value, f"{group}.{key}: {got[group][key]!r} != {value!r}"
        else:
            assert got[group] == expected[group], group
    cli_args, cli_model = model_fields(expected["model"])
    yaml_args, yaml_model = model_fields(got["model"])
    for key, value in yaml_args.items():
        assert cli_args[key] == value, f"model.{key}: {value!r} != {cli_args[key]!r}"
    assert yaml_model == cli_model


def model_overrides(flags):
    """Hydra's ``model.<name>=<value>`` for the model flags of a fairseq-train command line (the
    architecture itself comes from the yaml)."""
    overrides, i = [], 0
    while i < len(flags):
        name = flags[i][2:].replace("-", "_")
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        if name != "arch":
            overrides.append(f"model.{name}={flags[i + 1] if has_value else 'true'}")
        i += 2 if has_value else 1
    return overrides


@pytest.mark.slow
def test_hydra_train_runs_a_few_updates_with_the_plugin(data_bin, tmp_path):
    data, save = data_bin, tmp_path / "save"
    tiny = model_overrides(TINY_TRANSFORMER)
    proc = run_cli(
        BIN / "fairseq-hydra-train",
        "--config-dir",
        CONFIG_DIR,
        "--config-name",
        "multi30k",
        f"task.data={data}",
        f"checkpoint.save_dir={save}",
        f"common.user_dir={USER_DIR}",
        "common.fp16=false",
        "common.cpu=true",
        "optimization.max_update=4",
        "dataset.max_tokens=256",
        "criterion.rdrop_cutoff=0.05",
        *tiny,
        timeout=120,
    )
    log = (save / "train.log").read_text()
    assert "rdrop_translation" in log and "label_smoothed_cross_entropy_rdrop" in log
    assert '"train_kl_loss"' in log, proc.stderr[-3000:]  # the R-Drop term was trained
    assert (save / "checkpoint_last.pt").exists()


@pytest.mark.slow
def test_hydra_train_reports_a_mistake_in_one_line(tmp_path):
    """Hydra prints a job's exception as a traceback; the plugin's mistakes end in one line."""
    missing = tmp_path / "no-such-data"
    proc = run_cli(
        BIN / "fairseq-hydra-train",
        "--config-dir",
        CONFIG_DIR,
        "--config-name",
        "multi30k",
        f"task.data={missing}",
        f"checkpoint.save_dir={tmp_path / 'save'}",
        f"common.user_dir={USER_DIR}",
        "common.fp16=false",
        "common.cpu=true",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: data directory {missing} does not exist"
    assert "Traceback" not in proc.stderr
