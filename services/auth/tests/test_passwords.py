"""Argon2 hashing: round trip, rehash detection, and that the work happens off the event loop."""

from __future__ import annotations

import threading

import argon2

from agentry.auth.passwords import Argon2Hasher


async def test_hash_verifies_only_the_right_password(hasher):
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "correct horse battery")
    assert not await hasher.verify(stored, "wrong horse battery")


async def test_a_corrupt_hash_fails_verification_instead_of_raising(hasher):
    assert not await hasher.verify("not-a-hash", "whatever123")
    assert hasher.needs_rehash("not-a-hash")


async def test_hashes_made_with_older_parameters_need_rehash(hasher, make_hasher):
    stronger = make_hasher(time_cost=2)
    old = await hasher.hash("password123")
    assert stronger.needs_rehash(old)
    assert not stronger.needs_rehash(await stronger.hash("password123"))


async def test_hashing_and_verifying_run_in_a_worker_thread():
    seen: list[int] = []

    class Recording(argon2.PasswordHasher):
        def hash(self, password, *, salt=None):
            seen.append(threading.get_ident())
            return super().hash(password, salt=salt)

        def verify(self, hash, password):
            seen.append(threading.get_ident())
            return super().verify(hash, password)

    hasher = Argon2Hasher(Recording(time_cost=1, memory_cost=1024, parallelism=1))
    await hasher.verify(await hasher.hash("password123"), "password123")
    assert len(seen) == 2
    assert threading.get_ident() not in seen
