from tests.fixtures.threads import single_thread  # noqa: F401 (autouse)
