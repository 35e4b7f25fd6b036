from diffedit_batch.testing.pictures import synthetic_photo as photo  # noqa: F401 (re-exported for the tests)
