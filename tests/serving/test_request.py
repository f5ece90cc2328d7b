"""``python -m serving.request``: request bodies for deals of an export folder."""

from __future__ import annotations

import json

from serving.request import main
from serving.schemas import ScoreRequest


def test_prints_a_valid_body_for_open_and_closed_deals(export_dir, export, capsys):
    open_id = export.deals.loc[export.deals["outcome"] == "open", "deal_id"].iloc[0]
    closed = export.deals.loc[export.deals["outcome"] == "won"].iloc[0]
    assert main(["--data", str(export_dir), "--deal-id", open_id]) == 0
    body = ScoreRequest.model_validate(json.loads(capsys.readouterr().out))
    assert [d.deal_id for d in body.deals] == [open_id]
    assert main(["--data", str(export_dir), "--deal-id", closed["deal_id"]]) == 0
    body = ScoreRequest.model_validate(json.loads(capsys.readouterr().out))
    deal = body.deals[0]
    assert body.as_of < closed["closed_at"]  # scored as it stood just before it closed
    assert deal.stage not in ("won", "lost")
    assert all(a["occurred_at"] <= body.as_of.isoformat() for a in deal.activities or [])


def test_unknown_deal_id_is_an_error(export_dir, capsys):
    assert main(["--data", str(export_dir), "--deal-id", "NO-SUCH-DEAL"]) == 1
    assert "NO-SUCH-DEAL" in capsys.readouterr().err
