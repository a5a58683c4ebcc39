"""The base of every step's parameters: the declaration is the schema users see (GET /v1/steps).

A step is named by its `step` literal. Subclasses register themselves; the recipe's step list is a
union tagged by that name. Implementations live in workers/steps/ (they need torch / onnxruntime);
the parameters live here so the gateway can validate recipes without importing them.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

MODEL_FORMATS = ("onnx", "pt2")
SHARED = {"base", "common", "training"}  # modules of shared parameters, not steps


def register_package(package: str, path) -> None:
    """Imports every step module of a package (core.steps, workers.steps): importing one registers it, so
    adding a technique is adding a module."""
    for module in pkgutil.iter_modules(path):
        if module.name not in SHARED:
            importlib.import_module(f"{package}.{module.name}")


class StepParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: ClassVar[dict[str, type[StepParams]]] = {}
    summary: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # model formats the step accepts
    dataset: ClassVar[str] = "no"  # when the step needs the job's dataset, in words (for docs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "step" not in cls.model_fields:  # a shared base of several steps, not a step
            return
        name = cls.model_fields["step"].default
        if name in StepParams.registry:
            raise TypeError(f"step {name!r} is registered twice")
        StepParams.registry[name] = cls

    trains: ClassVar[bool] = False  # the step updates weights by training

    @property
    def needs_data(self) -> bool:
        """Whether these parameters need the job's dataset."""
        return self.trains

    @property
    def needs_labels(self) -> bool:
        """Whether these parameters need labels in the dataset."""
        return False

    def preflight(self, model, target) -> list[str]:
        """What stops this step from handling `model` (a ModelRecord) on `target`, in words; [] if nothing."""
        return []

    @property
    def name(self) -> str:
        return self.step  # type: ignore[attr-defined]

    def params(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"step"})

    def as_recipe_item(self) -> dict[str, Any]:
        return {self.name: self.params()}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        schema = cls.model_json_schema()
        props = schema.get("properties", {})
        props.pop("step", None)
        for name, field in cls.model_fields.items():  # show default_factory defaults too
            if name in props and field.default_factory is not None:
                value = field.default_factory()
                props[name]["default"] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        if "required" in schema:
            schema["required"] = [r for r in schema["required"] if r != "step"]
        name = cls.model_fields["step"].default
        return {
            "name": name,
            "summary": cls.summary,
            "formats": list(cls.formats),
            "needs_dataset": cls.dataset,
            "schema": schema,
        }
