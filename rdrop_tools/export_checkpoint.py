"""Export a checkpoint trained with the plugin for deployment without it.

  rdrop-export IN OUT --data DATA_BIN [--ctranslate2 DIR [--quantization int8]]

OUT holds the model weights and a config that names fairseq's stock ``translation`` task and
``label_smoothed_cross_entropy`` criterion, without the options only the plugin knows, in plain
containers (no optimizer state, no pickled ``Namespace``): fairseq without ``--user-dir`` loads it
with torch's safe unpickler (``fairseq-generate``, ``fairseq-interactive``,
``checkpoint_utils.load_model_ensemble_and_task``), which the export checks in a separate
process before OUT is written. DATA_BIN is the binarized data directory whose dictionaries the
model was trained with; OUT records it as the task's data.

``--ctranslate2 DIR`` also converts the model with CTranslate2's fairseq converter into DIR
(``--quantization``: int8, int16, float16, ...; default: the weights' float32).
Nothing is left at OUT or DIR when the export fails.
"""

import argparse
import contextlib
import dataclasses
import enum
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping

import numpy as np
import torch
from omegaconf import OmegaConf

from .errors import ToolError, exit_in_one_line
from .output_files import output_problem, set_default_permissions, temporary_beside
from .progress import stage

STOCK_TASK = "translation"
STOCK_CRITERION = "label_smoothed_cross_entropy"

# Run by a separate interpreter: plain fairseq, the plugin made unimportable.
_PLAIN_FAIRSEQ_LOAD = """
import sys
sys.modules["rdrop_fairseq"] = None
from fairseq import checkpoint_utils
checkpoint_utils.load_model_ensemble_and_task([sys.argv[1]])
"""


def _dataclass_fields(registry, name):
    return {f.name for f in dataclasses.fields(registry[name])}


def plugin_options(task_cfg, criterion_cfg):
    """Names of the task and criterion options that fairseq's stock translation task and
    label-smoothed criterion do not have (R-Drop's and any other the plugin adds)."""
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    return (set(task_cfg) - _dataclass_fields(TASK_DATACLASS_REGISTRY, STOCK_TASK)) | (
        set(criterion_cfg) - _dataclass_fields(CRITERION_DATACLASS_REGISTRY, STOCK_CRITERION)
    )


def plain(value, where="cfg"):
    """``value`` as dicts, lists, str, int, float, bool and None only (what torch's safe
    unpickler and OmegaConf accept): ``Namespace`` becomes a dict, tuples lists, numpy scalars
    and enums Python values."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return value.name
    if value is None or type(value) in (str, int, float, bool):
        return value
    raise ToolError(f"{where}: cannot export a value of type {type(value).__name__}")


def stock_cfg(cfg, data, source_lang, target_lang):
    """The checkpoint's config (an OmegaConf config) in plain containers, naming the stock task
    and criterion, without the plugin's options or its ``--user-dir``, reading DATA_BIN."""
    cfg = plain(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    dropped = plugin_options(cfg["task"], cfg["criterion"]) - {"_name"}
    for group in ("task", "criterion", "model"):
        if isinstance(cfg.get(group), dict):
            cfg[group] = {k: v for k, v in cfg[group].items() if k not in dropped}
    cfg["task"].update(
        _name=STOCK_TASK, data=data, source_lang=source_lang, target_lang=target_lang
    )
    cfg["criterion"]["_name"] = STOCK_CRITERION
    cfg["common"]["user_dir"] = None
    # fairseq-train's cfg.model holds its whole command line, --task and --criterion included
    model = cfg.get("model") or {}
    for key, value in (
        ("task", STOCK_TASK),
        ("criterion", STOCK_CRITERION),
        ("user_dir", None),
        ("data", data),
        ("source_lang", source_lang),
        ("target_lang", target_lang),
    ):
        if key in model:
            model[key] = value
    return cfg


def stock_state(state, cfg):
    """A checkpoint that fairseq's ``load_checkpoint_to_cpu`` upgrades without complaint: the
    weights, the config and the bookkeeping it reads (no optimizer state, no meters)."""
    last = state["optimizer_history"][-1]
    return {
        "args": None,
        "cfg": cfg,
        "model": dict(state["model"]),
        "optimizer_history": [
            {
                "criterion_name": "LabelSmoothedCrossEntropyCriterion",
                "optimizer_name": plain(last.get("optimizer_name")),
                "lr_scheduler_state": {},
                "num_updates": plain(last.get("num_updates", 0)),
            }
        ],
        "extra_state": {"train_iterator": None},
    }


def load_plugin_checkpoint(path):
    """``load_checkpoint_to_cpu`` with the plugin imported (our checkpoints need it)."""
    if not os.path.isfile(path):
        raise ToolError(
            f"{path} is a directory, not a checkpoint"
            if os.path.isdir(path)
            else f"{path} does not exist"
        )
    # the plugin registers its task and criterion, and makes fairseq read checkpoints with
    # rdrop_fairseq.checkpoint_loading.load_checkpoint_file, as training does
    try:
        import rdrop_fairseq  # noqa: F401
    except ImportError as e:  # compat.FairseqUnavailable: fairseq missing or too old
        if type(e).__name__ != "FairseqUnavailable":
            raise
        raise ToolError(str(e)) from None
    from fairseq import checkpoint_utils
    from fairseq.tasks import TASK_REGISTRY
    from fairseq.tasks.translation import TranslationTask

    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except ValueError as e:  # the plugin's loader explains unreadable files in one line
        raise ToolError(str(e)) from e
    except (KeyError, AttributeError, TypeError, pickle.UnpicklingError, EOFError) as e:
        raise ToolError(
            f"{path} is not a fairseq checkpoint ({type(e).__name__}: "
            f"{(str(e).strip().splitlines() or [''])[0]})"
        ) from e
    cfg = state.get("cfg") if isinstance(state, dict) else None
    if cfg is None or not isinstance(state.get("model"), Mapping):
        raise ToolError(f"{path} is not a fairseq checkpoint (no model or config)")
    task = cfg.task._name if "task" in cfg and cfg.task is not None else None
    if task not in TASK_REGISTRY or not issubclass(TASK_REGISTRY[task], TranslationTask):
        raise ToolError(f"{path}: task {task!r} is not a translation task")
    return state


def language_pair(cfg, data):
    """The checkpoint's languages, else those of DATA_BIN's or the training data's file names."""
    from fairseq.data import data_utils

    source, target = cfg.task.get("source_lang"), cfg.task.get("target_lang")
    for folder in (data, cfg.task.get("data")):
        if source is not None and target is not None:
            break
        if isinstance(folder, str) and os.path.isdir(folder):
            source, target = data_utils.infer_language_pair(folder)
    if source is None or target is None:
        raise ToolError(
            f"cannot tell the model's languages: the checkpoint names none and "
            f"{data} holds no <split>.<src>-<tgt>.* files"
        )
    return source, target


def check_dictionaries(data, source_lang, target_lang, weights):
    """DATA_BIN holds the dictionaries, of the sizes of the model's embedding tables."""
    from fairseq.data import Dictionary

    for side, lang in (("encoder", source_lang), ("decoder", target_lang)):
        path = os.path.join(data, f"dict.{lang}.txt")
        if not os.path.isfile(path):
            raise ToolError(f"{data} has no dict.{lang}.txt (the model's dictionary)")
        size, embeddings = len(Dictionary.load(path)), weights.get(f"{side}.embed_tokens.weight")
        if embeddings is not None and embeddings.shape[0] != size:
            raise ToolError(
                f"{path} has {size} symbols but the model's {side} embeddings "
                f"have {embeddings.shape[0]} rows: not the model's dictionary"
            )


def check_plain_fairseq_loads(path):
    """Load ``path`` in a fresh interpreter where the plugin cannot be imported."""
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_FAIRSEQ_LOAD, path], capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ToolError(f"fairseq without the plugin cannot load the export: {last}")


def _namespace_unpicklable():
    """Torch's safe unpickler accepting ``argparse.Namespace`` (which the loading policy allows
    anyway), for as long as the context lasts; torch.load itself stays as it is."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if safe_globals is None or argparse.Namespace in torch.serialization.get_safe_globals():
        return contextlib.nullcontext()  # older torch loads with the full unpickler by default
    return safe_globals([argparse.Namespace])


def convert_to_ctranslate2(checkpoint, data, source_lang, target_lang, out_dir, quantization):
    """CTranslate2's fairseq converter reads the model options with attribute access from the
    checkpoint's ``args``, where an export keeps them as a dict in ``cfg``: it converts a copy
    whose ``args`` is a Namespace, written to a scratch folder beside ``out_dir``."""
    from ctranslate2.converters import FairseqConverter

    from rdrop_fairseq.checkpoint_loading import load_checkpoint_file

    state = load_checkpoint_file(checkpoint, map_location="cpu")
    state["args"] = argparse.Namespace(**state["cfg"]["model"])
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_dir))) as scratch:
        readable = os.path.join(scratch, "checkpoint.pt")
        torch.save(state, readable)
        del state
        converter = FairseqConverter(
            readable, data, source_lang=source_lang, target_lang=target_lang
        )
        try:
            with _namespace_unpicklable():
                converter.convert(out_dir, quantization=quantization, force=True)
        except (ValueError, NotImplementedError) as e:  # unsupported architecture or option
            raise ToolError(f"CTranslate2 cannot convert this model: {e}") from e


def export(source, out, data, ct2_dir=None, quantization=None):
    """Write OUT (and DIR); on any error neither is left behind."""
    data = os.path.abspath(data)
    if not os.path.isdir(data):
        raise ToolError(f"data directory {data} does not exist")
    inputs = [source, *(os.path.join(data, n) for n in os.listdir(data) if n.startswith("dict."))]
    if ct2_dir is not None and os.path.exists(ct2_dir):
        raise ToolError(f"{ct2_dir} exists: remove it or choose another directory")
    problem = output_problem(out, inputs) or (ct2_dir and output_problem(ct2_dir, inputs))
    if problem:
        raise ToolError(problem)
    stage(f"loading {source}")
    state = load_plugin_checkpoint(source)
    source_lang, target_lang = language_pair(state["cfg"], data)
    check_dictionaries(data, source_lang, target_lang, state["model"])
    from rdrop_fairseq.dictionary_check import data_mismatch  # the plugin is imported by now

    problem = data_mismatch(source, state, data, source_lang, target_lang)
    if problem:  # the same symbols in another order (a size mismatch is caught above)
        raise ToolError(problem)
    exported = stock_state(state, stock_cfg(state["cfg"], data, source_lang, target_lang))

    out_tmp = ct2_tmp = None
    try:
        stage(f"writing {out}")
        fd, out_tmp = temporary_beside(out)
        with os.fdopen(fd, "wb") as f:
            torch.save(exported, f)
        set_default_permissions(out_tmp)
        stage("checking that fairseq without the plugin loads it")
        check_plain_fairseq_loads(out_tmp)
        if ct2_dir is not None:
            ct2_tmp = tempfile.mkdtemp(
                prefix=os.path.basename(os.path.abspath(ct2_dir)) + ".",
                dir=os.path.dirname(os.path.abspath(ct2_dir)),
            )
            stage(f"converting to CTranslate2 into {ct2_dir}")
            convert_to_ctranslate2(out_tmp, data, source_lang, target_lang, ct2_tmp, quantization)
            set_default_permissions(ct2_tmp, 0o777)
            os.rename(ct2_tmp, ct2_dir)
            ct2_tmp = None
        os.replace(out_tmp, out)
        out_tmp = None
    except OSError as e:
        raise ToolError(str(e)) from e
    finally:
        if out_tmp is not None and os.path.exists(out_tmp):
            os.remove(out_tmp)
        if ct2_tmp is not None:
            shutil.rmtree(ct2_tmp, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", metavar="IN", help="checkpoint trained with the plugin")
    parser.add_argument("output", metavar="OUT", help="checkpoint for plain fairseq")
    parser.add_argument(
        "--data",
        required=True,
        metavar="DATA_BIN",
        help="binarized data directory with the model's dict.<lang>.txt",
    )
    parser.add_argument("--ctranslate2", metavar="DIR", help="also write a CTranslate2 model")
    parser.add_argument(
        "--quantization",
        help="CTranslate2 weight type: int8, int16, float16, ... (default: the weights' float32)",
    )
    args = parser.parse_args(argv)
    # before fairseq is imported: one of its modules sets the root logger to INFO on import
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING)
    if args.quantization and not args.ctranslate2:
        parser.error("--quantization needs --ctranslate2")
    with exit_in_one_line():
        if args.ctranslate2:
            try:
                from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES
            except ImportError:
                raise ToolError(
                    "--ctranslate2 needs the ctranslate2 package: "
                    "pip install 'rdrop-fairseq[ctranslate2]'"
                ) from None
            if args.quantization and args.quantization not in ACCEPTED_MODEL_TYPES:
                raise ToolError(
                    f"--quantization {args.quantization}: not one of "
                    f"{', '.join(ACCEPTED_MODEL_TYPES)}"
                )
        export(args.input, args.output, args.data, args.ctranslate2, args.quantization)
    print(f"wrote {args.output}" + (f" and {args.ctranslate2}" if args.ctranslate2 else ""))


if __name__ == "__main__":
    main()
