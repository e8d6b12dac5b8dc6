"""One pyarrow schema and one version integer per artifact.

Writers always pass the explicit schema (an inferred one drifts); readers check the
file's `dno.schema` / `dno.schema_version` metadata and its columns against these.
Bump VERSION whenever a column is added, removed or changes meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from . import eval as eval_
from . import judgments, pairs, prompts, samples


@dataclass(frozen=True)
class ArtifactSchema:
    name: str
    version: int
    schema: pa.Schema
    made_by: str  # the command that writes this artifact, for error messages


REGISTRY: dict[str, ArtifactSchema] = {
    m.NAME: ArtifactSchema(m.NAME, m.VERSION, m.SCHEMA, m.MADE_BY)
    for m in (prompts, samples, judgments, pairs, eval_)
}


def get(name: str) -> ArtifactSchema:
    return REGISTRY[name]
