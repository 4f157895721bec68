"""Downloading: ``attempt.fetch_one``, one attempt at one URL, always a Result.

Its one job: the rules of a download (deadlines, size caps, content checks,
checksums, resumable ``.part`` files, ``--on-exists``) around a transport, and
the file under its final name only when whole. May import: transports, options,
files, models, errors.
"""
