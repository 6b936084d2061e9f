"""How the worker's hot statements send their arrays: as PostgreSQL array text, built
once, so nothing but integers and the known final states can reach that text."""

from __future__ import annotations

import pytest

from pgqueue.db import int_array
from pgqueue.store import JobStore


def test_int_array_is_postgresql_array_text() -> None:
    assert int_array([1, 22, 333]) == "{1,22,333}"
    assert int_array([]) == "{}"


@pytest.mark.parametrize("state", ["succeeded,failed", "succeeded}", "running", ""])
def test_finish_refuses_a_state_that_is_not_final_before_any_statement(state: str) -> None:
    store = JobStore("host=127.0.0.1 port=1 dbname=nowhere")  # never reached: refused first
    with pytest.raises(ValueError, match="not final states"):
        store.finish(None, [(1, 1, state, None)], from_state="running")  # type: ignore[arg-type]
