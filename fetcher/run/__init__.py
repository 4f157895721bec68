"""One run: job (lock, journal, resume) → engine → scheduler → backend → collector.

Its one job: decide what runs when (retries, per-host caps, the bounded window)
and record every final Result once (journal, manifest, bar, summary), whatever
the backend. May import: backends, download, transports, options, files, models, errors.
"""
