"""The notebooks: committed without outputs, defining nothing, and executed top to bottom so they cannot rot.

The end-to-end tests run ``notebooks/01-win-drivers.ipynb`` in a real IPython kernel (nbclient),
from the ``notebooks/`` folder as ``jupyter lab notebooks/`` would, so the suite's checkout guard
(tests/conftest.py) fails the run if the notebook writes anything beside itself. Parameters are
injected as papermill does, in a cell after the one tagged ``parameters``: the generated export
and the MLflow store go to a temp folder (``WORK_DIR``). The first run trains; the store's
challenger is then promoted with the real CLI and a second run explains that champion.

The kernel runs with one OpenMP / BLAS thread: on the 2-core machine shared by several jobs,
LightGBM's and OpenBLAS's default thread pools oversubscribe the cores (fitting the notebook's
models took 124 s at a load average of 11, 4.6 s with one thread).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
WIN_DRIVERS = NOTEBOOKS / "01-win-drivers.ipynb"
ALL_NOTEBOOKS = sorted(NOTEBOOKS.glob("*.ipynb"))
FIGURES = 7  # stage reached, stage durations, coverage, calibration, beeswarm, dependence, at risk


def code_cells(path: Path) -> list[dict]:
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def python_of(cell: dict) -> str:
    """A code cell's source without IPython magics (``%matplotlib inline``), which ast cannot parse."""
    return "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))


def test_there_are_notebooks():
    assert WIN_DRIVERS in ALL_NOTEBOOKS


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    dirty = [i for i, cell in enumerate(code_cells(path)) if cell.get("outputs") or cell.get("execution_count") is not None]
    assert not dirty, (
        f"{path.name}: code cells {dirty} carry outputs or execution counts; clear them before committing "
        "(JupyterLab: Edit > Clear Outputs of All Cells, then save)"
    )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_defines_nothing_reusable(path):
    defined = [
        f"cell {i}: {type(node).__name__} {getattr(node, 'name', '')}".rstrip()
        for i, cell in enumerate(code_cells(path))
        for node in ast.walk(ast.parse(python_of(cell)))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
    ]
    assert not defined, f"{path.name} defines {defined}: move it into a package, with a test (notebooks/README.md)"


def test_parameters_cell_holds_only_plain_assignments():
    tagged = [cell for cell in code_cells(WIN_DRIVERS) if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters' (papermill injects after it)"
    assert tagged[0] == code_cells(WIN_DRIVERS)[0], "the parameters come first"
    body = ast.parse(python_of(tagged[0])).body
    assert body and all(isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) for node in body)


def run_notebook(path: Path, parameters: dict, work: Path):
    """Execute a notebook in a fresh kernel with ``parameters`` injected; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    at = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    injected = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "True", "DO_NOT_TRACK": "1",
        "IPYTHONDIR": str(work / "ipython"),  # the kernel's profile and history, not the home folder
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)
    return notebook


def outputs(notebook) -> list:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def stderr_of(notebook) -> str:
    return "".join(o.get("text", "") for o in outputs(notebook) if o.output_type == "stream" and o.name == "stderr")


def check_figures_and_tables(notebook, at_risk: int) -> None:
    pictures = [o for o in outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(pictures) == FIGURES, f"expected {FIGURES} figures, got {len(pictures)}"
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs(notebook))
    for column in ("win_rate", "mean_abs_contribution", "main_risk", "auc"):
        assert column in html, f"no table with column {column} in the notebook's output"
    stderr = stderr_of(notebook)
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr
    at_risk_html = next(o["data"]["text/html"] for o in outputs(notebook) if "main_risk" in o.get("data", {}).get("text/html", ""))
    assert at_risk_html.split("<tbody>")[1].count("<tr") == at_risk  # one row per deal


@pytest.fixture(scope="module")
def work(tmp_path_factory, monkeypatch_module) -> Path:
    folder = tmp_path_factory.mktemp("notebook")
    # The kernel's connection file goes to Jupyter's runtime folder: keep it in the temp folder.
    monkeypatch_module.setenv("JUPYTER_RUNTIME_DIR", str(folder / "runtime"))
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def trained_run(work):
    notebook = run_notebook(WIN_DRIVERS, {"WORK_DIR": str(work / "train"), "GENERATED_DEALS": 2500, "AT_RISK": 12}, work)
    return notebook, work / "train"


@pytest.mark.slow
def test_win_drivers_trains_and_shows_every_view(trained_run):
    notebook, folder = trained_run
    check_figures_and_tables(notebook, at_risk=12)
    stdout = "".join(o.get("text", "") for o in outputs(notebook) if o.output_type == "stream" and o.name == "stdout")
    assert "deal-win version 1 (alias challenger)" in stdout
    assert (folder / "mlflow.db").is_file() and (folder / "export" / "deals.csv").is_file()


@pytest.mark.slow
def test_win_drivers_explains_the_champion(trained_run, work):
    _, folder = trained_run
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    promoted = subprocess.run(
        [sys.executable, "-m", "dealrisk", "promote"], check=False, cwd=work, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "200"},
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    notebook = run_notebook(
        WIN_DRIVERS,
        {"WORK_DIR": str(work / "champion"), "EXPORT": str(folder / "export"), "USE_CHAMPION": True, "TRACKING_URI": uri},
        work,
    )
    check_figures_and_tables(notebook, at_risk=15)
    stdout = "".join(o.get("text", "") for o in outputs(notebook) if o.output_type == "stream" and o.name == "stdout")
    assert "champion: deal-win version 1, deal-slip version 1" in stdout
    assert not (work / "champion" / "export").exists()  # the given export was read, not a generated one
