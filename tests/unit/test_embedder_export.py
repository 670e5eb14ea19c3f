"""The ONNX export's child process: stopping it (the process is ending) is not a failure."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from stores.embeddings import export_onnx_in_child


def test_an_export_stopped_on_purpose_is_not_reported_as_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def stop(child: subprocess.Popen[bytes]) -> None:
        child.terminate()  # as `stop_preparing` does when a command or the server ends

    with caplog.at_level(logging.INFO, logger="stores.embeddings"):
        done = export_onnx_in_child(
            tmp_path / "model", tmp_path / "cache", quantize=True, started=stop
        )
    assert done is False
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "stopped" in caplog.records[0].getMessage()
