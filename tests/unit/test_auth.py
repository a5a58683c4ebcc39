from __future__ import annotations

import pytest

from core.errors import Unauthorized
from service.auth import ApiKeys, bearer_token


def test_keys_map_to_tenants_and_a_tenant_may_have_several():
    keys = ApiKeys("a:k1, a:k2,b:k3")
    assert [keys.tenant_for(k) for k in ("k1", "k2", "k3")] == ["a", "a", "b"]
    for bad in ("k4", "", None, "k1 "):
        with pytest.raises(Unauthorized):
            keys.tenant_for(bad)


def test_keys_are_not_kept_in_clear():
    keys = ApiKeys("a:supersecret")
    assert b"supersecret" not in repr(keys._entries).encode()


@pytest.mark.parametrize("spec", ["nokey", "a:", ":k", "Bad Tenant:k", "../x:k"])
def test_malformed_key_specs_are_refused(spec):
    with pytest.raises(ValueError):
        ApiKeys(spec)


def test_bearer_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer ") is None and bearer_token(None) is None
