"""Worker processes pinned to devices; latencies made comparable across hosts."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from lightning_modules.errors import TabslimInputError
from search.cluster import Slot, parse_devices, pin, plan_slots
from search.commands import main
from search.measure import host_profile


@pytest.mark.parametrize(
    ("text", "parsed"), [("auto", "auto"), ("CPU", "cpu"), ("0", [0]), ("1,0,3", [1, 0, 3])]
)
def test_devices_parse(text: str, parsed: object) -> None:
    assert parse_devices(text) == parsed


@pytest.mark.parametrize("text", ["", "gpu", "0,0", "-1", "1,,2", "0.5"])
def test_bad_devices_are_refused_with_the_value(text: str) -> None:
    with pytest.raises(TabslimInputError, match="--devices takes auto, cpu, or distinct"):
        parse_devices(text)


def test_slots_without_gpus_are_all_cpu() -> None:
    assert plan_slots("auto", 3, None, available=0) == [Slot(None)] * 3
    assert plan_slots("auto", 1, 2, available=0) == [Slot(None)] * 2
    # GPUs there, but not wanted: they are hidden from the processes.
    assert plan_slots("cpu", 2, None, available=4) == [Slot(None, hide_gpus=True)] * 2


def test_slots_deal_workers_over_gpus() -> None:
    gpus = [s.gpu for s in plan_slots("auto", 3, None, available=2)]
    assert gpus == [0, 1, 0]
    gpus = [s.gpu for s in plan_slots([1, 3], 1, 2, available=4)]
    assert gpus == [1, 1, 3, 3]


def test_processes_sharing_a_gpu_each_get_their_share_of_its_memory() -> None:
    slots = plan_slots([0], 1, 4, available=1)
    assert [(s.gpu, s.sharing) for s in slots] == [(0, 4)] * 4
    assert slots[0].memory_fraction == 0.25
    # Three dealt over two GPUs: GPU 0 is shared by two, GPU 1 has its own.
    slots = plan_slots("auto", 3, None, available=2)
    assert [(s.gpu, s.memory_fraction) for s in slots] == [(0, 0.5), (1, 1.0), (0, 0.5)]


def test_a_missing_gpu_or_no_workers_per_device_is_one_line() -> None:
    with pytest.raises(TabslimInputError, match=r"names GPU 2, but this machine has 2 GPUs"):
        plan_slots([0, 2], 1, None, available=2)
    with pytest.raises(TabslimInputError, match="at least 1"):
        plan_slots("auto", 1, 0, available=1)


def test_pinning_respects_an_outer_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    # A scheduler gave this job GPUs 3 and 5; slot 1 is the machine's GPU 5.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert pin(Slot(1)) == "gpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert pin(Slot(2)) == "gpu" and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert pin(Slot(None, hide_gpus=True)) == "cpu" and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    # Nothing to pin on a machine without GPUs: the environment is left alone.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    assert pin(Slot(None)) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "untouched"


def test_a_gpu_this_machine_lacks_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["search", "--dataset", "wine", "--devices", "7", "--quiet", "--storage",
         str(tmp_path / "j.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--devices names GPU 7, but this machine has" in err[0]
    assert not (tmp_path / "j.journal").exists()


def test_the_reference_latency_is_timed_once_per_setup() -> None:
    first = host_profile("onnxruntime", 64, 1)
    assert first is host_profile("onnxruntime", 64, 1)
    assert math.isfinite(first.reference_ms) and first.reference_ms > 0
    assert first.host and first.cpu_model
