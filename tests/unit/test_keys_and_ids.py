"""Object keys are built only from validated ids and tenants: hostile ids never reach the store."""

from __future__ import annotations

import pytest

from core.assets import AssetStore
from core.errors import NotFound
from service.auth import ApiKeys, key_id


class NoStore:
    """An object store that fails the test if it is touched."""

    def __getattr__(self, name):
        raise AssertionError(f"the object store was called ({name}) for a hostile id")


@pytest.mark.parametrize("asset_id", ["../tenant-b/models/m_0000000000000000000000", "m_0000000000000000000000/..",
                                      "m_../../x", "M_0000000000000000000000", "m_000000000000000000000g", "",
                                      "d_0000000000000000000000", "m_0000000000000000000000\n"])
def test_hostile_asset_ids_are_not_found_without_touching_the_store(asset_id):
    with pytest.raises(NotFound):
        AssetStore(NoStore()).load("tenant-a", "models", asset_id)


def test_key_ids_name_keys_without_revealing_them():
    kid = key_id("secret-key-value")
    assert kid.startswith("k_") and len(kid) == 22 and "secret" not in kid
    assert ApiKeys("a:secret-key-value").identify("secret-key-value") == ("a", kid)
