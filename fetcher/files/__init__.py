"""Names and places of files: safe names from URLs, templates and headers (``naming``,
``filenames``); containment under the output folder and the folder cache (``paths``).

Its one job: no name escapes the output folder. Pure apart from ``paths``' lstat
and makedirs calls. May import: models, errors.
"""
