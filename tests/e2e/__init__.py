"""End-to-end tests (a package, so that its conftest is not imported as the module `conftest`,
which the unit and integration tests import by that name)."""
