"""``dealrisk train --engine dask``: training on a Dask cluster from a partitioned export.

The same steps as the local engine (``training.pipeline``), placed where the data is:

- what crosses deals comes from the whole export once: the split plan (``plan_periods`` on the
  global tables deals, stage_history and field_history, with the export's end found partition by
  partition), the feature state (``features.pointintime.distributed.fit_feature_state_dask``,
  equal to the local one), the export's description for the run's fingerprint;
- the labelled snapshot rows and their features are built on the workers, partition by partition,
  by ``training_frame`` (the local engine's ``label_training_rows`` and ``training_features``), and
  the training side stays there (``client.persist``);
- the boosters are fitted there by LightGBM's own Dask interface (``training.fit.fit_booster_dask``);
- this process collects what it needs, at most ``TrainConfig.max_rows_per_side`` rows a side (a
  stable sample of deals above it, as the local engine reads them): the validation and test rows
  (early stopping, blending, calibration, evaluation, plots), training rows for the logistic half
  and the leak check, the distinct categorical levels (the matrix spec), the label summary and the
  counts; then calibration, evaluation, MLflow logging and registration run exactly as on the
  local engine (``training.pipeline.train_and_log``).

The workers read the partitions themselves: the export must be at the same path on every worker,
and the workers need this package at the same version (``docs/scale.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.dataframe as dd
import lightgbm as lgb
import pandas as pd
from distributed import Client

from features.contract.partitioned import read_global, read_layout
from features.model.matrix import MatrixSpec, encode_matrix
from features.pointintime.definitions import FEATURE_NAMES
from features.pointintime.distributed import (
    build_features_dask,
    describe_cluster,
    fit_feature_state_dask,
    gather_partitions,
    map_partitions,
)
from features.pointintime.inputs import plan_skips
from features.pointintime.snapshots import export_end
from features.pointintime.state import FeatureState
from training.config import BoosterConfig, ConfigFile, TrainConfig
from training.fit import fit_booster_dask
from training.metrics import per_deal_weights
from training.pipeline import (
    TrainingData,
    TrainResult,
    check_labels,
    check_training_data,
    distinct_level_rows,
    label_summary,
    lap_timer,
    plan_periods,
    side_counts,
    side_sample,
    train_and_log,
    training_frame,
    used_features,
)
from training.tracking import describe_export, fingerprint_files
from training.truth import read_truth

# What the Dask engine's fit does differently from the local one (LightGBM's limits), in the run's record.
DASK_DIFFERENCES: dict[str, str] = {
    "early_stopping": "LightGBM's rule replayed on the validation period after each block of rounds (lightgbm.dask has none)",
    "monotone_constraints_method": "basic (LightGBM's only method in distributed learning)",
}


@dataclass
class DistributedTraining:
    """The training side of a Dask run: its rows and features on the workers, and what this process
    knows of all of them. ``TrainingData.distributed`` holds it."""

    client: Client
    root: Path
    train: dd.DataFrame  # training_frame's training rows, persisted on the workers
    labels: pd.DataFrame  # label_summary of every side
    level_rows: pd.DataFrame  # distinct_level_rows of the training features
    engine: dict  # engine_record: the cluster and what its fit does differently

    def fit_booster(self, label: str, spec: MatrixSpec, validation: tuple, config: BoosterConfig,
                    categorical: list[str], monotone: list[int]) -> lgb.Booster:
        """``fit_booster_dask`` on the training rows labelled ``label``, encoded on the workers by ``spec``."""
        labelled = self.train[self.train[label].notnull()]
        names = list(spec.names)
        x = labelled.map_partitions(encode_frame, spec, meta=pd.DataFrame({n: pd.Series(dtype="float64") for n in names}))
        weights = labelled.map_partitions(deal_weights, meta=("weight", "float64"))
        rows = int(self.client.compute(labelled[label].count()).result())
        return fit_booster_dask(self.client, (x, labelled[label], weights), validation, config, names, rows,
                                categorical=categorical, monotone=monotone)

    def features_at(self, points: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
        """``build_features`` at ``points`` (any deals of the export) on the workers, in ``points``' order and index."""
        return self.client.compute(build_features_dask(self.client, self.root, points, state)).result().sort_index()


def encode_frame(frame: pd.DataFrame, spec: MatrixSpec) -> pd.DataFrame:
    """``encode_matrix`` of one partition, as a frame of the spec's columns (lightgbm.dask takes frames)."""
    return pd.DataFrame(encode_matrix(frame, spec), columns=list(spec.names), index=frame.index)


def deal_weights(frame: pd.DataFrame) -> pd.Series:
    """``per_deal_weights`` of one partition's rows (a deal's rows are all in one partition)."""
    return pd.Series(per_deal_weights(frame["deal_id"]), index=frame.index, name="weight")


def describe_partition(export) -> dict | None:
    """The end (``export_end``) and ``describe_export`` of one partition; None for one without deals."""
    if not len(export.deals):
        return None
    return {"end": export_end(export), **describe_export(export)}


def combine_descriptions(parts: list[dict | None]) -> tuple[dict, pd.Timestamp]:
    """``describe_export`` and ``export_end`` of the whole export from its partitions' (``describe_partition``).

    >>> part = {"end": pd.Timestamp("2026-01-02", tz="UTC"), "rows": {"deals": 2, "contacts": None},
    ...         "time_span": {"start": "2025-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}}
    >>> later = {**part, "end": pd.Timestamp("2026-02-01", tz="UTC"), "time_span": {"start": "2025-03-01T00:00:00+00:00",
    ...          "end": "2026-02-01T00:00:00+00:00"}}
    >>> described, end = combine_descriptions([part, None, later])
    >>> described["rows"], described["time_span"]["start"][:10], end.date()
    ({'deals': 4, 'contacts': None}, '2025-01-01', datetime.date(2026, 2, 1))
    """
    found = [part for part in parts if part is not None]
    if not found:
        raise ValueError("the partitioned export has no deals")
    rows = {}
    for table in found[0]["rows"]:
        counts = [part["rows"][table] for part in found if part["rows"][table] is not None]
        rows[table] = sum(counts) if counts else None
    start = min(pd.Timestamp(part["time_span"]["start"]) for part in found)
    end = max(pd.Timestamp(part["time_span"]["end"]) for part in found)
    described = {"rows": rows, "time_span": {"start": start.isoformat(), "end": end.isoformat()}}
    return described, max(part["end"] for part in found)


def collect_rows(frame: pd.DataFrame, max_rows: int | None, counts: dict) -> pd.DataFrame:
    """The rows of one partition this process reads: each side's ``side_sample`` (all below ``max_rows``)."""
    return frame.loc[side_sample(frame, max_rows, counts)]


def train_levels(frame: pd.DataFrame) -> pd.DataFrame:
    """``distinct_level_rows`` of one partition's training features."""
    return distinct_level_rows(frame.loc[(frame["side"] == "train").to_numpy(), list(FEATURE_NAMES)])


def _each_partition(client: Client, frame: dd.DataFrame, fn: Callable, *args) -> list:
    """``fn(partition, *args)`` of every partition of a (persisted) frame, gathered here in order."""
    return client.gather(client.compute([dask.delayed(fn)(part, *args) for part in frame.to_delayed()]))


def add_counts(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """``side_counts`` of the whole from the partitions' (a deal is in one partition)."""
    return {side: {key: sum(part[side][key] for part in parts) for key in ("deals", "snapshots")} for side in parts[0]}


def load_partitioned(client: Client, root: Path) -> tuple:
    """The global tables (deals, stage_history, field_history whole), the export's description and its end."""
    described, end = combine_descriptions(gather_partitions(client, root, describe_partition))
    return read_global(root), described, end


def prepare_training_data_dask(client: Client, root: Path, export, end: pd.Timestamp, config: TrainConfig) -> TrainingData:
    """``prepare_training_data`` of a partitioned export on ``client``'s cluster (``export``: its global tables).

    The plan, the state and every row's features equal the local engine's on the same export; the
    returned ``rows`` and ``features`` hold the rows this process reads (``collect_rows``), in the
    local engine's order (by deal and as_of), and ``distributed`` the training side on the cluster.
    """
    root = Path(root)
    plan = plan_periods(export, config, end=end)
    state = fit_feature_state_dask(client, root, plan.cutoff, config.features.fiscal_year_start_month,
                                   global_export=export)  # the global tables read once
    skips = plan_skips(state.missing_inputs or {})
    frame = client.persist(map_partitions(client, root, training_frame, plan, state, skips))
    counts = add_counts(_each_partition(client, frame, side_counts))
    labels = pd.concat(_each_partition(client, frame, label_summary), ignore_index=True)
    collected = pd.concat(_each_partition(client, frame, collect_rows, config.max_rows_per_side, counts),
                          ignore_index=True)
    collected = collected.sort_values(["deal_id", "as_of"], kind="stable").reset_index(drop=True)
    levels = pd.concat(_each_partition(client, frame, train_levels), ignore_index=True)
    train = client.persist(frame[frame["side"] == "train"])
    del frame  # the workers keep the training side only
    row_columns = [column for column in collected.columns if column not in FEATURE_NAMES]
    engine = {"engine": "dask", **describe_cluster(client), "partitions": read_layout(root).partitions, **DASK_DIFFERENCES}
    return TrainingData(
        plan=plan, state=state, rows=collected[row_columns], features=collected[["deal_id", "as_of", *FEATURE_NAMES]],
        feature_names=used_features(skips), skips=check_labels(labels, skips), all_counts=counts,
        distributed=DistributedTraining(client=client, root=root, train=train, labels=labels, level_rows=levels,
                                        engine=engine),
    )


def run_train_dask(
    data_dir: Path,
    config: TrainConfig,
    client: Client,
    truth_path: Path | None = None,
    step: Callable[[str], None] = lambda description: None,
    uri: str | None = None,
    config_file: ConfigFile | None = None,
    notice: Callable[[str], None] = lambda line: None,
) -> TrainResult:
    """``run_train`` of a partitioned export on ``client``'s cluster: the same report, run and registered models."""
    seconds: dict[str, float] = {}
    lap = lap_timer(seconds)
    step("reading the partitioned export on the cluster")
    truth = read_truth(truth_path) if truth_path is not None else None
    export, described, end = load_partitioned(client, Path(data_dir))
    fingerprint = {**fingerprint_files(data_dir), **described}
    lap("load")
    step("splitting by close date, fitting feature state, building features on the cluster")
    data = prepare_training_data_dask(client, Path(data_dir), export, end, config)
    warnings = check_training_data(data, config, notice)
    lap("features")
    return train_and_log(export, data, config, fingerprint, truth, warnings, step, uri, seconds, config_file)

