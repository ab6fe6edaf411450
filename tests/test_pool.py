"""The adapter pool both studios keep their resident adapters in: load order, least recently used, eviction, lock."""

from dataclasses import asdict, dataclass

import pytest

from peft_core.errors import InputError
from peft_core.hub import Repo
from peft_core.pool import AdapterPool, check_base_lock


@dataclass
class Info:
    adapter_name: str

    def to_dict(self):
        return asdict(self)


def pool_of(*names, reloadable=True):
    pool = AdapterPool()
    for name in names:
        pool.add(name, Info(name), reloadable=reloadable)
    return pool


def test_records_in_load_order_and_refusals_name_what_is_loaded():
    pool = pool_of("a", "b")
    assert pool.names() == ["a", "b"] and pool.list() == [{"adapter_name": "a"}, {"adapter_name": "b"}]
    assert pool.get("b") == Info("b") and "a" in pool and len(pool) == 2
    with pytest.raises(InputError, match="no adapter named 'c'; loaded: a, b"):
        pool.get("c")
    with pytest.raises(InputError, match=r"adapter\(s\) 'c' not loaded; loaded: a, b"):
        pool.check_loaded(["a", "c"])
    with pytest.raises(InputError, match="adapter_name 'a' is already loaded"):
        pool.check_free("a")
    assert pool.free_name("org/a") == "a_2"
    pool.remove("a")
    assert pool.names() == ["b"]


def test_eviction_takes_the_least_recently_used_reloadable_one_not_in_use(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_RESIDENT_ADAPTERS", "3")
    pool = pool_of("a", "b")
    assert pool.eviction_candidate() is None  # room left
    pool.add("made_here", Info("made_here"), reloadable=False)
    pool.touch(["a"])
    pool.touch(["b"])
    assert pool.eviction_candidate() == "a"  # least recently used
    pool.touch(["a"])
    assert pool.eviction_candidate() == "b"
    assert pool.eviction_candidate(in_use={"b"}) == "a"
    with pytest.raises(InputError, match=r"3 adapters are loaded, the most this Space keeps \(3\), and each is"):
        pool.eviction_candidate(in_use={"a", "b"})  # made_here is never evicted silently
    assert pool.names() == ["a", "b", "made_here"]  # a refusal changes nothing


def test_base_lock(monkeypatch):
    loaded, same, other = ("org/base", "main"), Repo("org/base", "main", None), Repo("org/other", "main", None)
    monkeypatch.delenv("STUDIO_LOCK_BASE", raising=False)
    assert not check_base_lock(loaded, other) and not check_base_lock(None, other)
    monkeypatch.setenv("STUDIO_LOCK_BASE", "1")
    assert not check_base_lock(None, other)  # nothing loaded yet: load it
    assert check_base_lock(loaded, same)  # the same base: nothing to load
    with pytest.raises(InputError, match=r"locked to the base 'org/base' .*'org/other' \(revision 'main'\) cannot"):
        check_base_lock(loaded, other)
    with pytest.raises(InputError, match=r"'org/base' \(revision 'v2'\) cannot replace it"):
        check_base_lock(loaded, Repo("org/base", "v2", None))
