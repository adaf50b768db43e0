"""The per-repository locks that keep registry 2.8's delete by digest from racing a tag write."""

from mreg_proxy.oci.tagdelete import RepositoryLocks


async def test_one_repository_shares_one_lock_while_held() -> None:
    locks = RepositoryLocks()
    async with locks("team/app"):
        assert locks("team/app").locked()


async def test_repositories_do_not_wait_for_each_other() -> None:
    locks = RepositoryLocks()
    async with locks("team/app"):
        assert not locks("team/other").locked()
