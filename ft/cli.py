"""One way in: every command turns its argv into a validated Config the same way.

    sqlft train|eval|generate|merge|export|serve|data|report|dashboard|submit [--config X.yaml]
          [--section.key VALUE ...] [options]

Every command takes `--config` and any config key as `--section.key VALUE` (or `--section.key=VALUE`), with the
same defaults everywhere: the adapter's run config when a command is given a run's adapter, else `--config`, else
the demo's config (configs/demo.yaml) for the demo (the bundled data and the demo model), and the library's defaults
(ft/config.py) for your own data or another model, so that none of the demo's choices becomes yours. A length given
on the command line (--train.epochs / max_steps / max_minutes) replaces the config file's. A command's short options
that stand for a config key (`--batch-size` for `eval.batch_size`) are aliases of that key, not second settings with
defaults of their own. A mistyped option is answered with the closest option of that command or config key.

This module imports no torch: the Slurm launcher uses it on login nodes.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ft.config import (
    Config,
    ConfigError,
    ModelConfig,
    all_keys,
    choices,
    length_precedence,
    length_rule,
    load_config,
    parse_overrides,
)
from ft.constants import DEFAULT_CONFIG, EXIT_INTERRUPTED, EXIT_USAGE


@dataclass
class Alias:
    """A command's short option for a config key: `--batch-size 16` is `--eval.batch_size 16`."""

    flag: str
    key: str
    help: str = ""
    convert: Callable[[str], object] | None = None  # argv text -> the value handed to the config (default: as is)
    choices: list[str] | None = None  # None: the key's own choices (its Literal type in ft/config.py), if any
    const: str | None = None  # a flag without a value: `--skip-bad-rows` sets the key to this


@dataclass
class Command:
    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # the command's own options
    aliases: list[Alias] = field(default_factory=list)
    # Where the base config comes from when --config is not given: a path, or a function of the parsed options
    # returning one (None: the embedded default). `ft.eval --adapter RUN` reads the run's own config this way.
    default_config: Callable[[argparse.Namespace], str | Path | None] | None = None
    overrides: dict[str, object] = field(default_factory=dict)  # forced by the command (merge: no quantization)
    training: bool = False  # it trains or plans training: says which length key rules when several meet


# `sqlft train --time-budget 60` = `--train.max_minutes 60` (the steps are planned to fit: ft/budget.py)
TIME_BUDGET = Alias("--time-budget", "train.max_minutes", "minutes for the whole run (start-up, steps, checkpoints, "
                    "final evaluation): the steps are planned to fit")


def adapter_run_config(args: argparse.Namespace) -> Path | None:
    """`default_config` of the commands that take --adapter: the config of the run the adapter came from."""
    from ft.inference import resolve_adapter  # torch: only once a command runs

    return resolve_adapter(args.adapter)[1] if args.adapter else None


# Keys that make a run the user's own rather than the demo's: other data or another model.
OWN_RUN_KEYS = {"data.source": "bundled", "data.eval_source": None, "model.name_or_path": ModelConfig.name_or_path}


def default_config(overrides: dict) -> Path | None:
    """The base config without --config (and without an adapter's run config): the demo's (configs/demo.yaml) for
    the demo, None (the library's defaults in ft/config.py) once the data or the model is the user's own, so a run
    on your data starts from the library's defaults (epochs-driven), not from the demo's steps, learning rate,
    template and evaluation settings."""
    own = [k for k, demo in OWN_RUN_KEYS.items() if k in overrides and overrides[k] not in (demo, None, "")]
    return None if own else DEFAULT_CONFIG


def _is_override(token: str) -> bool:
    """`--section.key` or `--section.key=value`: config keys have a dot, command options never do."""
    return token.startswith("--") and "." in token[2:].split("=", 1)[0]


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(command arguments, config overrides) from one argv; an override takes the next token as its value."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        if _is_override(tok):
            overrides.append(tok)
            if "=" not in tok and i + 1 < len(argv):
                overrides.append(argv[i + 1])
                i += 1
        else:
            rest.append(tok)
        i += 1
    return rest, overrides


def config_epilog() -> str:
    sections: dict[str, list[str]] = {}
    for key in all_keys():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(name)
    lines = ["config keys (any of them as --section.key VALUE; defaults in ft/config.py, docs in README):"]
    lines += [f"  {s}: " + ", ".join(names) for s, names in sections.items()]
    return "\n".join(lines)


def build_parser(cmd: Command, prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or f"sqlft {cmd.name}", description=cmd.description, epilog=config_epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--config", default=None,
                   help=f"config YAML [the adapter's run config where there is one, else {DEFAULT_CONFIG.name} for the "
                        "demo (bundled data, demo model) and the library's defaults for your own data or model]")
    for a in cmd.aliases:
        doc = f"{a.help + '; ' if a.help else ''}= --{a.key}" + (f" {a.const}" if a.const is not None else "")
        if a.const is not None:
            p.add_argument(a.flag, dest=_dest(a.key), default=None, action="store_const", const=a.const, help=doc)
        else:
            p.add_argument(a.flag, dest=_dest(a.key), default=None, metavar=a.key.split(".")[-1].upper(),
                           choices=a.choices if a.choices is not None else choices(a.key), help=doc)
    if cmd.add_arguments is not None:
        cmd.add_arguments(p)
    return p


def _dest(key: str) -> str:
    return "_alias_" + key.replace(".", "__")


def _option_strings(p: argparse.ArgumentParser) -> list[str]:
    return [s for a in p._actions for s in a.option_strings if s.startswith("--")]


def _unrecognized(p: argparse.ArgumentParser, unknown: list[str]) -> str:
    first = next((u for u in unknown if u.startswith("-")), unknown[0])
    flag = first.split("=", 1)[0]
    valid = _option_strings(p)
    close = difflib.get_close_matches(flag, valid, n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else f" {p.prog} --help lists the options."
    return f"unrecognized argument(s): {' '.join(unknown)}.{hint}"


def parse(cmd: Command, argv: list[str] | None = None, *, prog: str | None = None,
          load: bool = True) -> tuple[Config | None, argparse.Namespace]:
    """(validated Config, the command's own options). Usage errors exit 2 through argparse; a bad config key or
    value raises ConfigError (the command prints it as one `error:` line).

    `load=False` parses without building the Config (a command that needs it only for some of its modes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser(cmd, prog)
    rest, over = split_overrides(argv)
    args, unknown = p.parse_known_args(rest)
    if unknown:
        p.error(_unrecognized(p, unknown))
    try:
        overrides: dict[str, object] = dict(parse_overrides(over))
    except ConfigError as e:
        raise ConfigError(f"{e} ({p.prog} --help lists the options)") from None
    for a in cmd.aliases:
        value = getattr(args, _dest(a.key))
        if value is None:
            continue
        if a.key in overrides:
            raise ConfigError(f"{a.flag} and --{a.key} are the same setting; give one of them.")
        overrides[a.key] = a.convert(value) if a.convert else value
    args.overrides = overrides
    if not load:
        return None, args
    run_config = None if args.config else cmd.default_config(args) if cmd.default_config else None
    path = args.config or run_config or default_config(overrides)
    args.config_path = str(path) if path is not None else None
    notes: list[str] = []
    if run_config is None:  # (a run's own config says what it ran; its length keys are history, not choices)
        overrides, keys, notes = length_precedence(path, overrides)
    cfg = load_config(path, overrides | cmd.overrides)
    if cmd.training and run_config is None and os.environ.get("RANK", "0") == "0":  # once, not once a process
        rule = length_rule(cfg.train, keys)
        for note in notes + ([rule] if rule else []):
            print(f"note: {note}", file=sys.stderr)
    return cfg, args


def run(cmd: Command, body: Callable[[Config, argparse.Namespace], int], argv: list[str] | None = None,
        errors: tuple[type[BaseException], ...] = ()) -> int:
    """parse(), then body(cfg, args); the listed errors (and ConfigError) print as one `error:` line and exit 2.

    Whatever the command: Ctrl-C prints one line and exits 130 (a command's own KeyboardInterrupt may carry that
    line), and a full disk prints one `error: no space left on <path>` line and exits 1."""
    from ft.files import no_space_line

    try:
        cfg, args = parse(cmd, argv)
        return body(cfg, args)
    except KeyboardInterrupt as e:
        print(f"\n{str(e) or f'sqlft {cmd.name}: interrupted (Ctrl-C)'}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (ConfigError, *errors) as e:
        if (line := no_space_line(e)) is not None:  # an OSError listed in `errors` that is a full disk
            print(f"error: {line}", file=sys.stderr)
            return 1
        text = "\n".join(line for line in str(e).splitlines() if line.strip())
        print(f"error: {text}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if (line := no_space_line(e)) is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------------------
# `sqlft COMMAND ...`: one console entry point for all of them


COMMANDS = {
    "train": ("launch.local", "fine-tune on this machine (--accelerate-config / --num-processes for several)"),
    "eval": ("ft.eval.__main__", "execution accuracy of a model or adapter on a dataset"),
    "generate": ("ft.generate", "question + schema -> validated SQL (and its rows)"),
    "merge": ("ft.merge", "fold a LoRA adapter into its base model"),
    "export": ("ft.export.__main__", "a run -> merged model, model card, GGUF + Ollama Modelfile, Hub upload"),
    "serve": ("ft.serve.__main__", "a JSON API and a web page answering questions on a database"),
    "data": ("ft.data.__main__", "inspect and convert datasets"),
    "report": ("ft.report", "a run folder -> one HTML page"),
    "dashboard": ("ft.dashboard", "the W&B dashboard"),
    "submit": ("launch.submit", "train on Slurm through submitit"),
}


class _BitsandbytesWithoutHubKernel:
    """Import hook for one module, bitsandbytes.backends.cpu.ops: while it executes, `kernels` can't be imported."""

    module = "bitsandbytes.backends.cpu.ops"

    def find_spec(self, name, path, target=None):
        if name != self.module:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module  # this spec's own loader instance: patching it touches nothing else

        def exec_module(module):
            saved = sys.modules.get("kernels")
            sys.modules["kernels"] = None  # `from kernels import get_kernel` raises ImportError
            try:
                run(module)
            finally:
                if saved is None:
                    sys.modules.pop("kernels", None)
                else:
                    sys.modules["kernels"] = saved

        spec.loader.exec_module = exec_module
        return spec


def no_hub_kernels() -> None:
    """bitsandbytes (0.50), on CPUs with AVX512-BF16, fetches a CPU kernel from the Hugging Face Hub
    (kernels-community/quantization-bitsandbytes, through the `kernels` package) while it is imported, and logs
    "Failed to load CPU gemm_4bit_forward ... could not verify publisher trust status" when it can't (offline, or an
    unverified publisher): every command that loads a model printed it. bitsandbytes has no switch for it, so it is
    imported without `kernels` (it then uses its own C kernels, as after a failed fetch) and that warning is dropped;
    nothing else changes (transformers' own kernel settings, USE_HUB_KERNELS, stay the user's). Called by the
    commands' main(), never at import; imports nothing."""
    import logging

    if not any(isinstance(f, _BitsandbytesWithoutHubKernel) for f in sys.meta_path):
        sys.meta_path.insert(0, _BitsandbytesWithoutHubKernel())
    logging.getLogger(_BitsandbytesWithoutHubKernel.module).addFilter(
        lambda record: "kernels-community" not in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    import importlib

    no_hub_kernels()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: sqlft COMMAND [options]\n\ncommands:")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:<10} {what}")
        print("\n`sqlft COMMAND --help` lists a command's options and the config keys.")
        return 0 if argv else EXIT_USAGE
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"error: unknown command '{name}'.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return EXIT_USAGE
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return module.main(argv[1:])
    except KeyboardInterrupt:  # while the command's modules load (torch: seconds), before its own runner is in place
        print(f"\nsqlft {name}: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

