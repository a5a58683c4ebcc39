"""Step implementations, one module per technique, each registered against its parameters type."""

from __future__ import annotations

from collections.abc import Callable

from core.errors import ErrorCode, InvalidRecipe
from core.steps import StepParams
from core.steps.base import register_package
from workers.steps.context import ModelHandle, StepContext

Apply = Callable[[ModelHandle, StepParams, StepContext], ModelHandle]
IMPLEMENTATIONS: dict[type[StepParams], Apply] = {}


def implements(params_type: type[StepParams]) -> Callable[[Apply], Apply]:
    def register(fn: Apply) -> Apply:
        IMPLEMENTATIONS[params_type] = fn
        return fn

    return register


def apply_step(handle: ModelHandle, params: StepParams, ctx: StepContext) -> ModelHandle:
    impl = IMPLEMENTATIONS.get(type(params))
    if impl is None:
        raise InvalidRecipe(f"step {params.name!r} has no implementation on this worker",
                            code=ErrorCode.unsupported_step)
    return impl(handle, params, ctx)


register_package(__name__, __path__)  # every module of this package implements one step
