"""``segdash apply MODEL INPUTS... --out DIR``: the command-line batch.

:mod:`~segdash.batch.plan` decides what each input becomes; :mod:`~segdash.batch.runner`
runs it on a Dask client with :mod:`segdash.tiling`. The Python entry point is
:func:`segdash.apply` (:func:`segdash.tiling.apply`).
"""
