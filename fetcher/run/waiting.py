"""The one answer the run's gates (gates.py: dns.py, robots.py) share: "ask again when mine has come"."""

WAIT = "wait"  # a gate's answer for a task whose host's answer is on its way
