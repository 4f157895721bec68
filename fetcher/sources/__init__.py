"""The input: ``readers`` turn files (txt, CSV, TSV, JSONL, gzipped or not) into rows;
``tasks`` turns rows, and the Python API's tasks, into validated internal tasks.

Its one job: untrusted input in, canonical tasks (or rejected lines, as data) out.
May import: download (checksums), options, files, models, errors.
"""
