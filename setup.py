"""Only the optional compiled parts; everything else is in pyproject.toml.

``cdc/pgoutput/_speedups.c`` holds compiled twins of the decoder's per-column loops and
``catalog/_speedups.c`` the envelope builder's fast paths (canonical payloads, event ids).

Everything compiled is optional: without a C compiler the build goes on and the pure-Python
code runs (``CDC_NO_SPEEDUPS=1`` runs it on a full build too).
"""

import os

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
    ],
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
