"""Which paths a job tries: the recipe's steps (and its comparison branch), or the search's trials: every
point of a grid, random points, or points Optuna's multi-objective TPE proposes from the results so far."""

from __future__ import annotations

from core.recipe import Recipe
from core.report import Candidate
from core.search import Choice, apply, grid, recipe_paths, sample
from workers.engine.plan import Path_
from workers.measure import goals as G

TPE_PARALLEL = 4  # trials proposed ahead of results, so that several workers have something to run


class Trials:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.baseline: Candidate | None = None  # set once measured, before any result arrives
        self.search = recipe.search
        self.asked = 0
        self._open: dict[str, object] = {}  # end node id -> the Optuna trial waiting for its result
        self._study = self._make_study() if self.search and self.search.sampler == "tpe" else None

    @property
    def searching(self) -> bool:
        return self.search is not None

    def first(self) -> list[tuple[Path_, object]]:
        if self.search is None:
            return [(p, None) for p in recipe_paths(self.recipe)]
        if self.search.sampler == "grid":
            choices = grid(self.search.space)
        elif self.search.sampler == "random":
            choices = sample(self.search.space, self.search.trials, self.search.seed)
        else:
            return self.more(0)
        self.asked = len(choices)
        return [(apply(self.recipe.steps, c), None) for c in choices]

    def more(self, in_flight: int) -> list[tuple[Path_, object]]:
        """TPE: new proposals while fewer than TPE_PARALLEL trials are running and the budget allows."""
        if self._study is None:
            return []
        proposals = []
        while self.asked < self.search.trials and in_flight + len(proposals) < TPE_PARALLEL:
            trial = self._study.ask()
            choice = self._choice(trial)
            proposals.append((apply(self.recipe.steps, choice), trial))
            self.asked += 1
        return proposals

    def started(self, end: str, token: object) -> None:
        if token is not None:
            self._open[end] = token

    def finished(self, end: str, candidate: Candidate | None) -> None:
        """Tells the sampler how a trial ended (None: it failed)."""
        trial = self._open.pop(end, None)
        if trial is None or self._study is None:
            return
        import optuna

        if candidate is None:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        results = G.evaluate(candidate, self.baseline, self.recipe.goals)
        trial.set_user_attr("constraints", [r.gap or 0.0 for r in results if r.bound is not None] or [0.0])
        values = [_finite(G.value(candidate, g.metric)) for g in G.objectives(self.recipe.goals)]
        self._study.tell(trial, values)

    def waiting_for(self) -> int:
        return len(self._open)

    def _make_study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        directions = ["maximize" if (g.maximize or (not g.minimize and G.higher_is_better(g.metric))) else "minimize"
                      for g in G.objectives(self.recipe.goals)]
        sampler = optuna.samplers.TPESampler(seed=self.search.seed, n_startup_trials=min(4, self.search.trials),
                                             constraints_func=lambda t: t.user_attrs.get("constraints", [0.0]))
        return optuna.create_study(directions=directions, sampler=sampler)

    def _choice(self, trial) -> Choice:
        return {d: d.values[trial.suggest_categorical(d.label, list(range(len(d.values))))] for d in self.search.space}


def _finite(v: float | None) -> float:
    return float("nan") if v is None else float(v)
