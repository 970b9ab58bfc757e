"""Only the optional compiled part; everything else is in pyproject.toml.

``cdc/pgoutput/_speedups.c`` is the compiled implementation of the pgoutput decoder's
per-column loops. It is optional: without a C compiler the build goes on and the pure-Python
implementation runs (``CDC_IMPL`` chooses between them, see cdc/pgoutput/decoder.py).
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
    ],
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
