"""Build hook (pyproject.toml holds the project): the package root `hairdiff` is the repository root, whose only
module is __init__.py; the checkout's other root scripts (pipeline.py) are not modules of the package, so the
wheel leaves them out. setuptools has no setting for that: build_py's module listing is narrowed here."""
from setuptools import setup
from setuptools.command.build_py import build_py


class RootInitOnly(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "hairdiff":
            return [m for m in modules if m[1] == "__init__"]
        return modules


setup(cmdclass={"build_py": RootInitOnly})
