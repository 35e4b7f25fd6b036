from __future__ import annotations

import pytest

from diffedit_batch.testing.pictures import synthetic_photo as photo  # noqa: F401 (re-exported for the tests)
from diffedit_batch.testing.reference import reference_edit, reference_pipeline  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
def reference(engine):
    """The deprecated diffusers pipeline over the same components, scheduled as the DiffEdit guide sets it."""
    return reference_pipeline(engine)
