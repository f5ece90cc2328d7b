"""The spec ``GET /docs.json`` serves: BentoML's, corrected to say what the service does.

BentoML builds the spec from the routes; left alone it was not the behaviour (issue 20):
the statuses the guard and the scoring code answer (401, 413, 415, 422) were missing, BentoML's
own 400 was documented with a string ``detail`` where it answers a list, ``/score``'s request
body lost its ``null`` for ``as_of`` (BentoML flattens the top-level fields of the body) and was
not required, and the names the service reads (stages, roles, ...) were any string while only the
mapping's names are accepted. ``served_spec`` rewrites the spec once per process:

- every documented route answers exactly the statuses of ``serving.schemas.ROUTE_ANSWERS``, each
  with its body's schema; health and metrics routes say they answer text;
- ``/score``'s body is ``ScoreRequest`` itself (nullable ``as_of``, required) and its 200 is
  ``ScoreResponse``;
- a field marked ``x-names`` (``serving.schemas.names_of``) gets a pattern accepting exactly
  the names of the service's mapping (``names_pattern``) and their list in its description;
- with a token set, the protected routes name the bearer scheme (``security``), ``/metrics`` too
  (and its 401) with ``DEALRISK_METRICS_TOKEN=on``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from pydantic.json_schema import models_json_schema

from features.contract.mapping import NameMapping
from features.contract.schema import OPEN_STAGES
from serving.guard import METRICS_PATH
from serving.schemas import ROUTE_ANSWERS, ErrorBody, ScoreRequest, ScoreResponse, ValidationErrorBody

REF = "#/components/schemas/{model}"
# Routes that need the bearer token when DEALRISK_API_TOKEN is set (the guard's, and the reload route's own check).
TOKEN_ROUTES: tuple[tuple[str, str], ...] = (
    ("post", "/score"), ("post", "/score/tables"), ("get", "/model"), ("post", "/admin/reload"),
)
TEXT_ROUTES: dict[str, str] = {
    "/healthz": "Alive: an empty line.",
    "/livez": "Alive: an empty line.",
    "/readyz": "Ready to serve: an empty line.",
    "/metrics": "Prometheus metrics in the text exposition format.",
}
# Regex characters that need a backslash outside a class (ECMA 262's syntax characters, and /).
_SYNTAX = set("^$\\.*+?()[]{}|/")


def names_pattern(names: Iterable[str]) -> str:
    """A pattern matching a text exactly when its normalised form (``normalize_name``) is one of ``names``.

    ``names`` are normalised already (the mapping's keys: case-folded, single spaces). Each letter
    takes its upper- and lower-case form, each space one or more spaces, and spaces may lead and
    trail. Only the ASCII space: a tab or newline the mapping would also fold is left out, so the
    pattern never promises a text with control characters.

    >>> names_pattern(["won", "closed won"])
    '^ *(?:[Cc][Ll][Oo][Ss][Ee][Dd] +[Ww][Oo][Nn]|[Ww][Oo][Nn]) *$'
    """
    alternatives = sorted({" +".join(_word_pattern(word) for word in name.split(" ")) for name in names})
    return f"^ *(?:{'|'.join(alternatives)}) *$"


def _word_pattern(word: str) -> str:
    out = []
    for char in word:
        forms = sorted({form for form in (char, char.upper(), char.lower()) if len(form) == 1 and form.casefold() == char})
        if len(forms) > 1:
            out.append("[" + "".join(forms) + "]")
        else:
            out.append("\\" + char if char in _SYNTAX else char)
    return "".join(out)


def accepted_names(mapping: NameMapping, marker: str) -> dict[str, str]:
    """Of a ``names_of`` marker (``section`` or ``section:open``): accepted normalised name -> canonical name."""
    section, _, which = marker.partition(":")
    names = dict(mapping.section(section))
    if which == "open":
        names = {name: canonical for name, canonical in names.items() if canonical in OPEN_STAGES}
    return names


def _names_schema(node: dict, mapping: NameMapping) -> None:
    names = accepted_names(mapping, node.pop("x-names"))
    canonical = sorted(set(names.values()), key=list(names.values()).index)
    own = [f"{name} ({target})" for name, target in sorted(names.items()) if name not in canonical]
    node["pattern"] = names_pattern(names)
    node["description"] = (
        node.get("description", "").rstrip() + f" Accepted, ignoring case and extra spaces: {', '.join(canonical)}"
        + (f"; and the mapping's CRM names: {', '.join(own)}" if own else "")
        + ". Another name: 422 (add it with a mapping file, DEALRISK_MAPPING)."
    ).strip()


def _walk(node, mapping: NameMapping) -> None:
    if isinstance(node, dict):
        if "x-names" in node:
            _names_schema(node, mapping)
        for value in node.values():
            _walk(value, mapping)
    elif isinstance(node, list):
        for value in node:
            _walk(value, mapping)


def _json(schema: dict, description: str, media_type: str = "application/json") -> dict:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def served_spec(spec: dict, mapping: NameMapping, token_required: bool, info: dict | None = None,
                metrics_token: bool = False) -> dict:
    """BentoML's ``spec`` corrected as the module docstring says (a new dict; ``spec`` is left as it is).

    ``mapping``: the names the service accepts (its ``ServingConfig.mapping`` or the default);
    ``token_required``: whether ``DEALRISK_API_TOKEN`` is set; ``info``: the spec's ``info`` block;
    ``metrics_token``: ``DEALRISK_METRICS_TOKEN=on``, ``/metrics`` behind the token (its 401 documented).
    """
    spec = copy.deepcopy(spec)
    if info is not None:
        spec["info"] = dict(info)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(ScoreRequest, "validation"), (ScoreResponse, "validation"), (ErrorBody, "validation"),
         (ValidationErrorBody, "validation")],
        ref_template=REF,
    )
    schemas.update(definitions["$defs"])
    paths = spec.setdefault("paths", {})
    score = paths.get("/score", {}).get("post")
    if score is not None:
        # Inline, as BentoML had it (with the complete example), but pydantic's own schema of the model.
        score["requestBody"] = {"required": True, "content": {"application/json": {"schema": schemas.pop("ScoreRequest")}}}
        score["responses"]["200"] = _json({"$ref": REF.format(model="ScoreResponse")}, "The explained scores.")
    for (method, path), answers in ROUTE_ANSWERS.items():
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        success = operation.get("responses", {}).get("200", {"description": "Successful Response"})
        responses = {"200": success}
        for status, answer in sorted(answers.items()):
            model = answer["model"]
            if model is None:  # the route's own 200 body
                responses[str(status)] = {**success, "description": answer["description"]}
            else:
                responses[str(status)] = _json({"$ref": REF.format(model=model.__name__)}, answer["description"],
                                               answer["media_type"])
        operation["responses"] = responses
    for path, description in TEXT_ROUTES.items():
        operation = paths.get(path, {}).get("get")
        if operation is not None:
            operation["responses"] = {"200": _json({"type": "string"}, description, "text/plain")}
    token_routes = TOKEN_ROUTES
    metrics = paths.get(METRICS_PATH, {}).get("get")
    if metrics_token and metrics is not None:
        answer = ROUTE_ANSWERS[("get", "/model")][401]
        metrics["responses"]["401"] = _json({"$ref": REF.format(model=answer["model"].__name__)},
                                            answer["description"] + " With DEALRISK_METRICS_TOKEN=on.")
        token_routes = (*TOKEN_ROUTES, ("get", METRICS_PATH))
    if token_required:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                            "description": "DEALRISK_API_TOKEN"}}
        for method, path in token_routes:
            operation = paths.get(path, {}).get(method)
            if operation is not None:
                operation["security"] = [{"bearer": []}]
    _walk(spec, mapping)
    _drop_unused_schemas(spec)
    return spec


def _refs(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)
    return found


def _drop_unused_schemas(spec: dict) -> None:
    """Remove component schemas no route reaches (BentoML's IO descriptors and error bodies replaced above)."""
    schemas = spec["components"]["schemas"]
    used = _refs(spec.get("paths", {}), set())
    todo = list(used)
    while todo:
        for name in _refs(schemas.get(todo.pop(), {}), set()) - used:
            used.add(name)
            todo.append(name)
    for name in set(schemas) - used:
        del schemas[name]
