"""Build the C engine's extension; everything else is in pyproject.toml.

The extension is optional: without a C compiler the package still installs,
and ``engine="c"`` raises ``RuntimeError("C engine not available: ...")``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kastore._ckastore",
            sources=["kastore/_ckastore.c", "kastore/include/kastore.c"],
            include_dirs=["kastore/include"],
            extra_compile_args=["-std=c99", "-O2"],
            optional=True,
        )
    ]
)
