"""What a re-run of `tabslim search` on an existing study says about what it continues.

A continued study keeps the settings its trials were trained with: its baseline, and every
worker (which rebuilds its config from the study), trained under them, and a coordinator that
trained its own trials under other ones mixed two studies in one. Settings that decide only
this run (how many trials, where, how the champion is picked) are this run's.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from search.config import Config, validate
from search.study import StudySettings, attributes, ladder_params, searched_trials

__all__ = ["kept_settings", "prune_note"]

# Settings that shape how a trial trains: a continued study keeps the ones it was made with.
KEPT = (
    "training.max_epochs",
    "training.batch_size",
    "training.lr",
    "training.weight_decay",
    "training.patience",
    "training.seed",
    "training.precision",
    "search.max_epochs_factor",
    "search.fidelity",
    "search.distill",
)


def _value(config: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        config = (config or {}).get(key)  # type: ignore[assignment]
    return config


def kept_settings(study: optuna.Study, config: Config) -> tuple[Config, str | None]:
    """`config` with the study's own values of the `KEPT` settings, and a note naming each one
    this run asked to change (None when none differs, as for a new study)."""
    stored = StudySettings.read(study).config
    if not stored:
        return config, None
    mine = config.model_dump(mode="json")
    changed = {
        key: (_value(stored, key), _value(mine, key))
        for key in KEPT
        if json.dumps(_value(stored, key), sort_keys=True)
        != json.dumps(_value(mine, key), sort_keys=True)
    }
    if not changed:
        return config, None
    raw = config.model_dump()
    for key, (there, _) in changed.items():
        section, name = key.split(".")
        raw[section][name] = there  # None too (a study made without fidelity keeps none)
    config = validate(raw, f"study '{study.study_name}'")
    said = ", ".join(
        f"{key} {json.dumps(there)} (this run asked for {json.dumps(here)})"
        for key, (there, here) in changed.items()
    )
    return config, (
        f"study '{study.study_name}' continues with the settings its trials trained with: "
        f"{said}; search under another --study to use the new ones"
    )


def prune_note(study: optuna.Study, config: Config, n_layers: int) -> str | None:
    """A line when the study has prune in its approaches but no prune trial ran because the
    trials asked for were used up by the baseline and the uniform ladder queued after it."""
    search = config.search
    if "prune" not in search.approaches:
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if any(attributes.approach(t) == "prune" for t in complete):
        return None
    # The baseline, the ladder, and the (up to) two uniform shapes that refine it.
    ladder = len(ladder_params(search.space, n_layers, search.approaches))
    queued = 1 + ladder + (2 if ladder else 0)
    if searched_trials(study) > queued:
        return None  # sampled trials ran and drew scratch: chance, not the count
    return (
        f"no prune trial ran: the {search.n_trials} trials asked for went to the baseline and "
        f"the uniform ladder ({queued} trials queued first); ask for --n-trials {queued + 1} "
        "or more to reach the sampled trials, where prune trials are drawn"
    )
