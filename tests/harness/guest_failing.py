"""Run only by test_harness.py inside a guest: a kernel test that fails on purpose."""


def test_fails_on_purpose() -> None:
    assert False, "this test fails so the harness can show how a failure is reported"
