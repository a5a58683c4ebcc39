"""The built-in recipes and the steps with their JSON schemas."""

from __future__ import annotations

from fastapi import APIRouter

from core.errors import ErrorCode, NotFound
from core.recipes import builtin_names, builtin_recipe, builtin_recipes
from core.registry import live
from core.report import report_schema
from core.steps import catalog
from service.deps import BackendsDep, TenantDep

router = APIRouter(tags=["catalog"])


@router.get("/recipes")
def list_recipes(tenant: TenantDep) -> list[dict]:
    return [r.model_dump(mode="json") for r in builtin_recipes()]


@router.get("/recipes/{name}")
def read_recipe(name: str, tenant: TenantDep) -> dict:
    if name not in builtin_names():
        raise NotFound(f"no built-in recipe {name!r}; there are: {', '.join(builtin_names())}",
                       code=ErrorCode.recipe_not_found)
    return builtin_recipe(name).model_dump(mode="json")


@router.get("/steps")
def list_steps(tenant: TenantDep) -> list[dict]:
    return catalog()


@router.get("/schemas/report")
def read_report_schema(tenant: TenantDep) -> dict:
    """The JSON Schema of report.json (versioned by its $id and schema_version)."""
    return report_schema()


@router.get("/workers")
def list_workers(tenant: TenantDep, b: BackendsDep) -> list[dict]:
    """The live workers and what they serve: queues, device, execution providers, GPU."""
    return sorted(live(b.r), key=lambda w: w["name"])
