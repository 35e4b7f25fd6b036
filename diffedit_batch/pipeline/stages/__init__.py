"""The job's stages, one per module, as plain callables over Arrow batches. The plan (`..plan`) decides where
each runs; the stages call Ray only to ask the registry actor (expand) and to name their node (edit), and run
without Ray in tests.

read      manifest files -> blocks of manifest rows (CPU task)
expand    manifest rows -> one row per edit: validated, seeded, deduplicated, done ones dropped (CPU task)
fetch     read, decode and resize each picture (CPU task)
captions  BLIP captions of pictures that need one (actor)                                   [optional]
edit      DiffEdit on a batch (actor: holds one DiffEditEngine, one GPU where there are GPUs)
clip      CLIP scores of the edit and the input (actor)                                      [optional]
write     PNGs of the edit and the mask, then the block's result records (CPU task)
concepts  Flan-T5 captions of the job's concepts, before the edits (actor)                   [optional]

A row's failure never raises out of a stage: it becomes an error row, and later stages pass it through.
"""
