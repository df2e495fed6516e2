"""What tabslim logs, as MLflow stores it and as the MLflow UI shows it in a real browser.

The browser test starts `mlflow ui` on a small real search and drives headless Chromium over
the DevTools protocol (on a pipe, standard library only): the run table keeps nested runs
collapsed under their parent, and only a click on the expander shows them, which `--dump-dom`
cannot do.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from loopback import free_port
from mlflow.entities import DatasetInput
from mlflow.tracking import MlflowClient

from search import tracking
from search.commands import run_search, run_train
from search.config import Config, load_config, override, validate
from search.front import front_markdown, pareto
from search.inputs import load_data

TINY = Path(__file__).parent / "tiny_search.yaml"
MLFLOW = Path(sys.executable).parent / "mlflow"
# Each page must render within this; a slower one is a finding, not a reason to wait longer.
PAGE_SECONDS = 60.0
# Mode the MLflow 3.17 UI opens in: the sidebar's GenAI / Model training switch, which it keeps
# in the browser's local storage (default GenAI) and takes from this URL parameter.
MODEL_TRAINING = "workflowType=machine_learning"


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A `trial_table`-shaped frame; unnamed columns get neutral values."""
    defaults: dict[str, Any] = dict.fromkeys(pareto.TABLE_COLUMNS, float("nan"))
    defaults |= {"approach": "scratch", "precision": "fp32", "hidden": "", "feasible": True}
    defaults |= {"baseline": False, "pareto": False}
    return pd.DataFrame([defaults | row for row in rows], columns=list(pareto.TABLE_COLUMNS))


def test_front_markdown_is_a_table_of_the_baseline_and_the_front() -> None:
    table = _table(
        [
            {"trial": 3, "approach": "prune", "hidden": "8-4", "pareto": True,
             "param_ratio": 0.05, "latency_ratio": 0.8, "metric_delta": -0.0123,
             "delta_low": -0.03, "delta_high": 0.005, "test_delta": -0.01},
            {"trial": 5, "hidden": "16-8", "param_ratio": 0.3, "latency_ratio": 0.9},
            {"trial": 0, "hidden": "32-16", "baseline": True, "pareto": True,
             "param_ratio": 1.0, "latency_ratio": 1.0, "metric_delta": 0.0},
        ]
    )  # fmt: skip
    lines = front_markdown(table, metric="accuracy").splitlines()
    assert lines[0].startswith("**accuracy: 2 Pareto-front models of 3 finished trials**")
    assert lines[2] == (
        "| trial | approach | precision | widths | param ratio | latency ratio | val delta "
        "accuracy [95% CI] | test delta [95% CI] |"
    )
    assert lines[3] == "| ---: | :--- | :--- | :--- | ---: | ---: | ---: | ---: |"
    # Baseline first, then the front; trial 5 is off the front and not shown. Trial 3 has an
    # interval on validation, and only a point delta on test.
    assert lines[4:] == [
        "| 0 | baseline | fp32 | 32-16 | 1.00x | 1.00x | +0.0000 | - |",
        "| 3 | prune | fp32 | 8-4 | 0.050x | 0.80x | -0.0123 [-0.0300, +0.0050] | -0.0100 |",
    ]


@pytest.mark.parametrize("n_front", [1, 3])
def test_front_markdown_stays_short(n_front: int) -> None:
    rows = [{"trial": 0, "baseline": True, "pareto": True, "param_ratio": 1.0}]
    rows += [{"trial": i, "pareto": True, "param_ratio": 0.5} for i in range(1, n_front + 1)]
    text = front_markdown(_table(rows), metric="rmse", max_rows=2)
    body = [line for line in text.splitlines() if line[:3] in {"| 0", "| 1", "| 2", "| 3"}]
    assert len(body) == 1 + min(n_front, 2)
    assert ("1 more front members in `pareto_front.csv`." in text) == (n_front > 2)
    assert front_markdown(_table([]), metric="rmse") == "No finished trials yet."
    only_baseline = front_markdown(_table(rows[:1]), metric="rmse")
    assert only_baseline.endswith("No feasible candidate besides the baseline yet.")


@dataclass
class Store:
    root: Path
    uri: str
    experiment_id: str
    study: optuna.Study
    parent_run_id: str
    trial_runs: dict[str, str]  # run name "trial-N" -> run id


def _datasets(client: MlflowClient, run_id: str) -> list[DatasetInput]:
    inputs = client.get_run(run_id).inputs
    assert inputs is not None
    return list(inputs.dataset_inputs)


def _tiny(root: Path, **changes: Any) -> Config:
    return override(
        load_config(TINY),
        "test",
        **{"tracking.uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"},
        **changes,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A real search of 3 trials resumed to 4, in an experiment made before tabslim saw it."""
    root = tmp_path_factory.mktemp("ui-store")
    journal = str(root / "optuna.journal")
    config = _tiny(
        root, **{"search.study": "tiny-ui", "search.storage": journal, "search.n_trials": 3}
    )
    client = MlflowClient(tracking_uri=config.tracking.uri)
    # Made by hand, without the kind tag: tabslim must add it, as for its older experiments.
    experiment_id = client.create_experiment(
        config.tracking.experiment, artifact_location=tracking.artifact_root(config.tracking.uri)
    )
    run_search(config, progress=False)
    outcome = run_search(override(config, "test", **{"search.n_trials": 4}), progress=False)
    study = optuna.load_study(
        study_name="tiny-ui",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal)),
    )
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
    )
    return Store(
        root=root,
        uri=config.tracking.uri,
        experiment_id=experiment_id,
        study=study,
        parent_run_id=outcome.parent_run_id,
        trial_runs={run.info.run_name: run.info.run_id for run in children},
    )


def test_search_logs_kind_dataset_and_front_description(store: Store) -> None:
    client = MlflowClient(tracking_uri=store.uri)
    experiment = client.get_experiment(store.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert sorted(store.trial_runs) == [f"trial-{n}" for n in range(4)]
    parent = client.get_run(store.parent_run_id)
    # Resuming reopened the same parent run, which lists its data once.
    inputs = _datasets(client, store.parent_run_id)
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "wine"
    assert dataset.source_type == "tabslim_bundled"
    assert json.loads(dataset.source) == {"uri": "sklearn:wine", "seed": 0}
    assert json.loads(str(dataset.profile))["num_rows"] == len(
        load_data(_tiny(store.root)).train_frame
    )
    assert {tag.key: tag.value for tag in inputs[0].tags} == {"mlflow.data.context": "training"}
    assert not tracking.log_dataset(client, store.parent_run_id, inputs[0])
    schema = [column["name"] for column in json.loads(str(dataset.schema))["mlflow_colspec"]]
    assert "target" in schema and "alcohol" in schema
    for run_id in store.trial_runs.values():
        logged = _datasets(client, run_id)
        assert [(d.dataset.name, d.dataset.digest) for d in logged] == [("wine", dataset.digest)]
    table = pareto.trial_table(store.study)
    description = parent.data.tags["mlflow.note.content"]
    assert description == front_markdown(table, metric="accuracy")
    zero = "+0.0000 [+0.0000, +0.0000]"
    assert f"| 0 | baseline | fp32 | 32-16 | 1.00x | 1.00x | {zero} | {zero} |" in description


def test_train_logs_its_training_split_as_the_run_dataset(tmp_path: Path, small_csv: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw["data"] = {"path": str(small_csv), "target": "label"}
    config = override(
        validate(raw, "test"), "test", **{"tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    )
    outcome = run_train(config, progress_bar=False)
    client = MlflowClient(tracking_uri=config.tracking.uri)
    (logged,) = _datasets(client, outcome.run_id)
    assert logged.dataset.name == "table"
    assert json.loads(logged.dataset.source) == {"uri": str(small_csv.resolve())}
    # 300 rows less 15% validation, 15% certification and 15% test.
    assert json.loads(str(logged.dataset.profile))["num_rows"] == 165
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert experiment is not None
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


# --- the browser ------------------------------------------------------------------------------


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 in the child).

    Messages are JSON, each ended by a NUL byte; replies carry the id of their command, and
    events (no id) are dropped.
    """

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()
        # Above 9, so that moving them to 3 and 4 in the child cannot overwrite one another.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
        os.close(to_child)
        os.close(from_child)
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1000",
        ]  # fmt: skip
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", 'exec "$0" "$@" 3<&"$R" 4>&"$W"', binary, *flags, "about:blank"],
                env=os.environ | {"R": str(ends[0]), "W": str(ends[1])},
                pass_fds=ends,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
        except (OSError, RuntimeError, TimeoutError) as error:
            _stop(self.process)
            tail = log.read_text()[-2000:]
            raise RuntimeError(f"chromium did not start ({error}): {tail}") from None
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + PAGE_SECONDS
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply["result"]
                    return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium did not answer {method} in {PAGE_SECONDS:.0f} s")
            if select.select([self._from_browser], [], [], left)[0]:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def open(self, url: str, ready: str) -> float:
        """Navigate and wait until the JS expression `ready` is true; returns the seconds."""
        started = time.monotonic()
        self.send("Page.navigate", url=url)
        self.wait(ready, f"{url} to show {ready}")
        return time.monotonic() - started

    def wait(self, ready: str, what: str) -> None:
        deadline = time.monotonic() + PAGE_SECONDS
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                shown = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"waited {PAGE_SECONDS:.0f} s for {what}; page: {shown!r}")
            time.sleep(0.2)

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(
            base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        )
        keep = os.environ.get("TABSLIM_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    def close(self) -> None:
        os.close(self._to_browser)  # a closed pipe is Chromium's signal to quit
        os.close(self._from_browser)
        _stop(self.process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, with whatever it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def ui(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow ui` on the store; yields its base URL, and always stops it."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui-server") / "mlflow-ui.log"
    # One worker and no job runner: the defaults start a dozen processes, which on two shared
    # cores tripled the start-up time; nothing here needs server-side jobs.
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(MLFLOW), "ui", "--backend-store-uri", store.uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    folder = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(binary, folder / "profile", folder / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()


def _png_size(path: Path) -> tuple[int, int]:
    # Width and height are the first two fields of the IHDR chunk, right after the signature.
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


@pytest.mark.slow
def test_mlflow_ui_shows_the_study_its_trials_dataset_and_front(
    browser: Chromium, store: Store, ui: str, tmp_path: Path
) -> None:
    # `browser` first: without Chromium the test skips before a search and a server start.
    experiment = f"{ui}/#/experiments/{store.experiment_id}"
    parent = store.parent_run_id
    trials = sorted(store.trial_runs)
    row_link = f"document.querySelector('a[href$=\"/runs/{parent}\"]')"
    trial_links = (
        "[...document.querySelectorAll('[role=grid] a')]"
        ".filter(a => a.textContent.startsWith('trial-'))"
    )
    (logged_input,) = _datasets(MlflowClient(tracking_uri=store.uri), parent)

    # The run table, in the model-training view: the parent row, its dataset, trials collapsed.
    browser.open(f"{experiment}/runs?{MODEL_TRAINING}", row_link)
    text = browser.text()
    assert "Run Name" in text and "Dataset" in text
    assert browser.evaluate(f"{row_link}.textContent") == store.study.study_name
    assert f"wine ({logged_input.dataset.digest})" in text and "Training" in text
    assert f"{len(trials) + 1} matching runs" in text
    assert browser.evaluate(f"{trial_links}.length") == 0
    # The expander is the button in the parent's name cell; a click shows the nested runs.
    assert browser.evaluate(
        f"(() => {{ const b = {row_link}.closest('[role=gridcell]').querySelector('button');"
        " if (!b) return false; b.click(); return true; })()"
    )
    browser.wait(f"{trial_links}.length === {len(trials)}", "the trials under the parent")
    shown = browser.evaluate(f"{trial_links}.map(a => [a.textContent, a.getAttribute('href')])")
    assert sorted(name for name, _ in shown) == trials
    for name, href in shown:
        assert href.endswith(f"/runs/{store.trial_runs[name]}")
    browser.screenshot(tmp_path / "mlflow_experiment.png")

    # The parent's overview: child runs, the dataset, the front as the description's table.
    children = "document.querySelectorAll('[data-testid=\"key-value-Child runs\"] a')"
    browser.open(f"{experiment}/runs/{parent}?{MODEL_TRAINING}", f"{children}.length > 0")
    assert sorted(browser.evaluate(f"[...{children}].map(a => a.textContent)")) == trials
    tables = browser.evaluate("[...document.querySelectorAll('table')].map(t => t.innerText)")
    description = next(t for t in tables if "param ratio" in t)
    rows = [line.split("\t") for line in description.splitlines()]
    assert rows[0] == ["trial", "approach", "precision", "widths", "param ratio",
                       "latency ratio", "val delta accuracy [95% CI]",
                       "test delta [95% CI]"]  # fmt: skip
    table = pareto.trial_table(store.study)
    # The baseline always comes first, on the front or not; then the other front members.
    assert [int(r[0]) for r in rows[1:]] == [
        *table[table["baseline"]]["trial"],
        *table[table["pareto"] & ~table["baseline"]]["trial"],
    ]
    zero = "+0.0000 [+0.0000, +0.0000]"
    assert rows[1][1:] == ["baseline", "fp32", "32-16", "1.00x", "1.00x", zero, zero]
    browser.screenshot(tmp_path / "mlflow_parent_run.png")

    # The parent's artifacts, with the front plot open: the browser decoded the logged PNG.
    image = "document.querySelector('img[alt=\"pareto_front.png\"]')"
    browser.open(
        f"{experiment}/runs/{parent}/artifacts/pareto_front.png?{MODEL_TRAINING}",
        f"{image} && {image}.complete && {image}.naturalWidth > 0",
    )
    text = browser.text()
    for name in ("pareto_front.csv", "pareto_front.html", "pareto_front.png", "report.txt",
                 "trials.csv"):  # fmt: skip
        assert name in text
    logged = store.root / "mlruns" / "artifacts" / parent / "artifacts" / "pareto_front.png"
    size = browser.evaluate(f"[{image}.naturalWidth, {image}.naturalHeight]")
    assert tuple(size) == _png_size(logged)
    browser.screenshot(tmp_path / "mlflow_front_plot.png")
