"""Schemathesis hooks for the edgeplane resource API (tests/tests/openapi_conformance.rs).

They shape generated requests where a request cannot end on its own, or where the document
cannot say what the server requires of a valid one; they never relax a check.
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    # `watch=true` streams changes until the client disconnects, so a request with it never
    # completes and ends as a read timeout. Watches are tested with kubectl (tests/tests/
    # kubectl.rs, across a leader kill) and by the watch tests; here the list is asked for.
    if case.query and case.query.get("watch") == "true":
        case.query["watch"] = "false"
    # A body's metadata.name and metadata.namespace must be the path's (as in Kubernetes):
    # a relation between the path and the body that OpenAPI cannot state. Valid bodies are
    # made to agree; invalid ones are left as generated so their refusal is still checked.
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    if positive and isinstance(case.body, dict) and isinstance(case.body.get("metadata"), dict):
        path = case.path_parameters or {}
        for field in ("name", "namespace"):
            if field in path and field in case.body["metadata"]:
                case.body["metadata"][field] = path[field]
