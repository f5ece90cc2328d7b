"""``dealrisk score``'s batch path: an export's open deals -> score-store rows, locally or on Dask.

The local engine scores an export's open deals batch by batch (``serving.scoring.split_open_deals``
and ``score_batches``, the service's path); the Dask engine runs the same thing on each partition
of a partitioned export, on the workers (``score_partition``), with the champion sent to every
worker once. A deal's score depends only on its own rows and the model, so both give the same rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.model.grades import ExplainConfig
from portfolio.store import score_rows
from serving.scoring import LoadedModel, ScoredBatch, deal_actions, score_batches, split_open_deals


def batch_rows(model: LoadedModel, batch: ScoredBatch, as_of: pd.Timestamp, with_actions: bool) -> pd.DataFrame:
    """The score-store rows of one scored batch, with each deal's next best actions when asked."""
    actions = deal_actions(model, batch.export, as_of, batch.features) if with_actions else None
    return score_rows(batch.explained, batch.features, batch.export.deals, model.versions, actions)


def score_partition(export, model: LoadedModel, as_of: pd.Timestamp, config: ExplainConfig,
                    with_actions: bool) -> pd.DataFrame | None:
    """The score-store rows of an export's (a partition's) deals open at ``as_of``; None when none is open."""
    rows = [batch_rows(model, batch, as_of, with_actions)
            for batch in score_batches(model, split_open_deals(export, as_of), as_of, config)]
    return pd.concat(rows, ignore_index=True) if rows else None


def submit_scoring(client, root: Path, model: LoadedModel, as_of: pd.Timestamp, config: ExplainConfig,
                   with_actions: bool) -> list:
    """``score_partition`` of every partition of a partitioned export on the cluster: one future each, in partition order."""
    # Dask loads only for the Dask engine.
    from features.pointintime.distributed import submit_partitions

    return submit_partitions(client, Path(root), score_partition, model, as_of, config, with_actions)
