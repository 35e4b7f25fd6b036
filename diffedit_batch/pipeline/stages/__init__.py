"""The job's stages, one per module, as plain callables over Arrow batches, each with its declaration
(`spec.Stage`: name, resources, columns read and added). The plan (`..plan`, `..planning`) strings the
declarations together; the stages call Ray only to name their node (edit), and run without Ray in tests.

The plan pass (`..planning`), before the edits:
read      manifest files -> blocks of manifest rows, each numbered (CPU task)
          earlier record files -> their ids and statuses (CPU task), then one decision per bucket of row ids

The edit pass, over the plan's work list:
read      work-list files -> blocks of work rows (CPU task)
fetch     read, decode and resize each picture (CPU task)
captions  BLIP captions of pictures that need one (actor)                                   [optional]
edit      DiffEdit on a batch (actor: holds one DiffEditEngine, one GPU where there are GPUs)
clip      CLIP scores of the edit and the input (actor)                                      [optional]
write     PNGs of the edit and the mask, background metrics (CPU task)
commit    the batch's result records, after its outputs (CPU task)
concepts  Flan-T5 captions of the run's concepts, in a pass before the edits (actor)        [optional]

A row's failure never raises out of a stage: it becomes an error row, and later stages pass it through.
"""
