"""Option groups that several stages share, each declared once: help, check, lineage flag, default.

  Api          how an OpenAI-compatible server is called      sample, judge, eval
  ModelLoading dtype and CPU threads of a local model          sample, eval
  Sampling     temperature, top-p, longest answer, seed        sample, eval (greedy there)
  TeacherCall  an openai: teacher's decoding                   sample, eval
  JudgeSettings the preference oracle and its prompt           judge, eval (as --judge-*)
  Engine       where the work runs: here, or Ray actors          sample, judge, eval

Training's options are the library's TrainOptions (dno_data/training/options.py), shared by
train and sft. A stage embeds a group with `group(Api)` (or `group(Sampling, factory=...)` for
defaults of its own); its fields become flags of the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..reproducibility import DEFAULT_THREADS
from .base import Config
from .options import UNSET, Option, above, all_of, at_least, in_range, local_path, nonempty, one_of, url

API = "OpenAI-compatible API (openai: specs)"
ENGINE = "Engine (where the work runs)"
MODEL_LOADING = "Model loading"
SAMPLING = "Sampling"
API_TIMEOUT = 120.0  # the default of --timeout, the same for every command


def no_credentials(v) -> None:
    """A server URL never carries credentials: they would reach lineage and error lines (pass the key by
    --api-key-env, as a bearer token)."""
    if v and (urlsplit(str(v)).username is not None or urlsplit(str(v)).password is not None):
        raise ValueError("carries credentials (user:password@); pass the key through --api-key-env instead")


BASE_URL = Option("OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
                  "(default: $OPENAI_BASE_URL or api.openai.com).", changes_output=False,
                  check=all_of(url, no_credentials), panel=API)


@dataclass(frozen=True, kw_only=True)
class Api(Config):
    """How the OpenAI-compatible server of a command's `openai:` specs is called."""

    base_url: str | None = BASE_URL.field(None)
    api_key_env: str = Option("Name of the environment variable holding the API key (the key itself is never "
                              "stored).", changes_output=False, check=nonempty, panel=API).field("OPENAI_API_KEY")
    concurrency: int = Option("Requests in flight.", changes_output=False, check=at_least(1), panel=API).field(16)
    rpm: float | None = Option("Requests-per-minute limit.", changes_output=False, check=above(0),
                               panel=API).field(None)
    tpm: float | None = Option("Tokens-per-minute limit.", changes_output=False, check=above(0),
                               panel=API).field(None)
    timeout: float = Option("Seconds per request attempt.", changes_output=False, check=above(0),
                            panel=API).field(API_TIMEOUT)
    max_retries: int = Option("Retries on 429/5xx/timeouts (backoff with jitter, Retry-After).", changes_output=False,
                              check=at_least(0), panel=API).field(6)
    cache: Path | None = Option("SQLite cache of API calls, keyed by request content, on this machine's disk "
                                "(default: sample none; judge and eval $DNO_CACHE or ~/.cache/dno/judge.sqlite).",
                                changes_output=False, check=local_path, panel=API).field(None)
    no_cache: bool = Option("Do not read or write the call cache.", changes_output=False, panel=API).field(False)

    def settings(self, base_url=UNSET):
        """The call runner's ApiSettings; `base_url` overrides this group's (a teacher on another server)."""
        from ..openai_api.runner import ApiSettings

        return ApiSettings(base_url=self.base_url if base_url is UNSET else base_url, api_key_env=self.api_key_env,
                           concurrency=self.concurrency, rpm=self.rpm, tpm=self.tpm, timeout=self.timeout,
                           max_retries=self.max_retries)

    def cache_path(self, default: Path | None = None) -> Path | None:
        """The call cache to use: None with --no-cache, else --cache or `default`."""
        return None if self.no_cache else (self.cache or default)


DTYPES = ("auto", "float32", "bfloat16", "float16")
THREADS = Option("torch CPU threads (float sums depend on it: runs agree with runs of the same count).",
                 changes_output=False, check=at_least(1), panel=MODEL_LOADING)


@dataclass(frozen=True, kw_only=True)
class ModelLoading(Config):
    """How a local model is loaded for generation."""

    dtype: str = Option(f"Model dtype: {'|'.join(DTYPES)}.", check=one_of(*DTYPES), panel=MODEL_LOADING).field("auto")
    threads: int = THREADS.field(DEFAULT_THREADS)


# Which files a Hub id names is in the lineage by their content hash (and the resolved commit), so the revision
# asked for is how they were found, not what they are: recorded, out of the fingerprint.
REVISION = Option("When --model is a Hugging Face Hub id (org/name): its branch, tag or commit (default main; "
                  "org/name@REVISION says the same).", changes_output=False, panel=MODEL_LOADING)


TEMPERATURE = Option("Sampling temperature (0 = greedy).", check=at_least(0), panel=SAMPLING)
TOP_P = Option("Nucleus sampling top-p, in (0, 1].", check=in_range(0, 1, lo_open=True), panel=SAMPLING)


@dataclass(frozen=True, kw_only=True)
class Sampling(Config):
    """How answers are drawn from the policy."""

    temperature: float = TEMPERATURE.field(0.7)
    top_p: float = TOP_P.field(0.95)
    max_new_tokens: int = Option("Longest response in tokens.", check=at_least(1), panel=SAMPLING).field(256)
    seed: int = Option("Sampling seed (each prompt's samples are seeded from it and the prompt_id).",
                       panel=SAMPLING).field(0)


GREEDY = Sampling(temperature=0.0, top_p=1.0)


@dataclass(frozen=True, kw_only=True)
class TeacherCall(Config):
    """How an `openai:MODEL` teacher answers (flags --teacher-temperature, --teacher-max-new-tokens)."""

    temperature: float = Option("openai teacher: temperature.", check=at_least(0), panel=API).field(0.0)
    max_new_tokens: int = Option("openai teacher: longest answer in tokens.", check=at_least(1), panel=API,
                                 aliases=("--max-tokens",)).field(1024)  # --teacher-max-tokens under its prefix


TEACHER_SPECS = "reference | python:module:function | openai:MODEL"
JUDGE_MODES = ("score", "pairwise", "rubric", "single")


def judge_specs() -> str:
    """Every judge spec the judges accept, from their registry (help texts)."""
    from ..judges import spec_help

    return spec_help()


@dataclass(frozen=True, kw_only=True)
class JudgeSettings(Config):
    """The preference oracle: its spec and how it is asked (the fields each kind of judge uses)."""

    spec: str = Option(f"The preference oracle: {judge_specs()}.", flags=("--judge",), name="judge",
                       check=nonempty).field()
    mode: str | None = Option("Judge mode: openai: rubric|pairwise|single (single: each answer graded alone on "
                              "1..10, MT-Bench's form); python: score|pairwise (default: rubric for openai, score "
                              "for the others).", check=one_of(*JUDGE_MODES)).field(None)
    both_orders: bool = Option("Pairwise: judge (a,b) and (b,a).").field(True)
    template: Path | None = Option("openai judges: Jinja template of the judge prompt (shipped: "
                                   "dno_data/templates/MODE.jinja).", panel=API).field(None)
    system_prompt: str | None = Option("openai judges: system message for the judge.", panel=API).field(None)
    temperature: float = Option("openai judges: the judge's sampling temperature.", check=at_least(0),
                                panel=API).field(0.0)
    max_new_tokens: int | None = Option("openai judges: longest judge answer in tokens.", check=at_least(1),
                                        panel=API, aliases=("--max-tokens",)).field(None)
    logprobs: bool = Option("openai pairwise judges: P from the verdict token's logprobs.", panel=API).field(True)
    seed: int = Option("Seed of the rubric's candidate shuffling.").field(0)
    batch_size: int = Option("Reward model: candidates per forward pass.", check=at_least(1)).field(16)

    def make(self):
        """The judge (dno_data.judges.make_judge)."""
        from ..judges import make_judge

        return make_judge(self.spec, self.mode, both_orders=self.both_orders, template=self.template,
                          system=self.system_prompt, temperature=self.temperature, max_tokens=self.max_new_tokens,
                          logprobs=self.logprobs, seed=self.seed, batch_size=self.batch_size)


ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class Engine(Config):
    """Where a stage's batches run: in this process, or on a pool of Ray actors (dno_data/engines/ray.py).

    How the work runs, not what it makes: none of these is in the lineage fingerprint, so a run
    started with one engine resumes (or is up to date) with the other.
    """

    name: str = Option("local (this process) | ray (actors on the Ray cluster that $RAY_ADDRESS names, or a new "
                       "local one; pip install 'dno-data[ray]').", flags=("--engine",), name="engine",
                       changes_output=False, check=one_of(*ENGINES), panel=ENGINE).field("local")
    workers: int = Option("ray: actors, each holding one model (or judge).", changes_output=False, check=at_least(1),
                          panel=ENGINE).field(2)
    gpus_per_worker: float = Option("ray: GPUs per actor (vLLM with --tensor-parallel-size N: N).",
                                    changes_output=False, check=at_least(0), panel=ENGINE).field(0.0)
    cpus_per_worker: float = Option("ray: CPUs reserved per actor (a local model's torch threads are --threads).",
                                    changes_output=False, check=above(0), panel=ENGINE).field(1.0)

    @property
    def ray(self) -> bool:
        return self.name == "ray"

    def resources(self) -> dict:
        """The pool's size and each worker's share: dno_data.engines.ray.run_units's keywords."""
        return {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker}
