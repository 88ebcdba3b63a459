"""Files: reading images (:mod:`~segdash.io.read`, lazily: :mod:`~segdash.io.sources`),
writing results (:mod:`~segdash.io.write`), what results look like
(:mod:`~segdash.io.render`) and what they are called (:mod:`~segdash.io.naming`)."""
