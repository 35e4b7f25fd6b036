"""The job's memory of edit ids: which are done (from earlier runs) and which this run has seen.

It lives in one small Ray actor, not in the driver, so the driver's memory does not grow with the
manifest. Each claim is one call per block of rows.
"""

from __future__ import annotations

from diffedit_batch.data.records import read_record_index
from diffedit_batch.data.status import Status
from diffedit_batch.data.storage import StorageOptions

NEW, DONE, DUPLICATE = "new", "done", "duplicate"


class EditRegistry:
    """Claims edit ids: `new` the first time in this run, `done` if an earlier run recorded it ok,
    `duplicate` for every later claim of an id in this run."""

    def __init__(self, output_prefix: str, options: StorageOptions):
        self.index_before_run = read_record_index(output_prefix, options)
        self.claimed: set[str] = set()
        self.skipped = 0

    def claim(self, edit_ids: list[str | None]) -> list[str]:
        answers = []
        for edit_id in edit_ids:
            previous = None if edit_id is None else self.index_before_run.get(edit_id)
            if edit_id is None:
                answers.append(NEW)  # a row without an id: fails validation and is recorded as such
            elif previous is not None and previous[0] == Status.OK:
                # done earlier; its later occurrences were recorded as duplicates then, so not again now
                if edit_id not in self.claimed:
                    self.claimed.add(edit_id)
                    self.skipped += 1
                answers.append(DONE)
            elif edit_id in self.claimed:
                answers.append(DUPLICATE)
            else:
                self.claimed.add(edit_id)
                answers.append(NEW)
        return answers

    def skipped_count(self) -> int:
        return self.skipped

    def previously_recorded_not_ok(self) -> set[str]:
        """Ids with a non-ok record from an earlier run: an ok now supersedes it."""
        return {edit_id for edit_id, (status, _) in self.index_before_run.items() if status != Status.OK}

    def drop_superseded(self, rerecorded: list[str], output_prefix: str, options: StorageOptions) -> int:
        """After the run: remove the older records of ids this run recorded again. Returns parts touched."""
        from diffedit_batch.data.records import drop_superseded

        return len(drop_superseded(output_prefix, self.index_before_run, rerecorded, options))
