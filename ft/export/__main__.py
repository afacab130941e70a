"""`sqlft export` (`python -m ft.export`): a run -> a model people can run and share.

    sqlft export runs/demo --out exported                      # merged model + tokenizer + card (README.md)
    sqlft export runs/demo --out exported --gguf q8_0          # + gguf/model-q8_0.gguf and gguf/Modelfile (Ollama)
    sqlft export runs/demo --out exported --push me/sql-model  # + upload to the Hugging Face Hub (needs a token)

RUN is a run folder, its adapter, or a checkpoint. The folder holds the merged model in the base's 16-bit dtype
(ft.merge), its tokenizer whose chat template is the training prompt (system message = schema, user message =
question: ft.export.prompt), a generation config that stops at the answer's closing fence, `sqlft.yaml` (the run's
config, pointing at this folder: `sqlft serve` and `sqlft eval --config` read it), README.md (the model card, from
the run's own records: ft.export.card), and with --gguf, in gguf/, a GGUF file per type (ft.export.gguf) and a
Modelfile: a folder of their own, since transformers' GGUF loader mixes in the tokenizer files of the folder a GGUF
file sits in.
Everything is written to a temporary folder beside --out and renamed into place at the end: an interrupted or failed
export leaves nothing there, and an earlier export at --out is replaced only by a complete one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ft.cli import Alias, Command, run
from ft.config import ConfigError
from ft.export.gguf import GGUF_TYPES, GGUFExportError
from ft.model import ModelError

MARKER = "sqlft.yaml"  # every export holds it: an --out with other files is never replaced


def _run_config(args):
    from ft.inference import resolve_adapter

    return resolve_adapter(args.run)[1]


def _own(p) -> None:
    p.add_argument("run", help="run folder, adapter or checkpoint")
    p.add_argument("--out", required=True, help="folder for the export (replaced only if it is an earlier export)")
    p.add_argument("--gguf", action="append", default=[], metavar="TYPE",
                   help=f"also write a GGUF file of this type ({' or '.join(GGUF_TYPES)}; repeat for several)")
    p.add_argument("--push", metavar="REPO", help="upload the folder to this Hugging Face Hub model repo")
    p.add_argument("--private", action="store_true", help="with --push: create the repo private")
    p.add_argument("--dry-run", action="store_true", help="with --push: everything but the upload (lists it)")


COMMAND = Command(
    name="export",
    description=__doc__,
    add_arguments=_own,
    default_config=_run_config,
    overrides={"quantization.mode": "none"},
    aliases=[
        Alias("--model", "model.name_or_path", "base model [the one the run was trained on]"),
        Alias("--dtype", "quantization.dtype", "dtype of the merged weights [auto: the base's 16-bit dtype]"),
    ],
)


def source_gguf(cfg) -> Path | None:
    """The GGUF file the base model was read from, if it was one (its tokenizer fields are copied as they are)."""
    from ft.model import resolve_model_path

    folder, gguf = resolve_model_path(cfg.model.name_or_path, cfg.model.gguf_file)
    return Path(folder) / gguf if gguf else None


def base_facts(cfg, model_dir: str) -> tuple[str | None, str | None]:
    """(the base's Hub id, its license) from what is on disk: the alias table, the source GGUF's general.license,
    the README front matter of the base folder or of its Hub cache entry. None where nothing says."""
    from ft.export.card import HUB_IDS

    name = cfg.model.name_or_path
    hub = HUB_IDS.get(name) or (name if "/" in name and not Path(name).expanduser().exists() else None)
    src = source_gguf(cfg)
    if src is not None:
        from gguf import GGUFReader

        field = GGUFReader(str(src)).fields.get("general.license")
        if field is not None:
            return hub, str(field.contents())
    readmes = [Path(model_dir) / "README.md", Path(name).expanduser() / "README.md"]
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(hub, "README.md")
            if isinstance(cached, str):
                readmes.append(Path(cached))
        except Exception:  # noqa: BLE001 - a cache we can't read: the license stays unknown
            pass
    for readme in readmes:
        try:
            text = readme.read_text()
        except OSError:
            continue
        if text.startswith("---"):
            meta = yaml.safe_load(text.split("---", 2)[1]) or {}
            if meta.get("license"):
                return hub, str(meta["license"])
    return hub, None


def check_push(repo: str, dry_run: bool) -> str | None:
    """Before any work: a repo id the Hub accepts, and a token unless it is a dry run. Returns the token."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise ConfigError(f"--push '{repo}' is not a Hub repo id (owner/name): {str(e).splitlines()[0]}") from None
    token = get_token()
    if token is None and not dry_run:
        raise ConfigError("--push needs a Hugging Face token (HF_TOKEN, or `hf auth login`); none was found, so "
                          "nothing was exported. --dry-run does everything but the upload.")
    return token


def export(cfg, run_path: str, out: Path, gguf_types: list[str]) -> tuple[Path, dict]:
    """Write the export folder; returns it and the files written (name -> bytes)."""
    from ft.export.card import Facts, gather, render
    from ft.export.gguf import check_exportable, write_gguf
    from ft.export.prompt import modelfile, training_chat_template
    from ft.merge import load_merged, publish, save_model_folder

    model, tokenizer, model_dir = load_merged(cfg, run_path)
    if gguf_types:
        check_exportable(model.config)  # before anything is written
    hub_id, license_ = base_facts(cfg, model_dir)
    records = gather(run_path, cfg)
    dtype = cfg.quantization.dtype

    def write(tmp: Path) -> None:
        save_model_folder(model, tokenizer, cfg, tmp)
        saved = cfg.to_dict()
        saved["model"] |= {"name_or_path": str(out.resolve()), "gguf_file": None, "adapter": None}
        saved["quantization"] |= {"mode": "none", "dtype": "auto"}  # compute in what this machine is fast at
        (tmp / MARKER).write_text("# the config of the run this model was exported from; model.name_or_path is the "
                                  "export folder\n" + yaml.safe_dump(saved, sort_keys=False))
        if gguf_types:
            (tmp / "gguf").mkdir()
        for t in gguf_types:
            write_gguf(model, tokenizer, tmp / "gguf" / f"model-{t}.gguf", t, source_gguf=source_gguf(cfg),
                       chat_template=training_chat_template(cfg.data.template, tokenizer), name=out.name)
        if gguf_types:
            text = modelfile(f"model-{gguf_types[0]}.gguf", cfg.data.template, tokenizer, cfg.eval.max_new_tokens)
            (tmp / "gguf" / "Modelfile").write_text(text)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
        facts = Facts(cfg.model.name_or_path, hub_id, license_, dtype, files, gguf_types, out.name)
        (tmp / "README.md").write_text(render(records, facts, tokenizer))

    publish(out, write, marker=MARKER)
    return out, {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}


def push(folder: Path, repo: str, token: str | None, private: bool, dry_run: bool) -> str:
    """Upload the folder (or, dry run, check the card parses as the Hub reads it and list what would go)."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")  # the Hub's own parser: front matter and model-index
    results = card.data.eval_results or []
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if dry_run:
        return (f"dry run: would upload {len(files)} files to https://huggingface.co/{repo} "
                f"({', '.join(files)}); card metadata parsed: base_model {card.data.base_model}, "
                f"license {card.data.license}, {len(results)} evaluation results")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="sqlft export")
    return f"uploaded to {info.repo_url if hasattr(info, 'repo_url') else repo}"


def export_command(cfg, args) -> int:
    from ft.config import resolve
    from ft.files import check_writable
    from ft.merge import merged_dtype
    from ft.model import local_model_dir

    types = [t.strip() for value in args.gguf for t in value.split(",") if t.strip()]
    for t in types:
        if t not in GGUF_TYPES:
            raise ConfigError(f"Unknown GGUF type '{t}' (--gguf): use {' or '.join(GGUF_TYPES)}.")
    token = check_push(args.push, args.dry_run) if args.push else None
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise FileExistsError(f"'{out}' (--out) exists and is not an earlier export; give a new folder (nothing "
                              "was written).")
    check_writable(out.resolve().parent, "--out (its folder)")
    try:
        cfg.quantization.dtype = merged_dtype(cfg, local_model_dir(cfg))
        cfg = resolve(cfg)
        folder, files = export(cfg, args.run, out, types)
    except ModelError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{first} (the base model of {args.run}; give its folder or GGUF file with --model)") \
            from None
    print(f"exported: {folder}")
    for name, size in sorted(files.items()):
        print(f"  {name:<32} {size / 2**20:9.1f} MiB")
    if args.push:
        try:
            print(push(folder, args.push, token, args.private, args.dry_run))
        except Exception as e:  # noqa: BLE001 - the network or the Hub: one line, the export itself is complete
            why = str(e).splitlines()[0] if str(e) else ""
            print(f"error: upload to {args.push} failed ({type(e).__name__}: {why}); the export is complete in "
                  f"{folder}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(COMMAND, export_command, argv,
               errors=(ModelError, FileNotFoundError, FileExistsError, GGUFExportError))


if __name__ == "__main__":
    sys.exit(main())
