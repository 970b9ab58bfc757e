"""Only the optional C extension; everything else is in pyproject.toml.

``cdc/pgoutput/_speedups.c`` holds compiled twins of the decoder's per-column loops. It is
optional: where no C compiler is available the build goes on and the pure-Python twins run
(``cdc.pgoutput.decoder.SPEEDUPS`` says which is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cdc.pgoutput._speedups",
            ["cdc/pgoutput/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
