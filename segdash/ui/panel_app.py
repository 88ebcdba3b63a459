"""The segdash dashboard as a Panel app file: ``panel serve`` runs it once per browser session.

Serve it as any Panel app (its options after ``--args`` are segdash's: an image, and
``--num-threads``, ``--session-memory-gb``, ``--job-time-limit``)::

    panel serve "$(python -m segdash.ui.panel_app)" --args [IMAGE] [--session-memory-gb 4]

``segdash serve`` serves this same file with Panel's machinery and safer defaults (signed
session ids, the ``Host`` check): see :mod:`segdash.ui.serve` and docs/deploy.md.
"""

import sys

if __name__ == "__main__":  # python -m segdash.ui.panel_app: where this file is
    print(__file__)
elif __name__.startswith("bokeh_app_"):  # run by panel serve / segdash serve, per session
    from segdash.ui.serve import serve_page

    serve_page(sys.argv[1:])
