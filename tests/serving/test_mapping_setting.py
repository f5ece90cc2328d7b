"""DEALRISK_MAPPING: the service checks requests with the same name-mapping file the CLI takes as ``--mapping``."""

from __future__ import annotations

import copy
import io

import pytest

from serving.config import ConfigError, ServingConfig
from serving.request import tables_from_body
from serving.schemas import ScoreRequest
from serving.scoring import RequestError, load_model, score_request, score_tables, table_request


@pytest.fixture
def mapping_file(tmp_path):
    path = tmp_path / "crm.yaml"
    path.write_text("stage:\n  Verhandlung: negotiate\n  Angebot: propose\n  Qualifizierung: qualify\n"
                    "  Erstkontakt: identify\n  Vertrag: contract\n")
    return path


def with_crm_stages(body: dict) -> dict:
    """The request with the CRM's own stage names instead of the canonical ones."""
    names = {"negotiate": "Verhandlung", "propose": "Angebot", "qualify": "Qualifizierung", "identify": "Erstkontakt",
             "contract": "Vertrag"}
    body = copy.deepcopy(body)
    for deal in body["deals"]:
        deal["stage"] = names[deal["stage"]]
        for entry in deal.get("stage_history") or []:
            entry["stage"] = names.get(entry["stage"], entry["stage"])
    return body


def test_the_setting_is_read_and_checked_at_start(mapping_file, tmp_path):
    config = ServingConfig.from_env({"DEALRISK_MAPPING": str(mapping_file)})
    assert config.mapping_file == str(mapping_file)
    assert config.mapping.canonical("stage", "verhandlung") == "negotiate"
    assert config.mapping.canonical("stage", "Closed Won") == "won"  # the shipped default stays underneath
    assert ServingConfig.from_env({}).mapping is None
    with pytest.raises(ConfigError, match=r"DEALRISK_MAPPING: mapping file .*none.yaml does not exist"):
        ServingConfig.from_env({"DEALRISK_MAPPING": str(tmp_path / "none.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage:\n  Verhandlung: haggling\n")
    with pytest.raises(ConfigError, match="DEALRISK_MAPPING: .*'Verhandlung' maps to 'haggling', which is not a "
                                          "canonical stage"):
        ServingConfig.from_env({"DEALRISK_MAPPING": str(bad)})


def test_dealrisk_serve_refuses_to_start_on_a_bad_mapping_file(monkeypatch, store, tmp_path):
    from serving.run import ServeError, check_champion

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setenv("DEALRISK_MAPPING", str(tmp_path / "missing.yaml"))
    with pytest.raises(ServeError, match="cannot start: DEALRISK_MAPPING: mapping file .*missing.yaml does not exist"):
        check_champion()


def test_json_requests_use_the_mapping_of_the_setting(loaded_model, open_request, mapping_file):
    crm_body = with_crm_stages(open_request)
    with pytest.raises(RequestError) as refused:
        score_request(loaded_model, ScoreRequest.model_validate(crm_body))
    assert refused.value.status == 422
    problem = refused.value.problems[0]
    assert problem.field == "deals[0].stage"
    assert "unknown stage" in problem.reason and "DEALRISK_MAPPING for the service" in problem.reason

    mapped = load_model(loaded_model.bundle, ServingConfig.from_env({"DEALRISK_MAPPING": str(mapping_file)}).mapping)
    answer = score_request(mapped, ScoreRequest.model_validate(crm_body))
    expected = score_request(loaded_model, ScoreRequest.model_validate(open_request))
    assert [d["win_probability"] for d in answer["deals"]] == [d["win_probability"] for d in expected["deals"]]


def test_table_uploads_use_the_mapping_of_the_setting(loaded_model, open_request, mapping_file):
    files = {}
    for name, frame in tables_from_body(with_crm_stages(open_request)).items():
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        files[name] = buffer.getvalue().encode()
    with pytest.raises(RequestError) as refused:
        score_tables(loaded_model, table_request(files, open_request["as_of"]))
    assert refused.value.problems[0].field == "deals[row 1].stage"
    mapped = load_model(loaded_model.bundle, ServingConfig.from_env({"DEALRISK_MAPPING": str(mapping_file)}).mapping)
    answer = score_tables(mapped, table_request(files, open_request["as_of"]))
    expected = score_request(loaded_model, ScoreRequest.model_validate(open_request))
    by_id = {d["deal_id"]: d["win_probability"] for d in expected["deals"]}
    assert {d["deal_id"]: d["win_probability"] for d in answer["deals"]} == pytest.approx(by_id, abs=1e-12)
