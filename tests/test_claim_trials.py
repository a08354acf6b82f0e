"""The trials of tools/claim_trials.py still point at their statements (nothing is executed here).

`make claim-trials` runs them (minutes); this checks in a second that each trial's notebook exists,
its anchor is in exactly one code cell, once, the line its mutation goes before is in that cell
once, and the cell's committed output prints the statement followed by the value the trial expects;
and that chapters 00-08 and 12 each have a trial.
"""

import importlib.util

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("claim_trials", ROOT / "tools" / "claim_trials.py")
claim_trials = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claim_trials)


@pytest.mark.parametrize("trial", claim_trials.TRIALS, ids=lambda t: t.chapter)
def test_trial_finds_its_cell_line_and_statement(trial):
    nb, committed = claim_trials.prepare(trial)  # raises TrialError, naming what is missing
    assert committed == trial.expected
    assert trial.mutation.strip() and trial.stands_for.strip()
    mutated = nb.cells[-1].source
    assert mutated.count(trial.before) == 1 and trial.anchor in mutated


def test_every_chapter_that_must_have_a_trial_has_one():
    chapters = {t.chapter for t in claim_trials.TRIALS}
    missing = {f"{n:02d}" for n in [*range(9), 12]} - chapters
    assert not missing, f"chapters without a trial in tools/claim_trials.py: {sorted(missing)}"


def test_a_missing_anchor_or_statement_is_a_clear_error():
    trial = claim_trials.TRIALS[0]
    for change in ({"anchor": "no cell says this"}, {"statement": "no line says this"},
                   {"before": "no line holds this"}, {"expected": not trial.expected}):
        with pytest.raises(claim_trials.TrialError, match=trial.notebook):
            claim_trials.prepare(claim_trials.dataclasses.replace(trial, **change))
