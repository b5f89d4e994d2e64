"""Distillation schedules and the timestep grids their rounds train on (config ``distillation.base`` /
``.relay``). Standalone (no config, no systems): config validation checks schedules with it."""

from __future__ import annotations

from harness.errors import ConfigError

MODELS = {"base": "cogview3-base", "relay": "cogview3-relay"}


def stage_grid(stage: str, steps: int, t_r: int | None = None) -> list[int]:
    """The timestep grid a system of ``stage`` samples with ``steps`` steps (relay: from ``t_r``)."""
    from models.cogview3.schedule import relay_timesteps, timesteps

    return timesteps(steps) if stage == "base" else relay_timesteps(t_r, steps)


def schedule_grids(stage: str, schedule: list[int], t_r: int | None = None) -> list[list[int]]:
    """The grid of every entry as distillation trains it: the first teacher samples its system's grid,
    each student every second point of its teacher's (:func:`models.cogview3.training.halve_grid`)."""
    from models.cogview3.training import halve_grid

    grids = [stage_grid(stage, schedule[0], t_r)]
    for _ in schedule[1:]:
        grids.append(halve_grid(grids[-1]))
    return grids


def check_schedule(stage: str, schedule: list[int], t_r: int | None = None) -> None:
    """A schedule halves the steps round by round (rounded up), and every student is trained on the grid
    its system samples: otherwise the student would generate on timesteps it never learnt. ``t_r`` None
    (relay, the relay system unknown): only the halving is checked."""
    key = f"config key 'distillation.{stage}"
    for i in range(1, len(schedule)):
        half = (schedule[i - 1] + 1) // 2
        if schedule[i] != half or schedule[i] >= schedule[i - 1]:
            raise ConfigError(f"{key}.{i}': {schedule[i]} steps after {schedule[i - 1]}; each round halves the steps, "
                              f"rounded up (a student's grid is every second point of its teacher's), so "
                              f"{half if half < schedule[i - 1] else 'no further round'} here")
    if stage == "relay" and t_r is None:
        return
    try:
        grids = schedule_grids(stage, schedule, t_r)
    except ValueError as err:
        raise ConfigError(f"{key}.0': {err}") from None
    where = f" from T_r = {t_r}" if stage == "relay" else ""
    for i in range(1, len(schedule)):
        own = stage_grid(stage, schedule[i], t_r)
        if grids[i] != own:
            raise ConfigError(
                f"{key}.{i}': the {schedule[i]}-step student would be trained on t = {_fmt(grids[i])} (every second "
                f"point of its teacher's grid) but a {schedule[i]}-step {MODELS[stage]} system samples t = "
                f"{_fmt(own)}{where}: it would generate on a grid it never learnt. Halving keeps a system's grid "
                "from an even number of steps: e.g. base [64, 32, 16, 8, 4] (the official 8- and 4-step grids), "
                "relay [8, 4, 2, 1] with relay_t_r 200 (the official 1-step t = 199)")


def _fmt(grid: list[int]) -> str:
    return ", ".join(map(str, grid)) if len(grid) <= 8 else f"{', '.join(map(str, grid[:4]))}, ..., {grid[-1]}"
