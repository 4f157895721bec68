"""One registry picks the backend class for a (backend, client) pair and refuses the others."""

from __future__ import annotations

import pytest
from conftest import NEEDS_PYCURL

from fetcher.backends import BACKENDS, backend_class, get_backend
from fetcher.backends.registry import PAIRS
from fetcher.errors import BackendError
from fetcher.options import Options


def test_an_unsupported_pair_is_refused_with_the_pairs_that_exist() -> None:
    with pytest.raises(BackendError) as caught:
        backend_class("multi", "requests")
    message = str(caught.value)
    assert "use it with --client curl" in message
    for backend, client in PAIRS:
        assert f"{backend} + {client}" in message


def test_every_backend_name_has_a_pair_and_unknown_names_are_refused() -> None:
    assert set(BACKENDS) == {backend for backend, _ in PAIRS}
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        get_backend("nope")


@NEEDS_PYCURL
def test_a_backend_named_before_the_client_is_known_follows_the_run_options() -> None:
    from fetcher.backends.process import ProcessBackend, ProcessCurlBackend

    assert type(get_backend("process")(Options.create(backend="process"))) is ProcessBackend
    assert type(get_backend("process")(Options.create(backend="process", client="curl"))) is ProcessCurlBackend
    assert backend_class("gevent", "curl").__name__ == "GeventCurlBackend"
