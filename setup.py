"""Only the optional C extensions; everything else is in pyproject.toml.

``cdc/pgoutput/_speedups.c`` holds compiled twins of the decoder's per-column loops and
``catalog/_speedups.c`` the envelope builder's fast paths (canonical payloads, event ids). Both
are optional: where no C compiler is available the build goes on and the pure-Python paths run
(``cdc.pgoutput.decoder.SPEEDUPS`` and ``catalog.envelope.SPEEDUPS`` say which are in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cdc.pgoutput._speedups",
            ["cdc/pgoutput/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "catalog._speedups",
            ["catalog/_speedups.c"],
            libraries=["crypto"],  # SHA-1 of OpenSSL, as hashlib's
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
