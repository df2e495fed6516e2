"""A re-run of `tabslim search` says what it does: it leaves `@champion` on a version that
`tabslim retrain` promoted unless `--force`, keeps the training settings its trials trained
with and says so, says when the trials asked for never reached a prune trial, and prints
lines that fit a terminal with counts that agree."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from search.commands import main

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())


def _search(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, str]:
    args = ["search", "--config", str(root / "tiny.yaml"), "--study", "again",
            "--storage", str(root / "optuna.journal"), "--quiet", *extra]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.mark.slow
def test_a_rerun_keeps_a_retrain_promoted_champion_and_says_what_it_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    # A ladder of two rungs: with 3 trials, the baseline and the ladder use them all.
    raw["search"]["space"]["ladder"] = [0.5, 0.25]
    raw["search"]["n_trials"] = 3
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    raw["tracking"] = {"uri": uri}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    out, _ = _search(tmp_path, capsys)
    assert "note: no prune trial ran" in out and "--n-trials 6 or more" in out
    assert all(len(line) <= 120 for line in out.splitlines()), out
    assert re.search(r"again@champion is version 1", out)

    # What `tabslim retrain` leaves after a promotion: a version tagged with its run, as
    # champion, and the search's version as previous.
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    first = client.get_model_version_by_alias("again", "champion")
    promoted = client.create_model_version("again", first.source, run_id=first.run_id,
                                           tags={"tabslim.retrain_run": "r123"})  # fmt: skip
    client.set_registered_model_alias("again", "previous", first.version)
    client.set_registered_model_alias("again", "champion", promoted.version)

    out, err = _search(tmp_path, capsys, "--n-trials", "4", "--max-epochs", "2")
    assert "stays on version 2, which retrain run r123 promoted" in out
    assert "--force" in out
    assert str(client.get_model_version_by_alias("again", "champion").version) == "2"
    assert "training.max_epochs 3 (this run asked for 2)" in err
    # The table's count and the summary's agree.
    (finished,) = re.findall(r"of (\d+) finished trials", out)
    assert f": {finished} trials, front of" in out

    out, _ = _search(tmp_path, capsys, "--n-trials", "4", "--force")
    aliases = client.get_registered_model("again").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "3", "previous": "2"}
    assert "again@champion is version 3" in out
