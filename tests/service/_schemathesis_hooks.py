"""schemathesis hooks (``SCHEMATHESIS_HOOKS``) for ``test_schemathesis``.

Path parameters often name a store and keys the test uploaded, so the
generated cases reach the handlers instead of stopping at 404. Reads go to
``READ_STORE``; writes (PUT, DELETE) to ``WRITE_STORE``, which a DELETE may
remove without starving the reads.

Bodies are left as generated: a generated file is never a kastore file, so
uploads answer 422 (see the configuration in ``test_schemathesis``). Putting
a real file into them would turn some of schemathesis's negative cases (a
form field "mutated" to a number, which a form sends as the same text) into
valid requests that it then reports as wrongly accepted.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st

from .._testdata import TESTDATA

READ_STORE = "single_population"
WRITE_STORE = "spare"
#: Keys of ``single_population.trees``: floats, integers, bytes, an empty array.
KEYS = ["edges/left", "nodes/flags", "sites/position", "populations/metadata", "migrations/left"]


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    if not path_parameters:
        return st.just(path_parameters)
    method = context.operation.method.upper()
    store = READ_STORE if method in ("GET", "HEAD") else WRITE_STORE
    drawn: dict[str, Any] = {}
    if "name" in path_parameters:
        drawn["name"] = st.sampled_from([store, path_parameters["name"]])
    if "key" in path_parameters:
        drawn["key"] = st.sampled_from([*KEYS, path_parameters["key"]])
    generated = {name: st.just(value) for name, value in path_parameters.items()}
    return st.fixed_dictionaries({**generated, **drawn})


#: The file uploaded as both stores before the run.
UPLOAD = TESTDATA / "tskit" / f"{READ_STORE}.trees"
