"""IdMap keeps no dictionaries while ids are its labels, and behaves the same either way."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from visualsim.errors import DuplicateIdError, UnknownIdError
from visualsim.indexes import IdMap

_step = st.one_of(
    st.tuples(st.just("next"), st.integers(1, 5)),  # the next labels as ids: rows mode holds
    st.tuples(st.just("ids"), st.lists(st.one_of(st.integers(-3, 40), st.text(max_size=2)))),
    st.tuples(st.just("drop"), st.lists(st.integers(0, 40), max_size=3)),
)


@given(steps=st.lists(_step, max_size=12))
def test_an_id_map_equals_a_plain_model(steps: list[tuple[str, object]]) -> None:
    ids = IdMap()
    model: dict[object, int] = {}  # id -> label, in insertion order
    nxt = 0
    for kind, arg in steps:
        if kind == "next":
            new = list(range(nxt, nxt + int(arg)))  # type: ignore[call-overload]
        elif kind == "ids":
            new = list(dict.fromkeys(arg))  # type: ignore[call-overload]
        else:
            gone = [i for i in dict.fromkeys(arg) if i in model]  # type: ignore[call-overload]
            ids.discard(gone)
            for i in gone:
                del model[i]
            continue
        if any(i in model for i in new):
            with pytest.raises(DuplicateIdError):
                ids.assign(new)
            continue
        labels = ids.assign(new)
        assert labels.tolist() == list(range(nxt, nxt + len(new)))
        for i, label in zip(new, labels.tolist(), strict=True):
            model[i] = label
        nxt += len(new)
        assert len(ids) == len(model) and ids.next_label == nxt
        assert ids.ids == list(model) and ids.labels.tolist() == list(model.values())
        for i in [*model, -7, "zz", np.int64(2), True]:
            assert (i in ids) == (
                (i in model and not isinstance(i, bool))
                or (isinstance(i, np.integer) and int(i) in model)
            )
        if model:
            some = list(model)[::2]
            assert ids.labels_of(some).tolist() == [model[i] for i in some]
            got = ids.lookup(np.array([[model[i] for i in some]]))
            assert got == [some]
        with pytest.raises(UnknownIdError):
            ids.labels_of(["never stored"])
        rebuilt = IdMap.from_state(*ids.state())
        assert rebuilt.ids == ids.ids and rebuilt.labels.tolist() == ids.labels.tolist()
        assert rebuilt.rows_mode == (
            list(model) == list(range(nxt)) and all(type(i) is int for i in model)
        )


def test_a_catalogues_rows_keep_no_dictionaries() -> None:
    ids = IdMap()
    ids.assign(list(range(1000)))
    ids.assign(range(1000, 1500))
    assert ids.rows_mode and len(ids) == 1500 and 1499 in ids and 1500 not in ids
    restored = IdMap.from_state(*ids.state())
    assert restored.rows_mode
    restored.discard([3])
    assert not restored.rows_mode and 3 not in restored and len(restored) == 1499
