"""The load gate: at every start, each served model must reproduce the fp32 embeddings its export stored."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import JINA_MODEL, JINA_TORCH_MODEL, MODEL, TORCH_MODEL

from mmembed.core.gate_reference import REFERENCE_FILE, GateReference
from mmembed.core.numeric_gate import MIN_COSINE, PrecisionGateError
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.load_gate import check_repository
from mmembed.serving.server import ServeError, ServerSettings, TritonServer


def test_every_served_model_passed_the_load_gate_at_start(server: TritonServer) -> None:
    """Every ensemble, the query ones included: each carries its own reference."""
    reports = {report.tower: report for report in server.gate_reports}
    ensembles = [f"{model}_{modality}" for model in (MODEL, TORCH_MODEL) for modality in ("image", "text")]
    ensembles += [
        f"{model}_{modality}" for model in (JINA_MODEL, JINA_TORCH_MODEL) for modality in ("image", "text", "query")
    ]
    assert set(reports) == {f"{ensemble} served" for ensemble in ensembles}
    for report in reports.values():
        assert report.min_cosine >= MIN_COSINE[report.precision], report.line()
    assert reports[f"{MODEL}_image served"].precision == "fp32"
    assert reports[f"{TORCH_MODEL}_text served"].precision == "bf16"


def test_a_model_that_no_longer_matches_its_reference_is_refused(
    server: TritonServer, repository: Path, tmp_path: Path
) -> None:
    """Checked against the running server: the stored embeddings of other photos must not pass."""
    reference = GateReference.load(repository / f"{MODEL}_image" / REFERENCE_FILE)
    shuffled = replace(reference, embeddings=np.roll(reference.embeddings, 1, axis=0))
    (tmp_path / f"{MODEL}_image").mkdir()
    shuffled.save(tmp_path / f"{MODEL}_image" / REFERENCE_FILE)
    assert check_repository(repository, server.settings.http_port, server.settings.api_key)  # the real one passes
    with pytest.raises(PrecisionGateError, match=rf"{MODEL}_image served fp32: .* under the gate"):
        check_repository(tmp_path, server.settings.http_port, server.settings.api_key)


def test_a_server_whose_model_fails_the_load_gate_does_not_start(checkpoint: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    export_model(
        ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=repository, name="m"),
        log=lambda line: None,
    )
    path = repository / "m_text" / REFERENCE_FILE
    reference = GateReference.load(path)
    replace(reference, embeddings=-reference.embeddings).save(path)  # as if the engine had drifted
    server = TritonServer(ServerSettings.on_free_ports(repository))
    with pytest.raises(ServeError, match=r"refusing to serve: m_text served fp32: .* under the gate"):
        server.start()  # start() stops the server it started before raising
    shutil.rmtree(repository)
