"""Request and response bodies of the v1 jobs API that the gateway and the SDK share."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.job import Job
from core.recipe import Recipe, Target


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    dataset_id: str | None = None
    recipe: str | dict[str, Any] = Field(description="A built-in recipe's name, or an inline recipe.")
    target: Target | None = Field(None, description="Overrides the recipe's target.")
    callback_url: str | None = Field(None, max_length=2000)


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = None


class ArtifactLink(BaseModel):
    name: str
    size_bytes: int
    sha256: str
    url: str
    expires_at: str


class DryRun(BaseModel):
    dry_run: bool = True
    recipe: Recipe
    trials: int = Field(description="paths (recipes) the job will try")
    candidates: int = Field(description="models it will make and measure (shared prefixes counted once)")
    measurements: int
    training_epochs: int
    estimate_s: float
    estimate_note: str
