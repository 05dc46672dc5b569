"""Image URL fetching against a real loopback HTTP server: allowed hosts only, no private networks (the
redirects included), size and time capped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from image_server import image_server

from mmembed.gateway.fetch import FetchError, FetchPolicy, fetch

PHOTO = b"\xff\xd8\xff\xe0 pretend jpeg bytes " * 100
BIG = b"x" * (256 * 1024)
LOOPBACK = FetchPolicy(
    allowed_hosts=("127.0.0.1", "169.254.169.254", "10.1.2.3"),
    allowed_networks=("127.0.0.1/32",),  # the test server's address; everything else stays refused
    max_bytes=128 * 1024,
    timeout_s=1.5,
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with image_server({"/photo.jpg": PHOTO, "/big.bin": BIG}) as url:
        yield url


def test_an_allowed_url_is_fetched_and_followed_through_redirects(base: str) -> None:
    assert fetch(f"{base}/photo.jpg", LOOPBACK) == PHOTO
    assert fetch(f"{base}/redirect?to=/photo.jpg", LOOPBACK) == PHOTO


@pytest.mark.parametrize(
    ("path", "policy", "message"),
    [
        ("/photo.jpg", FetchPolicy(allowed_hosts=("127.0.0.1",)), "resolves to 127.0.0.1, a loopback address"),
        ("/photo.jpg", FetchPolicy(allowed_hosts=("images.example.com",)), "host 127.0.0.1 is not in this"),
        ("/redirect?to=http://169.254.169.254/latest/meta-data/", LOOPBACK, "169.254.169.254, a link-local address"),
        ("/redirect?to=http://10.1.2.3/admin", LOOPBACK, "resolves to 10.1.2.3, a private address"),
        ("/redirect?to=http://example.com/x.jpg", LOOPBACK, "host example.com is not in this server's allow-list"),
        ("/redirect?to=file:///etc/passwd", LOOPBACK, "only http and https URLs are fetched, not file"),
        ("/loop", LOOPBACK, "more than 3 redirects"),
        ("/big.bin", LOOPBACK, "262144 bytes, over the limit of 131072"),
        ("/slow", LOOPBACK, "timed out after 1.5 s"),
        ("/missing.jpg", LOOPBACK, "answered HTTP 404"),
    ],
)
def test_what_is_not_fetched_says_why(base: str, path: str, policy: FetchPolicy, message: str) -> None:
    with pytest.raises(FetchError, match=message.replace(".", r"\.").replace("?", r"\?")):
        fetch(f"{base}{path}", policy)


def test_fetching_is_off_unless_hosts_are_allowed() -> None:
    assert not FetchPolicy().enabled and LOOPBACK.enabled
