"""Models by Hugging Face Hub id: `org/name` (or `org/name@REVISION`) -> its snapshot folder in the HF cache.

    dno sample prompts.parquet -o samples.parquet --model HuggingFaceTB/SmolLM2-135M-Instruct
    dno train pairs.parquet --model HuggingFaceTB/SmolLM2-135M-Instruct --revision 12fd25f -o ckpt
    dno judge samples.parquet -o judgments.parquet --judge reward:OpenAssistant/reward-model-deberta-v3-base@main

Wherever a model folder goes (--model, --reference, --tokenizer, --judge reward:ID), a value that is
neither a local path nor a storage URL and reads `org/name` is a Hub id. `huggingface_hub.snapshot_download`
resolves it in the cache as the hub writes it ($HF_HUB_CACHE, else $HF_HOME/hub, else
~/.cache/huggingface/hub: `models--org--name/refs/<branch>` holds the commit, `snapshots/<commit>/` the
files), downloading what is missing when online and reading only the cache when HF_HUB_OFFLINE is set.
The stage then works on that snapshot folder like any local folder; the lineage records the id and the
resolved commit beside the folder's content hash (`hub_info`), so when the Hub's main moves the inputs'
hash moves with it and the output is made again.

huggingface_hub is imported only when an id is resolved (it comes with transformers).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DnoError, first_line

# huggingface_hub's repo-id rules (validate_repo_id) with the namespace required: a bare `name` is far more
# often a mistyped local folder than one of the Hub's few legacy un-namespaced repositories.
REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}/[\w][\w.-]{0,95}(?<![.-])$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What dno loads of a model repository: config, safetensors weights, tokenizer and chat template files. Pickle
# weights, GGUF, ONNX and framework exports are not downloaded (dno refuses pickle weights anyway).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None  # a branch, tag or commit; None: main

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse(spec, revision: str | None = None, flag: str = "--model") -> HubRef | None:
    """The Hub id `spec` names, or None for a local path (one that exists, or does not read `org/name`) or a URL.

    >>> parse("HuggingFaceTB/SmolLM2-135M-Instruct@main"), parse("runs/demo/iter-01/checkpoint"), parse("s3://b/m")
    (HubRef(repo_id='HuggingFaceTB/SmolLM2-135M-Instruct', revision='main'), None, None)
    """
    from .storage import is_url

    if spec is None or is_url(spec):
        return None
    text = str(spec)
    if Path(text).exists():
        if revision:
            raise DnoError(f"{flag} {text}: a local folder; --revision {revision} picks a revision of a Hugging Face "
                           "Hub id (org/name), drop it")
        return None
    name, at, rev = text.partition("@")
    if not REPO_ID.match(name):
        return None
    if at and not rev:
        raise DnoError(f"{flag} {text}: nothing after '@'; write org/name@REVISION (a branch, tag or commit)")
    if rev and revision and rev != revision:
        raise DnoError(f"{flag} {text} and --revision {revision} name two revisions; keep one")
    return HubRef(name, rev or revision)


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but read now (its constants are read once, at its import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """The hub cache as huggingface_hub finds it ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub), now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve(spec, revision: str | None = None, flag: str = "--model"):
    """A local folder for `spec`: a Hub id's snapshot (downloaded when online and missing), anything else
    as it is (the caller's own check says when a local folder is missing)."""
    ref = parse(spec, revision, flag)
    return spec if ref is None else snapshot(ref, flag)


def snapshot(ref: HubRef, flag: str = "--model") -> Path:
    """The snapshot folder of `ref` in the cache; DnoError (one line: what to do) when it cannot be had."""
    try:
        from huggingface_hub import errors, snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise DnoError(f"{flag} {ref}: a Hugging Face Hub id needs huggingface_hub: pip install huggingface_hub") from None
    cache, off = cache_dir(), offline()
    try:
        path = snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=str(cache), local_files_only=off,
                                 allow_patterns=MODEL_FILES)
    except errors.RevisionNotFoundError:
        raise DnoError(f"{flag} {ref}: the Hub repository {ref.repo_id} has no revision {ref.revision!r}; "
                       "pass a branch, tag or commit it has") from None
    except errors.RepositoryNotFoundError:  # also gated and private repositories (GatedRepoError is one)
        raise DnoError(f"{flag} {ref}: no such local folder, and no model {ref.repo_id} on the Hugging Face Hub "
                       "that this login can read; check the id, or log in (`hf auth login` or $HF_TOKEN) for a "
                       "private or gated one") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        where = f"in the Hugging Face cache {cache}"
        if off:
            raise DnoError(f"{flag} {ref}: no such local folder, and not {where} while offline (HF_HUB_OFFLINE is "
                           f"set); download it once online (`hf download {ref.repo_id}"
                           f"{f' --revision {ref.revision}' if ref.revision else ''}`), unset HF_HUB_OFFLINE, or "
                           "pass a local model folder") from None
        raise DnoError(f"{flag} {ref}: no such local folder, not {where}, and the Hub could not be reached; "
                       "check the network (or HF_ENDPOINT), or pass a local model folder") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as e:
        raise DnoError(f"{flag} {ref}: cannot get it from the Hugging Face Hub ({first_line(e, 200)}); check the id "
                       "and the network, or pass a local model folder") from None
    return Path(path)


def hub_info(path) -> dict | None:
    """{"repo_id", "commit"} when `path` is a snapshot folder of a Hub cache (`models--org--name/snapshots/<commit>`),
    else None; what the lineage records beside the folder's content hash.

    >>> hub_info("/c/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/" + "a" * 40)
    {'repo_id': 'HuggingFaceTB/SmolLM2-135M', 'commit': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}
    >>> hub_info("runs/demo/iter-01/checkpoint") is None
    True
    """
    p = Path(path)
    repo = p.parent.parent.name
    if p.parent.name != "snapshots" or not repo.startswith("models--") or not COMMIT.match(p.name):
        return None
    return {"repo_id": repo.removeprefix("models--").replace("--", "/"), "commit": p.name}


def pinned(spec, local) -> str:
    """What another process (a Ray worker, a later stage) is given to load the same files: a Hub snapshot as
    `org/name@<commit>` (resolved again there, from its own cache or the Hub), anything else as `spec`.

    >>> pinned("org/m", "/c/hub/models--org--m/snapshots/" + "b" * 40)
    'org/m@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'
    """
    info = hub_info(local) if local is not None else None
    return f"{info['repo_id']}@{info['commit']}" if info else str(spec)


def hub_lineage(judge) -> dict:
    """What a stage's lineage adds for a judge whose model came from the Hub (reward:ID): {"judge_hub": {repo_id,
    commit}}; nothing for any other judge."""
    info = getattr(judge, "hub", None)
    return {"judge_hub": info} if info else {}


def pin(spec, flag: str = "--model"):
    """A Hub id resolved now and pinned to its commit (`org/name@<commit>`), so every stage of a loop loads the
    same files even when the Hub's main moves during the run; anything else as it is."""
    ref = parse(spec, None, flag)
    return spec if ref is None else pinned(spec, snapshot(ref, flag))
